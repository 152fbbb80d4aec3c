"""Tokenized corpora on disk: a corpus encoded once into a memory-mapped token file with a manifest
(tokenizer, vocabulary size, token and document counts, document boundaries, and a fingerprint of
the source: file sizes, modification times and a content hash), so that a corpus of any size is
read in bounded memory and no run tokenizes it twice.

It knows text sources (a file, a folder, a glob, `.jsonl` / `.parquet` with a text column) and
tokenizers; nothing of models, methods or training. Written here rather than taken from a library:
`datasets.map` holds Arrow tables and re-tokenizes per configuration, nanoGPT's prepare scripts
are per corpus; what we need is one streaming pass into a flat id file that numpy maps.

Layout of a prepared corpus (`cache_dir/<key>/`):
    tokens.bin      the documents' ids end to end (uint16 when the vocabulary fits, else uint32),
                    a separator between documents (the tokenizer's EOS/SEP, or a newline)
    docs.npy        (D + 1,) int64 token offsets: document d spans [docs[d], docs[d + 1])
    manifest.json   tokenizer state, vocab_size, dtype, n_tokens, n_docs, source fingerprint
One token file rather than shards: the operating system pages a memory map in and out at any
size, and the `tokenizers` library already encodes each chunk on every core.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catdiff.data.tokenizers import Tokenizer, make_tokenizer, tokenizer_from_state
from catdiff.errors import DataError, MissingExtra

__all__ = ["Corpus", "Source", "default_cache_dir", "file_source", "fingerprint_changed", "prepare", "source_files"]

CHUNK_CHARS = 8 << 20  # characters encoded per step: memory is bounded by this, not by the corpus
TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")


def default_cache_dir() -> Path:
    """$CATDIFF_CACHE, else ~/.cache/catdiff/corpora."""
    return Path(os.environ.get("CATDIFF_CACHE") or Path.home() / ".cache" / "catdiff" / "corpora")


def source_files(path: str | Path) -> list[Path]:
    """The files of a source, absolute and sorted: a file, a folder (its *.txt, *.jsonl, *.parquet),
    or a glob pattern."""
    p = Path(path).expanduser()
    if any(c in str(path) for c in "*?["):
        files = [Path(f) for f in sorted(glob.glob(str(p), recursive=True)) if Path(f).is_file()]
    elif p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in TEXT_SUFFIXES and f.is_file())
    elif p.is_file():
        files = [p]
    else:
        raise FileNotFoundError(f"text data not found: {str(path)!r} (a file, a folder or a glob)")
    if not files:
        raise ValueError(f"{str(path)!r} matches no *.txt, *.jsonl or *.parquet file")
    return [f.resolve() for f in files]


def _identity(files: list[Path]) -> list[dict]:
    return [{"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]


def _documents(f: Path, text_field: str) -> Iterator[Iterator[str]]:
    """Each document of a file as an iterator of text pieces of at most ~CHUNK_CHARS characters
    (a .txt file is one document, read in whole lines; .jsonl / .parquet rows are documents)."""
    if f.suffix == ".jsonl":
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield iter([json.loads(line)[text_field]])
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise ValueError(f"{f}:{n}: not a JSON object with a {text_field!r} field") from None
        return
    if f.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MissingExtra("reading .parquet needs pyarrow: pip install 'catdiff[hf]'") from None
        pf = pq.ParquetFile(f)
        if text_field not in pf.schema_arrow.names:
            raise ValueError(f"{f}: no {text_field!r} column (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                yield iter([text or ""])
        return
    yield _text_pieces(f)


def _text_pieces(f: Path) -> Iterator[str]:
    try:
        with open(f, encoding="utf-8", newline="") as fh:
            carry = ""
            while True:
                block = fh.read(CHUNK_CHARS)
                if not block:
                    break
                block = carry + block
                cut = block.rfind("\n") + 1  # whole lines only: BPE never merges across them
                if cut == 0:
                    carry = block
                    continue
                carry = block[cut:]
                yield block[:cut]
            if carry:
                yield carry
    except UnicodeDecodeError as e:
        raise ValueError(f"file {str(f)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _pieces(files: list[Path], text_field: str, max_chars: int | None) -> Iterator[tuple[int, str]]:
    """(document number, text piece) over every document of every file, the first max_chars only."""
    yield from limit_chars(((d, piece) for d, doc in enumerate(doc for f in files for doc in _documents(f, text_field))
                            for piece in doc), max_chars)


def limit_chars(pieces: Iterator[tuple[int, str]], max_chars: int | None) -> Iterator[tuple[int, str]]:
    """The (document, piece) stream cut after max_chars characters of text (None: all)."""
    left = max_chars
    for d, piece in pieces:
        if left is not None:
            piece = piece[:left]
            left -= len(piece)
        if piece:
            yield d, piece
        if left == 0:
            return


@dataclass
class Source:
    """Documents to tokenize: `pieces()` yields (document number, text piece); `identity` keys the
    cache and is compared to tell whether the source changed; `spec` rebuilds the source later
    (kind "files", or a kind registered in SOURCES by another module, e.g. "hub")."""


    spec: dict
    identity: list
    pieces: Callable[[], Iterator[tuple[int, str]]]
    joiner: str = "\n"  # between documents when the tokenizer has no EOS/SEP token


def file_source(path: str | Path, text_field: str = "text", max_chars: int | None = None) -> Source:
    """A file, a folder or a glob (see source_files) as a Source."""
    files = source_files(path)
    return Source({"kind": "files", "path": str(path), "text_field": text_field, "max_chars": max_chars},
                  _identity(files), lambda: _pieces(files, text_field, max_chars))


# source kind → a function of its spec that rebuilds it (for the fingerprint check of a saved run)
SOURCES: dict[str, Callable[[dict], Source]] = {
    "files": lambda spec: file_source(spec["path"], spec["text_field"], spec["max_chars"])}


@dataclass
class Corpus:
    """A prepared corpus: its folder, manifest and token stream (a read-only memory map)."""

    folder: Path
    manifest: dict

    @property
    def tokens(self) -> np.ndarray:
        return np.memmap(self.folder / "tokens.bin", dtype=self.manifest["dtype"], mode="r",
                         shape=(self.manifest["n_tokens"],))

    @property
    def docs(self) -> np.ndarray:
        return np.load(self.folder / "docs.npy", mmap_mode="r")

    @property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_state(self.manifest["tokenizer"])

    @classmethod
    def open(cls, folder: str | Path) -> Corpus:
        folder = Path(folder)
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"prepared corpus {folder} is missing or corrupt ({type(e).__name__})") from None
        return cls(folder, manifest)


def _key(identity: list, tokenizer: str, tokenizer_state: dict | None) -> str:
    blob = json.dumps([identity, tokenizer, tokenizer_state], sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()


def prepare(source: Source | str | Path, tokenizer: str = "char", *, tokenizer_state: dict | None = None,
            cache_dir: str | Path | None = None, text_field: str = "text", max_chars: int | None = None,
            bpe_vocab_size: int = 1024, progress: bool = False) -> Corpus:
    """The prepared corpus of `source` (a Source, or a path for `file_source(path, text_field,
    max_chars)`) under `tokenizer` ('char', 'bpe' or a standard tokenizer, see
    tokenizers.make_tokenizer; `tokenizer_state` restores a saved one), from the cache when it is
    there, else tokenized now in one streaming pass (two for 'char' and 'bpe', which first fit
    their vocabulary). Memory stays bounded by CHUNK_CHARS whatever the corpus size."""
    if not isinstance(source, Source):
        source = file_source(source, text_field, max_chars)
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    folder = root / _key([source.spec, source.identity], tokenizer, tokenizer_state)
    if (folder / "manifest.json").is_file():
        return Corpus.open(folder)
    t0 = time.perf_counter()
    if tokenizer_state is not None:
        tok = tokenizer_from_state(tokenizer_state)
    else:  # 'char' and 'bpe' learn from the corpus itself (a pass of their own); others load
        texts = itertools.chain((p for _, p in source.pieces()), [source.joiner])  # the separator is text too
        tok = make_tokenizer(tokenizer, texts, bpe_vocab_size)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(root / f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = _encode(source, tok, tmp, progress)
        manifest.update({"source": {**source.spec, "identity": source.identity},
                         "seconds": time.perf_counter() - t0})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        try:
            tmp.rename(folder)
        except OSError:  # another process prepared it first: theirs is as good
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Corpus.open(folder)


def _encode(source: Source, tok, out: Path, progress: bool) -> dict:
    from tqdm.auto import tqdm

    dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
    sep = np.array([tok.eos_id], dtype=dtype) if tok.eos_id is not None else _joiner(tok, source.joiner).astype(dtype)
    total = sum(f.get("size", 0) for f in source.identity if isinstance(f, dict)) or None
    digest = hashlib.blake2b(digest_size=16)
    docs, n_tokens, n_chars, current = [0], 0, 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="prepare", disable=not progress, mininterval=1.0)
    with open(out / "tokens.bin", "wb") as fh:
        for d, piece in source.pieces():
            if d != current:  # a new document: separator, then its start offset
                sep.tofile(fh)
                n_tokens += len(sep)
                docs.append(n_tokens)
                current = d
            raw = piece.encode("utf-8")
            digest.update(raw)
            ids = tok.encode(piece)
            if ids.size and (ids.min() < 0 or ids.max() >= tok.vocab_size):
                raise ValueError(f"the tokenizer produced ids outside [0, {tok.vocab_size})")
            ids.astype(dtype).tofile(fh)
            n_tokens += len(ids)
            n_chars += len(piece)
            bar.update(len(raw))
            bar.set_postfix(tokens_per_s=f"{n_tokens / max(time.perf_counter() - t0, 1e-9):.3g}", refresh=False)
        fh.flush()
        os.fsync(fh.fileno())
    bar.close()
    if n_tokens == 0:
        raise ValueError("the corpus holds no text")
    docs.append(n_tokens)
    np.save(out / "docs.npy", np.asarray(docs, dtype=np.int64))
    return {"tokenizer": tok.state(), "vocab_size": tok.vocab_size, "dtype": np.dtype(dtype).name,
            "n_tokens": n_tokens, "n_docs": len(docs) - 1, "n_chars": n_chars, "content_hash": digest.hexdigest(),
            "encode_seconds": time.perf_counter() - t0}


def _joiner(tok, joiner: str) -> np.ndarray:
    """The ids of the source's joiner (the separator of tokenizers without EOS), or none if the
    tokenizer cannot encode it."""
    try:
        return tok.encode(joiner) if joiner else np.zeros(0, dtype=np.int32)
    except ValueError:
        return np.zeros(0, dtype=np.int32)


def fingerprint_changed(manifest: dict) -> str | None:
    """Why the source a manifest was prepared from no longer matches it (None: unchanged). A source
    whose identity (file sizes and modification times) is unchanged is trusted; otherwise its
    content is hashed again and compared."""
    spec = manifest["source"]
    try:
        source = SOURCES[spec["kind"]](spec)
    except (FileNotFoundError, ValueError, DataError) as e:
        return str(e).splitlines()[0]
    if source.identity == spec["identity"]:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for _, piece in source.pieces():
        digest.update(piece.encode("utf-8"))
    return None if digest.hexdigest() == manifest["content_hash"] else "its content changed since it was prepared"
