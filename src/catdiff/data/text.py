"""Text corpora as packed token blocks: character and byte-level BPE tokenizers, local files.

Turns raw text into fixed-length (L,) blocks of token ids with deterministic splits and
(seed, step, rank)-addressable training batches; it knows nothing of models or diffusion.

Shapes: B = batch, L = `seq_len`, K = vocabulary size, N = number of blocks in a split.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from catdiff.data.base import CategoricalDataset

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
# Tokenizers
# ---------------------------------------------------------------------------------------------


def _as_id_array(ids) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"ids must be one sequence (1-D), got shape {tuple(arr.shape)}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


class CharTokenizer:
    """One token per Unicode character; id = position in `chars` (sorted when built from text)."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        chars = list(chars)
        if not chars:
            raise ValueError("chars must hold at least one character")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"chars must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not contain duplicates")
        self.chars = chars
        cps = np.fromiter((ord(c) for c in chars), dtype=np.int64, count=len(chars))
        self._table = np.full(int(cps.max()) + 1, -1, dtype=np.int32)  # code point -> id
        self._table[cps] = np.arange(len(chars), dtype=np.int32)
        self._chars_arr = np.array(chars, dtype=object)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        if not text:
            raise ValueError("text is empty: cannot build a character vocabulary")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def state(self) -> dict:
        return {"type": "char", "chars": list(self.chars)}

    def encode(self, text: str) -> np.ndarray:
        """(n,) int32 ids; vectorised through a code-point lookup table."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        inside = cps < self._table.size
        ids = np.full(cps.shape, -1, dtype=np.int32)
        ids[inside] = self._table[cps[inside]]
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"character {text[i]!r} (U+{ord(text[i]):04X}) at position {i} is not in the "
                f"tokenizer vocabulary of {self.vocab_size} characters (vocabulary mismatch)"
            )
        return ids

    def decode(self, ids) -> str:
        arr = _as_id_array(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got {arr.min()}..{arr.max()}"
            )
        return "".join(self._chars_arr[arr].tolist())


def _chunks(text: str) -> list[str]:
    """Lines with their endings: the unit BPE encodes (pre-tokenization never crosses them)."""
    return text.splitlines(keepends=True)


class BPETokenizer:
    """Byte-level BPE trained locally with the `tokenizers` library; no download, no specials.

    Text is encoded line by line (lines keep their endings), so ids never merge across lines and
    encoding parallelises; decode(encode(s)) == s for any string.
    """

    kind = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, text: str | Iterable[str], vocab_size: int = 1024) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if isinstance(vocab_size, bool) or int(vocab_size) != vocab_size or vocab_size < 257:
            raise ValueError(f"bpe_vocab_size must be an integer >= 257, got {vocab_size!r}")
        chunks = _chunks(text) if isinstance(text, str) else text
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[],
            show_progress=False,
        )
        tok.train_from_iterator(chunks, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, s: str) -> BPETokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(s))

    def to_json(self) -> str:
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def state(self) -> dict:
        return {"type": "bpe", "json": self.to_json()}

    def encode(self, text: str) -> np.ndarray:
        """(n,) int32 ids."""
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        chunks = _chunks(text)
        enc = getattr(self._tok, "encode_batch_fast", self._tok.encode_batch)
        encodings = enc(chunks, add_special_tokens=False) if chunks else []
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        return np.fromiter(ids, dtype=np.int32)

    def decode(self, ids) -> str:
        arr = _as_id_array(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got {arr.min()}..{arr.max()}"
            )
        return self._tok.decode(arr.tolist(), skip_special_tokens=False)


Tokenizer = CharTokenizer | BPETokenizer


def tokenizer_from_state(state: Mapping) -> Tokenizer:
    """Rebuild a tokenizer from its `state()` (e.g. saved beside a checkpoint)."""
    if not isinstance(state, Mapping) or "type" not in state:
        raise ValueError("tokenizer_state must be a dict with a 'type' key ('char' or 'bpe')")
    if state["type"] == "char":
        return CharTokenizer(state["chars"])
    if state["type"] == "bpe":
        return BPETokenizer.from_json(state["json"])
    raise ValueError(f"tokenizer_state['type'] must be 'char' or 'bpe', got {state['type']!r}")


def make_tokenizer(kind: str, text: str, bpe_vocab_size: int = 1024) -> Tokenizer:
    """Fit a tokenizer of `kind` ('char' | 'bpe') on `text`."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size=bpe_vocab_size)
    raise ValueError(f"tokenizer must be 'char' or 'bpe', got {kind!r}")


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
    if tokenizer not in ("char", "bpe"):
        raise ValueError(f"tokenizer must be 'char' or 'bpe', got {tokenizer!r}")
    check_fracs(val_frac, test_frac)
    check_seed(seed)


def _check_pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class PackedTextDataset(CategoricalDataset):
    """Texts → tokenizer → one packed (N, L) block array with contiguous train | val | test regions.

    `texts` maps "train" (required), and optionally "val" / "test", to strings. Each is encoded
    and packed separately (ragged tails dropped). A held-out split not given is carved from the
    END of the train blocks: the last `test_frac` of them is test, the `val_frac` before it val.
    The tokenizer is fit on all the texts (so held-out characters are encodable) unless
    `tokenizer_state` is given, in which case it is restored (vocabulary of a saved run).

    Training batches read length-L windows of the train token stream. Each epoch is a seeded
    permutation of window indices with a seeded random phase: with `random_offset=True` window j
    of epoch e starts at token shift_e + j * L, shift_e ~ U{0..L-1} (N_train - 1 windows an epoch,
    so every window lies inside the train region); with `random_offset=False` windows are the
    train blocks themselves. Ranks take disjoint slices of the global batch.
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
        check_text_args(seq_len, tokenizer, val_frac, test_frac, seed)
        self.seq_len, self.seed = int(seq_len), int(seed)
        unknown = set(texts) - {"train", "val", "test"}
        if "train" not in texts or unknown:
            raise ValueError(
                f"texts must map 'train' (+ optional 'val', 'test'), got {sorted(texts)}"
            )
        self.val_frac, self.test_frac = float(val_frac), float(test_frac)
        self.bpe_vocab_size = bpe_vocab_size
        self.random_offset = bool(random_offset)

        if tokenizer_state is not None:
            tok = tokenizer_from_state(tokenizer_state)
            if tok.kind != tokenizer:
                raise ValueError(
                    f"tokenizer={tokenizer!r} disagrees with tokenizer_state type {tok.kind!r}"
                )
        else:
            fit_text = "\n".join(texts[k] for k in ("train", "val", "test") if k in texts)
            tok = make_tokenizer(tokenizer, fit_text, bpe_vocab_size)
        self.tokenizer = tok
        self.vocab_size = tok.vocab_size
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.int32  # compact storage

        blocks = {
            k: pack_blocks(tok.encode(t).astype(dtype), self.seq_len) for k, t in texts.items()
        }
        n = len(blocks["train"])
        carve_val = 0 if "val" in texts else self.val_frac
        carve_test = 0 if "test" in texts else self.test_frac
        n_train, n_val, n_test = split_counts(n, carve_val, carve_test)
        if n_train < 1:
            raise ValueError(
                f"text too short: {n} train blocks of seq_len={self.seq_len} leave none for "
                f"training after val_frac/test_frac; give more text or a smaller seq_len"
            )
        tr = blocks["train"]
        parts = [tr[:n_train], blocks.get("val", tr[n_train : n_train + n_val])]
        parts.append(blocks.get("test", tr[n_train + n_val :]))
        sizes = [len(p) for p in parts]
        self._blocks = np.ascontiguousarray(np.concatenate(parts))  # (N_total, L) compact ints
        edges = np.cumsum([0, *sizes])
        self.regions = {
            k: (int(edges[i]), int(edges[i + 1])) for i, k in enumerate(("train", "val", "test"))
        }
        self._train_stream = self._blocks[: sizes[0]].reshape(-1)  # train tokens, contiguous
        self.n_windows = sizes[0] - 1 if (self.random_offset and sizes[0] > 1) else sizes[0]

    # ---- contract -------------------------------------------------------------------------
    def train_batch(
        self, step: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> torch.Tensor:
        check_batch_args(step, batch_size, rank, world)
        start = stream_start(step, batch_size, rank, world)
        epoch, j = epoch_stream(self.n_windows, self.seed, start, batch_size)
        first = j * self.seq_len  # (B,) first token of each window
        if self.random_offset and self.n_windows < self.n_blocks("train"):
            first = first + self._epoch_shifts(epoch)
        idx = first[:, None] + np.arange(self.seq_len)  # (B, L)
        return torch.from_numpy(self._train_stream[idx].astype(np.int64))

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
        """(N, L) int64 blocks of region `name` in {"train", "val", "test"}."""
        a, b = self._region(name)
        return torch.from_numpy(self._blocks[a:b].astype(np.int64))

    def n_blocks(self, name: str) -> int:
        a, b = self._region(name)
        return b - a

    def _region(self, name: str) -> tuple[int, int]:
        if name not in self.regions:
            raise ValueError(f"split must be one of {sorted(self.regions)}, got {name!r}")
        return self.regions[name]

    def encode(self, text: str) -> torch.Tensor:
        """(n,) int64 ids of `text` under this dataset's tokenizer."""
        return torch.from_numpy(self.tokenizer.encode(text).astype(np.int64))

    def decode(self, x) -> str:
        return self.tokenizer.decode(x)

    @property
    def tokenizer_state(self) -> dict:
        return self.tokenizer.state()

    def _kwargs(self) -> dict:
        return {
            "seq_len": self.seq_len,
            "tokenizer": self.tokenizer.kind,
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
    """A local text corpus: `path` is a file or a folder of `*.txt` files (sorted, newline-joined).

    Held-out splits are the contiguous tail of the packed blocks (see PackedTextDataset); windows
    for training start at random per-epoch offsets unless `random_offset=False`. `max_chars`
    keeps only the first characters of the text (quick experiments).
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
    ):
        if max_chars is not None:
            max_chars = _check_pos_int("max_chars", max_chars)
        self.path = str(path)
        self.max_chars = max_chars
        super().__init__(
            {"train": read_text(path, max_chars)},
            seq_len=seq_len,
            tokenizer=tokenizer,
            bpe_vocab_size=bpe_vocab_size,
            val_frac=val_frac,
            test_frac=test_frac,
            seed=seed,
            tokenizer_state=tokenizer_state,
            random_offset=random_offset,
        )

    def _kwargs(self) -> dict:
        return {"path": self.path, **super()._kwargs(), "max_chars": self.max_chars}
