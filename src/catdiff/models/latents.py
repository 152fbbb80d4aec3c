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


def image_side(dim: int, patch: int) -> int:
    """Side of a square image of `dim` values cut into patch × patch tiles; ValueError otherwise."""
    side = math.isqrt(dim)
    if side * side != dim or side % patch:
        raise ValueError(f"patches of side {patch} need square images whose side is a multiple of {patch}, "
                         f"got {dim} values")
    return side


def patchify(y: torch.Tensor, side: int, p: int) -> torch.Tensor:
    """(B, side²) raster images → (B, P, p²) non-overlapping tiles, tiles and pixels in raster order."""
    B = y.shape[0]
    return y.reshape(B, side // p, p, side // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)


def unpatchify(h: torch.Tensor, side: int, p: int) -> torch.Tensor:
    """Inverse of patchify: (B, P, p²) → (B, side²)."""
    B = h.shape[0]
    return h.reshape(B, side // p, side // p, p, p).permute(0, 1, 3, 2, 4).reshape(B, side * side)


class ViTEncoder(nn.Module):
    """Images y (B, side²) → logits (B, m, k): non-overlapping patch × patch tokens, m learned class
    tokens appended, a bidirectional transformer, a k-way readout at each class token (DisCo-Diff's
    ViT encoder with m extra class tokens)."""

    def __init__(self, dim: int, m: int, k: int, patch: int = 2, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4):
        super().__init__()
        from .transformer import Transformer, TransformerConfig

        self.side, self.patch, self.m = image_side(dim, patch), patch, m
        n_patches = (self.side // patch) ** 2
        self.embed = nn.Linear(patch * patch, d_model)
        self.cls = nn.Parameter(torch.randn(m, d_model) * 0.02)
        self.net = Transformer(TransformerConfig(vocab_size=1, out_size=k, seq_len=n_patches + m, d_model=d_model,
                                                 n_layers=n_layers, n_heads=n_heads, time_cond=False))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        patches = patchify(y, self.side, self.patch)  # (B, P, p²)
        h = torch.cat([self.embed(patches), self.cls.expand(y.shape[0], -1, -1)], 1)  # (B, P + m, D)
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


class PatchDenoiser(nn.Module):
    """The image denoiser network F(c_in x, c_noise, c): (B, side²) → (B, side²). Non-overlapping
    patches are tokens of a DiT-style transformer (adaLN on the noise level, learned absolute
    positions); a latent vector (B, cond_dim) joins the adaLN conditioning, or with context_dim the
    m latent slots (B, m, context_dim) are cross-attended by every block (DisCo-Diff's denoiser
    conditioning; zero-initialised, so an untrained block ignores them)."""

    def __init__(self, dim: int, patch: int = 2, d_model: int = 128, n_layers: int = 4, n_heads: int = 4,
                 cond_dim: int = 0, context_dim: int = 0):
        super().__init__()
        from .transformer import Transformer, TransformerConfig

        self.side, self.patch = image_side(dim, patch), patch
        self.embed = nn.Linear(patch * patch, d_model)
        n_patches = (self.side // patch) ** 2
        self.net = Transformer(TransformerConfig(vocab_size=1, out_size=patch * patch, seq_len=n_patches,
                                                 d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                                 cond_dim=cond_dim, context_dim=context_dim))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(patchify(x, self.side, self.patch))  # (B, P, D)
        t = c_noise.reshape(-1) / 4  # the transformer embeds 1000·t: the same 250·c_noise as ConditionalMLP
        if self.net.cfg.context_dim > 0:
            out = self.net(None, t, inputs_embeds=h, context=cond)
        else:
            out = self.net(None, t, inputs_embeds=h, cond=cond)
        return unpatchify(out, self.side, self.patch)  # (B, side²)
