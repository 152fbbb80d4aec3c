"""Reverse Gaussian diffusion (embedding diffusion, LDDM's latent chains) on any x0-denoiser
`denoise(z_t (B, ..., d), t (B,), x0_prev or None) -> (ẑ_0, logits)`.

It knows tensors, Gaussian schedules and posteriors; no network, method or data. x0_prev is the
self-conditioning input (Chen et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from ..processes import gaussian
from ..schedules import GaussianSchedule
from .base import Callback, DrawOptions, SampleResult, StepOptions, _chain, _help, ode_step

X0Denoiser = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]
Anchor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ddpm_step(z, x0, a_t, s_t, a_s, s_s, eta: float, generator):
    """Ancestral draw from q(z_s | z_t, ẑ_0) (VDM eqs. 31-33; Ho et al. 2020)."""
    mean, var = gaussian.posterior(z, x0, a_t, s_t, a_s, s_s)
    return mean + var.sqrt() * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)


def ddim_step(z, x0, a_t, s_t, a_s, s_s, eta: float, generator):
    """z_s = a_s ẑ_0 + s_s ε̂ (+ η-scaled fresh noise; Song et al. 2021 eq. 12)."""
    noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype) if eta > 0 else None
    return gaussian.ddim_step(z, x0, a_t, s_t, a_s, s_s, eta, noise)


# the samplers of the family: posterior kernels, or the probability-flow ODE (None: `ode_step`)
KINDS = {"ddpm": ddpm_step, "ddim": ddim_step, "euler": None, "heun": None}
LATENT_KINDS = ("ddpm", "ddim")  # the kernels of LDDM's latent chains


@dataclass
class Options(StepOptions, DrawOptions):
    """`sample:` section of embedding diffusion. The tokens are the argmax of the last prediction
    (rounding), or a draw when temperature / top_k / top_p are set."""

    sampler: str = _help("ddpm | ddim | euler | heun (auto: the method's default)", "auto",
                         choices=("auto", *KINDS))
    clamp: bool | None = _help("clamping trick: round ẑ_0 to the nearest embedding before each use "
                               "(unset: the method's default)", None)
    early_stop: int | None = _help("grid points skipped at the end (unset: the method's default)", None)

    def __post_init__(self):
        check_kind(self.sampler, ("auto", *KINDS))
        if self.early_stop is not None and self.early_stop < 0:
            raise ConfigError(f"sample.early_stop must be >= 0, got {self.early_stop}")
        _chain(super())


def check_kind(kind: str, kinds=tuple(KINDS)) -> None:
    if kind not in kinds:
        raise ConfigError(f"unknown sampler {kind!r}; choose one of {tuple(kinds)}")


def grid(schedule: GaussianSchedule, steps: int, kind: str = "ddpm", device=None) -> torch.Tensor:
    """Times from t_max down to t_min, uniform in t (a respaced grid), sized to a budget of `steps`
    network calls: one per point, or (Heun) (steps + 1) // 2 points with 2 calls each but the last."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    points = (steps + 1) // 2 if kind == "heun" else steps
    lo, hi = schedule.t_range
    return torch.linspace(hi, lo, points, device=device) if points > 1 else torch.tensor([hi], device=device)


@torch.no_grad()
def sample(denoise: X0Denoiser, z: torch.Tensor, grid: torch.Tensor, *, schedule: GaussianSchedule,
           kind: str = "ddpm", generator: torch.Generator | None = None, callback: Callback | None = None,
           self_cond: bool = False, clamp: Callable[[torch.Tensor], torch.Tensor] | None = None,
           early_stop: int = 0, eta: float = 0.0, anchor: Anchor | None = None) -> SampleResult:
    """Reverse Gaussian diffusion from z (B, ..., d) at grid[0] (see `grid`); state = ẑ_0 of the
    last call, info["logits"] = its logits.

    kind: "ddpm"/"ddim" posterior kernels (`KINDS`); "euler" the probability-flow ODE in x = z/a,
    σ = s/a: dx/dσ = (x - ẑ_0)/σ (Karras et al. 2022, Alg. 1 first order; identical to DDIM with
    η = 0, which a test checks); "heun" the same with Heun's correction. With the CDCD
    parameterization ẑ_0 = Σ_k p_θ(k|z_t) e_k this ODE is score interpolation (Dieleman et al.
    2022, §3.2): ∇ log p(z_t) ≈ (a ẑ_0 - z_t)/s².
    clamp: map ẑ_0 to the nearest clean embedding before it is used (Diffusion-LM §4.2).
    early_stop: skip the last `early_stop` grid points (Difformer decodes after 15 of 20 calls).
    anchor(z_t, t): re-imposes known parts of z_t before every network call (conditioning:
    fixed positions get their noised or clean embeddings, DiffuSeq-style).
    """
    check_kind(kind)
    if not 0 <= early_stop < len(grid):
        raise ConfigError(f"early_stop must be in [0, {len(grid)}) for this step budget, got {early_stop}")
    n_points = len(grid) - early_stop
    B, nfe, prev = z.shape[0], 0, None

    def call(z_, t_):
        nonlocal nfe, prev
        x0_, logits_ = denoise(z_, t_.expand(B), prev if self_cond else None)
        nfe += 1
        if clamp is not None:
            x0_ = clamp(x0_)
        if self_cond:
            prev = x0_
        return x0_, logits_

    def coef(t_):
        return schedule.coefficients(t_.reshape(1, *([1] * (z.dim() - 1))).to(z.dtype))

    for j in range(n_points):
        t = grid[j]
        if anchor is not None:
            z = anchor(z, t)
        x0, logits = call(z, t)
        if callback is not None:
            callback(j, z)
        if j == n_points - 1:
            break
        r = grid[j + 1]
        (a_t, s_t), (a_r, s_r) = coef(t), coef(r)
        if KINDS[kind] is not None:
            z = KINDS[kind](z, x0, a_t, s_t, a_r, s_r, eta, generator)
            continue

        def x0_next(x_r, a_r=a_r, r=r):  # Heun's correction point and ẑ_0 there, in x = z/a coordinates
            z_r = a_r * x_r if anchor is None else anchor(a_r * x_r, r)
            return z_r / a_r, call(z_r, r)[0]

        z = a_r * ode_step(z / a_t, x0, s_t / a_t, s_r / a_r, kind == "heun", x0_next)
    return SampleResult(x0, nfe, {"logits": logits})
