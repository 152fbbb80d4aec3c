"""Likelihood in the units of DESIGN.md §4 (bits/token, perplexity bound, NELBO gap) and the running
mean with standard error (DDP-aware) every bound is averaged with, in float64.

It must not know models, processes, datasets or how the per-item values were computed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["bits_per_token", "perplexity_bound", "nelbo_gap", "MeanAccumulator"]

LN2 = math.log(2.0)


def _as_float(x: float | torch.Tensor | np.ndarray) -> float:
    """A Python float; a multi-element tensor/array is averaged (in float64) first."""
    if isinstance(x, torch.Tensor):
        return float(x.detach().to(torch.float64).mean())
    if isinstance(x, np.ndarray):
        return float(np.asarray(x, dtype=np.float64).mean())
    return float(x)


# ---- likelihood units (§4: bits/char, bits/dim, NELBO gap) ----------------------------------
def bits_per_token(nats_per_seq: float | torch.Tensor, seq_len: int) -> float:
    """Bits per token = nats_per_seq / (L · ln 2).

    §4 reports NELBO in bits/char (text) and bits/dim (digits). A tensor of per-sequence values is
    averaged first.
    """
    return _as_float(nats_per_seq) / (seq_len * LN2)


def perplexity_bound(nats_per_seq: float | torch.Tensor, seq_len: int) -> float:
    """Perplexity (upper bound when the input is a NELBO) = exp(nats_per_seq / L)."""
    per_token = _as_float(nats_per_seq) / seq_len
    return math.exp(per_token) if per_token < 700 else math.inf  # exp overflows a double past ~709


def nelbo_gap(nelbo_nats_per_seq: float | torch.Tensor, entropy_nats_per_seq: float) -> float:
    """NELBO gap = (NELBO − H) / H on held-out data (§4, synthetic benchmarks).

    Both in nats per sequence. Its physical limit is 0; a gap below 0 beyond the noise of the two
    estimates means the NELBO is not a bound, i.e. a bug.
    """
    h = _as_float(entropy_nats_per_seq)
    if h <= 0:
        raise ValueError(f"entropy must be positive, got {h}")
    return (_as_float(nelbo_nats_per_seq) - h) / h


class MeanAccumulator:
    """Running mean and standard error of per-item values, in float64.

    Stores (count, mean, M2 = Σ (v − mean)²) and combines batches with Chan et al.'s parallel
    update, which equals sum/sum-of-squares bookkeeping but does not cancel catastrophically when
    the mean is large compared with the spread (e.g. nats per sequence). `stderr` uses the
    unbiased (ddof = 1) standard deviation: std / sqrt(count).
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0

    def _combine(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        tot = self.count + n
        delta = mean - self._mean
        self._mean += delta * n / tot
        self._m2 += m2 + delta * delta * self.count * n / tot
        self.count = tot

    def update(self, values: float | torch.Tensor | np.ndarray) -> MeanAccumulator:
        """Add per-item values (any shape; flattened). Returns self."""
        v = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
        if v.numel() == 0:
            return self
        m = float(v.mean())
        self._combine(v.numel(), m, float(((v - m) ** 2).sum()))
        return self

    def merge(self, other: MeanAccumulator) -> MeanAccumulator:
        """Fold another accumulator (e.g. another rank's) into this one. Returns self."""
        self._combine(other.count, other._mean, other._m2)
        return self

    def state(self) -> tuple[int, float, float]:
        """(count, mean, M2): enough to rebuild or merge."""
        return self.count, self._mean, self._m2

    @classmethod
    def from_state(cls, count: int, mean: float, m2: float) -> MeanAccumulator:
        acc = cls()
        acc._combine(int(count), float(mean), float(m2))
        return acc

    def all_reduce(self, group: Any = None, device: str | torch.device = "cpu") -> MeanAccumulator:
        """A new accumulator merging every rank's, if torch.distributed is initialised; else a copy.

        Uses all_gather of a float64 (count, mean, M2) triple, so every rank gets the same result.
        With NCCL pass the rank's CUDA `device`.
        """
        out = MeanAccumulator.from_state(*self.state())
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()):
            return out
        mine = torch.tensor(self.state(), dtype=torch.float64, device=device)
        world = dist.get_world_size(group)
        parts = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(parts, mine, group=group)
        out = MeanAccumulator()
        for p in parts:
            c, m, m2 = p.tolist()
            out._combine(int(round(c)), m, m2)
        return out

    @property
    def sum(self) -> float:
        return self._mean * self.count

    @property
    def mean(self) -> float:
        return self._mean if self.count else math.nan

    @property
    def var(self) -> float:
        """Unbiased sample variance (ddof = 1); nan with fewer than 2 items."""
        return self._m2 / (self.count - 1) if self.count > 1 else math.nan

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def stderr(self) -> float:
        """Standard error of the mean: std / sqrt(count)."""
        return self.std / math.sqrt(self.count) if self.count > 1 else math.nan

    def __repr__(self) -> str:
        return (
            f"MeanAccumulator(count={self.count}, mean={self.mean:.6g}, stderr={self.stderr:.3g})"
        )
