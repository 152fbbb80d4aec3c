"""Masked (absorbing) diffusion sampling: the MDLM ancestral sampler and the confidence reveal
order, on any denoiser `denoise(z_t (B, L), t (B,)) -> log p (B, L, K)`.

It knows tensors, the masking schedule and the masked posterior; no network, method or data: the
same loop runs trained models and the exact conditionals of synthetic data (oracle.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from ..processes.masked import posterior_step, unmask_probability
from ..schedules import MaskSchedule
from .base import Callback, DrawOptions, SampleResult, StepOptions, _chain, _help, draw_categorical

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t (B,L), t (B,)) -> logp (B,L,K)


@dataclass
class Options(StepOptions, DrawOptions):
    """`sample:` section of masked methods (MDLM)."""

    order: str = _help("reveal order: random (ancestral) or confidence (most probable draws first, "
                       "a greedy heuristic)", "random", choices=("random", "confidence"))
    cache: bool = _help("reuse p_θ when a step changes no token (no network call)", True)

    def __post_init__(self):
        check_order(self.order)
        _chain(super())


def check_order(order: str) -> None:
    if order not in KINDS:
        raise ConfigError(f"sample.order must be one of {tuple(KINDS)}, got {order!r}")


def grid(steps: int, device=None) -> torch.Tensor:
    """(steps + 1,) uniform times from t = 1 down to t = 0: at most `steps` network calls."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def confidence_step(z_t: torch.Tensor, x0: torch.Tensor, logp: torch.Tensor, remain: torch.Tensor,
                    mask_id: int) -> torch.Tensor:
    """Reveal the most confident masked positions of z_t (B, L), keeping `remain` (B,) masked.

    Confidence of a masked position = p_θ(x0_i | z_t), the probability of the token drawn there
    (MaskGIT, Chang et al. 2022, §3.2, without its annealed noise; LLaDA's "low-confidence
    remasking", Nie et al. 2025, Alg. 5). Ties go to the leftmost position. Revealed tokens and
    fixed positions are carried over unchanged.
    """
    masked = z_t == mask_id
    conf = logp.gather(-1, x0.unsqueeze(-1)).squeeze(-1).float()
    conf = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
    order = torch.sort(conf, dim=1, descending=True, stable=True).indices  # (B, L)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(z_t.shape[1], device=z_t.device).expand_as(order))
    n_reveal = (masked.sum(1) - remain).clamp_min(0)  # (B,)
    return torch.where(masked & (rank < n_reveal[:, None]), x0, z_t)


def _ancestral_reveal(z, x0, logp, schedule, t, s, last, mask_id, generator, n0):
    """Each masked token revealed with probability (α_s - α_t)/(1 - α_t) (all at the last step)."""
    p = torch.ones((), device=z.device) if last else unmask_probability(schedule, t, s)
    return posterior_step(z, x0, p, mask_id, generator)


def _confidence_reveal(z, x0, logp, schedule, t, s, last, mask_id, generator, n0):
    """The scheduled count n_0 (1 - α_s)/(1 - α_1) left masked, the most confident revealed."""
    one = torch.ones(1, device=z.device)
    left = torch.zeros(1, device=z.device) if last else \
        (1.0 - schedule.alpha(s[None]).double()) / (1.0 - schedule.alpha(one).double())
    return confidence_step(z, x0, logp, torch.round(n0.double() * left).long(), mask_id)


# the reveal orders of the family: ancestral (the model's law) | greedy by confidence
KINDS = {"random": _ancestral_reveal, "confidence": _confidence_reveal}


def reveal_step(z: torch.Tensor, x0: torch.Tensor, logp: torch.Tensor, schedule: MaskSchedule, t: torch.Tensor,
                s: torch.Tensor, last: bool, mask_id: int, generator: torch.Generator | None, order: str,
                n0: torch.Tensor) -> torch.Tensor:
    """One token step t -> s of a masked chain started at t = 1 with n0 (B,) masks, in `order`
    (see `sample`); the last step reveals every remaining mask."""
    return KINDS[order](z, x0, logp, schedule, t, s, last, mask_id, generator, n0)


@torch.no_grad()
def sample(denoise: Denoiser, z: torch.Tensor, grid: torch.Tensor, *, schedule: MaskSchedule, mask_id: int,
           generator: torch.Generator | None = None, callback: Callback | None = None,
           draw: DrawOptions | None = None, order: str = "random", cache: bool = True) -> SampleResult:
    """MDLM sampler (Sahoo et al. 2024, §3.3 and Alg. 2) from z (B, L) (all masks, or some
    positions fixed by a condition) along `grid` (times 1 → 0, see `grid`).

    order="random" (ancestral, exact in the limit of many steps): each step t -> s reveals each
    masked token with probability (α_s - α_t)/(1 - α_t), its value drawn from p_θ(· | z_t).
    order="confidence" (a greedy heuristic, not a sampler of the model's distribution): each step
    reveals, per row, the number of tokens the schedule expects, n_0 (1 - α_s)/(1 - α_1) left
    masked (n_0 = masks at the start, rounded), choosing the positions whose drawn token is most
    probable (`confidence_step`). Either way the last step reveals every remaining mask. With
    `cache`, when a step changes no token the previous p_θ is reused and the network is not called
    (MDLM §4.2; exact when the denoiser ignores t, as MDLM's time-free SUBS model does, an
    approximation otherwise). state = x_0 (B, L).
    """
    check_order(order)
    draw = draw or DrawOptions()
    steps = len(grid) - 1
    n0 = (z == mask_id).sum(1)  # (B,)
    nfe, logp = 0, None
    for j in range(steps):
        t, s = grid[j], grid[j + 1]
        if logp is None or not cache:
            logp = denoise(z, t.expand(z.shape[0]))  # (B, L, K)
            nfe += 1
        x0 = draw_categorical(logp, generator, draw)  # (B, L)
        z_next = reveal_step(z, x0, logp, schedule, t, s, j == steps - 1, mask_id, generator, order, n0)
        if not torch.equal(z_next, z):
            logp = None
        z = z_next
        if callback is not None:
            callback(j, z)
    return SampleResult(z, nfe)
