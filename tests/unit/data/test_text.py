import json
import time
from collections import Counter

import numpy as np
import pytest
import torch

from catdiff.data.text import (
    BPETokenizer,
    CharTokenizer,
    TextDataset,
    pack_blocks,
    split_counts,
    tokenizer_from_state,
)
from catdiff.errors import DataError

# A few lines written for these tests (no third-party text).
LINES = [
    "The kettle sang on the stove while the cat watched the rain.",
    "Seven small boats drifted past the lighthouse at dawn.",
    "A quiet garden holds more than it shows; look twice, then once more.",
    "Numbers like 42 and 1024 appear, as do commas, colons: and dashes - too.",
    "Café au lait, naïve résumé, and a snowman ☃ keep the tokenizer honest.",
]


def corpus(n_lines: int) -> str:
    rng = np.random.default_rng(0)
    return "\n".join(LINES[i] for i in rng.integers(len(LINES), size=n_lines))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    p.write_text(corpus(400), encoding="utf-8")  # ~25k characters
    return p


# ---- tokenizers ---------------------------------------------------------------------------


def test_char_tokenizer_round_trip_and_state():
    text = corpus(20)
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text)) and tok.vocab_size == len(set(text))
    ids = tok.encode(text)
    assert ids.shape == (len(text),) and ids.min() >= 0 and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(torch.from_numpy(ids.astype(np.int64))) == text
    assert [tok.chars[i] for i in ids[:10]] == list(text[:10])
    again = tokenizer_from_state(json.loads(json.dumps(tok.state())))
    assert np.array_equal(again.encode(text), ids)


def test_char_tokenizer_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(ValueError, match=r"'d'.*position 4.*vocabulary mismatch"):
        tok.encode("abc d")
    with pytest.raises(ValueError, match="'☃'"):
        tok.encode("a☃")  # code point beyond the lookup table
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        tok.decode([0, 4])


def test_bpe_train_save_load_round_trip():
    text = corpus(200)
    tok = BPETokenizer.train(text, vocab_size=320)
    assert 256 < tok.vocab_size <= 320
    ids = tok.encode(text)
    assert len(ids) < len(text.encode("utf-8"))  # merges actually compress
    assert tok.decode(ids) == text
    loaded = BPETokenizer.from_json(json.loads(json.dumps(tok.to_json())))
    assert np.array_equal(loaded.encode(text), ids)
    rebuilt = tokenizer_from_state(json.loads(json.dumps(tok.state())))
    assert np.array_equal(
        rebuilt.encode("unseen words ✓ still encode"), tok.encode("unseen words ✓ still encode")
    )
    assert BPETokenizer.train(text, vocab_size=320).to_json() == tok.to_json()  # deterministic
    with pytest.raises(ValueError, match="bpe_vocab_size"):
        BPETokenizer.train(text, vocab_size=100)


def test_tokenizer_state_errors():
    with pytest.raises(ValueError, match="tokenizer_state"):
        tokenizer_from_state({"chars": ["a"]})
    with pytest.raises(ValueError, match="type"):
        tokenizer_from_state({"type": "word"})


# ---- packing and splits -------------------------------------------------------------------


def test_pack_blocks_drops_ragged_tail():
    ids = np.arange(23)
    blocks = pack_blocks(ids, 5)
    assert blocks.shape == (4, 5) and np.array_equal(blocks.reshape(-1), ids[:20])
    assert split_counts(100, 0.1, 0.05) == (85, 10, 5)
    assert split_counts(10, 0.01, 0.0) == (9, 1, 0)  # a non-zero fraction keeps >= 1 block


def test_text_dataset_packing_and_contiguous_splits(text_file):
    text = text_file.read_text(encoding="utf-8")
    ds = TextDataset(text_file, seq_len=16, val_frac=0.05, test_frac=0.1)
    assert (ds.name, ds.kind, ds.vocab_size) == ("text", "text", len(set(text)))
    n = len(text) // 16
    n_train, n_val, n_test = split_counts(n, 0.05, 0.1)
    parts = [ds.split(k) for k in ("train", "val", "test")]
    assert [len(p) for p in parts] == [n_train, n_val, n_test]
    assert all(p.dtype == torch.int64 and p.shape[1] == 16 for p in parts)
    assert ds.regions == {
        "train": (0, n_train),
        "val": (n_train, n_train + n_val),
        "test": (n_train + n_val, n),
    }
    # train | val | test in order, no gap, no overlap, ragged tail dropped
    stream = torch.cat(parts).reshape(-1)
    assert ds.decode(stream) == text[: n * 16]
    assert ds.decode(parts[2][-1]) == text[(n - 1) * 16 : n * 16]


def test_text_dataset_from_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second file\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first file", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    ds = TextDataset(tmp_path, seq_len=4, val_frac=0.0, test_frac=0.0)
    expected = "first file\nsecond file\n"  # sorted, joined by a newline
    assert ds.decode(ds.split("train").reshape(-1)) == expected[: len(expected) // 4 * 4]
    assert "m" not in ds.tokenizer.chars  # notes.md was not read
    assert ds.n_blocks("val") == ds.n_blocks("test") == 0


def test_missing_empty_and_short_inputs(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere" / "kjv.txt"
    with pytest.raises(FileNotFoundError) as e:
        TextDataset(missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="no text"):
        TextDataset(tmp_path / "empty.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=r"\*\.txt"):
        TextDataset(tmp_path / "folder")
    (tmp_path / "short.txt").write_text("tiny", encoding="utf-8")
    with pytest.raises(ValueError, match="seq_len"):
        TextDataset(tmp_path / "short.txt", seq_len=8)
    with pytest.raises(ValueError, match="seq_len"):
        TextDataset(tmp_path / "short.txt", seq_len=0)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an unknown name is looked up as a hub tokenizer: cache only
    with pytest.raises(DataError, match="data.tokenizer='word' is not in the local Hugging Face cache"):
        TextDataset(tmp_path / "short.txt", seq_len=2, tokenizer="word")


def test_max_chars(text_file):
    ds = TextDataset(text_file, seq_len=10, max_chars=1000, val_frac=0.0, test_frac=0.0)
    assert ds.n_blocks("train") == 100


# ---- training batches ---------------------------------------------------------------------


def test_train_batch_deterministic(text_file):
    a = TextDataset(text_file, seq_len=32, seed=1)
    b = TextDataset(text_file, seq_len=32, seed=1)
    x = a.train_batch(3, 8, rank=1, world=2)
    assert x.shape == (8, 32) and x.dtype == torch.int64
    assert torch.equal(x, b.train_batch(3, 8, rank=1, world=2))
    assert not torch.equal(x, a.train_batch(4, 8, rank=1, world=2))
    assert not torch.equal(x, a.train_batch(3, 8, rank=0, world=2))
    assert not torch.equal(x, TextDataset(text_file, seq_len=32, seed=2).train_batch(3, 8, 1, 2))
    with pytest.raises(ValueError, match="rank"):
        a.train_batch(0, 8, rank=-1)


def _epoch(ds: TextDataset, world: int) -> torch.Tensor:
    """All windows of epoch 0 read by `world` ranks at step 0 (batch = windows // world)."""
    per_rank = ds.n_windows // world
    assert per_rank * world == ds.n_windows
    return torch.cat([ds.train_batch(0, per_rank, rank=r, world=world) for r in range(world)])


def test_block_aligned_epoch_covers_train_blocks_once_across_ranks(tmp_path):
    (tmp_path / "t.txt").write_text(corpus(200), encoding="utf-8")
    for n_blocks in range(10, 40):  # pick a seq_len giving a train count divisible by 3
        ds = TextDataset(tmp_path / "t.txt", seq_len=n_blocks, random_offset=False)
        if ds.n_windows % 3 == 0:
            break
    rows = Counter(tuple(r) for r in _epoch(ds, 3).tolist())
    assert rows == Counter(tuple(r) for r in ds.split("train").tolist())


def _shifts(ds: TextDataset, windows: torch.Tensor) -> list[int]:
    """Phases s for which `windows` is exactly the tiling train[s + jL : s + (j+1)L], j < W."""
    L, W = ds.seq_len, ds.n_windows
    got = Counter(tuple(r) for r in windows.tolist())
    stream = ds.split("train").reshape(-1).numpy()
    return [
        s
        for s in range(L)
        if Counter(tuple(r) for r in stream[s : s + W * L].reshape(W, L).tolist()) == got
    ]


def test_random_offset_epoch_is_one_shifted_tiling_of_train(text_file):
    ds = TextDataset(text_file, seq_len=20, val_frac=0.02, test_frac=0.02)
    assert ds.n_windows == ds.n_blocks("train") - 1
    world = next(w for w in (2, 3, 5, 7, 1) if ds.n_windows % w == 0)
    # one epoch read by all ranks: disjoint windows tiling the train region at one phase
    assert len(_shifts(ds, _epoch(ds, world))) == 1
    # each epoch (step e with batch = W, one rank) draws its own phase
    phases = [_shifts(ds, ds.train_batch(e, ds.n_windows)) for e in range(5)]
    assert all(len(p) == 1 for p in phases) and len({p[0] for p in phases}) > 1


def test_windows_never_leave_train_region(text_file):
    ds = TextDataset(text_file, seq_len=24, val_frac=0.1, test_frac=0.1)
    train_text = ds.decode(ds.split("train").reshape(-1))
    for step in range(0, 60, 7):
        for w in ds.train_batch(step, 16):
            assert ds.decode(w) in train_text


# ---- rebuilding from state ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_state_rebuild_identical(text_file, kind):
    ds = TextDataset(text_file, seq_len=32, tokenizer=kind, bpe_vocab_size=300, seed=4)
    st = json.loads(json.dumps(ds.state()))
    assert st["kwargs"]["path"] == str(text_file)
    assert st["kwargs"]["tokenizer_state"]["type"] == kind
    again = TextDataset.from_state(st)
    assert again.vocab_size == ds.vocab_size and again.tokenizer_state == ds.tokenizer_state
    for k in ("train", "val", "test"):
        assert torch.equal(again.split(k), ds.split(k))
    assert torch.equal(again.train_batch(5, 4, 1, 2), ds.train_batch(5, 4, 1, 2))
    if kind == "bpe":
        assert ds.decode(ds.split("val")[0]) == ds.decode(again.split("val")[0])


def test_saved_vocabulary_on_new_text(tmp_path, text_file):
    ds = TextDataset(text_file, seq_len=8)
    other = tmp_path / "other.txt"
    other.write_text("The cat sang.\n" * 10, encoding="utf-8")  # only known characters
    ok = TextDataset(other, seq_len=8, tokenizer_state=ds.tokenizer_state)
    assert ok.vocab_size == ds.vocab_size  # the saved vocabulary, not one fit to `other`
    assert torch.equal(ok.encode("cat"), ds.encode("cat"))
    other.write_text("The cat sang in Q.\n" * 10, encoding="utf-8")
    with pytest.raises(ValueError, match="'Q'.*vocabulary mismatch"):
        TextDataset(other, seq_len=8, tokenizer_state=ds.tokenizer_state)
    with pytest.raises(ValueError, match="tokenizer"):
        TextDataset(other, seq_len=8, tokenizer="bpe", tokenizer_state=ds.tokenizer_state)


def test_char_dataset_is_fast_on_megabytes(tmp_path):
    p = tmp_path / "big.txt"
    p.write_text(corpus(60000), encoding="utf-8")  # ~3.9 MB
    t0 = time.perf_counter()
    ds = TextDataset(p, seq_len=256)
    elapsed = time.perf_counter() - t0
    assert ds.n_blocks("train") > 14000
    assert elapsed < 5.0  # ~0.2 s vectorised; a per-character Python loop is far slower
