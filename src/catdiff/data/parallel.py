"""Parallel text (translation pairs) on the seq2seq canvas of seq2seq.py, from the HF hub or a local copy.

Reads sentence pairs, fits one tokenizer shared by source and target on the training pairs, and
lays every pair out as `[source (S) | SEP | target (T)]` with PAD after each side. It knows nothing
of models or diffusion. Nothing touches the network at import; a hub preset checks that the hub
is reachable (hub.py's `hub_reachable`) before any download and otherwise fails in one line.

Presets (`dataset=`), each with its default direction:
  iwslt14  IWSLT'14 German→English (Cettolo et al. 2014, TED talks), the small benchmark of
           non-autoregressive and diffusion MT. That corpus is normally built with fairseq's
           `prepare-iwslt14.sh` and has no canonical hub copy, so this preset maps to IWSLT 2017
           De-En (Cettolo et al. 2017; same TED domain, ≈206k train / 888 dev2010 / 8079 test
           pairs): hub id `IWSLT/iwslt2017`, folder `iwslt2017-de-en` of its parquet export
           (`refs/convert/parquet`; the main branch holds a loading script `datasets` no longer
           runs). Scores are therefore not comparable with published IWSLT14 numbers.
  wmt14    WMT'14 English→German (Bojar et al. 2014; Vaswani et al. 2017's En-De benchmark):
           hub id `wmt/wmt14` (the hub's `wmt14`, now under the `wmt` organisation), config
           `de-en`; ≈4.5M train pairs, newstest2013 validation, newstest2014 test. Cap the
           training set with `max_train_pairs` (then the train split is streamed, not downloaded).

Local layout accepted by `local_dir=DIR` (any dataset; `dataset="local"` has no default languages),
for split S in {train, validation, test}, checked in this order:
  DIR/dataset_dict.json + DIR/S/   a `datasets.DatasetDict.save_to_disk(DIR)` folder
  DIR/S/                           a `datasets.Dataset.save_to_disk(DIR/S)` folder
  DIR/S.jsonl                      one JSON object per line (read without `datasets`)
  DIR/S.parquet                    a Parquet file
Each record is either `{"translation": {"de": ..., "en": ...}}` (languages picked by `src_lang` /
`tgt_lang`) or flat `{"src": ..., "tgt": ...}`.

Tokenizer: `tokenizer="char"` or `"bpe"` (text.py), fitted on the source and target text of the
training pairs (after `max_train_pairs`). Content symbols are its ids 0..V-1, PAD = V, SEP = V + 1.
Pairs whose source has more than `src_len` tokens or whose target has more than `tgt_len` are
dropped (`n_dropped[split]`); held-out pairs with characters outside a char vocabulary are dropped
too (`n_unknown[split]`). `n_pairs[split]` counts the pairs kept, in stored order.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from catdiff.data import hub
from catdiff.data.seq2seq import Seq2SeqDataset
from catdiff.data.synthetic import _TRAIN, _check_int, _seed_int
from catdiff.data.text import CharTokenizer, check_batch_args, check_seed, make_tokenizer, tokenizer_from_state
from catdiff.errors import DataError

__all__ = ["PAIR_LAYOUT", "PAIR_PRESETS", "HubUnreachableError", "PairSpec", "ParallelTextDataset"]

PAIR_LAYOUT = (
    "data.local_dir=DIR holding {train,validation,test}.jsonl (one JSON object per line with a "
    '"translation" field {"<src_lang>": ..., "<tgt_lang>": ...} or "src"/"tgt" fields), '
    "{split}.parquet, or a datasets save_to_disk folder"
)
SPLITS = {"train": "train", "val": "validation", "test": "test"}  # ours -> the files' / hub's name
DATASET_CHOICES = ("iwslt14", "wmt14", "local")


@dataclass(frozen=True)
class PairSpec:
    """Where a translation corpus lives on the hub and its default direction."""

    repo: str  # hub dataset id
    config: str | None  # hub configuration name
    src_lang: str
    tgt_lang: str
    data_dir: str | None = None  # folder of the repo holding this corpus's split files
    revision: str | None = None


PAIR_PRESETS: dict[str, PairSpec] = {
    # IWSLT'14 De→En mapped to IWSLT 2017 De-En (module doc): the parquet export of the script repo.
    "iwslt14": PairSpec("IWSLT/iwslt2017", None, "de", "en", data_dir="iwslt2017-de-en",
                        revision="refs/convert/parquet"),
    # WMT'14 En→De (Bojar et al. 2014), the Transformer paper's En-De benchmark.
    "wmt14": PairSpec("wmt/wmt14", "de-en", "en", "de"),
}


HubUnreachableError = hub.HubUnreachable  # the name tests and callers of this module use


# ---- reading pairs ---------------------------------------------------------------------------
def _jsonl_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield row


def _dataset_rows(ds, where: str) -> Iterator[dict]:
    """Row dicts of a `datasets` Dataset (read in column batches) or IterableDataset."""
    columns = ds.column_names
    if columns is None or not hasattr(ds, "select"):  # a stream
        yield from ds
        return
    keep = [c for c in ("translation", "src", "tgt") if c in columns]
    if not keep:
        raise DataError(f"{where}: no 'translation' or 'src'/'tgt' column (columns: {columns})")
    for batch in ds.select_columns(keep).iter(batch_size=1024):
        for i in range(len(batch[keep[0]])):
            yield {k: batch[k][i] for k in keep}


def _local_rows(local_dir: Path, split: str, cache_dir: str | None) -> Iterator[dict]:
    """Rows of `split` in a folder laid out as in PAIR_LAYOUT (jsonl without `datasets`)."""
    if not local_dir.is_dir():
        raise FileNotFoundError(f"local_dir not found: {str(local_dir)!r}")
    saved = (local_dir / "dataset_dict.json").is_file() or (local_dir / split / "state.json").is_file()
    jsonl = local_dir / f"{split}.jsonl"
    if not saved and jsonl.is_file():
        return _jsonl_rows(jsonl)
    if not saved and not (local_dir / f"{split}.parquet").is_file():
        raise FileNotFoundError(
            f"no {split!r} split in {str(local_dir)!r}; expected {PAIR_LAYOUT.split('=', 1)[1]}")
    ds = hub._open_local(hub._import_datasets(), local_dir, split, cache_dir)
    return _dataset_rows(ds, f"{str(local_dir)!r} {split}")


def _pair(row: Mapping, i: int, where: str, src_lang: str | None, tgt_lang: str | None) -> tuple[str, str]:
    if "translation" in row:
        t = row["translation"]
        if src_lang is None or tgt_lang is None:
            raise ValueError(f"{where}: records with a 'translation' field need src_lang and tgt_lang")
        if not isinstance(t, Mapping) or src_lang not in t or tgt_lang not in t:
            langs = sorted(t) if isinstance(t, Mapping) else type(t).__name__
            raise DataError(f"{where} record {i}: 'translation' has {langs}, not {src_lang!r} and {tgt_lang!r}")
        src, tgt = t[src_lang], t[tgt_lang]
    elif "src" in row and "tgt" in row:
        src, tgt = row["src"], row["tgt"]
    else:
        raise DataError(f"{where} record {i}: need a 'translation' field or 'src' and 'tgt' fields, got {sorted(row)}")
    if not isinstance(src, str) or not isinstance(tgt, str):
        raise DataError(f"{where} record {i}: source and target must be strings")
    return src, tgt


# ---- the dataset -----------------------------------------------------------------------------
class ParallelTextDataset(Seq2SeqDataset):
    """Translation pairs (module doc) on the canvas `[source (src_len) | SEP | target (tgt_len)]`.

    `train_batch` draws training pairs uniformly with replacement, from a torch.Generator keyed by
    (seed, step, rank); `split("val" | "test")` is every kept validation / test pair in stored order.
    `tokenizer_state` (any tokenizer) or `vocab` (the characters of a char vocabulary, in id order)
    restore a vocabulary instead of fitting one; `state()` saves the former, so `from_state` rebuilds
    the identical dataset from the same data without refitting.
    """

    name = "parallel_text"

    def __init__(
        self,
        dataset: str = "iwslt14",
        local_dir: str | None = None,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        src_len: int = 64,
        tgt_len: int = 64,
        max_train_pairs: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        tokenizer_state: Mapping | None = None,
        vocab: str | Sequence[str] | None = None,
    ):
        # ---- arguments (cheap, before any reading) ----
        if dataset not in DATASET_CHOICES:
            raise ValueError(f"dataset must be one of {list(DATASET_CHOICES)}, got {dataset!r}")
        if dataset == "local" and local_dir is None:
            raise ValueError(f"dataset='local' needs {PAIR_LAYOUT}")
        if tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer must be 'char' or 'bpe', got {tokenizer!r}")
        spec = PAIR_PRESETS.get(dataset)
        src_lang = spec.src_lang if src_lang is None and spec else src_lang
        tgt_lang = spec.tgt_lang if tgt_lang is None and spec else tgt_lang
        for key, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if lang is not None and (not isinstance(lang, str) or not lang):
                raise ValueError(f"{key} must be a language code such as 'de', got {lang!r}")
        if src_lang is not None and src_lang == tgt_lang:
            raise ValueError(f"src_lang and tgt_lang must differ, both are {src_lang!r}")
        self.dataset, self.src_lang, self.tgt_lang = dataset, src_lang, tgt_lang
        self.local_dir = None if local_dir is None else str(local_dir)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        src_len, tgt_len = _check_int("src_len", src_len), _check_int("tgt_len", tgt_len)
        self.seed = check_seed(seed)
        self.max_train_pairs = None if max_train_pairs is None else _check_int("max_train_pairs", max_train_pairs)
        self.bpe_vocab_size = bpe_vocab_size
        if tokenizer == "bpe" and tokenizer_state is None:
            _check_int("bpe_vocab_size", bpe_vocab_size, minimum=257)
        if vocab is not None and tokenizer != "char":
            raise ValueError(f"vocab (the characters of a char vocabulary) needs tokenizer='char', got {tokenizer!r}")

        # ---- pairs, tokenizer, canvas ----
        tok = self._restore_tokenizer(tokenizer, tokenizer_state, vocab)
        texts = self._read_pairs()
        if tok is None:
            train = texts["train"]
            if not train:
                raise DataError(f"the training split of {self._where()} holds no pairs")
            parts = [s for pair in train for s in pair]
            tok = make_tokenizer(tokenizer, ("" if tokenizer == "char" else "\n").join(parts), bpe_vocab_size)
        self.tokenizer = tok
        self._init_layout(src_len, tgt_len, tok.vocab_size)
        self._dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.int32
        self.n_dropped: dict[str, int] = {}
        self.n_unknown: dict[str, int] = {}
        self._rows = {k: self._encode(k, v) for k, v in texts.items()}  # (N, L) compact ints per split
        self.n_pairs = {k: len(v) for k, v in self._rows.items()}
        for k, n in self.n_pairs.items():
            if n == 0:
                raise DataError(
                    f"no {k} pair of {self._where()} fits src_len={src_len}, tgt_len={tgt_len} "
                    f"({self.n_dropped[k]} too long, {self.n_unknown[k]} with unknown characters)")

    def _where(self) -> str:
        return repr(self.local_dir) if self.local_dir is not None else f"{self.dataset!r}"

    def _restore_tokenizer(self, kind: str, state: Mapping | None, vocab) -> object | None:
        tok = None
        if state is not None:
            tok = tokenizer_from_state(state)
            if tok.kind != kind:
                raise ValueError(f"tokenizer={kind!r} disagrees with tokenizer_state type {tok.kind!r}")
        if vocab is not None:
            if isinstance(vocab, str) or (isinstance(vocab, Sequence) and all(isinstance(c, str) for c in vocab)):
                from_vocab = CharTokenizer(list(vocab))
            else:
                raise ValueError(f"vocab must be a string of distinct characters, got {type(vocab).__name__}")
            if tok is not None and tok.state() != from_vocab.state():
                raise ValueError("vocab and tokenizer_state describe different vocabularies")
            tok = from_vocab
        return tok

    # ---- reading ----------------------------------------------------------------------------
    def _rows_of(self, split: str, datasets) -> Iterable[dict]:
        """Raw records of `split` ('train' | 'validation' | 'test'), local or (`datasets` given) from the hub."""
        cap = self.max_train_pairs if split == "train" else None
        if self.local_dir is not None:
            rows = _local_rows(Path(self.local_dir), split, self.cache_dir)
        else:
            spec = PAIR_PRESETS[self.dataset]
            ds = datasets.load_dataset(
                spec.repo, spec.config, data_dir=spec.data_dir, revision=spec.revision, split=split,
                cache_dir=self.cache_dir, streaming=cap is not None)
            rows = _dataset_rows(ds, f"{spec.repo} {split}")
        return rows if cap is None else itertools.islice(rows, cap)

    def _read_pairs(self) -> dict[str, list[tuple[str, str]]]:
        datasets = self._hub_datasets() if self.local_dir is None else None
        out = {}
        for ours, theirs in SPLITS.items():
            where = f"{self._where()} {theirs}"
            out[ours] = [_pair(row, i, where, self.src_lang, self.tgt_lang)
                         for i, row in enumerate(self._rows_of(theirs, datasets))]
        return out

    def _hub_datasets(self):
        """The `datasets` module once the hub is known to be usable; else one clear line saying what to do."""
        spec = PAIR_PRESETS[self.dataset]
        try:
            datasets = hub._import_datasets()
        except ImportError:
            raise DataError(
                f"dataset {self.dataset!r} downloads {spec.repo} with the Hugging Face `datasets` package "
                f"(pip install catdiff[hf]); without it pass {PAIR_LAYOUT}") from None
        if not hub.offline_mode() and not hub.hub_reachable():
            raise HubUnreachableError(
                f"cannot reach {hub.HUB_HOST} to download {self.dataset!r} ({spec.repo}); offline, pass {PAIR_LAYOUT}")
        return datasets

    def _encode(self, split: str, pairs: list[tuple[str, str]]) -> np.ndarray:
        """(N, L) canvas rows of the pairs that fit; counts the dropped ones."""
        S, T, tok = self.src_len, self.tgt_len, self.tokenizer
        out = np.full((len(pairs), self.seq_len), self.pad_id, dtype=self._dtype)
        out[:, S] = self.sep_id
        n = too_long = unknown = 0
        for src, tgt in pairs:
            try:
                a, b = tok.encode(src), tok.encode(tgt)
            except ValueError:  # a character outside a char vocabulary
                unknown += 1
                continue
            if len(a) > S or len(b) > T:
                too_long += 1
                continue
            out[n, :len(a)] = a
            out[n, S + 1:S + 1 + len(b)] = b
            n += 1
        self.n_dropped[split], self.n_unknown[split] = too_long, unknown
        return np.ascontiguousarray(out[:n])

    # ---- dataset contract --------------------------------------------------------------------
    def train_batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        check_batch_args(step, batch_size, rank, world)
        g = torch.Generator().manual_seed(_seed_int(self.seed, _TRAIN, int(step), int(rank)))
        idx = torch.randint(0, self.n_pairs["train"], (int(batch_size),), generator=g)
        return torch.from_numpy(self._rows["train"][idx.numpy()].astype(np.int64))

    def split(self, name: str) -> torch.Tensor:
        """(N, L) int64 canvas of every kept pair of `name` in {"val", "test"} (also "train"), in stored order."""
        if name not in self._rows:
            raise ValueError(f"unknown split {name!r}; allowed: 'val', 'test', 'train'")
        return torch.from_numpy(self._rows[name].astype(np.int64))

    def render(self, symbols: list[int]) -> str:
        return self.tokenizer.decode(symbols)

    def detokenize(self, seq) -> str:
        """The text of one (T,) target (or (S,) source) segment, up to its first PAD or SEP."""
        return self.render(self.symbols(torch.as_tensor(seq).reshape(-1)))

    def encode(self, text: str) -> torch.Tensor:
        """(n,) int64 content ids of `text` under this dataset's tokenizer."""
        return torch.from_numpy(self.tokenizer.encode(text).astype(np.int64))

    def parse(self, text: str) -> list[int]:
        """A source typed by a user (`catdiff sample --prompt`), tokenized."""
        return self.encode(text).tolist()

    @property
    def tokenizer_state(self) -> dict:
        return self.tokenizer.state()

    def _kwargs(self) -> dict:
        return {
            "dataset": self.dataset, "local_dir": self.local_dir, "src_lang": self.src_lang,
            "tgt_lang": self.tgt_lang, "tokenizer": self.tokenizer.kind, "bpe_vocab_size": self.bpe_vocab_size,
            "src_len": self.src_len, "tgt_len": self.tgt_len, "max_train_pairs": self.max_train_pairs,
            "seed": self.seed, "cache_dir": self.cache_dir, "tokenizer_state": self.tokenizer.state(),
        }

    def state(self) -> dict:
        """Base facts, `kwargs` rebuilding this dataset (vocabulary included) and the kept pair counts."""
        return {**super().state(), "kind": self.kind, "kwargs": self._kwargs(), "n_pairs": dict(self.n_pairs)}

    @classmethod
    def from_state(cls, state: Mapping) -> ParallelTextDataset:
        """The identical dataset: same data, saved vocabulary (no refit); fails if the data changed."""
        ds = cls(**state["kwargs"])
        saved = state.get("n_pairs")
        if saved is not None and dict(saved) != ds.n_pairs:
            raise DataError(f"the pairs of {ds._where()} changed since this state was saved: "
                            f"kept {ds.n_pairs}, saved {dict(saved)}")
        return ds
