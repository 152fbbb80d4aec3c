"""Gaussian forward process z_t = a_t z_0 + s_t ε on continuous vectors: marginals, posteriors,
parameterization conversions and likelihood-bound terms. It knows nothing of tokens, embedding
tables or networks: everything here is a function of tensors and of (a, s) coefficients.

Shapes: z, z0, eps are (..., d); coefficients a, s broadcast against them (e.g. (B, 1, 1)).
"""

from __future__ import annotations

import torch


def q_sample(z0: torch.Tensor, a: torch.Tensor, s: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z_t = a_t z_0 + s_t ε  (the forward marginal q(z_t | z_0) = N(a_t z_0, s_t² I))."""
    return a * z0 + s * eps

# ---- parameterizations (x0 / ε / v) -------------------------------------------------------
# v = a ε - s z0 (Salimans & Ho 2022, §4, written for general (a, s)); all maps are exact inverses.

def eps_from_x0(z: torch.Tensor, x0: torch.Tensor, a, s) -> torch.Tensor:
    return (z - a * x0) / s

def x0_from_eps(z: torch.Tensor, eps: torch.Tensor, a, s) -> torch.Tensor:
    return (z - s * eps) / a

def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, a, s) -> torch.Tensor:
    return a * eps - s * x0

def x0_from_v(z: torch.Tensor, v: torch.Tensor, a, s) -> torch.Tensor:
    """a z - s v = (a² + s²) z0."""
    return (a * z - s * v) / (a * a + s * s)

def eps_from_v(z: torch.Tensor, v: torch.Tensor, a, s) -> torch.Tensor:
    """s z + a v = (a² + s²) ε."""
    return (s * z + a * v) / (a * a + s * s)

# ---- posterior --------------------------------------------------------------------------

def posterior(z_t: torch.Tensor, x0: torch.Tensor, a_t, s_t, a_s, s_s) -> tuple[torch.Tensor, torch.Tensor]:
    """q(z_s | z_t, z_0 = x0) for s < t = N(mean, var I) (Kingma et al. 2021, VDM eqs. 31-33):
    a_{t|s} = a_t / a_s, σ²_{t|s} = s_t² - a_{t|s}² s_s²,
    mean = (a_{t|s} s_s² / s_t²) z_t + (a_s σ²_{t|s} / s_t²) x0,  var = σ²_{t|s} s_s² / s_t².
    Returns (mean, var); var broadcasts like the coefficients."""
    a_ts = a_t / a_s
    var_ts = s_t * s_t - a_ts * a_ts * s_s * s_s
    mean = (a_ts * s_s * s_s / (s_t * s_t)) * z_t + (a_s * var_ts / (s_t * s_t)) * x0
    return mean, var_ts * s_s * s_s / (s_t * s_t)

def ddim_step(z_t: torch.Tensor, x0: torch.Tensor, a_t, s_t, a_s, s_s, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM update (Song et al. 2021, eq. 12): z_s = a_s x̂0 + sqrt(s_s² - σ²) ε̂ + σ·noise with
    σ² = η²·var of q(z_s | z_t, x̂0); η = 0 is deterministic, η = 1 has DDPM's variance."""
    eps = eps_from_x0(z_t, x0, a_t, s_t)
    if eta == 0:
        return a_s * x0 + s_s * eps
    var = eta * eta * posterior(z_t, x0, a_t, s_t, a_s, s_s)[1]
    return a_s * x0 + (s_s * s_s - var).clamp_min(0).sqrt() * eps + var.sqrt() * noise


# ---- likelihood-bound terms (nats) ---------------------------------------------------------

def prior_variance(a1, s1):
    """Variance of the prior p(z_1) = N(0, (a_1² + s_1²) I) [our choice]: 1 for VP, 1 + σ_max² for
    VE, and the inflated variance of Difformer's noise form; it matches q(z_1) when a_1 → 0."""
    return a1 * a1 + s1 * s1

def prior_kl(z0: torch.Tensor, a1, s1) -> torch.Tensor:
    """KL(q(z_1 | z_0) ‖ p(z_1)) summed over the last dim: (...,) nats.
    = ½ Σ_j [ (a_1² z0_j² + s_1²)/v - 1 - log(s_1²/v) ],  v = prior_variance."""
    v = prior_variance(a1, s1)
    d = z0.shape[-1]
    per = (a1 * a1 * z0.pow(2).sum(-1, keepdim=True) + d * s1 * s1) / v - d - d * torch.log(s1 * s1 / v)
    return 0.5 * per.squeeze(-1)

def gaussian_kl(mean_q, var_q, mean_p, var_p) -> torch.Tensor:
    """KL(N(mean_q, var_q I) ‖ N(mean_p, var_p I)) summed over the last dim (isotropic variances)."""
    d = mean_q.shape[-1]
    sq = (mean_q - mean_p).pow(2).sum(-1)
    var_q, var_p = torch.as_tensor(var_q).squeeze(-1), torch.as_tensor(var_p).squeeze(-1)
    return 0.5 * (d * var_q / var_p + sq / var_p - d + d * torch.log(var_p / var_q))

def diffusion_term(z0: torch.Tensor, x0_hat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One-sample continuous-time diffusion loss ½ w(t) ‖z0 - ẑ0‖² summed over the last dim
    (VDM eq. 17 with w = -SNR'(t); multiply by the length of the t interval for the integral)."""
    return 0.5 * weight * (z0 - x0_hat).pow(2).sum(-1)

