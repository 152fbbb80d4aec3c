"""LDDM sampling: the FUJI joint chain over tokens and a continuous latent, and the typed options
of both LDDM variants (SEQ composes `gaussian.sample` for its latent chain and `masked.sample` for
its tokens). The denoiser maps (z_t (B,L), y_t (B,P,dp), t_x (B,), t_y (B,)) to
(log p_θ(x_0 | z_t, y_t) (B,L,K), ŷ_0 (B,P,dp)).

It knows tensors and the coupled process; no network, method or data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from ..processes.coupled import CoupledProcess
from . import masked
from .base import Callback, DrawOptions, SampleResult, _chain, _help, draw_categorical
from .gaussian import KINDS as GAUSSIAN_KINDS
from .gaussian import LATENT_KINDS, check_kind

CoupledDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                           tuple[torch.Tensor, torch.Tensor]]
KINDS = LATENT_KINDS  # the latent channel's reverse kernel


@dataclass
class Options(masked.Options):
    """`sample:` section of LDDM-FUJI: the masked options for the tokens, the latent kernel, guidance,
    and `latent_steps` (the latent first, then the tokens: LDDMFuji.sample)."""

    sampler: str = _help("latent kernel: ddim | ddpm (auto: the method's default)", "auto",
                         choices=("auto", *KINDS))
    guidance: float = _help("latent guidance w: logits_c + w (logits_c - logits_∅); 0 = off; each "
                            "guided evaluation costs two network calls of the budget", 0.0)
    latent_steps: int | None = _help("network calls that move the latent alone before the token chain "
                                     "(FUJI: unset = the joint chain; SEQ: unset = steps)", None)

    def __post_init__(self):
        check_kind(self.sampler, ("auto", *KINDS))
        if not self.guidance >= 0:
            raise ConfigError(f"sample.guidance must be >= 0, got {self.guidance}")
        if self.latent_steps is not None and self.latent_steps < 1:
            raise ConfigError(f"sample.latent_steps must be >= 1, got {self.latent_steps}")
        _chain(super())


@dataclass
class SequentialOptions(Options):
    """`sample:` section of LDDM-SEQ: `steps` is the token chain's budget, `latent_steps` the latent
    chain's (unset: the same); the reported calls are their sum."""


def guided_evaluations(steps: int, guidance: float) -> int:
    """Denoiser evaluations that fit a budget of `steps` calls: one call each, two with guidance."""
    return max(1, steps // 2) if guidance > 0 else steps


@torch.no_grad()
def sample(denoise: CoupledDenoiser, state: tuple[torch.Tensor, torch.Tensor], grid: torch.Tensor, *,
           process: CoupledProcess, kind: str = "ddim", generator: torch.Generator | None = None,
           callback: Callback | None = None, draw: DrawOptions | None = None, eta: float = 0.0,
           lead: float = 1.0, order: str = "random") -> SampleResult:
    """FUJI joint sampler (METHODS.md §5): from state = (z (B, L) all masks, y (B, P, dp) ~ N(0, I))
    at t = 1 along `grid` (masked.grid), one joint denoiser evaluation per step. Tokens: the MDLM
    posterior (reveal with (α_s - α_t)/(1 - α_t), values drawn from p_θ(· | z_t, y_t)) or the
    confidence order (masked.sample); latent: DDIM(η) or the DDPM posterior from ŷ_0 at the clamped
    latent times. The last step reveals every remaining mask and sets y ← ŷ_0. `lead` > 1 runs the
    latent ahead of the tokens on the path t_y = t^lead [our option; meant for a network trained
    with independent times]. state = x_0 (B, L); info["latent"] = ŷ_0; nfe = evaluations."""
    check_kind(kind, KINDS)
    masked.check_order(order)
    draw = draw or DrawOptions()
    z, y = state
    B, steps = z.shape[0], len(grid) - 1
    n0 = (z == process.mask_id).sum(1)
    for j in range(steps):
        t, s = grid[j], grid[j + 1]
        t_y, s_y = process.latent_time(t ** lead), process.latent_time(s ** lead)
        logp, y0 = denoise(z, y, t.expand(B), t_y.expand(B))
        x0 = draw_categorical(logp, generator, draw)  # (B, L)
        last = j == steps - 1
        z = masked.reveal_step(z, x0, logp, process.tokens, t, s, last, process.mask_id, generator, order, n0)
        if last:
            y = y0
        elif s_y < t_y:
            (a_t, s_t), (a_s, s_s) = (process.latent.coefficients(v.to(y.dtype)) for v in (t_y, s_y))
            y = GAUSSIAN_KINDS[kind](y, y0, a_t, s_t, a_s, s_s, eta, generator)
        if callback is not None:
            callback(j, z)
    return SampleResult(z, steps, {"latent": y})
