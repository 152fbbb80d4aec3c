"""Joint token + latent-slot transformer (MM-DiT style); it knows nothing of diffusion processes,
schedules or losses.

Two streams share every attention operation but keep their own weights (Esser et al. 2024, SD3
§5.1 "MM-DiT"): per modality a qkv projection, an output projection, an MLP and an adaLN-Zero
modulation; the queries, keys and values of both streams are concatenated along the sequence
axis for one joint attention. Tokens carry rotary positions (and optionally learned absolute
ones), latent slots a learned slot embedding and the identity rotation. The conditioning vector is
c = MLP(t_x) + MLP(t_y), so the network knows both channels' noise levels (LDDM, METHODS.md §5).

Shapes: B batch, L tokens, P latent slots, dp slot width, D model width, K token logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, TimestepEmbedder, apply_rotary, init_normal_, local_mix, modulate, rotary_tables


@dataclass
class JointConfig:
    vocab_size: int  # input token ids (K + 1 with the mask id)
    out_size: int  # token logits K
    seq_len: int  # L
    n_slots: int  # P
    slot_dim: int  # dp
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: float = 4.0
    abs_pos: bool = True
    local_mix: int = 0  # depthwise convolution over token positions (see TransformerConfig)
    rope_base: float = 10000.0

    def __post_init__(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model ({self.d_model}) / n_heads ({self.n_heads}) must be an even integer")
        if min(self.vocab_size, self.out_size, self.seq_len, self.n_slots, self.slot_dim, self.n_layers) < 1:
            raise ValueError("vocab_size, out_size, seq_len, n_slots, slot_dim and n_layers must be positive")
        if self.local_mix < 0 or (self.local_mix and self.local_mix % 2 == 0):
            raise ValueError(f"local_mix must be 0 (off) or an odd kernel size, got {self.local_mix}")


class _Stream(nn.Module):
    """One modality's weights inside a joint block."""

    def __init__(self, D: int, hidden: int):
        super().__init__()
        self.ada = nn.Linear(D, 6 * D)  # c → shift/scale/gate for attention and MLP (zero-init)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.proj = nn.Linear(D, D, bias=False)
        self.mlp = MLP(D, hidden)


class JointBlock(nn.Module):
    def __init__(self, cfg: JointConfig):
        super().__init__()
        D = cfg.d_model
        self.n_heads = cfg.n_heads
        hidden = int(round(cfg.mlp_ratio * D))
        self.tok, self.lat = _Stream(D, hidden), _Stream(D, hidden)
        if cfg.local_mix:
            self.mix_weight = nn.Parameter(torch.empty(cfg.local_mix, D))  # (k, D) depthwise taps

    def forward(self, x, y, c, cos, sin):
        """x (B, L, D) tokens, y (B, P, D) slots, c (B, D) = SiLU(conditioning), cos/sin (L+P, Dh/2)."""
        B, L, D = x.shape
        P, H = y.shape[1], self.n_heads
        Dh = D // H
        if hasattr(self, "mix_weight"):
            x = x + local_mix(F.layer_norm(x, (D,)), self.mix_weight)
        mx = self.tok.ada(c).view(B, 6, 1, D).unbind(1)  # each (B, 1, D)
        my = self.lat.ada(c).view(B, 6, 1, D).unbind(1)
        hx = modulate(F.layer_norm(x, (D,)), mx[0], mx[1])
        hy = modulate(F.layer_norm(y, (D,)), my[0], my[1])
        qkv = torch.cat([self.tok.qkv(hx), self.lat.qkv(hy)], dim=1).view(B, L + P, 3, H, Dh)
        qk, v = qkv.split((2, 1), dim=2)  # (B, L+P, 2, H, Dh), (B, L+P, 1, H, Dh)
        q, k = apply_rotary(qk, cos.view(L + P, 1, 1, Dh // 2), sin.view(L + P, 1, 1, Dh // 2)).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2)  # (B, H, L+P, Dh)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L + P, D)  # (B, L+P, D)
        x = torch.addcmul(x, mx[2], self.tok.proj(a[:, :L]))
        y = torch.addcmul(y, my[2], self.lat.proj(a[:, L:]))
        x = torch.addcmul(x, mx[5], self.tok.mlp(modulate(F.layer_norm(x, (D,)), mx[3], mx[4])))
        y = torch.addcmul(y, my[5], self.lat.mlp(modulate(F.layer_norm(y, (D,)), my[3], my[4])))
        return x, y


class JointTransformer(nn.Module):
    """(tokens (B, L), slots (B, P, dp), t_x (B,), t_y (B,)) → (logits (B, L, K), ŷ (B, P, dp)).

    `drop` (B,) bool replaces a sequence's slot inputs by one learned null vector (latent dropout
    for guidance); the output ŷ of a dropped sequence carries no information about the input slots.
    """

    def __init__(self, cfg: JointConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        self.slot_in = nn.Linear(cfg.slot_dim, D)
        self.slot_emb = nn.Parameter(torch.zeros(cfg.n_slots, D))
        self.null = nn.Parameter(torch.zeros(D))
        if cfg.abs_pos:
            self.pos_emb = nn.Parameter(torch.zeros(cfg.seq_len, D))
        self.time_x, self.time_y = TimestepEmbedder(D), TimestepEmbedder(D)
        self.blocks = nn.ModuleList(JointBlock(cfg) for _ in range(cfg.n_layers))
        self.final_x, self.final_y = nn.Linear(D, 2 * D), nn.Linear(D, 2 * D)  # adaLN of the heads
        self.head_x = nn.Linear(D, cfg.out_size, bias=False)
        self.head_y = nn.Linear(D, cfg.slot_dim)
        cos, sin = rotary_tables(cfg.seq_len, D // cfg.n_heads, cfg.rope_base)  # (L, Dh/2)
        # slots get the identity rotation: attention between a token and a slot is position-free
        cos = torch.cat([cos, torch.ones(cfg.n_slots, cos.shape[1])])
        sin = torch.cat([sin, torch.zeros(cfg.n_slots, sin.shape[1])])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """As the shared Transformer: N(0, 0.02) matrices, scaled residual projections, adaLN-Zero;
        the ŷ head is zero too, so at init ŷ = 0 (the prior mean)."""
        std = 0.02
        init_normal_(self, std)
        for p in (self.slot_emb, self.null) + ((self.pos_emb,) if self.cfg.abs_pos else ()):
            nn.init.normal_(p, std=std)
        for blk in self.blocks:
            if self.cfg.local_mix:
                bound = 1.0 / math.sqrt(self.cfg.local_mix)
                nn.init.uniform_(blk.mix_weight, -bound, bound)
            for s in (blk.tok, blk.lat):
                nn.init.normal_(s.proj.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
                nn.init.normal_(s.mlp.proj.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
                nn.init.zeros_(s.ada.weight)
                nn.init.zeros_(s.ada.bias)
        for lin in (self.final_x, self.final_y, self.head_y):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, tokens: torch.Tensor, slots: torch.Tensor, t_x: torch.Tensor, t_y: torch.Tensor,
                drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, L = tokens.shape
        D, P = self.cfg.d_model, self.cfg.n_slots
        if slots.shape[1:] != (P, self.cfg.slot_dim):
            raise ValueError(f"slots must be (B, {P}, {self.cfg.slot_dim}), got {tuple(slots.shape)}")
        x = self.tok_emb(tokens)  # (B, L, D)
        if self.cfg.abs_pos:
            x = x + self.pos_emb[:L]
        y = self.slot_in(slots.to(x.dtype))  # (B, P, D)
        if drop is not None:
            y = torch.where(drop.view(B, 1, 1), self.null.expand(B, P, D), y)
        y = y + self.slot_emb
        t_x = torch.as_tensor(t_x, dtype=torch.float32, device=x.device).reshape(-1).expand(B)
        t_y = torch.as_tensor(t_y, dtype=torch.float32, device=x.device).reshape(-1).expand(B)
        c = F.silu(self.time_x(t_x) + self.time_y(t_y))  # (B, D)
        cos, sin = self.rope_cos, self.rope_sin  # (seq_len + P, Dh/2): token rows, then slot rows
        if L < self.cfg.seq_len:  # shorter input: its token rows, then the slot rows
            cos = torch.cat([cos[:L], cos[self.cfg.seq_len:]])
            sin = torch.cat([sin[:L], sin[self.cfg.seq_len:]])
        for blk in self.blocks:
            x, y = blk(x, y, c, cos, sin)
        sx, gx = self.final_x(c).view(B, 2, 1, D).unbind(1)
        sy, gy = self.final_y(c).view(B, 2, 1, D).unbind(1)
        logits = self.head_x(modulate(F.layer_norm(x, (D,)), sx, gx))  # (B, L, K)
        y_hat = self.head_y(modulate(F.layer_norm(y, (D,)), sy, gy))  # (B, P, dp)
        return logits, y_hat


def joint_flops_per_token(cfg: JointConfig, training: bool = True) -> float:
    """Matmul FLOPs per token position (slots counted as extra positions, amortised over L):
    6·N per position for training (2·N inference) + the joint attention term, as
    transformer.flops_per_token."""
    D, n = cfg.d_model, cfg.n_layers
    hidden = int(round(cfg.mlp_ratio * D))
    per_pos = n * (4 * D * D + 2 * D * hidden)
    T = cfg.seq_len + cfg.n_slots
    total = T * per_pos + cfg.seq_len * D * cfg.out_size + cfg.n_slots * D * cfg.slot_dim
    f = 6 * total / cfg.seq_len + 12 * n * T * D * T / cfg.seq_len
    return f if training else f / 3
