"""The field's recipes (configs/{mdlm,ar}/{text8,lm1b,owt}.yaml): each names the published
protocol (tokenizer, sequence length, packing, corpus), and each trains 2 steps, samples and
evaluates from the command line on a generated stand-in laid out like the real corpus
(`data.local_dir=` holding {split}.jsonl) with a stand-in tokenizer built here with the
`tokenizers` library. Nothing is downloaded: the hub is switched off for the whole module."""

import json
import random
import string
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ("text8", "lm1b", "owt")
METHODS = ("mdlm", "ar")
# corpus → (hub corpus, tokenizer, seq_len, packing) the recipe must name (issue 16, item 4)
PROTOCOL = {
    "text8": ("text8", "char", 256, "wrap"),
    "lm1b": ("lm1b", "bert-base-uncased", 128, "pad"),  # MDLM pads LM1B: Sahoo et al. 2024, Suppl. D.4
    "owt": ("openwebtext", "gpt2", 1024, "wrap"),
}
TINY = ["model.preset=tiny", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=4",
        "model.compile=false", "train.amp=none", "train.progress=false", "train.max_steps=2", "train.device=cpu"]
WORDS = ["the", "of", "and", "in", "to", "was", "a", "is", "for", "on", "as", "by", "with", "he", "that",
         "city", "river", "king", "north", "year", "people", "first", "later", "war", "music", "church"]


def _recipe(method: str, corpus: str) -> Path:
    return ROOT / "configs" / method / f"{corpus}.yaml"


def _sentence(rng: random.Random, lo: int = 4, hi: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def _jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def _wordpiece(sentences: list[str], path: Path) -> Path:
    """A tiny BERT-style (uncased WordPiece) tokenizer.json with BERT's special tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(sentences, trainer)
    tok.save(str(path))
    return path


def _byte_bpe(docs: list[str], path: Path) -> Path:
    """A tiny GPT-2-style (byte-level BPE) tokenizer.json whose only special token is <|endoftext|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """{corpus: (local_dir, extra overrides, expected test rows)} laid out as the real corpora are."""
    root = tmp_path_factory.mktemp("recipes")
    rng = random.Random(0)
    out = {}
    # text8: one row per split (train 90M / validation 5M / test 5M characters in the real one),
    # a-z and space only; here 40 / 3 / 3 blocks of 256 characters
    d = root / "text8"
    d.mkdir()
    lengths = {"train": 40 * 256, "validation": 3 * 256 + 17, "test": 3 * 256 + 5}
    for split, n in lengths.items():
        text = ""
        while len(text) < n:
            text += _sentence(rng) + " "
        _jsonl(d / f"{split}.jsonl", [text[:n]])
    out["text8"] = (d, [], 3)
    # LM1B: one sentence a row, splits train and test (the hub copy has no validation split)
    d = root / "lm1b"
    d.mkdir()
    train = [_sentence(rng).capitalize() + " ." for _ in range(300)]
    test = [_sentence(rng).capitalize() + " ." for _ in range(24)]
    _jsonl(d / "train.jsonl", train)
    _jsonl(d / "test.jsonl", test)
    bert = _wordpiece(train, root / "bert-tokenizer.json")
    out["lm1b"] = (d, [f"data.tokenizer={bert}"], len(test))
    # OpenWebText: one web page a row, a train split only (held-out rows are carved from its end)
    d = root / "owt"
    d.mkdir()
    docs = ["\n\n".join(" ".join(_sentence(rng, 6, 20).capitalize() + "." for _ in range(rng.randint(2, 6)))
                        for _ in range(rng.randint(1, 4))) for _ in range(260)]
    _jsonl(d / "train.jsonl", docs)
    gpt2 = _byte_bpe(docs, root / "gpt2-tokenizer.json")
    out["owt"] = (d, [f"data.tokenizer={gpt2}"], None)
    return out


@pytest.fixture(autouse=True)
def _offline_and_one_thread(monkeypatch):
    """Never the network: `datasets` and the hub client stay offline. One torch thread: the tiny
    networks here gain nothing from two, and AR sampling (one call a token) slows badly when
    two threads wait on cores that other processes hold."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("corpus", CORPORA)
def test_recipe_names_the_published_protocol(method, corpus):
    cfg = yaml.safe_load(_recipe(method, corpus).read_text())
    hub, tokenizer, seq_len, packing = PROTOCOL[corpus]
    d = cfg["data"]
    assert (d["name"], d["corpus"], d["tokenizer"], d["seq_len"], d["packing"]) == \
           ("hub_text", hub, tokenizer, seq_len, packing)
    assert "local_dir" not in d  # given on the command line: data.local_dir=/path/to/copy
    assert cfg["method"]["name"] == method
    if method == "mdlm":
        assert cfg["method"]["schedule"] == "loglinear"  # MDLM's schedule (Sahoo et al. 2024, Suppl. D.4)
    # the GPU settings: MDLM's 12 x 768 network, bf16, compiled, MDLM's batch and learning rate
    assert cfg["model"]["preset"] == "base" and cfg["model"]["compile"] is True
    assert cfg["train"]["amp"] == "bf16" and cfg["train"]["batch_size"] == 512
    assert cfg["train"]["max_steps"] >= 500_000 and cfg["train"]["warmup_steps"] > 0
    assert cfg["train"]["out_dir"] == f"runs/{method}-{corpus}"  # recipes never share a run folder
    # the diffusion recipe and its AR baseline read the same data
    twin = yaml.safe_load(_recipe("ar" if method == "mdlm" else "mdlm", corpus).read_text())
    assert twin["data"] == d
    text = _recipe(method, corpus).read_text()
    assert "torchrun --nproc_per_node" in text and "data.local_dir=" in text


def test_owt_holds_out_about_mdlms_last_100k_documents():
    """MDLM keeps the last 100K of OpenWebText's 8,013,769 documents for validation; the recipe's
    tail carve (test_frac, the split `eval` scores) is within 1% of that share."""
    d = yaml.safe_load(_recipe("mdlm", "owt").read_text())["data"]
    assert abs(d["test_frac"] - 100_000 / 8_013_769) < 0.01 * 100_000 / 8_013_769
    assert 0 < d["val_frac"] < d["test_frac"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("corpus", CORPORA)
def test_recipe_trains_samples_and_evaluates_on_a_stand_in(method, corpus, stand_ins, tmp_path, capsys):
    local_dir, extra, n_test = stand_ins[corpus]
    run = tmp_path / "run"
    overrides = [*TINY, f"data.local_dir={local_dir}", f"data.cache_dir={tmp_path / 'hf'}", *extra,
                 f"train.out_dir={run}"]
    assert main(["train", str(_recipe(method, corpus)), *overrides]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--num-samples", "2", *(["--steps", "4"] if method == "mdlm" else [])]) == 0
    printed = capsys.readouterr().out
    if corpus == "text8":  # decoded samples are text8 characters only
        assert printed.strip() and set(printed) <= set(string.ascii_lowercase + " \n")
    eval_args = ["--num-samples", "4", "--quiet", *(["--steps", "2"] if method == "mdlm" else [])]
    assert main(["eval", str(run), *eval_args]) == 0
    res = json.loads((run / "eval.json").read_text())
    lik = res["likelihood"]
    assert res["dataset"] == "hub_text" and lik["split"] == "test"
    if n_test is not None:  # the corpus's own test split is scored, not a carve of train
        assert lik["n"] == n_test
    else:
        assert lik["n"] >= 1
    assert np.isfinite(lik["bits_per_token"]) and lik["bits_per_token"] > 0  # a bound (mdlm), exact (ar)
    assert np.isfinite(lik["ppl_bound"]) and lik["ppl_bound"] > 1


def test_lm1b_recipe_validates_on_rows_carved_from_train(stand_ins, tmp_path):
    """LM1B has train and test only: validation rows are the last train documents (val_frac)."""
    from catdiff.build import build_dataset
    from catdiff.config import load_config

    local_dir, extra, _ = stand_ins["lm1b"]
    cfg = load_config(_recipe("mdlm", "lm1b"), [f"data.local_dir={local_dir}", f"data.cache_dir={tmp_path}", *extra])
    ds = build_dataset(cfg.data)
    assert ds.n_blocks("val") >= 1
