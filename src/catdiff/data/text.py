"""Text corpora as packed token blocks: character and byte-level BPE tokenizers, local files.

Turns raw text into fixed-length (L,) blocks of token ids with deterministic splits and
(seed, step, rank)-addressable training batches; it knows nothing of models or diffusion.

Shapes: B = batch, L = `seq_len`, K = vocabulary size, N = number of blocks in a split.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from catdiff.data.base import CategoricalDataset
from catdiff.data.tokenizers import (  # noqa: F401  (re-exported: the tokenizers' old home)
    BPETokenizer,
    CharTokenizer,
    HFTokenizer,
    Tokenizer,
    make_tokenizer,
    tokenizer_from_state,
)
from catdiff.errors import DataError

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "PackedTextDataset",
    "TextDataset",
    "check_batch_args",
    "check_fracs",
    "check_seed",
    "check_text_args",
    "epoch_stream",
    "make_tokenizer",
    "pack_blocks",
    "read_text",
    "split_counts",
    "stream_start",
    "tokenizer_from_state",
]

# ---------------------------------------------------------------------------------------------
# Deterministic sampling helpers (shared by every dataset that walks epochs of a finite set)
# ---------------------------------------------------------------------------------------------


def check_batch_args(step: int, batch_size: int, rank: int, world: int) -> None:
    """Validate `train_batch` arguments with one-line errors naming the bad one."""
    if int(step) != step or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if int(world) != world or world < 1:
        raise ValueError(f"world must be an integer >= 1, got {world!r}")
    if int(rank) != rank or not 0 <= rank < world:
        raise ValueError(f"rank must be an integer in [0, world={world}), got {rank!r}")


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


@functools.lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n)
    perm.setflags(write=False)
    return perm


def epoch_stream(n: int, seed: int, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Items [start, start + count) of the endless stream perm_0 | perm_1 | perm_2 | ...

    perm_e is a permutation of range(n) seeded by (seed, e). Returns (epoch, index), both (count,)
    int64. A training step with global batch G = batch_size * world reads positions
    [step * G, (step + 1) * G) and rank r takes the r-th slice of batch_size, so ranks read
    disjoint items whenever G <= n (every item once per epoch). The only loop is over the few
    epochs a batch touches, never over examples.
    """
    pos = int(start) + np.arange(count, dtype=np.int64)
    epoch = pos // n
    index = np.empty(count, dtype=np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        index[sel] = _epoch_permutation(n, seed, int(e))[pos[sel] - int(e) * n]
    return epoch, index


def stream_start(step: int, batch_size: int, rank: int, world: int) -> int:
    """Position in the epoch stream of rank `rank`'s first item at optimisation step `step`."""
    return (int(step) * int(world) + int(rank)) * int(batch_size)


# ---------------------------------------------------------------------------------------------
# Reading and packing
# ---------------------------------------------------------------------------------------------


def read_text(path: str | Path, max_chars: int | None = None) -> str:
    """The text of a file, or of all `*.txt` files of a folder (sorted, joined by newlines)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"text data not found: {str(path)!r} (a .txt file or a folder)")
    files = sorted(p.glob("*.txt")) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"path {str(path)!r} is a folder without *.txt files")
    parts = []
    for f in files:
        try:
            parts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(
                f"file {str(f)!r} is not UTF-8 text ({e.reason} at byte {e.start})"
            ) from None
    text = "\n".join(parts)
    if max_chars is not None:
        text = text[:max_chars]
    if not text:
        raise ValueError(f"path {str(path)!r} holds no text")
    return text


def pack_blocks(ids: np.ndarray, seq_len: int) -> np.ndarray:
    """(N, L) view of a token stream cut into N = len(ids) // L blocks; drops the ragged tail."""
    n = len(ids) // seq_len
    return np.asarray(ids)[: n * seq_len].reshape(n, seq_len)


def split_counts(n: int, val_frac: float, test_frac: float) -> tuple[int, int, int]:
    """(n_train, n_val, n_test): round(frac * n) held-out items, at least 1 when frac > 0."""
    n_val = max(1, round(val_frac * n)) if val_frac > 0 else 0
    n_test = max(1, round(test_frac * n)) if test_frac > 0 else 0
    return n - n_val - n_test, n_val, n_test


def check_fracs(val_frac: float, test_frac: float) -> None:
    for name, v in (("val_frac", val_frac), ("test_frac", test_frac)):
        if not 0.0 <= float(v) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    if val_frac + test_frac >= 1.0:
        raise ValueError(f"val_frac + test_frac must be < 1, got {val_frac} + {test_frac}")


def check_text_args(seq_len, tokenizer, val_frac, test_frac, seed) -> None:
    """Validate the arguments every packed text dataset shares (cheap; before reading data)."""
    _check_pos_int("seq_len", seq_len)
    if not isinstance(tokenizer, str) or not tokenizer:
        raise ValueError(f"tokenizer must be 'char', 'bpe' or a standard tokenizer's path or name, got {tokenizer!r}")
    check_fracs(val_frac, test_frac)
    check_seed(seed)


def _check_pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


PACKINGS = ("wrap", "pad")


class PackedTextDataset(CategoricalDataset):
    """Token streams → fixed-length (L,) rows with contiguous train | val | test regions.

    `texts` maps "train" (required), and optionally "val" / "test", to strings (subclasses may
    instead attach token streams, e.g. memory maps, with `_attach`). A held-out split not given is
    carved from the END of the train rows: the last `test_frac` of them is test, the `val_frac`
    before it val. The tokenizer is fit on all the texts unless `tokenizer_state` restores a saved
    one, or `tokenizer` names a standard one (tokenizers.load_pretrained).

    packing="wrap" (MDLM/SEDD on OpenWebText): rows are length-L blocks of the token stream, and
    training reads windows of the train stream; each epoch is a seeded permutation of window
    indices with a seeded random phase: with `random_offset=True` window j of epoch e starts at
    token shift_e + j * L, shift_e ~ U{0..L-1} (N_train - 1 windows an epoch, every window inside
    the train region); with `random_offset=False` windows are the train blocks themselves.
    packing="pad" (one document per row, e.g. LM1B): row d is document d (its separator included)
    truncated to L and padded with the tokenizer's PAD token, or with an id added after the
    vocabulary when it has none (`pad_id`); the model learns where a document ends.
    Ranks take disjoint slices of every global batch.
    """

    name = "text"
    kind = "text"

    def __init__(
        self,
        texts: Mapping[str, str],
        seq_len: int = 256,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        val_frac: float = 0.01,
        test_frac: float = 0.01,
        seed: int = 0,
        tokenizer_state: Mapping | None = None,
        random_offset: bool = True,
    ):
        self._setup(seq_len, tokenizer, bpe_vocab_size, val_frac, test_frac, seed, random_offset, "wrap")
        unknown = set(texts) - {"train", "val", "test"}
        if "train" not in texts or unknown:
            raise ValueError(
                f"texts must map 'train' (+ optional 'val', 'test'), got {sorted(texts)}"
            )
        if tokenizer_state is not None:
            tok = tokenizer_from_state(tokenizer_state)
        else:
            fit_text = "\n".join(texts[k] for k in ("train", "val", "test") if k in texts)
            tok = make_tokenizer(tokenizer, fit_text, bpe_vocab_size)
        self._set_tokenizer(tok)
        self._attach({k: tok.encode(t).astype(self._dtype) for k, t in texts.items()})

    # ---- construction ---------------------------------------------------------------------
    def _setup(self, seq_len, tokenizer, bpe_vocab_size, val_frac, test_frac, seed, random_offset, packing):
        check_text_args(seq_len, tokenizer, val_frac, test_frac, seed)
        if packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {packing!r}")
        self.seq_len, self.seed = int(seq_len), int(seed)
        self.val_frac, self.test_frac = float(val_frac), float(test_frac)
        self.bpe_vocab_size = bpe_vocab_size
        self.random_offset = bool(random_offset)
        self.packing = packing
        self._attached = False

    def _set_tokenizer(self, tok: Tokenizer) -> None:
        self.tokenizer = tok
        # padding needs a PAD id: the tokenizer's own, else one added after its vocabulary
        extra_pad = self.packing == "pad" and tok.pad_id is None
        self.pad_id = (tok.vocab_size if extra_pad else tok.pad_id) if self.packing == "pad" else None
        self.vocab_size = tok.vocab_size + int(extra_pad)
        self._dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.int32  # compact storage

    def _attach(self, streams: Mapping[str, np.ndarray], docs: Mapping[str, np.ndarray] | None = None) -> None:
        """Rows and regions from token streams ("train", optional "val"/"test"; memory maps are
        only viewed, never copied, when train is the only stream); `docs` maps each stream to its
        (D + 1,) document offsets, for packing="pad"."""
        if self.packing == "pad":
            if docs is None or set(docs) != set(streams):
                raise ValueError("packing='pad' needs the document offsets of every stream")
            n_docs = {k: len(v) - 1 for k, v in docs.items()}
            # a split the source lacks is carved from the last documents of train
            n_train, n_val, n_test = split_counts(n_docs["train"], 0 if "val" in docs else self.val_frac,
                                                  0 if "test" in docs else self.test_frac)
            sizes = [n_train, n_docs.get("val", n_val), n_docs.get("test", n_test)]
        else:
            blocks = {k: pack_blocks(v, self.seq_len) for k, v in streams.items()}
            tr = blocks["train"]
            n_train, n_val, n_test = split_counts(len(tr), 0 if "val" in blocks else self.val_frac,
                                                  0 if "test" in blocks else self.test_frac)
            if len(blocks) == 1:  # one stream: regions are contiguous rows of it (a view)
                self._blocks, sizes = tr, [n_train, n_val, n_test]
            else:
                parts = [tr[:n_train], blocks.get("val", tr[n_train:n_train + n_val]),
                         blocks.get("test", tr[n_train + n_val:])]
                sizes = [len(p) for p in parts]
                self._blocks = np.ascontiguousarray(np.concatenate(parts))  # (N_total, L)
            self._train_stream = self._blocks[:sizes[0]].reshape(-1)  # train tokens, contiguous
        if sizes[0] < 1:
            raise ValueError(
                f"text too short: {sum(sizes)} rows of seq_len={self.seq_len} leave none for "
                f"training after val_frac/test_frac; give more text or a smaller seq_len"
            )
        edges = np.cumsum([0, *sizes])
        self.regions = {k: (int(edges[i]), int(edges[i + 1])) for i, k in enumerate(("train", "val", "test"))}
        if self.packing == "pad":  # region → (stream, offsets, first global row of that stream)
            self._pad_src = {k: (streams[k], docs[k], self.regions[k][0]) if k in streams and k != "train"
                             else (streams["train"], docs["train"], 0) for k in self.regions}
        windows = self.packing == "wrap" and self.random_offset and sizes[0] > 1
        self.n_windows = sizes[0] - 1 if windows else sizes[0]
        self._attached = True

    def _data(self) -> None:
        """Attach the token streams if not done yet (subclasses that load lazily override)."""
        if not self._attached:
            raise RuntimeError("dataset has no token data attached")

    # ---- contract -------------------------------------------------------------------------
    def train_batch(
        self, step: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> torch.Tensor:
        check_batch_args(step, batch_size, rank, world)
        self._data()
        start = stream_start(step, batch_size, rank, world)
        epoch, j = epoch_stream(self.n_windows, self.seed, start, batch_size)
        if self.packing == "pad":
            return torch.from_numpy(self._rows("train", j))
        first = j * self.seq_len  # (B,) first token of each window
        if self.random_offset and self.n_windows < self.n_blocks("train"):
            first = first + self._epoch_shifts(epoch)
        idx = first[:, None] + np.arange(self.seq_len)  # (B, L)
        return torch.from_numpy(self._train_stream[idx].astype(np.int64))

    def _rows(self, region: str, rows: np.ndarray) -> np.ndarray:
        """(B, L) int64 documents `rows` of `region` (packing="pad"), each truncated to L and
        padded, gathered without a Python loop."""
        stream, docs, first = self._pad_src[region]
        local = np.asarray(rows) - first
        starts, ends = docs[local], docs[local + 1]
        idx = starts[:, None] + np.arange(self.seq_len)  # (B, L)
        inside = idx < ends[:, None]
        vals = stream[np.minimum(idx, len(stream) - 1)].astype(np.int64)
        return np.where(inside, vals, self.pad_id)

    def _epoch_shifts(self, epoch: np.ndarray) -> np.ndarray:
        uniq, inv = np.unique(epoch, return_inverse=True)
        shifts = np.array(
            [
                np.random.default_rng(np.random.SeedSequence([self.seed, int(e), 1])).integers(
                    self.seq_len
                )
                for e in uniq
            ],
            dtype=np.int64,
        )
        return shifts[inv]

    def split(self, name: str) -> torch.Tensor:
        """(N, L) int64 rows of region `name` in {"train", "val", "test"}."""
        return self.head(name, None)

    def head(self, name: str, n: int | None) -> torch.Tensor:
        """The first n rows of region `name`, read without touching the rest of the corpus."""
        a, b = self._region(name)
        b = b if n is None else min(b, a + n)
        if self.packing == "pad":
            return torch.from_numpy(self._rows(name, np.arange(a, b)))
        return torch.from_numpy(self._blocks[a:b].astype(np.int64))

    def n_blocks(self, name: str) -> int:
        a, b = self._region(name)
        return b - a

    def _region(self, name: str) -> tuple[int, int]:
        self._data()
        if name not in self.regions:
            raise ValueError(f"split must be one of {sorted(self.regions)}, got {name!r}")
        return self.regions[name]

    def encode(self, text: str) -> torch.Tensor:
        """(n,) int64 ids of `text` under this dataset's tokenizer."""
        return torch.from_numpy(self.tokenizer.encode(text).astype(np.int64))

    def decode(self, x) -> str:
        """Text of one row; ids outside the tokenizer (PAD added by packing, the mask) are skipped."""
        arr = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x).astype(np.int64)
        return self.tokenizer.decode(arr[(arr >= 0) & (arr < self.tokenizer.vocab_size)])

    @property
    def tokenizer_state(self) -> dict:
        return self.tokenizer.state()

    def _kwargs(self) -> dict:
        return {
            "seq_len": self.seq_len,
            "tokenizer": self.tokenizer.kind if self.tokenizer.kind in ("char", "bpe") else self.tokenizer.name,
            "bpe_vocab_size": self.bpe_vocab_size,
            "val_frac": self.val_frac,
            "test_frac": self.test_frac,
            "seed": self.seed,
            "random_offset": self.random_offset,
            "tokenizer_state": self.tokenizer.state(),
        }

    def state(self) -> dict:
        """Base facts + `kwargs` such that `type(self)(**state["kwargs"])` rebuilds this dataset."""
        return {**super().state(), "kind": self.kind, "kwargs": self._kwargs()}

    @classmethod
    def from_state(cls, state: Mapping):
        return cls(**state["kwargs"])


class TextDataset(PackedTextDataset):
    """A local corpus of any size: `path` is a text file, a folder (its *.txt, *.jsonl and
    *.parquet files, sorted), or a glob; .jsonl/.parquet rows are documents (`text_field`), a .txt
    file is one. The corpus is tokenized once into a memory-mapped cache (data/corpus.py; `catdiff
    prepare` does it ahead of training; `token_cache` overrides $CATDIFF_CACHE) and read window by
    window, so memory does not grow with
    its size. Rows, splits and batches as in PackedTextDataset; `max_chars` keeps only the first
    characters (quick experiments).

    A run stands on its own: the saved state holds the tokenizer and the prepared corpus's
    manifest, so a rebuilt dataset decodes and encodes without the corpus, and opens the data only
    when rows are asked for — from the cache, or from the corpus after its fingerprint is checked.
    A corpus that changed since training is refused unless `allow_changed` is set.
    """

    def __init__(
        self,
        path: str | Path,
        seq_len: int = 256,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        val_frac: float = 0.01,
        test_frac: float = 0.01,
        seed: int = 0,
        tokenizer_state: Mapping | None = None,
        max_chars: int | None = None,
        random_offset: bool = True,
        packing: str = "wrap",
        text_field: str = "text",
        token_cache: str | None = None,
        manifest: Mapping | None = None,
        allow_changed: bool = False,
    ):
        from catdiff.data.corpus import prepare

        if max_chars is not None:
            max_chars = _check_pos_int("max_chars", max_chars)
        self._setup(seq_len, tokenizer, bpe_vocab_size, val_frac, test_frac, seed, random_offset, packing)
        self.path = str(Path(path).expanduser().resolve()) if manifest is None else str(path)
        self.max_chars, self.text_field, self.allow_changed = max_chars, text_field, bool(allow_changed)
        self.token_cache = None if token_cache is None else str(Path(token_cache).expanduser().resolve())
        if manifest is not None and tokenizer_state is not None:  # a saved run: open the data lazily
            self.manifest = dict(manifest)
            self._set_tokenizer(tokenizer_from_state(tokenizer_state))
            return
        corpus = prepare(self.path, tokenizer, tokenizer_state=tokenizer_state, cache_dir=self.token_cache,
                         text_field=text_field, max_chars=max_chars, bpe_vocab_size=bpe_vocab_size)
        self._set_tokenizer(corpus.tokenizer)
        self._attach_corpus(corpus)

    def _attach_corpus(self, corpus) -> None:
        # the manifest without its tokenizer (saved once, as tokenizer_state) plus where it lies
        self.manifest = {**{k: v for k, v in corpus.manifest.items() if k != "tokenizer"},
                         "folder": str(corpus.folder)}
        self._attach({"train": corpus.tokens}, {"train": corpus.docs} if self.packing == "pad" else None)

    def _data(self) -> None:
        """Find the run's data: its prepared cache if it still holds the same tokens, else the
        corpus re-prepared after its fingerprint is checked."""
        if self._attached:
            return
        from catdiff.data.corpus import Corpus, fingerprint_changed, prepare

        folder = Path(self.manifest.get("folder", ""))
        if (folder / "manifest.json").is_file():
            corpus = Corpus.open(folder)
            if corpus.manifest.get("content_hash") == self.manifest["content_hash"]:
                return self._attach_corpus(corpus)
        why = fingerprint_changed(self.manifest)
        if why is not None and not self.allow_changed:
            raise DataError(f"the run's corpus {self.manifest['source']['path']} cannot be used: {why}, and its "
                            "prepared cache is gone (pass --allow-changed-data to use the corpus as it is now)")
        corpus = prepare(self.manifest["source"]["path"], tokenizer_state=self.tokenizer.state(),
                         cache_dir=self.token_cache, text_field=self.text_field, max_chars=self.max_chars)
        self._attach_corpus(corpus)

    def _kwargs(self) -> dict:
        return {"path": self.path, **super()._kwargs(), "max_chars": self.max_chars, "packing": self.packing,
                "text_field": self.text_field, "token_cache": self.token_cache, "manifest": self.manifest}
