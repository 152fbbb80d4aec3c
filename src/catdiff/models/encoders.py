"""Token embeddings for embedding diffusion: the table, its scaling and normalisation, readout
logits, rounding and clamping. It knows nothing of noise, schedules or losses.

Conventions (METHODS.md §1.3-§3): the *raw* table E (K, d) is the learned parameter; its
*unit* form Ê is E row-normalised when `normalize` (CDCD) and E otherwise; the *clean embedding*
of token k is z_0 = c · Ê[k] with c = √d when `scale` (Difformer; CDCD's norm-√d embeddings) and
1 otherwise. Readout logits are ẑ_0 Êᵀ (Diffusion-LM / Difformer rounding: a dot product with
the table) [our choice: with the unit table, so that c only sets the noise-to-signal scale].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TokenEmbedding(nn.Module):
    """Learned (or frozen) embedding table with the conventions above. Shapes: K vocabulary, d dim."""

    def __init__(self, vocab_size: int, dim: int, *, scale: bool = True, normalize: bool = False,
                 frozen: bool = False, init_std: float | None = None):
        super().__init__()
        self.vocab_size, self.dim = vocab_size, dim
        self.scale, self.normalize = scale, normalize
        # N(0, 1/d) rows have norm ≈ 1, so c·Ê has per-coordinate scale ≈ 1 with c = √d (fairseq init)
        std = init_std if init_std is not None else dim ** -0.5
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) * std, requires_grad=not frozen)

    @property
    def c(self) -> float:
        return math.sqrt(self.dim) if self.scale else 1.0

    def unit(self) -> torch.Tensor:
        """(K, d) Ê: the readout table."""
        return F.normalize(self.weight, dim=-1) if self.normalize else self.weight

    def table(self) -> torch.Tensor:
        """(K, d) clean embeddings c·Ê of every token."""
        return self.c * self.unit()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., ) ids → (..., d) clean embeddings z_0."""
        return F.embedding(x, self.table())

    def readout(self, z: torch.Tensor) -> torch.Tensor:
        """(..., d) → (..., K) logits z Êᵀ."""
        return z @ self.unit().t()

    def round(self, z: torch.Tensor) -> torch.Tensor:
        """(..., d) → (...,) ids: argmax of the readout logits (Diffusion-LM rounding)."""
        return self.readout(z).argmax(-1)

    def clamp(self, z: torch.Tensor) -> torch.Tensor:
        """Clamping trick (Diffusion-LM §4.2): replace z by the clean embedding of its rounding."""
        return self.forward(self.round(z))
