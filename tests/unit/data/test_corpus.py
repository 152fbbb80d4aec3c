"""Prepared corpora (data/corpus.py), standard tokenizers (data/tokenizers.py) and the text
datasets built on them: tokens equal to encoding the text whole, bounded-memory streaming, the
cache, document boundaries, fingerprints, padding, and runs that need no corpus to decode."""

import json

import numpy as np
import pytest
import torch

from catdiff.data import corpus as corpus_mod
from catdiff.data.corpus import fingerprint_changed, prepare
from catdiff.data.text import TextDataset
from catdiff.data.tokenizers import CharTokenizer, HFTokenizer, load_pretrained, tokenizer_from_state
from catdiff.errors import DataError

VERSES = [f"verse {i}: and the light was {'good' if i % 3 else 'very good'} upon the waters\n" for i in range(400)]


def gpt2_style(tmp_path, text: str):
    """A tiny byte-level BPE with GPT-2's <|endoftext|>, saved as tokenizer.json and as vocab.json + merges.txt."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(text.splitlines(keepends=True), trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    folder = tmp_path / "gpt2files"
    folder.mkdir()
    tok.model.save(str(folder))  # vocab.json + merges.txt, the files GPT-2 ships
    return tmp_path / "tokenizer.json", folder


@pytest.fixture
def corpus_file(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text("".join(VERSES), encoding="utf-8")
    return f


def test_prepared_tokens_equal_encoding_the_whole_text_and_the_cache_is_reused(corpus_file, tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK_CHARS", 1000)  # many chunks: streaming must not change a token
    c = prepare(corpus_file, "char", cache_dir=tmp_path / "cache")
    text = corpus_file.read_text()
    tok = CharTokenizer.from_text(text)
    assert np.array_equal(np.asarray(c.tokens), tok.encode(text))
    assert c.manifest["n_tokens"] == len(text) and c.manifest["dtype"] == "uint16" and c.manifest["n_docs"] == 1
    assert isinstance(c.tokens, np.memmap)
    again = prepare(corpus_file, "char", cache_dir=tmp_path / "cache")
    assert again.folder == c.folder and again.manifest["content_hash"] == c.manifest["content_hash"]


def test_documents_are_separated_by_eos_and_jsonl_parquet_and_globs_are_sources(tmp_path):
    path, _ = gpt2_style(tmp_path, "".join(VERSES))
    docs = ["in the beginning", "was the word", "and the word was light"]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    c = prepare(tmp_path / "d.jsonl", str(path), cache_dir=tmp_path / "cache")
    tok = load_pretrained(str(path))
    eos = tok.eos_id
    assert eos is not None
    ids, offsets = np.asarray(c.tokens), np.asarray(c.docs)
    assert len(offsets) == len(docs) + 1 and offsets[-1] == len(ids)
    for d, text in enumerate(docs):
        span = ids[offsets[d]:offsets[d + 1]]
        body = span[:-1] if d < len(docs) - 1 else span
        assert np.array_equal(body, tok.encode(text)) and (d == len(docs) - 1 or span[-1] == eos)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": docs}), tmp_path / "d.parquet")
    p = prepare(tmp_path / "d.parquet", str(path), cache_dir=tmp_path / "cache")
    assert np.array_equal(np.asarray(p.tokens), ids)
    (tmp_path / "parts").mkdir()
    for i, v in enumerate(VERSES[:3]):
        (tmp_path / "parts" / f"{i}.txt").write_text(v)
    g = prepare(str(tmp_path / "parts" / "*.txt"), "char", cache_dir=tmp_path / "cache")
    assert g.manifest["n_docs"] == 3
    assert CharTokenizer(g.manifest["tokenizer"]["chars"]).decode(np.asarray(g.tokens)) == "\n".join(VERSES[:3])


def test_gpt2_files_and_tokenizer_json_are_the_same_tokenizer(tmp_path):
    path, folder = gpt2_style(tmp_path, "".join(VERSES))
    a, b = load_pretrained(str(path)), load_pretrained(str(folder))
    text = "".join(VERSES[:20]) + "unseen wörds ✓"
    assert np.array_equal(a.encode(text), b.encode(text)) and a.decode(a.encode(text)) == text
    assert a.eos_id == b.eos_id is not None
    restored = tokenizer_from_state(json.loads(json.dumps(a.state())))
    assert isinstance(restored, HFTokenizer) and np.array_equal(restored.encode(text), a.encode(text))
    ids = np.concatenate([a.encode("the light"), [a.eos_id, a.vocab_size, a.vocab_size + 1]])
    assert a.decode(ids) == "the light"  # special tokens and ids past the vocabulary (the mask) are skipped


def test_a_hub_name_offline_and_not_cached_fails_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(DataError, match=r"data.tokenizer='gpt2' is not in the local Hugging Face cache.*"
                                        r"data.tokenizer=/path/to/tokenizer.json") as e:
        load_pretrained("gpt2")
    assert "\n" not in str(e.value)


def test_fingerprint_trusts_a_touch_and_catches_an_edit(corpus_file, tmp_path):
    c = prepare(corpus_file, "char", cache_dir=tmp_path / "cache")
    assert fingerprint_changed(c.manifest) is None
    corpus_file.write_text(corpus_file.read_text())  # same bytes, new modification time
    assert fingerprint_changed(c.manifest) is None
    corpus_file.write_text(corpus_file.read_text().replace("light", "night"))
    assert fingerprint_changed(c.manifest) == "its content changed since it was prepared"
    corpus_file.unlink()
    assert "not found" in fingerprint_changed(c.manifest)


def test_wrap_dataset_matches_packing_the_text_in_memory(corpus_file):
    ds = TextDataset(corpus_file, seq_len=16, val_frac=0.1, test_frac=0.1, seed=1)
    tok = CharTokenizer.from_text(corpus_file.read_text())
    ids = tok.encode(corpus_file.read_text())
    n = len(ids) // 16
    blocks = torch.from_numpy(ids[:n * 16].reshape(n, 16).astype(np.int64))
    a, b = ds.regions["val"]
    t = ds.regions["test"][0]
    assert torch.equal(ds.split("val"), blocks[a:b]) and torch.equal(ds.head("test", 3), blocks[t:t + 3])
    assert ds.train_batch(5, 4, 0, 1).shape == (4, 16)


def test_pad_packing_rows_are_whole_documents(tmp_path):
    docs = ["a b", "c d e f g h i j", "k"] * 10
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    ds = TextDataset(tmp_path / "d.jsonl", seq_len=6, packing="pad", val_frac=0.1, test_frac=0.1)
    assert ds.pad_id == ds.tokenizer.vocab_size == ds.vocab_size - 1  # char has no PAD: one added after it
    rows = ds.split("train")
    assert rows.shape == (24, 6)
    assert ds.decode(rows[0]) == "a b\n" and (rows[0, 4:] == ds.pad_id).all()  # the document, its separator, PAD
    assert ds.decode(rows[1]) == "c d e "  # truncated to seq_len
    batch = ds.train_batch(0, 8)
    assert batch.shape == (8, 6) and int(batch.max()) <= ds.pad_id


def test_a_saved_run_decodes_without_its_corpus_and_refuses_a_changed_one(corpus_file, tmp_path):
    ds = TextDataset(corpus_file, seq_len=16, token_cache=str(tmp_path / "cache"))
    state = json.loads(json.dumps(ds.state()))
    assert state["kwargs"]["path"] == str(corpus_file.resolve())
    moved = corpus_file.with_name("moved.txt")
    corpus_file.rename(moved)
    again = TextDataset.from_state(state)  # no corpus needed to rebuild, encode or decode
    assert again.vocab_size == ds.vocab_size and again.decode(again.encode("the light")) == "the light"
    assert torch.equal(again.split("test"), ds.split("test"))  # from the cache
    moved.rename(corpus_file)
    corpus_file.write_text(corpus_file.read_text().replace("waters", "depths"))
    for f in (tmp_path / "cache").rglob("*"):  # the cache is gone too
        if f.is_file():
            f.unlink()
    with pytest.raises(DataError, match="its content changed since it was prepared") as e:
        TextDataset.from_state(state).split("test")
    assert "--allow-changed-data" in str(e.value) and "\n" not in str(e.value)
    changed = TextDataset.from_state({**state, "kwargs": {**state["kwargs"], "allow_changed": True}})
    assert changed.split("test").shape[1] == 16
