"""The dataset contract every catdiff dataset follows; it knows nothing of models or processes.

Shapes: B = batch, L = sequence length, K = vocabulary size (tokens are ints in [0, K)).
Training batches are a pure function of (seed, step, rank): resuming at step s replays exactly
the batches an uninterrupted run would have seen, and DDP ranks see disjoint data.
"""

from __future__ import annotations

import torch

from ..structs import Batch


class CategoricalDataset:
    """Base class. Subclasses set `name`, `vocab_size`, `seq_len` and implement the methods."""

    name: str = "base"
    vocab_size: int  # K
    seq_len: int  # L
    exact: bool = False  # True when log_prob / entropy are exact (synthetic data)
    kind: str = "tokens"  # "tokens" | "text" | "image" (how samples are shown)

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """(B, L) int64 batch for optimisation step `step`, deterministic in (seed, step, rank)."""
        raise NotImplementedError

    def split(self, name: str) -> torch.Tensor:
        """(N, L) int64 held-out data; `name` in {"val", "test"}; deterministic."""
        raise NotImplementedError

    def head(self, name: str, n: int | None) -> torch.Tensor:
        """The first n rows of split `name` (all when n is None); large corpora read only those."""
        x = self.split(name)
        return x if n is None else x[:n]

    def batch(self, x: torch.Tensor) -> Batch:
        """Rows x (B, L) as the Batch a method trains and is scored on: every position a target."""
        return Batch(x)

    def decode(self, x: torch.Tensor) -> str:
        """Human-readable rendering of one (L,) sequence."""
        return " ".join(str(int(v)) for v in x)

    def state(self) -> dict:
        """JSON-able facts needed to rebuild this dataset identically (saved with checkpoints)."""
        return {"name": self.name, "vocab_size": self.vocab_size, "seq_len": self.seq_len}

    @classmethod
    def from_state(cls, state: dict) -> "CategoricalDataset":
        """Rebuild the identical dataset from `state()`."""
        return cls(**state["kwargs"])

    # ---- exact-likelihood datasets only -------------------------------------------------
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) float64 exact log p(x) in nats."""
        raise NotImplementedError(f"dataset {self.name!r} has no exact likelihood")

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, L) exact samples from the data distribution."""
        raise NotImplementedError(f"dataset {self.name!r} cannot draw fresh samples")

    def entropy(self, n: int = 20000, seed: int = 0) -> tuple[float, float]:
        """(H, standard error) in nats per sequence: mean -log p over n fresh samples."""
        g = torch.Generator().manual_seed(seed)
        nll = -self.log_prob(self.sample(n, g))
        return float(nll.mean()), float(nll.std() / n**0.5)

    def latent_labels(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B,) each row's true latent class where the data has one discrete latent per sequence
        (`mixture`: its most likely component), else None."""
        return None

    def conditionals(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        """(B, L, K) float64 exact p(x_i = k | x at observed positions) for every position i.

        `observed` is a (B, L) bool mask; entries of x at unobserved positions are ignored. At an
        observed position the row is the one-hot of x_i. Only `mixture` and `hmm` provide this.
        """
        raise NotImplementedError(f"dataset {self.name!r} has no exact conditionals")
