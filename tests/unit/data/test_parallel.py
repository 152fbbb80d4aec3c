import json
import sys

import datasets  # noqa: E402  (a test dependency: make test installs it)
import pytest
import torch

from catdiff.build import build_dataset, rebuild_dataset
from catdiff.config import validate_data_section
from catdiff.data import hub, parallel
from catdiff.data.parallel import HubUnreachableError, ParallelTextDataset
from catdiff.errors import ConfigError, DataError

# German / English pairs written for these tests: 4 subjects x 3 verbs x 3 objects.
SUBJECTS = [("Der Hund", "The dog"), ("Die Katze", "The cat"), ("Der Vogel", "The bird"), ("Die Frau", "The woman")]
VERBS = [("sieht", "sees"), ("füttert", "feeds"), ("mag", "likes")]
OBJECTS = [("den Ball", "the ball"), ("das Haus", "the house"), ("den Baum", "the tree")]
PAIRS = [(f"{s} {v} {o}.", f"{se} {ve} {oe}.") for s, se in SUBJECTS for v, ve in VERBS for o, oe in OBJECTS]
LONG = ("Der Hund sieht den Ball, und die Katze füttert den Vogel im Haus.",
        "The dog sees the ball, and the cat feeds the bird in the house.")
UNKNOWN = ("Die Straße ist groß.", "The street is big.")  # "ß" never occurs in the training text
SPLITS = {
    "train": [p for i, p in enumerate(PAIRS) if i % 6 < 4] + [LONG, LONG[::-1]],
    "validation": [p for i, p in enumerate(PAIRS) if i % 6 == 4] + [LONG],
    "test": [p for i, p in enumerate(PAIRS) if i % 6 == 5] + [UNKNOWN],
}
KEPT = {"train": SPLITS["train"][:-2], "val": SPLITS["validation"][:-1], "test": SPLITS["test"][:-1]}
S = T = 32
KW = dict(dataset="local", src_lang="de", tgt_lang="en", src_len=S, tgt_len=T)


def translation(pairs):
    return [{"translation": {"de": de, "en": en}} for de, en in pairs]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """The same pairs in three local layouts."""
    root = tmp_path_factory.mktemp("parallel")
    (root / "jsonl").mkdir()
    for split, pairs in SPLITS.items():  # "translation" records, one JSON object per line
        lines = [json.dumps(r, ensure_ascii=False) for r in translation(pairs)]
        (root / "jsonl" / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split, pairs in SPLITS.items():  # flat src/tgt fields, one Dataset.save_to_disk per split
        flat = {"src": [de for de, _ in pairs], "tgt": [en for _, en in pairs]}
        datasets.Dataset.from_dict(flat).save_to_disk(str(root / "saved_split" / split))
    dd = datasets.DatasetDict({k: datasets.Dataset.from_list(translation(v)) for k, v in SPLITS.items()})
    dd.save_to_disk(str(root / "saved_dict"))
    return {k: root / k for k in ("jsonl", "saved_split", "saved_dict")}


@pytest.fixture(scope="module")
def ds(dirs):
    return ParallelTextDataset(local_dir=str(dirs["jsonl"]), **KW)


def test_canvas_layout_and_round_trip(ds):
    V = ds.tokenizer.vocab_size
    assert (ds.n_symbols, ds.pad_id, ds.sep_id, ds.vocab_size) == (V, V, V + 1, V + 2)
    assert (ds.seq_len, ds.cond_len, ds.kind) == (S + 1 + T, S + 1, "seq2seq")
    assert ds.n_pairs == {"train": 24, "val": 6, "test": 6}
    assert ds.n_dropped == {"train": 2, "val": 1, "test": 0}
    assert ds.n_unknown == {"train": 0, "val": 0, "test": 1}
    for name in ("val", "test", "train"):
        x = ds.split(name)
        assert x.dtype == torch.int64 and x.shape == (len(KEPT[name]), ds.seq_len)
        assert (x[:, S] == ds.sep_id).all() and (x != ds.sep_id).sum() == x.numel() - len(x)
        lengths = ds.target_length(x)
        for row, n, (de, en) in zip(x, lengths.tolist(), KEPT[name], strict=True):
            assert ds.detokenize(ds.target(row[None])[0]) == en and n == len(en)  # char level: 1 token a char
            assert ds.detokenize(ds.source(row[None])[0]) == de
            assert (row[S + 1 + n:] == ds.pad_id).all() and (row[S + 1:S + 1 + n] < V).all()
            assert (row[len(de):S] == ds.pad_id).all()
    assert ds.decode(ds.split("val")[0]) == f"{KEPT['val'][0][0]} → {KEPT['val'][0][1]}"


@pytest.mark.parametrize("layout", ["saved_split", "saved_dict"])
def test_save_to_disk_layouts_match_jsonl(dirs, ds, layout):
    other = ParallelTextDataset(local_dir=str(dirs[layout]), **KW)
    assert other.tokenizer_state == ds.tokenizer_state
    for name in ("train", "val", "test"):
        assert torch.equal(other.split(name), ds.split(name))


def test_train_batch_is_deterministic_in_seed_step_rank(ds, dirs):
    a = ds.train_batch(3, 16, rank=0, world=2)
    assert a.dtype == torch.int64 and a.shape == (16, ds.seq_len)
    assert torch.equal(a, ds.train_batch(3, 16, rank=0, world=2))
    assert not torch.equal(a, ds.train_batch(4, 16, rank=0, world=2))
    assert not torch.equal(a, ds.train_batch(3, 16, rank=1, world=2))
    train = {tuple(r) for r in ds.split("train").tolist()}
    assert all(tuple(r) in train for r in a.tolist())
    reseeded = ParallelTextDataset(local_dir=str(dirs["jsonl"]), seed=1, **KW)
    assert not torch.equal(a, reseeded.train_batch(3, 16, rank=0, world=2))
    with pytest.raises(ValueError, match="rank"):
        ds.train_batch(0, 4, rank=2, world=2)


def test_state_round_trip_does_not_refit(ds, monkeypatch):
    state = json.loads(json.dumps(ds.state()))  # JSON-serialisable
    assert state["name"] == "parallel_text" and state["n_pairs"] == ds.n_pairs

    def no_refit(*a, **k):
        raise AssertionError("from_state must restore the saved tokenizer, not fit one")

    monkeypatch.setattr(parallel, "make_tokenizer", no_refit)
    for again in (ParallelTextDataset.from_state(state), rebuild_dataset(state)):
        assert again.tokenizer_state == ds.tokenizer_state and again.vocab_size == ds.vocab_size
        for name in ("train", "val", "test"):
            assert torch.equal(again.split(name), ds.split(name))
        assert torch.equal(again.train_batch(7, 8, 1, 2), ds.train_batch(7, 8, 1, 2))
    changed = {**state, "n_pairs": {**state["n_pairs"], "val": 5}}
    with pytest.raises(DataError, match="changed"):
        ParallelTextDataset.from_state(changed)


def test_vocab_keyword_restores_a_char_vocabulary(ds, dirs, monkeypatch):
    monkeypatch.setattr(parallel, "make_tokenizer", lambda *a, **k: pytest.fail("refit"))
    chars = "".join(ds.tokenizer.chars)
    again = ParallelTextDataset(local_dir=str(dirs["jsonl"]), vocab=chars, **KW)
    assert torch.equal(again.split("test"), ds.split("test"))
    with pytest.raises(ValueError, match="vocab"):
        ParallelTextDataset(local_dir=str(dirs["jsonl"]), vocab=chars[::-1], tokenizer_state=ds.tokenizer_state, **KW)


def test_registry_builds_it_from_a_config_section(ds, dirs):
    section = {"name": "parallel_text", "dataset": "local", "local_dir": str(dirs["jsonl"]),
               "src_lang": "de", "tgt_lang": "en", "src_len": S, "tgt_len": T}
    built = build_dataset(validate_data_section(section))
    assert isinstance(built, ParallelTextDataset)
    assert torch.equal(built.split("val"), ds.split("val"))
    with pytest.raises(ConfigError, match="data.vocabulary"):
        validate_data_section({**section, "vocabulary": "abc"})
    bad = validate_data_section({**section, "dataset": "europarl"})
    with pytest.raises(ConfigError, match="dataset must be one of") as e:
        build_dataset(bad)
    assert "\n" not in str(e.value)


def test_bpe_round_trip(dirs):
    bpe = ParallelTextDataset(local_dir=str(dirs["jsonl"]), tokenizer="bpe", bpe_vocab_size=300, **KW)
    assert bpe.n_symbols == bpe.tokenizer.vocab_size and bpe.vocab_size == bpe.n_symbols + 2
    x = bpe.split("val")
    fits = [(de, en) for de, en in SPLITS["validation"] if len(bpe.encode(de)) <= S and len(bpe.encode(en)) <= T]
    assert len(fits) == bpe.n_pairs["val"] == len(SPLITS["validation"]) - bpe.n_dropped["val"]
    assert [bpe.detokenize(t) for t in bpe.target(x)] == [en for _, en in fits]
    assert [bpe.detokenize(s) for s in bpe.source(x)] == [de for de, _ in fits]
    assert bpe.n_unknown["test"] == 0  # byte-level BPE encodes any character


def test_max_train_pairs_keeps_the_first_pairs(dirs):
    capped = ParallelTextDataset(local_dir=str(dirs["jsonl"]), max_train_pairs=10, **KW)
    assert capped.n_pairs["train"] == 10
    got = [capped.detokenize(t) for t in capped.target(capped.split("train"))]
    assert got == [en for _, en in KEPT["train"][:10]]


def test_bad_arguments_and_data_fail_in_one_line(dirs, tmp_path):
    jsonl = str(dirs["jsonl"])
    cases = [
        (dict(dataset="europarl"), ValueError, "dataset must be one of"),
        (dict(dataset="local"), ValueError, "local_dir"),
        (dict(dataset="local", local_dir=jsonl, tokenizer="word"), ValueError, "tokenizer"),
        (dict(dataset="local", local_dir=jsonl, src_lang="de", tgt_lang="de"), ValueError, "differ"),
        (dict(dataset="local", local_dir=jsonl, src_len=0), ValueError, "src_len"),
        (dict(dataset="local", local_dir=jsonl), ValueError, "src_lang and tgt_lang"),
        (dict(dataset="local", local_dir=jsonl, src_lang="de", tgt_lang="fr"), DataError, "'fr'"),
        (dict(dataset="local", local_dir=str(tmp_path / "absent")), FileNotFoundError, "local_dir not found"),
        (dict(KW, local_dir=jsonl, tgt_len=4), DataError, "fits"),
    ]
    for kw, err, pattern in cases:
        with pytest.raises(err, match=pattern) as e:
            ParallelTextDataset(**kw)
        assert "\n" not in str(e.value)
    (tmp_path / "train.jsonl").write_text('{"src": "a", "tgt": "b"}\n')
    with pytest.raises(FileNotFoundError, match=r"'validation'.*\"translation\""):
        ParallelTextDataset(local_dir=str(tmp_path), **KW)


# ---- hub presets (never the network) ----------------------------------------------------------
@pytest.mark.parametrize("preset", ["iwslt14", "wmt14"])
def test_hub_presets_offline_raise_one_line_pointing_to_local_dir(monkeypatch, preset):
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: probes.append(a) or False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("downloaded while offline"))
    with pytest.raises(ConnectionError) as e:
        ParallelTextDataset(dataset=preset)
    assert isinstance(e.value, (HubUnreachableError, DataError)) and probes
    msg = str(e.value)
    assert "\n" not in msg and "huggingface.co" in msg and preset in msg
    assert "local_dir=" in msg and '"translation"' in msg


def test_hub_preset_without_datasets_package_points_to_local_dir(monkeypatch, dirs):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed"))
    with pytest.raises(DataError, match=r"pip install catdiff\[hf\].*local_dir=") as e:
        ParallelTextDataset(dataset="iwslt14")
    assert "\n" not in str(e.value)
    # a local jsonl copy needs no `datasets`; the preset supplies its direction (de -> en)
    local = ParallelTextDataset(dataset="iwslt14", local_dir=str(dirs["jsonl"]), src_len=S, tgt_len=T)
    assert local.detokenize(local.target(local.split("val"))[0]) == KEPT["val"][0][1]


def test_hub_presets_load_the_documented_ids(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, **kw):
        calls.append((path, name, kw))
        return datasets.Dataset.from_list(translation(SPLITS[kw["split"]]))

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    iwslt = ParallelTextDataset(dataset="iwslt14", src_len=S, tgt_len=T, cache_dir="/tmp/c")
    assert {(p, n, k["data_dir"], k["revision"]) for p, n, k in calls} == {
        ("IWSLT/iwslt2017", None, "iwslt2017-de-en", "refs/convert/parquet")}
    assert sorted(k["split"] for _, _, k in calls) == ["test", "train", "validation"]
    assert all(k["cache_dir"] == "/tmp/c" and not k["streaming"] for _, _, k in calls)
    assert iwslt.decode(iwslt.split("val")[0]) == " → ".join(KEPT["val"][0])  # de -> en
    calls.clear()
    wmt = ParallelTextDataset(dataset="wmt14", src_len=S, tgt_len=T, max_train_pairs=5)
    assert {(p, n) for p, n, _ in calls} == {("wmt/wmt14", "de-en")}
    assert {k["split"]: k["streaming"] for _, _, k in calls} == {"train": True, "validation": False, "test": False}
    assert wmt.n_pairs["train"] == 5 and (wmt.src_lang, wmt.tgt_lang) == ("en", "de")
    assert wmt.decode(wmt.split("val")[0]) == f"{KEPT['val'][0][1]} → {KEPT['val'][0][0]}"  # en -> de


def test_prompt_canvas_tokenizes_a_typed_source(ds):
    c = ds.prompt_canvas("Der Hund mag das Haus.")
    assert ds.detokenize(c[:ds.src_len]) == "Der Hund mag das Haus." and int(c[ds.src_len]) == ds.sep_id
    assert (ds.target(c[None]) == ds.pad_id).all()
