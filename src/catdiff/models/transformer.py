"""Shared transformer, bidirectional (DiT) or causal; it knows nothing of diffusion processes, schedules or losses.

Pre-norm blocks with rotary attention and a GELU MLP. With `time_cond` (or `cond_dim > 0`) every
block is adaLN-Zero modulated (Peebles & Xie 2023, DiT §3.2): a conditioning vector
c = MLP(sinusoid(1000·t)) [+ W_c·cond] gives per-block shift/scale/gate for attention and MLP;
the modulation is zero-initialised, so at init every block is the identity and the network is
embed (+ learned absolute positions when `abs_pos`) → LayerNorm → output projection. Without
conditioning the blocks are plain pre-LN blocks. Positions reach attention through rotary
embeddings on q/k (relative) and, optionally, the learned absolute table.

Shapes: B = batch, L = sequence length, D = d_model, V = vocab_size (input ids), K = out_size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from .layers import (
    MLP,
    Attention,
    CrossAttention,
    KVCache,
    TimestepEmbedder,
    init_normal_,
    local_mix,
    maybe_compile,
    modulate,
    rotary_tables,
)

__all__ = ["PRESETS", "KVCache", "Transformer", "TransformerConfig", "build_transformer",
           "flops_per_token", "maybe_compile"]


@dataclass
class TransformerConfig:
    vocab_size: int  # input ids in [0, vocab_size)  (MDLM passes K+1: the mask id is K)
    out_size: int  # logits per position (MDLM passes K)
    seq_len: int  # max length (rotary table / KV cache size)
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    causal: bool = False  # True = autoregressive twin
    time_cond: bool = True  # adaLN time conditioning (DiT); False = plain pre-LN blocks
    tie_weights: bool = False  # output projection = first out_size rows of the input embedding
    cond_dim: int = 0  # optional extra (B, cond_dim) vector added to the time embedding
    context_dim: int = 0  # optional (B, M, context_dim) context every block cross-attends to (0 = none)
    rope_base: float = 10000.0
    # learned absolute positions added to the input embeddings. Rotary attention alone is
    # translation-equivariant, so a bidirectional model cannot tell which position it is at;
    # data whose law depends on the absolute position (synthetic mixtures, images) needs this.
    abs_pos: bool = True
    # kernel of a depthwise convolution over positions added as its own residual branch in front
    # of every block's attention (0 = off). A masked position sees nothing of itself, so all its
    # evidence must come through attention, which at init spreads over all L positions; the
    # short convolution hands neighbours' features to every position from the first step.
    local_mix: int = 0
    # activation checkpointing: keep only each block's input during training and recompute the
    # block in the backward pass (about a third more compute, a fraction of the activation memory)
    checkpoint: bool = False

    def __post_init__(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"d_model ({self.d_model}) / n_heads ({self.n_heads}) must be an even integer")
        if self.tie_weights and self.vocab_size < self.out_size:
            raise ValueError(f"tie_weights needs vocab_size ({self.vocab_size}) >= out_size ({self.out_size})")
        if self.local_mix < 0 or (self.local_mix and self.local_mix % 2 == 0):
            raise ValueError(f"local_mix must be 0 (off) or an odd kernel size, got {self.local_mix}")
        if self.local_mix and self.causal:
            raise ValueError("local_mix is for bidirectional models (a causal model sees its own token)")
        if min(self.vocab_size, self.out_size, self.seq_len, self.n_layers) < 1:
            raise ValueError("vocab_size, out_size, seq_len and n_layers must be positive")

    @property
    def hidden(self) -> int:
        """MLP width."""
        return int(round(self.mlp_ratio * self.d_model))

    @property
    def conditioned(self) -> bool:
        """Whether blocks are adaLN-modulated (time and/or extra conditioning)."""
        return self.time_cond or self.cond_dim > 0


PRESETS = {
    "tiny": dict(d_model=128, n_layers=2, n_heads=4),
    "small": dict(d_model=384, n_layers=6, n_heads=6),
    "base": dict(d_model=768, n_layers=12, n_heads=12),
}


class Block(nn.Module):
    """Pre-norm block; adaLN-Zero modulated when `conditioned`, else LayerNorm(weight, no bias)."""

    def __init__(self, cfg: TransformerConfig, layer: int):
        super().__init__()
        D = cfg.d_model
        self.layer, self.conditioned, self.dropout = layer, cfg.conditioned, cfg.dropout
        self.attn = Attention(D, cfg.n_heads, causal=cfg.causal, dropout=cfg.dropout)
        self.mlp = MLP(D, cfg.hidden)
        if cfg.context_dim:  # pre-norm cross-attention after self-attention; zero-init output
            self.cross = CrossAttention(D, cfg.n_heads, cfg.context_dim)
            self.cross_norm_weight = nn.Parameter(torch.ones(D))
        if cfg.local_mix:
            self.mix_weight = nn.Parameter(torch.empty(cfg.local_mix, D))  # (k, D) depthwise taps
        if self.conditioned:
            # c → (shift, scale, gate) for attention and MLP; zero-init (adaLN-Zero)
            self.ada = nn.Linear(D, 6 * D)
        else:
            self.norm1_weight = nn.Parameter(torch.ones(D))
            self.norm2_weight = nn.Parameter(torch.ones(D))

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    def _cross(self, x, context):
        if context is None:
            return x
        return x + self._drop(self.cross(F.layer_norm(x, (x.shape[-1],), self.cross_norm_weight), context))

    def forward(self, x, c, cos, sin, cache: KVCache | None = None, context: torch.Tensor | None = None):
        D = x.shape[-1]
        if hasattr(self, "mix_weight"):
            x = x + local_mix(F.layer_norm(x, (D,)), self.mix_weight)
        if self.conditioned:
            mods = self.ada(c).view(-1, 6, 1, D)  # c: (B, D) = SiLU(cond) → (B, 6, 1, D)
            shift1, scale1, gate1, shift2, scale2, gate2 = mods.unbind(1)  # each (B, 1, D)
            h = modulate(F.layer_norm(x, (D,)), shift1, scale1)  # (B, L, D)
            x = self._cross(torch.addcmul(x, gate1, self._drop(self.attn(h, cos, sin, cache, self.layer))), context)
            h = modulate(F.layer_norm(x, (D,)), shift2, scale2)
            return torch.addcmul(x, gate2, self._drop(self.mlp(h)))  # (B, L, D)
        x = x + self._drop(self.attn(F.layer_norm(x, (D,), self.norm1_weight), cos, sin, cache, self.layer))
        x = self._cross(x, context)
        return x + self._drop(self.mlp(F.layer_norm(x, (D,), self.norm2_weight)))  # (B, L, D)


class Transformer(nn.Module):
    """Token (or embedding) sequence → per-position logits, (B, L) → (B, L, out_size)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.tok_emb = nn.Embedding(cfg.vocab_size, D)
        if cfg.abs_pos:
            self.pos_emb = nn.Parameter(torch.zeros(cfg.seq_len, D))
        if cfg.time_cond:
            self.time_emb = TimestepEmbedder(D)
        if cfg.cond_dim > 0:
            self.cond_proj = nn.Linear(cfg.cond_dim, D)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        if cfg.conditioned:
            self.final_ada = nn.Linear(D, 2 * D)  # (shift, scale) of the final LayerNorm; zero-init
        else:
            self.final_norm_weight = nn.Parameter(torch.ones(D))
        if not cfg.tie_weights:
            self.head = nn.Linear(D, cfg.out_size, bias=False)
        cos, sin = rotary_tables(cfg.seq_len, D // cfg.n_heads, cfg.rope_base)  # (L, Dh/2) each
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    # ---- init ---------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """std 0.02 normal for matrices; residual projections 0.02/sqrt(2·n_layers) (GPT-2);
        adaLN modulation zero (adaLN-Zero); norm gains 1; biases 0."""
        std = 0.02
        init_normal_(self, std)
        if self.cfg.abs_pos:
            nn.init.normal_(self.pos_emb, std=std)
        for blk in self.blocks:
            if self.cfg.local_mix:  # the default init of a depthwise Conv1d: U(±1/sqrt(fan_in = k))
                bound = 1.0 / math.sqrt(self.cfg.local_mix)
                nn.init.uniform_(blk.mix_weight, -bound, bound)
            nn.init.normal_(blk.attn.proj.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
            nn.init.normal_(blk.mlp.proj.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
            if self.cfg.context_dim:
                nn.init.zeros_(blk.cross.proj.weight)  # the block starts as if there were no context
            if self.cfg.conditioned:
                nn.init.zeros_(blk.ada.weight)
                nn.init.zeros_(blk.ada.bias)
        if self.cfg.conditioned:
            nn.init.zeros_(self.final_ada.weight)
            nn.init.zeros_(self.final_ada.bias)

    # ---- API ----------------------------------------------------------------------------
    @property
    def output_weight(self) -> torch.Tensor:
        """(K, D) output projection; a view of the input embedding when weights are tied."""
        if self.cfg.tie_weights:
            return self.tok_emb.weight[: self.cfg.out_size]
        return self.head.weight

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty KV cache for incremental causal decoding of up to cfg.seq_len positions."""
        if not self.cfg.causal:
            raise ValueError("KV caching needs a causal model (cfg.causal=True)")
        w = self.tok_emb.weight
        return KVCache(self.cfg.n_layers, batch_size, self.cfg.n_heads, self.cfg.seq_len,
                       self.cfg.d_model // self.cfg.n_heads, device=w.device, dtype=w.dtype)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; `non_embedding` drops the input embedding tables (token table, except
        the rows that serve as the tied output projection, and learned positions)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.cfg.tie_weights:
                n += self.cfg.out_size * self.cfg.d_model
            if self.cfg.abs_pos:
                n -= self.pos_emb.numel()
        return n

    def _conditioning(self, B: int, t, cond) -> torch.Tensor | None:
        cfg = self.cfg
        if cfg.time_cond != (t is not None):
            raise ValueError("t is required iff cfg.time_cond" + (" (got None)" if t is None else " (got t)"))
        if (cfg.cond_dim > 0) != (cond is not None):
            raise ValueError(f"cond (B, {cfg.cond_dim}) is required iff cfg.cond_dim > 0")
        if not cfg.conditioned:
            return None
        c = 0.0
        if t is not None:
            t = torch.as_tensor(t, dtype=torch.float32, device=self.tok_emb.weight.device).reshape(-1)
            if t.numel() not in (1, B):
                raise ValueError(f"t must have 1 or B={B} entries, got shape {tuple(t.shape)}")
            c = self.time_emb(t.expand(B))  # (B, D)
        if cond is not None:
            c = c + self.cond_proj(cond.to(self.tok_emb.weight.dtype))  # (B, D)
        return F.silu(c)  # (B, D): the SiLU in front of every adaLN linear, computed once

    def forward(self, tokens: torch.Tensor | None, t: torch.Tensor | None = None, *,
                inputs_embeds: torch.Tensor | None = None, cond: torch.Tensor | None = None,
                cache: KVCache | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L) ids or inputs_embeds (B, L, D); t (B,) in [0, 1] iff time_cond;
        cond (B, cond_dim) iff cond_dim > 0; context (B, M, context_dim) iff context_dim > 0;
        cache (causal only) for incremental decoding. Returns logits (B, L, out_size)."""
        if (tokens is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of tokens / inputs_embeds")
        if (self.cfg.context_dim > 0) != (context is not None):
            raise ValueError(f"context (B, M, {self.cfg.context_dim}) is required iff cfg.context_dim > 0")
        x = self.tok_emb(tokens) if inputs_embeds is None else inputs_embeds  # (B, L, D)
        B, L, D = x.shape
        offset = 0
        if cache is not None:
            if not self.cfg.causal:
                raise ValueError("cache= needs a causal model (cfg.causal=True)")
            offset = cache.pos
        if offset + L > self.cfg.seq_len:
            raise ValueError(f"positions up to {offset + L} exceed cfg.seq_len={self.cfg.seq_len}")
        if self.cfg.abs_pos:
            x = x + self.pos_emb[offset:offset + L]  # (B, L, D)
        c = self._conditioning(B, t, cond)  # (B, D) or None
        cos = self.rope_cos[offset:offset + L]  # (L, Dh/2)
        sin = self.rope_sin[offset:offset + L]
        recompute = self.cfg.checkpoint and torch.is_grad_enabled() and cache is None
        for blk in self.blocks:
            if recompute:  # torch.utils.checkpoint restores the RNG state, so dropout recomputes alike
                x = torch.utils.checkpoint.checkpoint(blk, x, c, cos, sin, None, context, use_reentrant=False)
            else:
                x = blk(x, c, cos, sin, cache, context)  # (B, L, D)
        if cache is not None:
            cache.advance(L)
        if self.cfg.conditioned:
            shift, scale = self.final_ada(c).view(B, 2, 1, D).unbind(1)  # each (B, 1, D)
            x = modulate(F.layer_norm(x, (D,)), shift, scale)
        else:
            x = F.layer_norm(x, (D,), self.final_norm_weight)
        # logits in fp32 under autocast: every log-probability, loss and draw downstream is fp32
        return F.linear(x, self.output_weight).float()  # (B, L, K)


def matmul_params(cfg: TransformerConfig) -> tuple[int, int]:
    """(per-token, per-sequence) weights of matrix multiplies.

    per-token: every block's qkv (3D²), attention output (D²), MLP (2·D·hidden), and the output
    projection (D·K). per-sequence (applied once per sample, not per position): time MLP
    (256·D + D²), cond projection (cond_dim·D), adaLN modulations (n_layers·6D² + 2D²).
    Embedding lookups (tokens, learned positions) are not matmuls and are not counted.
    """
    D = cfg.d_model
    per_token = cfg.n_layers * (4 * D * D + 2 * D * cfg.hidden) + D * cfg.out_size
    per_seq = 0
    if cfg.time_cond:
        per_seq += 256 * D + D * D
    if cfg.cond_dim > 0:
        per_seq += cfg.cond_dim * D
    if cfg.context_dim > 0:  # queries and output per token; the context's k/v are per sequence (M slots ~ 1)
        per_token += cfg.n_layers * 2 * D * D
        per_seq += cfg.n_layers * 2 * cfg.context_dim * D
    if cfg.conditioned:
        per_seq += cfg.n_layers * 6 * D * D + 2 * D * D
    return per_token, per_seq


def flops_per_token(cfg: TransformerConfig, seq_len: int, training: bool = True) -> float:
    """Model FLOPs per token (Kaplan et al. 2020 §2.1; PaLM App. B):

        training  = 6·N + 12·n_layers·seq_len·D
        inference = 2·N +  4·n_layers·seq_len·D   (forward only: one third)

    N = per-token matmul weights + per-sequence matmul weights / seq_len (see `matmul_params`);
    6 = 2 (multiply-add) × 3 (forward, and backward w.r.t. inputs and weights). The attention term
    counts QKᵀ and AV over the full seq_len keys for every query (2·2·L·D per layer forward), also
    for the causal model (the usual convention; masked half not subtracted). Elementwise work
    (norms, softmax, GELU, RoPE) is not counted.
    """
    per_token, per_seq = matmul_params(cfg)
    n = per_token + per_seq / seq_len
    f = 6 * n + 12 * cfg.n_layers * seq_len * cfg.d_model
    return f if training else f / 3


def build_transformer(preset: str, **overrides) -> Transformer:
    """`build_transformer("small", vocab_size=257, out_size=256, seq_len=256)`; presets set
    d_model/n_layers/n_heads, overrides set any TransformerConfig field. vocab_size, out_size and
    seq_len default to 256."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    kw = dict(vocab_size=256, out_size=256, seq_len=256)
    kw.update(PRESETS[preset])
    kw.update(overrides)
    return Transformer(TransformerConfig(**kw))
