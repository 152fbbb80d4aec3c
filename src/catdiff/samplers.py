"""Sampling loops with one signature: a denoiser callable, a start state, a step count, a generator.

Samplers know no networks: `denoise(z_t, t)` is any callable returning log-probabilities (a
trained model wrapped by its method, or an exact oracle from a synthetic dataset), so the same
loop is tested against exact conditionals and used with trained models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .processes.masked import posterior_step, unmask_probability
from .schedules import MaskSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t (B,L), t (B,)) -> logp (B,L,K)


@dataclass
class DrawOptions:
    """How a token is drawn from predicted log-probabilities.

    temperature scales logits; top_k keeps the k most likely tokens; top_p keeps the smallest set
    of tokens with total probability ≥ top_p (nucleus); float64 draws in double precision
    (float32 Gumbel-max sampling is known to inflate sample-quality numbers, flow_matching #27; we
    draw by inverse CDF with one uniform per token, optionally in float64).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    float64: bool = False


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


def time_grid(steps: int, device=None) -> torch.Tensor:
    """(steps + 1,) uniform grid from t = 1 down to t = 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


@torch.no_grad()
def sample_masked(
    denoise: Denoiser,
    z: torch.Tensor,
    schedule: MaskSchedule,
    steps: int,
    mask_id: int,
    generator: torch.Generator | None = None,
    opts: DrawOptions | None = None,
    cache: bool = True,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """MDLM ancestral sampler (Sahoo et al. 2024, §3.3 and Alg. 2): z (B, L) start (all masks).

    Each step t -> s reveals each masked token with probability (α_s - α_t)/(1 - α_t), its value
    drawn from p_θ(· | z_t); the last step reveals every remaining mask. With `cache`, when a step
    changes no token the previous p_θ is reused and the network is not called (MDLM §4.2; exact
    when the denoiser ignores t, as MDLM's time-free SUBS model does, an approximation otherwise).
    Returns (x_0, number of denoiser calls).
    """
    opts = opts or DrawOptions()
    grid = time_grid(steps, z.device)
    nfe, logp = 0, None
    for j in range(steps):
        t, s = grid[j], grid[j + 1]
        if logp is None or not cache:
            logp = denoise(z, t.expand(z.shape[0]))  # (B, L, K)
            nfe += 1
        x0 = draw_categorical(logp, generator, opts)  # (B, L)
        p = torch.ones((), device=z.device) if j == steps - 1 else unmask_probability(schedule, t, s)
        z_next = posterior_step(z, x0, p, mask_id, generator)
        if not torch.equal(z_next, z):
            logp = None
        z = z_next
        if callback is not None:
            callback(j, z)
    return z, nfe
