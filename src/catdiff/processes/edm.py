"""The EDM formulation of Gaussian diffusion (Karras et al. 2022, arXiv 2206.00364): σ(t) = t,
s(t) = 1, x_σ = y + σ n. Preconditioning, the training distribution of σ and its loss weight, and
the sampling time grid; pure functions of σ, knowing nothing of networks or data.

Shapes: sigma is (B,) or broadcastable against the data (e.g. (B, 1) for vectors).
"""

from __future__ import annotations

import math

import torch

SIGMA_DATA = 0.5  # EDM Table 1
P_MEAN, P_STD = -1.2, 1.2  # EDM Table 1: ln σ ~ N(P_mean, P_std²) in training
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0  # EDM Table 1: sampling range and grid exponent


def precondition(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 ("Preconditioning"), so that
    D(x; σ) = c_skip x + c_out F(c_in x; c_noise): network inputs and targets have unit variance
    when the data variance is σ_d² (EDM App. B.6, eqs. 114-117)."""
    s2, d2 = sigma * sigma, sigma_data * sigma_data
    root = torch.sqrt(s2 + d2)
    return d2 / (s2 + d2), sigma * sigma_data / root, 1.0 / root, 0.25 * torch.log(sigma)


def loss_weight(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """λ(σ) = (σ² + σ_d²) / (σ σ_d)² (EDM Table 1): the effective weight c_out(σ)^-2, which makes
    the loss of the raw network output F unit-weighted at every σ."""
    return (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data) ** 2


def sample_sigma(n: int, generator: torch.Generator | None = None, device="cpu",
                 p_mean: float = P_MEAN, p_std: float = P_STD) -> torch.Tensor:
    """(n,) training noise levels, ln σ ~ N(P_mean, P_std²) (EDM Table 1)."""
    return torch.exp(p_mean + p_std * torch.randn(n, generator=generator, device=device))


def karras_sigmas(steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO,
                  device=None) -> torch.Tensor:
    """(steps + 1,) σ_0 = σ_max > ... > σ_{N-1} = σ_min, then σ_N = 0 (EDM eq. 5):
    σ_i = (σ_max^{1/ρ} + i/(N-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps == 1:
        return torch.tensor([sigma_max, 0.0], device=device, dtype=torch.float64)
    i = torch.arange(steps, device=device, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sig = (hi + i / (steps - 1) * (lo - hi)) ** rho
    return torch.cat([sig, sig.new_zeros(1)])


def churn_gamma(sigma: float, steps: int, s_churn: float, s_tmin: float = 0.0,
                s_tmax: float = math.inf) -> float:
    """γ_i of EDM Alg. 2: min(S_churn / N, √2 - 1) inside [S_tmin, S_tmax], else 0."""
    if s_churn <= 0 or not s_tmin <= sigma <= s_tmax:
        return 0.0
    return min(s_churn / steps, math.sqrt(2.0) - 1.0)
