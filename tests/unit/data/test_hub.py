import json
import socket
import sys

import datasets  # noqa: E402  (the test extra installs it)
import pytest
import torch

from catdiff.data import hub
from catdiff.data.hub import HUB_DATASETS, HubTextDataset, load_hub_text
from catdiff.errors import MissingExtra

DOCS = {
    "train": [f"Row {i} of the training split says hello.\n" for i in range(12)],
    "validation": ["A validation row.\n", "Another one.\n"],
    "test": ["The test row, held out.\n", "Last row.\n"],
}


@pytest.fixture(scope="module")
def local_dirs(tmp_path_factory):
    """The three documented local layouts, built with `datasets` itself."""
    root = tmp_path_factory.mktemp("hub")
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in DOCS.items()})
    dd.save_to_disk(str(root / "saved"))
    for k, d in dd.items():
        d.to_json(str(root / "jsonl" / f"{k}.jsonl"))
        d.to_parquet(str(root / "parquet" / f"{k}.parquet"))
    return {k: root / k for k in ("saved", "jsonl", "parquet")}


@pytest.mark.parametrize("layout", ["saved", "jsonl", "parquet"])
def test_local_layouts_through_the_same_function(local_dirs, tmp_path, monkeypatch, layout):
    def never(*a, **k):
        raise AssertionError("a local load must not check the hub")

    monkeypatch.setattr(hub, "hub_reachable", never)
    kw = {"local_dir": local_dirs[layout], "cache_dir": tmp_path / "cache"}
    assert load_hub_text("wikitext103", "train", **kw) == "".join(DOCS["train"])  # joiner ""
    assert load_hub_text("lm1b", "val", **kw) == "\n".join(DOCS["validation"])  # joiner "\n"
    assert load_hub_text("text8", "test", **kw) == "".join(DOCS["test"])
    assert load_hub_text("wikitext103", "train", max_chars=50, **kw) == "".join(DOCS["train"])[:50]
    docs = hub.iter_hub_documents("openwebtext", "validation", **kw)
    assert list(docs) == DOCS["validation"]


def test_local_errors(local_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="local_dir"):
        load_hub_text("text8", "train", local_dir=tmp_path / "absent")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "train.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(FileNotFoundError, match=r"'test'.*validation,test\}\.jsonl"):
        load_hub_text("text8", "test", local_dir=tmp_path / "partial")
    with pytest.raises(ValueError, match="name"):
        load_hub_text("penn-treebank", "train", local_dir=local_dirs["saved"])
    with pytest.raises(ValueError, match="split"):
        load_hub_text("text8", "dev-2", local_dir=local_dirs["saved"])
    with pytest.raises(ValueError, match="max_chars"):
        load_hub_text("text8", "train", local_dir=local_dirs["saved"], max_chars=0)


def test_offline_fails_at_once_naming_the_local_layout(monkeypatch):
    probes = []
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: probes.append(a) or False)

    def no_download(*a, **k):
        raise AssertionError("must not try to download when offline")

    monkeypatch.setattr(datasets, "load_dataset", no_download)
    with pytest.raises(ConnectionError) as e:
        load_hub_text("openwebtext", "train")
    msg = str(e.value)
    assert "\n" not in msg and "huggingface.co" in msg and "openwebtext" in msg
    assert "local_dir" in msg and "{train,validation,test}.jsonl" in msg and '"text"' in msg
    assert probes  # the (monkeypatched) reachability check decided
    with pytest.raises(ConnectionError):
        HubTextDataset("text8", seq_len=8)


def test_missing_datasets_package_says_how_to_install(monkeypatch, local_dirs):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises
    with pytest.raises(MissingExtra, match=r"pip install 'catdiff\[hf\]'"):
        load_hub_text("text8", "train", local_dir=local_dirs["saved"])


def test_hub_path_calls_load_dataset_with_known_ids(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, **kw):
        calls.append((path, name, kw))
        return datasets.Dataset.from_dict({"text": ["alpha beta", "gamma"], "id": [1, 2]})

    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_hub_text("wikitext103", "validation", cache_dir="/tmp/c") == "alpha betagamma"
    path, name, kw = calls[-1]
    assert (path, name) == ("Salesforce/wikitext", "wikitext-103-raw-v1")
    assert kw["split"] == "validation" and kw["cache_dir"] == "/tmp/c" and not kw["streaming"]
    assert load_hub_text("lm1b", "train", max_chars=8) == "alpha be"
    assert calls[-1][0] == HUB_DATASETS["lm1b"].repo and calls[-1][2]["streaming"]
    with pytest.raises(ValueError, match="splits"):
        load_hub_text("openwebtext", "test")  # the hub copy has train only


def test_offline_env_uses_cache_without_probe(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed"))
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"text": ["c"]})
    )
    assert load_hub_text("text8", "train") == "c"


def test_hub_reachable_probe_on_loopback(monkeypatch):
    monkeypatch.undo()  # this test opens a loopback socket on purpose
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        assert hub.hub_reachable("127.0.0.1", port, timeout=1.0)
    finally:
        server.close()
    assert not hub.hub_reachable("127.0.0.1", port, timeout=1.0)


def test_hub_text_dataset_uses_hub_splits_and_rebuilds(local_dirs, tmp_path):
    kw = {"local_dir": str(local_dirs["jsonl"]), "cache_dir": str(tmp_path / "cache")}
    ds = HubTextDataset("wikitext103", seq_len=8, seed=3, **kw)
    assert ds.kind == "text"
    sizes = {k: len("".join(v)) // 8 for k, v in DOCS.items()}
    assert ds.n_blocks("train") == sizes["train"]  # nothing carved: the corpus has its splits
    assert ds.n_blocks("val") == sizes["validation"] and ds.n_blocks("test") == sizes["test"]
    assert ds.decode(ds.split("test").reshape(-1)) == "".join(DOCS["test"])[: sizes["test"] * 8]
    st = json.loads(json.dumps(ds.state()))
    again = HubTextDataset.from_state(st)
    assert again.tokenizer_state == ds.tokenizer_state
    assert torch.equal(again.train_batch(2, 4, 1, 2), ds.train_batch(2, 4, 1, 2))


def test_hub_text_dataset_carves_missing_splits(tmp_path):
    d = tmp_path / "only_train"
    datasets.Dataset.from_dict({"text": DOCS["train"]}).to_json(str(d / "train.jsonl"))
    ds = HubTextDataset(
        "lm1b", seq_len=8, val_frac=0.1, test_frac=0.1, local_dir=str(d), cache_dir=str(tmp_path)
    )
    n = len("\n".join(DOCS["train"])) // 8
    assert ds.n_blocks("val") == ds.n_blocks("test") == round(0.1 * n)
    assert ds.n_blocks("train") + 2 * round(0.1 * n) == n
    with pytest.raises(ValueError, match="seq_len"):
        HubTextDataset("lm1b", seq_len=0, local_dir=str(d))
