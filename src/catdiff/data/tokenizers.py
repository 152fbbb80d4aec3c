"""Tokenizers: characters, a byte-level BPE trained locally, and the field's standard tokenizers
(a Hugging Face `tokenizer.json`, GPT-2 style `vocab.json` + `merges.txt`, or a hub name such as
`gpt2` or `bert-base-uncased` resolved from the local cache or, when allowed, the hub).

Every tokenizer maps text to int ids in [0, vocab_size) and back, and saves itself whole in
`state()` (a run carries its tokenizer; no corpus or network is needed to decode). It knows
nothing of datasets, models or diffusion. Written on the `tokenizers` library (the field's
tokenizer engine); only the character tokenizer is ours, a vectorised code-point lookup.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from catdiff.errors import DataError

__all__ = ["BPETokenizer", "CharTokenizer", "HFTokenizer", "Tokenizer", "hub_reachable", "load_pretrained",
           "make_tokenizer", "offline_mode", "tokenizer_from_state"]

HUB_HOST, HUB_PORT = "huggingface.co", 443
EOS_NAMES = ("<|endoftext|>", "[SEP]", "</s>", "<eos>")  # a document separator, in order of preference
PAD_NAMES = ("[PAD]", "<pad>", "<|padding|>")


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
    eos_id = pad_id = None

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
    eos_id = pad_id = None

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
        return encode_lines(self._tok, _chunks(text))

    def decode(self, ids) -> str:
        arr = _as_id_array(ids)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}), got {arr.min()}..{arr.max()}"
            )
        return self._tok.decode(arr.tolist(), skip_special_tokens=False)


class HFTokenizer(BPETokenizer):
    """A standard tokenizer held as a `tokenizers.Tokenizer` (GPT-2's byte-level BPE, BERT's
    WordPiece, ...). `name` says where it came from. Its special tokens (EOS/SEP, PAD, CLS, ...)
    keep their ids; `eos_id` separates documents in a packed corpus and `decode` skips every
    special token and every id at or beyond the vocabulary (the diffusion mask). Encoding is the
    local BPE's: line by line (lines keep their endings), without added special tokens."""

    kind = "hf"

    def __init__(self, tokenizer, name: str = ""):
        super().__init__(tokenizer)
        self.name = name
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self.eos_id = next((vocab[n] for n in EOS_NAMES if n in vocab), None)
        self.pad_id = next((vocab[n] for n in PAD_NAMES if n in vocab), None)
        added = tokenizer.get_added_tokens_decoder() if hasattr(tokenizer, "get_added_tokens_decoder") else {}
        self.special_ids = sorted(i for i, t in added.items() if getattr(t, "special", False))

    @classmethod
    def from_json(cls, s: str, name: str = "") -> HFTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(s), name)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def state(self) -> dict:
        return {"type": "hf", "name": self.name, "json": self._tok.to_str()}

    def decode(self, ids) -> str:
        arr = _as_id_array(ids)
        keep = (arr >= 0) & (arr < self.vocab_size) & ~np.isin(arr, self.special_ids)
        return self._tok.decode(arr[keep].tolist(), skip_special_tokens=True)


def encode_lines(tok, lines: list[str]) -> np.ndarray:
    """(n,) int32 ids of `lines` encoded in one parallel batch by a `tokenizers.Tokenizer`."""
    enc = getattr(tok, "encode_batch_fast", tok.encode_batch)
    encodings = enc(lines, add_special_tokens=False) if lines else []
    return np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32)


def _gpt2_files(folder: Path):
    """A byte-level BPE from GPT-2 style `vocab.json` + `merges.txt` (as GPT-2 ships them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    for name in EOS_NAMES[:1]:
        if tok.token_to_id(name) is not None:
            tok.add_special_tokens([name])
    return tok


def load_pretrained(spec: str) -> HFTokenizer:
    """A standard tokenizer from a `tokenizer.json` path, a folder holding `tokenizer.json` or GPT-2
    style `vocab.json` + `merges.txt`, or a hub name (`gpt2`, `bert-base-uncased`): the local Hugging
    Face cache first, the hub only when it is reachable and HF_HUB_OFFLINE is not set."""
    from tokenizers import Tokenizer

    p = Path(spec).expanduser()
    if p.is_file():
        try:
            return HFTokenizer(Tokenizer.from_file(str(p)), str(p.resolve()))
        except Exception as e:  # the library raises its own exception types for bad JSON
            raise DataError(f"data.tokenizer={spec}: not a tokenizers JSON file ({str(e).splitlines()[0]})") from None
    if p.is_dir():
        if (p / "tokenizer.json").is_file():
            return load_pretrained(str(p / "tokenizer.json"))
        if (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
            return HFTokenizer(_gpt2_files(p), str(p.resolve()))
        raise DataError(f"data.tokenizer={spec}: the folder holds neither tokenizer.json nor vocab.json + merges.txt")
    if "/" in spec.strip("/") and spec.startswith((".", "/", "~")):
        raise DataError(f"data.tokenizer={spec}: no such file or folder")
    return HFTokenizer(Tokenizer.from_file(_hub_file(spec)), spec)


def hub_reachable(host: str = HUB_HOST, port: int = HUB_PORT, timeout: float = 2.0) -> bool:
    """True when a TCP connection to the hub opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_mode() -> bool:
    """True when the user asked for the local cache only (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE)."""
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_file(name: str) -> str:
    """The local path of hub model `name`'s tokenizer.json (cache first; download if allowed)."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(name, "tokenizer.json", local_files_only=True)
    except Exception:
        pass
    hint = (f"data.tokenizer={name!r} is not in the local Hugging Face cache and the hub cannot be used; "
            "give a local path instead: data.tokenizer=/path/to/tokenizer.json, or a folder with tokenizer.json "
            "or GPT-2's vocab.json + merges.txt")
    if offline_mode() or not hub_reachable():
        raise DataError(hint)
    try:
        return hf_hub_download(name, "tokenizer.json")
    except Exception as e:
        raise DataError(f"{hint} ({type(e).__name__})") from None


Tokenizer = CharTokenizer | BPETokenizer | HFTokenizer


def tokenizer_from_state(state: Mapping) -> Tokenizer:
    """Rebuild a tokenizer from its `state()` (e.g. saved beside a checkpoint)."""
    if not isinstance(state, Mapping) or "type" not in state:
        raise ValueError("tokenizer_state must be a dict with a 'type' key ('char', 'bpe' or 'hf')")
    if state["type"] == "char":
        return CharTokenizer(state["chars"])
    if state["type"] == "bpe":
        return BPETokenizer.from_json(state["json"])
    if state["type"] == "hf":
        return HFTokenizer.from_json(state["json"], state.get("name", ""))
    raise ValueError(f"tokenizer_state['type'] must be 'char', 'bpe' or 'hf', got {state['type']!r}")


def make_tokenizer(kind: str, text: str | Iterable[str], bpe_vocab_size: int = 1024) -> Tokenizer:
    """Fit 'char' or 'bpe' on `text` (a string, or an iterable of strings for a large corpus), or
    load a standard tokenizer (any other `kind`: see `load_pretrained`)."""
    if kind == "char":
        if isinstance(text, str):
            return CharTokenizer.from_text(text)
        chars: set[str] = set()
        for part in text:
            chars.update(part)
        if not chars:
            raise ValueError("the corpus holds no text: cannot build a character vocabulary")
        return CharTokenizer(sorted(chars))
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size=bpe_vocab_size)
    return load_pretrained(kind)


