"""Building blocks of the catdiff networks; they know nothing of diffusion processes, schedules or losses.

Shapes: B = batch, L = sequence length (queries), S = key length (cache + new), H = heads,
Dh = head width, D = d_model.

Choices (documented once, here):
- Normalisation is LayerNorm without bias (`F.layer_norm`, a single fused kernel on CPU and GPU).
  Inside adaLN blocks it has no affine parameters at all: the per-sample shift/scale replace them.
- Rotary position embeddings use the rotate-half convention (GPT-NeoX / LLaMA): the first and the
  second half of each head are the two coordinates of Dh/2 planes rotated by angle m·θ_i,
  θ_i = base^(-2i/Dh) (Su et al. 2021, RoFormer eq. 34). cos/sin tables are precomputed buffers.
- Attention is `F.scaled_dot_product_attention` (flash kernel on CPU and GPU); q/k/v are views of
  one fused projection, and the attention output comes back in (B, L, H, Dh) memory order, so
  merging heads is free.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

# ---- rotary position embeddings ----------------------------------------------------------


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of m·θ_i, each (seq_len, head_dim // 2), float32 (RoFormer eq. 15, θ_i = base^(-2i/Dh))."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head width, got {head_dim}")
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (Dh/2,)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)  # (L, Dh/2)
    return angles.cos().float(), angles.sin().float()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Rotate-half RoPE in four kernels and one allocation: y1 = x1 c - x2 s, y2 = x2 c + x1 s.

    x: (..., Dh) any strides; cos/sin broadcastable to (..., Dh/2). `inverse` rotates by -angle
    (the transpose of the rotation, i.e. its backward). Returns a contiguous tensor.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., Dh/2) views
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # under autocast x is bf16: no fp32 round trip per element
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous (..., Dh)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1)
    o1.addcmul_(x2, sin, value=1.0 if inverse else -1.0)
    torch.mul(x2, cos, out=o2)
    o2.addcmul_(x1, sin, value=-1.0 if inverse else 1.0)
    return out


class _RotaryFunction(torch.autograd.Function):
    """Eager RoPE with a hand-written backward: saves only cos/sin (not x) and rotates back."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, inverse=True), None, None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """R_m x for every position m: x (..., L, [extra dims], Dh), cos/sin broadcastable (..., Dh/2).

    Eager mode uses a custom autograd function (fewer kernels, nothing saved but the tables);
    under torch.compile the plain formula x·cos + rotate_half(x)·sin is traced and fused instead.
    """
    if torch.compiler.is_compiling():
        cos2, sin2 = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)  # (..., Dh)
        return x * cos2 + rotate_half(x) * sin2
    return _RotaryFunction.apply(x, cos, sin)


# ---- conditioning ------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of (B,) scalars (DiT; Vaswani et al. 2017 §3.5): (B, dim), [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, dim/2)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2*(dim/2))
    if dim % 2:
        emb = F.pad(emb, (0, 1))  # (B, dim)
    return emb


class TimestepEmbedder(nn.Module):
    """t in [0, 1] → sinusoid of 1000·t → Linear → SiLU → Linear: (B,) → (B, dim) (DiT)."""

    def __init__(self, dim: int, freq_dim: int = 256, t_scale: float = 1000.0):
        super().__init__()
        self.freq_dim, self.t_scale = freq_dim, t_scale
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t * self.t_scale, self.freq_dim).to(self.mlp[0].weight.dtype))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift, with x (B, L, D) and shift/scale (B, 1, D); one fused kernel."""
    return torch.addcmul(shift, x, 1.0 + scale)


def local_mix(h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise convolution over positions, zero-padded: y_i = Σ_j w_j ⊙ h_{i+j-k//2}.

    h (B, L, D), weight (k, D) with k odd. A k-term sum of shifted views (faster than a grouped
    Conv1d on CPU); the loop runs over the k taps, never over positions."""
    k, L = weight.shape[0], h.shape[1]
    hp = F.pad(h, (0, 0, k // 2, k // 2))  # (B, L + k - 1, D)
    y = hp[:, :L] * weight[0]
    for j in range(1, k):
        y = torch.addcmul(y, hp[:, j:j + L], weight[j])
    return y  # (B, L, D)


@torch.no_grad()
def init_normal_(module: nn.Module, std: float = 0.02) -> None:
    """N(0, std²) weights for every Linear and Embedding inside `module`, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


# ---- attention, MLP, KV cache --------------------------------------------------------------


class KVCache:
    """Keys/values of already-processed positions, preallocated to the model's max length.

    k, v: (n_layers, B, H, max_len, Dh); keys are stored after rotary embedding, so a new
    position m only needs its own rotation. `pos` = number of cached positions.
    """

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int, *,
                 device=None, dtype=torch.float32):
        shape = (n_layers, batch_size, n_heads, max_len, head_dim)
        # uninitialised: only positions [0, pos) are ever read back
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    def reset(self) -> None:
        self.pos = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, Dh) new keys/values at [pos, pos+T); return all (B, H, pos+T, Dh)."""
        end = self.pos + k.shape[2]
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]  # (B, H, S, Dh) views

    def advance(self, n: int) -> None:
        self.pos += n


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv projection, RoPE on q/k, SDPA, output projection."""

    def __init__(self, d_model: int, n_heads: int, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.causal, self.dropout = causal, dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, L, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        # split (not slicing) so that autograd joins the gradients with one cat, not zero-fills
        qk, v = self.qkv(x).view(B, L, 3, H, Dh).split((2, 1), dim=2)  # (B, L, 2, H, Dh), (B, L, 1, H, Dh)
        # q and k rotated together in one call; the result is contiguous (B, L, 2, H, Dh)
        q, k = apply_rotary(qk, cos.view(L, 1, 1, Dh // 2), sin.view(L, 1, 1, Dh // 2)).unbind(2)  # (B, L, H, Dh)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.squeeze(2).transpose(1, 2)  # (B, H, L, Dh) views
        mask, is_causal = None, self.causal
        if cache is not None:
            offset = cache.pos
            k, v = cache.update(layer, k, v)  # (B, H, S, Dh), S = offset + L
            if offset > 0:
                is_causal = False  # SDPA's is_causal is top-left aligned: wrong for an offset query
                if L > 1:  # query i (absolute offset+i) sees keys j <= offset + i
                    mask = torch.ones(L, offset + L, dtype=torch.bool, device=x.device).tril(offset)  # (L, S)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, H, L, Dh)
        y = y.transpose(1, 2).reshape(B, L, D)  # (B, L, D); free when SDPA returns (B, L, H, Dh) order
        return self.proj(y)  # (B, L, D)


class CrossAttention(nn.Module):
    """Multi-head attention from the sequence (queries) to a short context (B, M, C) of keys/values,
    e.g. DisCo-Diff's latent embeddings; no positions (the context is a set of slots)."""

    def __init__(self, d_model: int, n_heads: int, context_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, d_model // n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(context_dim, 2 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        q = self.q(x).view(B, L, H, Dh).transpose(1, 2)  # (B, H, L, Dh)
        k, v = self.kv(context.to(x.dtype)).view(B, -1, 2, H, Dh).permute(2, 0, 3, 1, 4)  # each (B, H, M, Dh)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MLP(nn.Module):
    """Linear → GELU(tanh) → Linear, no biases."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden, bias=False)
        self.proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))  # (B, L, hidden) → (B, L, D)


# ---- torch.compile ---------------------------------------------------------------------------


class _CompiledForward:
    """Per-instance `forward`: the compiled class forward, eager for KV-cached calls and after a
    compile failure. It holds the module, not a bound method, so `copy.deepcopy(model)` gives a
    copy that runs its own parameters (dynamo then specialises the shared compiled code to it)."""

    def __init__(self, module: nn.Module, compiled):
        self.module, self.compiled = module, compiled

    def __call__(self, *args, **kwargs):
        eager = type(self.module).forward
        if kwargs.get("cache") is not None:
            return eager(self.module, *args, **kwargs)
        try:
            return self.compiled(self.module, *args, **kwargs)
        except Exception as e:
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); falling back to eager",
                          stacklevel=2)
            self.module.__dict__.pop("forward", None)  # the class forward again
            return eager(self.module, *args, **kwargs)


def maybe_compile(model: nn.Module, enabled: bool = True, **compile_kwargs) -> nn.Module:
    """Compile `model`'s forward in place with torch.compile; on failure warn and stay eager.

    Returns the same module object, so parameters and state_dict keys are unchanged (no
    `_orig_mod.` prefix). Compilation is lazy: errors surface at the first call, which then warns,
    restores the eager forward and reruns eagerly. Calls with a KV cache (`cache=` not None) always
    run eagerly: decoding one token at a time would otherwise recompile at every position.
    """
    if not enabled:
        return model
    try:
        compiled = torch.compile(type(model).forward, **compile_kwargs)
    except Exception as e:  # pragma: no cover - depends on the platform
        warnings.warn(f"torch.compile unavailable ({type(e).__name__}: {e}); running eagerly", stacklevel=2)
        return model
    model.forward = _CompiledForward(model, compiled)
    return model
