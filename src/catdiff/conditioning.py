"""Conditions for generation: which positions of a sequence are fixed, and to what. One value type
for infilling, prefixes, suffixes and seq2seq sources; it knows no method, network or tokenizer.

A `Condition` holds `values` (B, L) (token ids, or floats for vector data) and a bool mask `fixed`
(B, L). Every method's `sample(..., condition=c)` returns samples equal to `values` wherever `fixed`
is True: masked methods start those tokens unmasked (SUBS keeps them), embedding methods re-impose
their noised clean embeddings at every step (DiffuSeq-style), EDM re-imposes noised values
(inpainting), AR forces them as it goes (exact for prefixes; left context only for later blanks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

BLANK = "_"  # one free position in an infill template


@dataclass
class Condition:
    values: torch.Tensor  # (B, L) or (1, L), broadcast over the batch
    fixed: torch.Tensor  # same shape, bool
    # fixed positions that are a clean condition (a seq2seq source: never noised in training), so
    # continuous methods impose their clean value rather than a noised one; None: none of them
    clean: torch.Tensor | None = None

    def __post_init__(self):
        if self.values.shape != self.fixed.shape or self.fixed.dtype != torch.bool or self.values.dim() != 2:
            raise ValueError("a condition needs (B, L) values and a (B, L) bool `fixed` mask of the same shape, "
                             f"got {tuple(self.values.shape)} and {tuple(self.fixed.shape)} {self.fixed.dtype}")

    @classmethod
    def prefix(cls, prefix: torch.Tensor, seq_len: int, fill: int = 0) -> Condition:
        """The first len(prefix) positions of an L-sequence fixed to `prefix` (1-D)."""
        p = prefix.reshape(-1).long()
        if len(p) > seq_len:
            raise ValueError(f"the prompt has {len(p)} tokens, more than the sequence length {seq_len}")
        values = torch.full((1, seq_len), fill, dtype=torch.long)
        values[0, :len(p)] = p
        fixed = torch.arange(seq_len)[None, :] < len(p)
        return cls(values, fixed)

    @classmethod
    def leading(cls, x: torch.Tensor, n_fixed: int) -> Condition:
        """Each row's first n_fixed positions fixed to x's (seq2seq: source + separator)."""
        fixed = torch.zeros_like(x, dtype=torch.bool)
        fixed[:, :n_fixed] = True
        return cls(x, fixed, clean=fixed)

    def for_batch(self, n: int, device) -> Condition:
        """This condition with n rows (a single row is repeated) on `device`."""
        if self.values.shape[0] not in (1, n):
            raise ValueError(f"the condition has {self.values.shape[0]} rows, cannot serve {n} samples")
        clean = None if self.clean is None else self.clean.expand(n, -1).to(device)
        return Condition(self.values.expand(n, -1).to(device), self.fixed.expand(n, -1).to(device), clean)

    def rows(self, start: int, stop: int) -> Condition:
        """Rows start:stop of a per-sample condition."""
        clean = None if self.clean is None else self.clean[start:stop]
        return Condition(self.values[start:stop], self.fixed[start:stop], clean)

    def clean_mask(self) -> torch.Tensor:
        """(B, L) bool: the fixed positions that are clean conditions."""
        return torch.zeros_like(self.fixed) if self.clean is None else self.clean & self.fixed

    def fit(self, seq_len: int) -> Condition:
        """This condition over seq_len positions: a shorter one is padded on the right with free
        positions (value 0, not fixed, not clean), as the CLI pads a template; one with more
        positions than seq_len is a ValueError. Returns self when it already fits."""
        length = self.values.shape[1]
        if length > seq_len:
            raise ValueError(f"the condition covers {length} positions, more than the {seq_len} the model generates")
        if length == seq_len:
            return self
        pad = seq_len - length

        def extend(t: torch.Tensor, fill) -> torch.Tensor:
            return torch.cat([t, t.new_full((t.shape[0], pad), fill)], dim=1)

        clean = None if self.clean is None else extend(self.clean, False)
        return Condition(extend(self.values, 0), extend(self.fixed, False), clean)

    def check(self, seq_len: int, vocab_size: int | None = None) -> None:
        if self.values.shape[1] != seq_len:
            raise ValueError(f"the condition covers {self.values.shape[1]} positions, the model generates {seq_len}")
        if vocab_size and bool(self.fixed.any()):
            v = self.values[self.fixed]
            if int(v.min()) < 0 or int(v.max()) >= vocab_size:
                raise ValueError(f"fixed tokens must lie in [0, {vocab_size})")

    def impose(self, x: torch.Tensor) -> torch.Tensor:
        """x with the fixed positions set to their values (x: (B, L) or (B, L, ...) for broadcast)."""
        fixed, values = self.fixed, self.values.to(x.dtype)
        while fixed.dim() < x.dim():
            fixed, values = fixed[..., None], values[..., None]
        return torch.where(fixed, values, x)

    def prefix_length(self) -> int:
        """Number of leading positions fixed in every row (0 if the first is free somewhere)."""
        free = ~self.fixed.all(0)
        return int(free.float().argmax()) if bool(free.any()) else self.fixed.shape[1]


def from_template(tokens: list, seq_len: int) -> Condition:
    """A condition from a template: numbers are fixed values (ints: tokens; floats: vector data),
    None marks a free position; positions past the template's end are free."""
    if len(tokens) > seq_len:
        raise ValueError(f"the template has {len(tokens)} positions, more than the sequence length {seq_len}")
    floats = any(isinstance(v, float) for v in tokens)
    values = torch.zeros((1, seq_len), dtype=torch.float64 if floats else torch.long)
    fixed = torch.zeros((1, seq_len), dtype=torch.bool)
    for i, v in enumerate(tokens):
        if v is not None:
            values[0, i], fixed[0, i] = v, True
    return Condition(values, fixed)


def template(text: str, encode: Callable[[str], list], seq_len: int, blank: str = BLANK) -> Condition:
    """An infill template such as "The ___ of ___": the text between blanks is encoded and fixed,
    each blank character is one free position; positions past the end are free."""
    tokens: list = []
    for i, segment in enumerate(text.split(blank)):
        if i:
            tokens.append(None)
        if segment:
            tokens.extend(v.item() if hasattr(v, "item") else v for v in encode(segment))
    return from_template(tokens, seq_len)
