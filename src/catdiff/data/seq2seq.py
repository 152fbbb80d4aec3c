"""Sequence-to-sequence data on one fixed-length canvas, and a synthetic suite with exact answers.
It knows the layout of source, separator and target, not how a model is conditioned on it.

Layout of every example (L = S + 1 + T):

    [ source (S, right-padded with PAD) | SEP | target (T, right-padded with PAD) ]

The first `cond_len = S + 1` positions are the condition: methods keep them clean in training
(only the target is noised, DiffuSeq-style partial noising) and fixed in sampling. Padding is
part of the target, so a non-autoregressive model predicts the target's length by where it puts
PAD; `target_length` reads it back.

Synthetic tasks (content symbols 0..V-1; every source has exactly one correct target):
  copy      target = source
  reverse   target = source reversed
  sort      target = source sorted ascending
  add       source = "a+b" in decimal (V = 11, symbol 10 is "+"), target = the digits of a + b
  grammar   a string homomorphism h: each symbol rewrites to a fixed string of 1 or 2 symbols
            drawn from `seed` (variable-length output: a small transduction grammar)
"""

from __future__ import annotations

import numpy as np
import torch

from catdiff.data.base import CategoricalDataset
from catdiff.data.synthetic import _SPLITS, _TRAIN, _check_int, _seed_int
from catdiff.structs import Batch

TASKS = ("copy", "reverse", "sort", "add", "grammar")


class Seq2SeqDataset(CategoricalDataset):
    """Base class of paired data on the canvas above. Subclasses set `src_len`, `tgt_len`,
    `n_symbols` (content vocabulary V; PAD = V, SEP = V + 1) and implement `pairs`."""

    kind = "seq2seq"
    src_len: int  # S
    tgt_len: int  # T
    n_symbols: int  # V

    def _init_layout(self, src_len: int, tgt_len: int, n_symbols: int) -> None:
        self.src_len, self.tgt_len, self.n_symbols = src_len, tgt_len, n_symbols
        self.pad_id, self.sep_id = n_symbols, n_symbols + 1
        self.vocab_size = n_symbols + 2
        self.seq_len = src_len + 1 + tgt_len
        self.cond_len = src_len + 1

    def canvas(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """(B, L) examples from PAD-padded (B, S) sources and (B, T) targets."""
        sep = torch.full((src.shape[0], 1), self.sep_id, dtype=torch.long)
        return torch.cat([src.long(), sep, tgt.long()], 1)

    def batch(self, x: torch.Tensor) -> Batch:
        """x with its target segment as the Batch target: the source + separator are a clean
        condition, never noised or scored."""
        target = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
        target[:, self.cond_len:] = True
        return Batch(x, target)

    def source(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :self.src_len]

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.cond_len:]

    def target_length(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) position of the first PAD in each target (T when there is none)."""
        is_pad = self.target(x) == self.pad_id
        first = torch.where(is_pad, torch.arange(self.tgt_len), self.tgt_len)
        return first.min(1).values

    def symbols(self, seq: torch.Tensor) -> list[int]:
        """The content of one (S,) or (T,) segment up to its first PAD or SEP."""
        out = []
        for v in seq.tolist():
            if v >= self.n_symbols:
                break
            out.append(v)
        return out

    def render(self, symbols: list[int]) -> str:
        return " ".join(str(v) for v in symbols)

    def decode(self, x: torch.Tensor) -> str:
        x = x.view(1, -1)
        return f"{self.render(self.symbols(self.source(x)[0]))} → {self.render(self.symbols(self.target(x)[0]))}"

    def parse(self, text: str) -> list[int]:
        """Content symbols of a source typed by a user (space-separated symbol ids by default)."""
        try:
            return [int(v) for v in text.split()]
        except ValueError:
            raise ValueError(f"a source for {self.name!r} is space-separated symbol ids, got {text!r}") from None

    def prompt_canvas(self, text: str) -> torch.Tensor:
        """(L,) canvas holding the parsed source, SEP and an all-PAD target: its first cond_len
        positions are the condition for generating the target."""
        sym = self.parse(text)
        if len(sym) > self.src_len or any(not 0 <= v < self.n_symbols for v in sym):
            raise ValueError(f"a source must have at most {self.src_len} symbols in [0, {self.n_symbols}), "
                             f"got {text!r}")
        src = torch.full((1, self.src_len), self.pad_id, dtype=torch.long)
        src[0, :len(sym)] = torch.tensor(sym, dtype=torch.long)
        return self.canvas(src, torch.full((1, self.tgt_len), self.pad_id, dtype=torch.long))[0]

    def pairs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class SyntheticSeq2Seq(Seq2SeqDataset):
    """One task of the synthetic suite (module doc); sources of min_len..max_len symbols."""

    name = "seq2seq"

    def __init__(self, task: str = "reverse", n_symbols: int = 10, min_len: int = 3, max_len: int = 8,
                 seed: int = 0, n_val: int = 512, n_test: int = 512):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        self.task = task
        self.min_len = _check_int("min_len", min_len)
        self.max_len = _check_int("max_len", max_len)
        if self.max_len < self.min_len:
            raise ValueError(f"max_len ({max_len}) must be >= min_len ({min_len})")
        self.seed = _check_int("seed", seed, minimum=0)
        self.n_val, self.n_test = _check_int("n_val", n_val), _check_int("n_test", n_test)
        n_symbols = _check_int("n_symbols", n_symbols, minimum=2)
        if task == "add":
            n_symbols = 11  # digits and "+"
            src_len, tgt_len = 2 * self.max_len + 1, self.max_len + 1  # max_len = digits per operand
        elif task == "grammar":
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 3]))
            self.rule_len = rng.integers(1, 3, size=n_symbols)  # |h(v)| ∈ {1, 2}
            self.rules = rng.integers(0, n_symbols, size=(n_symbols, 2))
            src_len, tgt_len = self.max_len, 2 * self.max_len
        else:
            src_len, tgt_len = self.max_len, self.max_len
        self._init_layout(src_len, tgt_len, n_symbols)
        self._kwargs = dict(task=task, n_symbols=n_symbols, min_len=min_len, max_len=max_len, seed=seed,
                            n_val=n_val, n_test=n_test)
        self._splits: dict[str, torch.Tensor] = {}

    def state(self) -> dict:
        return {**super().state(), "kwargs": self._kwargs}

    # ---- generation (vectorized over the batch) ---------------------------------------------
    def _lengths(self, n: int, g: torch.Generator) -> torch.Tensor:
        return torch.randint(self.min_len, self.max_len + 1, (n,), generator=g)

    def _padded(self, values: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
        """Left-aligned rows: values[:, :len] then PAD."""
        keep = torch.arange(width)[None, :] < lengths[:, None]
        return torch.where(keep, values[:, :width], self.pad_id)

    def _digits(self, v: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Most-significant-first decimal digits of v (B,), left-aligned in `width`, and their count."""
        n = torch.where(v > 0, torch.floor(torch.log10(v.clamp_min(1).double())).long() + 1, 1)
        # digit j (from the left) of a number with n digits is v // 10^(n-1-j) % 10
        j = torch.arange(width)[None, :]
        power = (n[:, None] - 1 - j).clamp_min(0)
        d = torch.div(v[:, None], 10 ** power, rounding_mode="floor") % 10
        return torch.where(j < n[:, None], d, self.pad_id), n

    def pairs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        g, S, T = generator, self.src_len, self.tgt_len
        if self.task == "add":
            hi = 10 ** self._lengths(2 * n, g).view(2, n)  # operands of min_len..max_len digits
            lo = torch.where(hi > 10, hi // 10, 0)  # d digits: [10^(d-1), 10^d); one digit: [0, 10)
            a, b = (lo + (torch.rand(2, n, generator=g, dtype=torch.float64) * (hi - lo)).long()).unbind(0)
            da, na = self._digits(a, self.max_len)
            db, nb = self._digits(b, self.max_len)
            ds, _ = self._digits(a + b, T)
            # source: digits of a, "+", digits of b, packed to the left
            parts = torch.cat([da, torch.full((n, 1), 10), db], 1)  # (n, 2·max_len + 1)
            valid = torch.cat([torch.arange(self.max_len)[None] < na[:, None], torch.ones(n, 1, dtype=torch.bool),
                               torch.arange(self.max_len)[None] < nb[:, None]], 1)
            order = torch.sort((~valid).long(), dim=1, stable=True).indices
            src = torch.where(torch.gather(valid, 1, order), torch.gather(parts, 1, order), self.pad_id)
            return self.canvas(src, ds)
        lengths = self._lengths(n, g)
        raw = torch.randint(0, self.n_symbols, (n, S), generator=g)
        src = self._padded(raw, lengths, S)
        if self.task == "copy":
            tgt = src
        elif self.task == "reverse":
            idx = (lengths[:, None] - 1 - torch.arange(S)[None, :]).clamp_min(0)
            tgt = self._padded(torch.gather(raw, 1, idx), lengths, T)
        elif self.task == "sort":
            tgt = self._padded(torch.sort(torch.where(src == self.pad_id, self.n_symbols, src), 1).values,
                               lengths, T)
        else:  # grammar: h applied symbol by symbol, pieces packed to the left
            rules, rule_len = torch.from_numpy(self.rules), torch.from_numpy(self.rule_len)
            sym = raw.clamp_max(self.n_symbols - 1)
            pieces = rules[sym]  # (n, S, 2)
            valid = (torch.arange(S)[None, :, None] < lengths[:, None, None]) & \
                    (torch.arange(2)[None, None, :] < rule_len[sym][..., None])
            pieces, valid = pieces.reshape(n, 2 * S), valid.reshape(n, 2 * S)
            order = torch.sort((~valid).long(), dim=1, stable=True).indices
            tgt = torch.where(torch.gather(valid, 1, order), torch.gather(pieces, 1, order), self.pad_id)[:, :T]
        return self.canvas(src, tgt)

    def parse(self, text: str) -> list[int]:
        if self.task == "add":  # "123+45"
            if not all(c.isdigit() or c == "+" for c in text.replace(" ", "")):
                raise ValueError(f"an addition source is digits and one '+', got {text!r}")
            return [10 if c == "+" else int(c) for c in text.replace(" ", "")]
        return super().parse(text)

    def render(self, symbols: list[int]) -> str:
        if self.task == "add":
            return "".join("+" if v == 10 else str(v) for v in symbols)
        return super().render(symbols)

    # ---- dataset contract --------------------------------------------------------------------
    def train_batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        return self.pairs(batch_size, torch.Generator().manual_seed(_seed_int(self.seed, _TRAIN, step, rank)))

    def split(self, name: str) -> torch.Tensor:
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: 'val', 'test'")
        if name not in self._splits:
            n = self.n_val if name == "val" else self.n_test
            self._splits[name] = self.pairs(n, torch.Generator().manual_seed(_seed_int(self.seed, _SPLITS[name])))
        return self._splits[name].clone()
