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
    """(B, m, k) one-hots (or soft) → conditioning: per-latent tables, summed to a (B, E) vector
    (adaLN / FiLM conditioning), or with `tokens` kept as (B, m, E) slots for cross-attention.
    Rows of a dropped sample (`drop` (B,) bool) get a learned null (latent dropout, CFG)."""

    def __init__(self, m: int, k: int, dim: int, tokens: bool = False):
        super().__init__()
        self.tokens = tokens
        self.table = nn.Parameter(torch.randn(m, k, dim) / math.sqrt(m))
        self.null = nn.Parameter(torch.zeros((m, dim) if tokens else (dim,)))

    def of_indices(self, z: torch.Tensor) -> torch.Tensor:
        """(B, m) latent indices → the same output as forward(one_hot(z)), by lookup."""
        e = self.table[torch.arange(self.table.shape[0], device=z.device), z.long()]  # (B, m, E)
        return e if self.tokens else e.sum(1)

    def forward(self, onehot: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        e = torch.einsum("bmk,mkd->bmd", onehot.to(self.table.dtype), self.table)  # (B, m, E)
        if not self.tokens:
            e = e.sum(1)  # (B, E)
        if drop is not None:
            e = torch.where(drop.view(-1, *[1] * (e.dim() - 1)), self.null.expand_as(e), e)
        return e

    def null_batch(self, n: int) -> torch.Tensor:
        return self.null.expand(n, *self.null.shape)


class ViTEncoder(nn.Module):
    """Images y (B, side²) → logits (B, m, k): non-overlapping patch × patch tokens, m learned class
    tokens appended, a bidirectional transformer, a k-way readout at each class token (DisCo-Diff's
    ViT encoder with m extra class tokens)."""

    def __init__(self, dim: int, m: int, k: int, patch: int = 2, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4):
        super().__init__()
        from .transformer import Transformer, TransformerConfig

        side = math.isqrt(dim)
        if side * side != dim or side % patch:
            raise ValueError(f"a ViT encoder needs square images whose side is a multiple of {patch}, got {dim} values")
        self.side, self.patch, self.m = side, patch, m
        n_patches = (side // patch) ** 2
        self.embed = nn.Linear(patch * patch, d_model)
        self.cls = nn.Parameter(torch.randn(m, d_model) * 0.02)
        self.net = Transformer(TransformerConfig(vocab_size=1, out_size=k, seq_len=n_patches + m, d_model=d_model,
                                                 n_layers=n_layers, n_heads=n_heads, time_cond=False))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        B, s, p = y.shape[0], self.side, self.patch
        patches = y.reshape(B, s // p, p, s // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)  # (B, P, p²)
        h = torch.cat([self.embed(patches), self.cls.expand(B, -1, -1)], 1)  # (B, P + m, D)
        return self.net(None, inputs_embeds=h)[:, -self.m:]  # (B, m, k)


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
