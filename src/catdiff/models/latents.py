"""Discrete latents for DisCo-Diff (Xu et al. 2024, METHODS.md §4): straight-through Gumbel-softmax
and the networks that produce and consume m categorical latents with k classes; they know nothing
of diffusion processes, schedules or losses.

Shapes: B batch, m latents, k classes, D data dimension (vectors), E latent embedding width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import timestep_embedding


def gumbel_softmax_st(logits: torch.Tensor, tau: float = 1.0, generator: torch.Generator | None = None,
                      hard: bool = True) -> torch.Tensor:
    """(..., k) one-hot draws from softmax(logits) by the Gumbel-max trick; with `hard` the forward
    value is the exact one-hot and the gradient that of the relaxed softmax((logits + g)/τ)
    (straight-through, Jang et al. 2017 §2; Bengio et al. 2013). τ → 0 gives argmax(logits + g)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    g = -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))  # Gumbel(0, 1)
    soft = torch.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return soft
    onehot = F.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return _StraightThrough.apply(soft, onehot)


class _StraightThrough(torch.autograd.Function):
    """Forward: the exact hard value; backward: the gradient goes to the soft value unchanged
    (`hard + soft - soft.detach()` would leave rounding residue in the forward one-hot)."""

    @staticmethod
    def forward(ctx, soft, hard):
        return hard

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MLPEncoder(nn.Module):
    """y (B, D) → logits (B, m, k) of m categorical latents (METHODS.md §4 toy: a 3-layer MLP)."""

    def __init__(self, dim: int, m: int, k: int, width: int = 128, layers: int = 3):
        super().__init__()
        self.m, self.k = m, k
        mods, d = [], dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, width), nn.SiLU()]
            d = width
        mods.append(nn.Linear(d, m * k))
        self.net = nn.Sequential(*mods)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y.flatten(1)).view(-1, self.m, self.k)


class LatentEmbedding(nn.Module):
    """(B, m, k) one-hots (or soft) → (B, E) conditioning vector: per-latent tables, summed; rows of a
    dropped sample (`drop` (B,) bool) are replaced by a learned null vector (latent dropout, CFG)."""

    def __init__(self, m: int, k: int, dim: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(m, k, dim) / math.sqrt(m))
        self.null = nn.Parameter(torch.zeros(dim))

    def of_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, m) latent indices → (B, E): the same vector as forward(one_hot(z)), by lookup."""
        return self.table[torch.arange(self.table.shape[0], device=z.device), z.long()].sum(1)

    def forward(self, onehot: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        e = torch.einsum("bmk,mkd->bd", onehot.to(self.table.dtype), self.table)  # (B, E)
        if drop is not None:
            e = torch.where(drop.view(-1, 1), self.null.expand_as(e), e)
        return e


class ConditionalMLP(nn.Module):
    """The toy denoiser network F(c_in x, c_noise, c): (B, D) → (B, D). Noise level and latent
    enter through a conditioning vector added to every hidden layer (FiLM-like bias); METHODS.md §4
    toy: a 4-layer MLP."""

    def __init__(self, dim: int, width: int = 256, layers: int = 4, cond_dim: int = 0):
        super().__init__()
        self.inp = nn.Linear(dim, width)
        self.noise = nn.Sequential(nn.Linear(64, width), nn.SiLU(), nn.Linear(width, width))
        self.cond = nn.Linear(cond_dim, width) if cond_dim > 0 else None
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(layers - 2))
        self.out = nn.Linear(width, dim)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        c = self.noise(timestep_embedding(c_noise.reshape(-1) * 250.0, 64).to(x.dtype))  # (B, W)
        if self.cond is not None:
            if cond is None:
                raise ValueError("this network is conditioned: pass cond (B, cond_dim)")
            c = c + self.cond(cond)
        h = F.silu(self.inp(x) + c)
        for lin in self.hidden:
            h = F.silu(lin(h) + c)
        return self.out(h)
