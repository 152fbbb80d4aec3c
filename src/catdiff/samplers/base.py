"""What every sampler shares: the result record, the typed options every method's `sample:`
section starts from, token draws from log-probabilities, and one probability-flow ODE step.

It knows tensors and callables only: no network, method, dataset or config file.

`steps` means one thing everywhere: the budget of network calls of one sampling chain. Every
sampler sizes its grid so that it makes at most `steps` calls (Heun: (steps + 1) // 2 points,
2N - 1 calls; guidance: two calls per evaluation) and reports the calls it made in
`SampleResult.nfe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError

MAX_STEPS = 100_000  # an accidental 10^9 fails at once instead of running for days


def _chain(parent) -> None:
    """Run the next __post_init__ in the MRO (options classes mix several checked bases)."""
    post = getattr(parent, "__post_init__", None)
    if post is not None:
        post()


def _help(text: str, default, **kw):
    """A dataclass field whose help text the command line shows (cli.py generates flags from it)."""
    return field(default=default, metadata={"help": text, **kw})


@dataclass
class SampleOptions:
    """Options of every sampler; `catdiff sample` overrides them with flags of the same name."""

    num_samples: int = _help("number of samples to draw", 64)
    batch_size: int = _help("samples drawn per batch", 256)
    seed: int = _help("seed of the sampling generator (a sample is a function of its seed)", 0)
    use_ema: bool = _help("sample with the EMA weights (false: the raw weights)", True, cli=False)
    amp: str = _help("matmul precision of the network calls: auto (bf16 where the hardware makes it faster), "
                     "bf16, fp16 or off; draws stay fp32/float64", "off", choices=("auto", "bf16", "fp16", "off"))

    def __post_init__(self):
        for key in ("num_samples", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"sample.{key} must be >= 1, got {getattr(self, key)}")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ConfigError(f"sample.amp must be one of auto, bf16, fp16, off; got {self.amp!r}")
        _chain(super())


@dataclass
class StepOptions(SampleOptions):
    steps: int = _help(f"network-call budget of one sampling chain (1..{MAX_STEPS})", 64)

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"sample.steps must be in [1, {MAX_STEPS}], got {self.steps}")


@dataclass
class DrawOptions:
    """How a token is drawn from predicted log-probabilities (mixed into token samplers' options).

    temperature scales logits (0 = greedy argmax); top_k keeps the k most likely tokens; top_p keeps
    the smallest set of tokens with total probability ≥ top_p (nucleus); float64 draws in double
    precision (float32 Gumbel-max sampling is known to inflate sample-quality numbers,
    flow_matching #27; we draw by inverse CDF with one uniform per token, optionally in float64).
    """

    temperature: float = _help("softmax temperature of token draws (0 = greedy)", 1.0)
    top_k: int | None = _help("keep the k most likely tokens (>= 1)", None)
    top_p: float | None = _help("nucleus: keep the most likely tokens up to this mass, in (0, 1]", None)
    float64: bool = _help("draw tokens in float64", False, flag=True)

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ConfigError(f"sample.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"sample.top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"sample.top_p must be in (0, 1], got {self.top_p}")
        _chain(super())


@dataclass
class SampleResult:
    """state: the final state of the chain (tokens (B, L), vectors (B, D), ...); nfe: network calls
    made; info: anything else a caller may want (final logits, latents, per-chain call counts)."""

    state: torch.Tensor
    nfe: int
    info: dict = field(default_factory=dict)


def draw_categorical(logp: torch.Tensor, generator: torch.Generator | None, opts: DrawOptions) -> torch.Tensor:
    """Draw one index per row of logp (..., K) under `opts`; returns (...) int64."""
    dtype = torch.float64 if opts.float64 else torch.float32
    logits = logp.to(dtype)
    if opts.temperature != 1.0:
        if opts.temperature <= 0:
            return logits.argmax(-1)
        logits = logits / opts.temperature
    if opts.top_k is not None and opts.top_k < logits.shape[-1]:
        kth = torch.topk(logits, opts.top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if opts.top_p is not None and opts.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly before each token
        sorted_p = sorted_p.masked_fill(before >= opts.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # inverse-CDF draw: one uniform per row, index = #{k : CDF_k <= u}
    cdf = torch.cumsum(probs, dim=-1)  # (..., K)
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=dtype)
    idx = (cdf <= u * cdf[..., -1:]).sum(-1)
    return idx.clamp_max(probs.shape[-1] - 1)


def ode_step(x: torch.Tensor, d_cur: torch.Tensor, sig_cur, sig_next, heun: bool,
             denoise_next: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One step σ_cur → σ_next of the probability-flow ODE dx/dσ = (x - D(x; σ))/σ (Karras et al.
    2022, Alg. 1): Euler from D(x; σ_cur) = d_cur, or with Heun's second-order correction, which
    calls denoise_next(x_euler) once (never at σ_next = 0); it returns the point it evaluated
    (x_euler, or x_euler with known coordinates re-imposed) and D(that point; σ_next)."""
    slope = (x - d_cur) / sig_cur
    x_next = x + (sig_next - sig_cur) * slope
    if heun and float(sig_next) > 0:
        x_at, d_next = denoise_next(x_next)
        slope_next = (x_at - d_next) / sig_next
        x_next = x + (sig_next - sig_cur) * 0.5 * (slope + slope_next)
    return x_next


Callback = Callable[[int, torch.Tensor], None]  # (step index, state after the step)
