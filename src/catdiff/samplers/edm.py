"""EDM sampling (Karras et al. 2022): the probability-flow ODE on the Karras σ grid with Euler or
Heun steps and optional stochastic churn, on any denoiser `D(x (B, ...), σ (B,)) -> x0 estimate`.

It knows tensors and EDM's σ grid; no network, method or data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import ConfigError
from ..processes.edm import churn_gamma, karras_sigmas
from .base import Callback, DrawOptions, SampleResult, StepOptions, _chain, _help, ode_step
from .gaussian import check_kind

EDMDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
KINDS = ("euler", "heun")


@dataclass
class Options(StepOptions):
    """`sample:` section of EDM."""

    sampler: str = _help("euler | heun (auto: the method's default)", "auto", choices=("auto", *KINDS))

    def __post_init__(self):
        check_kind(self.sampler, ("auto", *KINDS))
        _chain(super())


@dataclass
class LatentOptions(Options, DrawOptions):
    """`sample:` section of DisCo-Diff: EDM's, plus guidance by the latents and how the AR prior
    draws them (temperature, top_k, top_p)."""

    guidance: float = _help("latent guidance w: D_c + w (D_c - D_∅); 0 = off; each guided "
                            "evaluation costs two network calls of the budget", 0.0)

    def __post_init__(self):
        if not self.guidance >= 0:
            raise ConfigError(f"sample.guidance must be >= 0, got {self.guidance}")
        _chain(super())


def grid(steps: int, kind: str = "heun", sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
         device=None) -> torch.Tensor:
    """Karras σ grid (EDM eq. 5, then σ = 0) sized to a budget of `steps` network calls: `steps`
    Euler steps, or (steps + 1) // 2 Heun steps (2N - 1 calls: no correction on the step to 0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return karras_sigmas((steps + 1) // 2 if kind == "heun" else steps, sigma_min, sigma_max, rho, device=device)


@torch.no_grad()
def sample(denoise: EDMDenoiser, x: torch.Tensor, grid: torch.Tensor, *, kind: str = "heun",
           generator: torch.Generator | None = None, callback: Callback | None = None, s_churn: float = 0.0,
           s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
           anchor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> SampleResult:
    """Probability-flow ODE dx/dσ = (x - D(x; σ))/σ along `grid` (decreasing σ, see `grid`); x
    starts at σ_0 (x = σ_0 n). "euler": first order; "heun": EDM Alg. 1 (2nd order, no correction
    on a step to σ = 0). s_churn > 0 adds EDM Alg. 2's stochastic churn: σ̂ = σ (1 + γ),
    x ← x + sqrt(σ̂² - σ²) S_noise ε before each step. anchor(x, σ) re-imposes known coordinates
    before every network call (inpainting). state = x at σ = grid[-1]."""
    check_kind(kind, KINDS)
    B, nfe = x.shape[0], 0
    n_steps = len(grid) - 1

    def D(x_, sigma):
        nonlocal nfe
        nfe += 1
        return denoise(x_, torch.full((B,), float(sigma), device=x_.device, dtype=x_.dtype))

    def anchored(x_, sigma):
        return x_ if anchor is None else anchor(x_, torch.tensor(float(sigma), dtype=x_.dtype, device=x_.device))

    for i in range(n_steps):
        s_cur, s_next = float(grid[i]), float(grid[i + 1])
        gamma = churn_gamma(s_cur, n_steps, s_churn, s_tmin, s_tmax)
        s_hat = s_cur * (1.0 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + (s_hat ** 2 - s_cur ** 2) ** 0.5 * s_noise * eps
        x = anchored(x, s_hat)
        d0 = D(x, s_hat)

        def at_next(x_next, s_next=s_next):
            x_at = anchored(x_next, s_next)
            return x_at, D(x_at, s_next)

        x = ode_step(x, d0, s_hat, s_next, kind == "heun", at_next)
        if callback is not None:
            callback(i, x)
    return SampleResult(x, nfe)
