"""Continuous-valued datasets for the EDM / DisCo-Diff methods (METHODS.md §4); they know nothing
of models or diffusion. Samples are float tensors (B, D); `vocab_size` is 0 (no tokens).

`gaussians8`: the DisCo-Diff toy — 8 isotropic Gaussians of std 0.2 with means on the circle of
radius 3 at 45° steps, equal weights, 1000 points per component as the training set (n_train =
8000). Randomness follows data.synthetic: every sample is a function of `seed` and a stream key.
`digits_continuous`: scikit-learn's digits with grey levels scaled to [-1, 1].
"""

from __future__ import annotations

import math

import torch

from .images import Digits
from .synthetic import _TRAIN, _check_int, _check_positive, _Synthetic, _torch_generator


class Gaussians8(_Synthetic):
    name = "gaussians8"
    kind = "vector"
    exact = False  # the token metrics (sample NLL, coherence) do not apply; `log_prob` is a density

    def __init__(self, n_components: int = 8, radius: float = 3.0, std: float = 0.2, n_train: int = 8000,
                 seed: int = 0, n_val: int = 2000, n_test: int = 8000):
        self.n_components = _check_int("n_components", n_components)
        self.radius, self.std = _check_positive("radius", radius), _check_positive("std", std)
        self.n_train = _check_int("n_train", n_train, minimum=0)
        self._init_common(dict(n_components=n_components, radius=radius, std=std, n_train=n_train, seed=seed,
                               n_val=n_val, n_test=n_test))
        self.vocab_size, self.seq_len = 0, 2
        angle = 2 * math.pi * torch.arange(self.n_components, dtype=torch.float64) / self.n_components
        self.means = self.radius * torch.stack([angle.cos(), angle.sin()], 1)  # (M, 2)
        self._train_set = self.sample(self.n_train, _torch_generator(self.seed, _TRAIN, 0)) if self.n_train else None

    def sample_with_latent(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, 2) float32, component (n,) int64)."""
        c = torch.randint(0, self.n_components, (n,), generator=generator)
        x = self.means[c] + self.std * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return x.float(), c

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_with_latent(n, generator)[0]

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """A batch of the fixed training set (drawn with replacement, keyed by (seed, step, rank)), or
        fresh samples when n_train = 0."""
        if self._train_set is None:
            return super().train_batch(step, batch_size, rank, world)
        g = _torch_generator(self.seed, _TRAIN, 1, _check_int("step", step, 0), _check_int("rank", rank, 0))
        return self._train_set[torch.randint(0, self.n_train, (batch_size,), generator=g)]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) float64 log density."""
        d2 = (x.double().unsqueeze(1) - self.means).pow(2).sum(-1)  # (B, M)
        log_n = -0.5 * d2 / self.std ** 2 - math.log(2 * math.pi * self.std ** 2)
        return torch.logsumexp(log_n, 1) - math.log(self.n_components)

    def component(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) index of the nearest mean (the most likely component)."""
        return (x.double().unsqueeze(1) - self.means).pow(2).sum(-1).argmin(1)

    def decode(self, x: torch.Tensor) -> str:
        return " ".join(f"{float(v):.4f}" for v in x)


class ContinuousDigits(Digits):
    """scikit-learn's 8×8 digits as continuous 64-vectors: grey level v ∈ {0..16} ↦ v/8 - 1 ∈ [-1, 1]
    (DisCo-Diff issue: digits as continuous images). Same splits and streams as `digits`;
    `to_tokens` rounds back to the 17 levels (for FD-digits and pictures)."""

    name = "digits_continuous"
    kind = "vector"
    vocab_size = 0

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        return super().train_batch(step, batch_size, rank, world).float() / 8.0 - 1.0

    def split(self, name: str) -> torch.Tensor:
        return super().split(name).float() / 8.0 - 1.0

    @staticmethod
    def to_tokens(x: torch.Tensor) -> torch.Tensor:
        return torch.round((x.float().clamp(-1, 1) + 1.0) * 8.0).long()

    def decode(self, x) -> str:
        return super().decode(self.to_tokens(torch.as_tensor(x)))

    @staticmethod
    def save_grid(x, path, nrow=None, scale: int = 4):
        return Digits.save_grid(ContinuousDigits.to_tokens(torch.as_tensor(x)), path, nrow, scale)
