"""Public text corpora (text8, LM1B, OpenWebText, WikiText-103) from the HF hub or a local copy.

Fetches raw documents through `datasets` (the `[hf]` extra, imported only when asked) and packs
them with text.py's packing; it knows nothing of models or diffusion. Nothing here touches the
network at import or construction unless a hub download is explicitly requested.

Local layout (any one, checked in this order) accepted by `local_dir=DIR` for split S in
{train, validation, test}:
  DIR/dataset_dict.json + DIR/S/   a `datasets.DatasetDict.save_to_disk(DIR)` folder
  DIR/S/                           a `datasets.Dataset.save_to_disk(DIR/S)` folder
  DIR/S.jsonl                      one JSON object per line with a "text" field
  DIR/S.parquet                    a Parquet file with a "text" column
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from catdiff.data.corpus import SOURCES, Corpus, Source, fingerprint_changed, limit_chars, prepare
from catdiff.data.text import PackedTextDataset, make_tokenizer, tokenizer_from_state
from catdiff.data.tokenizers import HUB_HOST, hub_reachable, offline_mode
from catdiff.errors import DataError, MissingExtra

__all__ = [
    "HUB_DATASETS",
    "LOCAL_LAYOUT",
    "HubSpec",
    "HubTextDataset",
    "hub_reachable",
    "iter_hub_documents",
    "load_hub_text",
]

LOCAL_LAYOUT = (
    "data.local_dir=DIR holding {train,validation,test}.jsonl (one JSON object per line with a "
    '"text" field), {split}.parquet, or a datasets save_to_disk folder'
)


@dataclass(frozen=True)
class HubSpec:
    """Where a corpus lives on the hub and how its rows join into one text."""

    repo: str  # hub dataset id
    config: str | None  # hub configuration name
    splits: tuple[str, ...]  # splits the hub provides
    joiner: str  # placed between consecutive rows (documents, sentences or lines)
    revision: str | None = None
    field: str = "text"


HUB_DATASETS: dict[str, HubSpec] = {
    # text8: first 10^8 characters of cleaned English Wikipedia (a-z and space); the hub copy
    # holds the standard 90M / 5M / 5M split, one row per split.
    "text8": HubSpec("afmck/text8", None, ("train", "validation", "test"), ""),
    # One Billion Word benchmark (Chelba et al. 2013), one sentence per row; no validation split.
    "lm1b": HubSpec("dvruette/lm1b", None, ("train", "test"), "\n"),
    # OpenWebText (Gokaslan & Cohen 2019), one web page per row; train only. The auto-converted
    # Parquet branch avoids the repository's legacy loading script.
    "openwebtext": HubSpec(
        "Skylion007/openwebtext", None, ("train",), "\n\n", revision="refs/convert/parquet"
    ),
    # WikiText-103 raw (Merity et al. 2016): rows are lines that keep their own "\n".
    "wikitext103": HubSpec(
        "Salesforce/wikitext", "wikitext-103-raw-v1", ("train", "validation", "test"), ""
    ),
}
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


class HubUnreachable(DataError, ConnectionError):
    """The hub was needed but huggingface.co cannot be reached (one-line message with the way out)."""


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise MissingExtra(
            "loading hub corpora needs the Hugging Face `datasets` package: pip install 'catdiff[hf]'"
        ) from None
    return datasets


def _spec(name: str) -> HubSpec:
    if name not in HUB_DATASETS:
        raise ValueError(f"name must be one of {sorted(HUB_DATASETS)}, got {name!r}")
    return HUB_DATASETS[name]


def _canonical_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in ("train", "validation", "test"):
        raise ValueError(f"split must be 'train', 'validation' (or 'val') or 'test', got {split!r}")
    return split


def _open_local(datasets, local_dir: Path, split: str, cache_dir: str | None):
    """The `datasets` object for `split` in a local folder laid out as in LOCAL_LAYOUT."""
    if not local_dir.is_dir():
        raise FileNotFoundError(f"local_dir not found: {str(local_dir)!r}")
    if (local_dir / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(local_dir))
        if split not in dd:
            raise ValueError(f"split {split!r} not in {str(local_dir)!r} (has {sorted(dd)})")
        return dd[split]
    if (local_dir / split / "state.json").is_file():
        return datasets.load_from_disk(str(local_dir / split))
    for ext, builder in (("jsonl", "json"), ("parquet", "parquet")):
        f = local_dir / f"{split}.{ext}"
        if f.is_file():
            return datasets.load_dataset(
                builder, data_files={split: str(f)}, split=split, cache_dir=cache_dir
            )
    raise FileNotFoundError(
        f"no {split!r} split in {str(local_dir)!r}; expected {LOCAL_LAYOUT.split('=', 1)[1]}"
    )


def iter_hub_documents(
    name: str,
    split: str,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    streaming: bool = False,
) -> Iterator[str]:
    """The rows (documents, sentences or lines) of corpus `name`'s `split`, in stored order.

    With `local_dir` the rows come from a local copy (LOCAL_LAYOUT; never the network); without
    it from the hub (`HUB_DATASETS[name]`), failing at once when huggingface.co is unreachable
    unless HF_HUB_OFFLINE / HF_DATASETS_OFFLINE ask `datasets` to use its cache. `streaming`
    reads hub rows lazily instead of downloading the whole split first.
    """
    spec = _spec(name)
    split = _canonical_split(split)
    datasets = _import_datasets()
    cache = None if cache_dir is None else str(cache_dir)
    if local_dir is not None:
        ds = _open_local(datasets, Path(local_dir), split, cache)
    else:
        if split not in spec.splits:
            raise ValueError(f"{name} on the hub has splits {list(spec.splits)}, not {split!r}")
        if not offline_mode() and not hub_reachable():
            raise HubUnreachable(
                f"cannot reach {HUB_HOST} to download {name!r} ({spec.repo}); "
                f"offline, set {LOCAL_LAYOUT}"
            )
        ds = datasets.load_dataset(
            spec.repo,
            spec.config,
            split=split,
            cache_dir=cache,
            revision=spec.revision,
            streaming=streaming,
        )
    columns = ds.column_names
    if columns is not None and spec.field not in columns:
        raise ValueError(f"{name} {split}: no {spec.field!r} column (columns: {columns})")
    return _rows(ds, spec.field, batched=columns is not None)


def _rows(ds, field: str, batched: bool) -> Iterator[str]:
    if not batched:  # a stream whose columns are unknown until read
        for row in ds:
            yield row[field]
        return
    for batch in ds.select_columns([field]).iter(batch_size=1024):
        yield from batch[field]


def load_hub_text(
    name: str,
    split: str,
    cache_dir: str | Path | None = None,
    local_dir: str | Path | None = None,
    max_chars: int | None = None,
) -> str:
    """One string: the rows of `split` joined by the corpus's joiner (see HUB_DATASETS).

    `max_chars` keeps the first characters only and then streams hub rows, so a prefix of a large
    corpus (OpenWebText is ~40 GB) does not download the whole split.
    """
    if max_chars is not None and (
        isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1
    ):
        raise ValueError(f"max_chars must be an integer >= 1, got {max_chars!r}")
    joiner = _spec(name).joiner
    parts: list[str] = []
    total = 0
    docs = iter_hub_documents(
        name, split, cache_dir, local_dir, streaming=max_chars is not None and local_dir is None
    )
    for doc in docs:
        if parts and joiner:
            parts.append(joiner)
            total += len(joiner)
        parts.append(doc)
        total += len(doc)
        if max_chars is not None and total >= max_chars:
            break
    text = "".join(parts)
    return text if max_chars is None else text[:max_chars]


def hub_source(corpus: str, split: str, cache_dir: str | None = None, local_dir: str | None = None,
               max_chars: int | None = None) -> Source:
    """Split `split` of hub corpus `corpus` (or of its local copy) as a corpus.Source: one document
    per row, joined by the corpus's joiner when the tokenizer has no EOS. A local copy is
    identified by its files' sizes and modification times, the hub by repository and revision."""
    spec = _spec(corpus)
    if local_dir is not None:
        d = Path(local_dir)
        files = sorted(f for f in d.rglob("*") if f.is_file()) if d.is_dir() else []
        identity = [{"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]
    else:
        identity = [{"repo": spec.repo, "config": spec.config, "revision": spec.revision}]

    def pieces():
        docs = iter_hub_documents(corpus, split, cache_dir, local_dir,
                                  streaming=max_chars is not None and local_dir is None)
        return limit_chars(enumerate(docs), max_chars)

    return Source({"kind": "hub", "corpus": corpus, "split": split, "cache_dir": cache_dir, "local_dir": local_dir,
                   "max_chars": max_chars}, identity, pieces, joiner=spec.joiner)


SOURCES["hub"] = lambda spec: hub_source(spec["corpus"], spec["split"], spec["cache_dir"], spec["local_dir"],
                                         spec["max_chars"])
SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"))


class HubTextDataset(PackedTextDataset):
    """A hub corpus (or its local copy) tokenized once per split into the memory-mapped cache
    (data/corpus.py) and read as rows by text.py's packing ("wrap" blocks or one padded document
    per row).

    The hub's own validation / test splits are used when the corpus has them; a missing one is
    carved from the end of the train rows with `val_frac` / `test_frac` (see PackedTextDataset).
    `max_chars` caps each split's text. Construction downloads when `local_dir` is None; a rebuilt
    run (saved `manifests`) opens its data only when rows are asked for, as TextDataset does.
    """

    name = "hub_text"

    def __init__(
        self,
        corpus: str,
        seq_len: int = 256,
        tokenizer: str = "char",
        bpe_vocab_size: int = 1024,
        val_frac: float = 0.01,
        test_frac: float = 0.01,
        seed: int = 0,
        tokenizer_state: Mapping | None = None,
        max_chars: int | None = None,
        cache_dir: str | None = None,
        local_dir: str | None = None,
        random_offset: bool = True,
        packing: str = "wrap",
        token_cache: str | None = None,
        manifests: Mapping | None = None,
        allow_changed: bool = False,
    ):
        spec = _spec(corpus)
        self._setup(seq_len, tokenizer, bpe_vocab_size, val_frac, test_frac, seed, random_offset, packing)
        if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
            raise ValueError(f"max_chars must be an integer >= 1, got {max_chars!r}")
        self.corpus, self.max_chars, self.allow_changed = corpus, max_chars, bool(allow_changed)
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.local_dir = None if local_dir is None else str(local_dir)
        self.token_cache = None if token_cache is None else str(token_cache)
        if manifests is not None and tokenizer_state is not None:  # a saved run: open the data lazily
            self.manifests = {k: dict(v) for k, v in manifests.items()}
            self._set_tokenizer(tokenizer_from_state(tokenizer_state))
            return
        sources = {ours: hub_source(corpus, theirs, self.cache_dir, self.local_dir, max_chars)
                   for ours, theirs in SPLITS if theirs == "train" or self._has_split(spec, theirs)}
        if tokenizer_state is None:  # fit on every split's text ('char', 'bpe'), or load a standard one
            pieces = itertools.chain((p for src in sources.values() for _, p in src.pieces()), [spec.joiner])
            tokenizer_state = make_tokenizer(tokenizer, pieces, bpe_vocab_size).state()
        corpora = {k: prepare(src, tokenizer_state=tokenizer_state, cache_dir=self.token_cache)
                   for k, src in sources.items()}
        self._set_tokenizer(tokenizer_from_state(tokenizer_state))
        self._attach_corpora(corpora)

    def _attach_corpora(self, corpora: dict) -> None:
        self.manifests = {k: {**{f: v for f, v in c.manifest.items() if f != "tokenizer"}, "folder": str(c.folder)}
                          for k, c in corpora.items()}
        docs = {k: c.docs for k, c in corpora.items()} if self.packing == "pad" else None
        self._attach({k: c.tokens for k, c in corpora.items()}, docs)

    def _data(self) -> None:
        """Each split from its prepared cache when it still holds the same tokens, else the
        source again after its fingerprint is checked (see TextDataset._data)."""
        if self._attached:
            return
        corpora = {}
        for k, m in self.manifests.items():
            folder = Path(m.get("folder", ""))
            if (folder / "manifest.json").is_file():
                c = Corpus.open(folder)
                if c.manifest.get("content_hash") == m["content_hash"]:
                    corpora[k] = c
                    continue
            why = fingerprint_changed(m)
            if why is not None and not self.allow_changed:
                raise DataError(f"the run's {self.corpus!r} {k} split cannot be used: {why}, and its prepared "
                                "cache is gone (pass --allow-changed-data to use it as it is now)")
            corpora[k] = prepare(SOURCES["hub"](m["source"]), tokenizer_state=self.tokenizer.state(),
                                 cache_dir=self.token_cache)
        self._attach_corpora(corpora)

    def _has_split(self, spec: HubSpec, split: str) -> bool:
        if self.local_dir is None:
            return split in spec.splits
        d = Path(self.local_dir)
        if (d / "dataset_dict.json").is_file():
            return (d / split).is_dir()
        return (d / split).is_dir() or any(
            (d / f"{split}.{e}").is_file() for e in ("jsonl", "parquet")
        )

    def _kwargs(self) -> dict:
        return {
            "corpus": self.corpus,
            **super()._kwargs(),
            "max_chars": self.max_chars,
            "cache_dir": self.cache_dir,
            "local_dir": self.local_dir,
            "packing": self.packing,
            "token_cache": self.token_cache,
            "manifests": self.manifests,
        }
