"""Diagnostics of the probability-flow ODE of EDM-style models (DisCo-Diff §5, METHODS.md §4):
curvature κ(σ) along sampling trajectories, the Jacobian norm E‖∇_x G‖_F², the training loss as
a function of σ, and latent switching. Functions of a denoiser callable D(x; σ) and of the
samplers; they know nothing of how the model was trained. G(x, σ) = dx/dσ = (x - D(x; σ))/σ.
"""

from __future__ import annotations

from typing import Callable

import torch

from .processes import edm

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ode_field(denoise: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """G(x, σ) = (x - D(x; σ)) / σ (EDM eq. 4 with σ(t) = t)."""
    s = torch.full((x.shape[0],), sigma, device=x.device, dtype=x.dtype)
    return (x - denoise(x, s)) / sigma


@torch.no_grad()
def curvature_along_trajectories(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor,
                                 dt: float = 1e-3) -> list[tuple[float, float, float]]:
    """[(σ_i, mean κ, median κ)] over Euler trajectories from x at σ_0 (METHODS.md §4):
    κ ≈ ‖T(x_σ) - T(x_{σ-Δ})‖ / ‖x_σ - x_{σ-Δ}‖, T = G/‖G‖, x_{σ-Δ} one Euler step of Δ = dt.
    The mean is the paper's statistic; the median is not moved by the few trajectories passing
    near a zero of G, where the tangent turns abruptly. Use float64: in float32 the tangents'
    round-off (~1e-7) over a step of length Δ‖G‖ sets a floor of ~1e-4 on κ at large σ."""
    out = []
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        g1 = ode_field(denoise, x, s)
        if s - dt > 0:
            x2 = x - dt * g1
            g2 = ode_field(denoise, x2, s - dt)
            t1 = g1 / g1.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            t2 = g2 / g2.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            kappa = (t1 - t2).norm(dim=-1) / (x - x2).norm(dim=-1).clamp_min(1e-12)
            out.append((s, float(kappa.mean()), float(kappa.median())))
        x = x + (s_next - s) * g1  # Euler step to the next grid point
    return out


def jacobian_norm(denoise: Denoiser, x: torch.Tensor, sigma: float) -> float:
    """E_x ‖∇_x G(x, σ)‖_F², exact for low-dimensional x (one backward pass per dimension)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        g = ode_field(denoise, x, sigma)  # (B, D)
        total = torch.zeros((), dtype=x.dtype)
        for j in range(g.shape[1]):
            (row,) = torch.autograd.grad(g[:, j].sum(), x, retain_graph=j < g.shape[1] - 1)
            total = total + row.pow(2).sum()
    return float(total / x.shape[0])


def switch_latents(denoise_c: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                   x: torch.Tensor, sigmas: torch.Tensor, cond_a: torch.Tensor, cond_b: torch.Tensor,
                   sigma_switch: float) -> torch.Tensor:
    """Heun ODE conditioned on latent a while σ ≥ σ_switch, then on latent b (DisCo-Diff §5:
    when do the latents decide the output?)."""
    from .samplers import edm as edm_sampler

    def D(x_, s_):
        return denoise_c(x_, s_, cond_a if float(s_[0]) >= sigma_switch else cond_b)

    return edm_sampler.sample(D, x, sigmas, kind="heun").state


@torch.no_grad()
def loss_by_sigma(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], y: torch.Tensor,
                  sigmas: list[float], generator: torch.Generator | None = None) -> list[tuple[float, float]]:
    """[(σ, mean weighted denoising loss)] with σ fixed per evaluation; loss_fn(y, σ (B,)) → (B,)."""
    out = []
    for s in sigmas:
        sig = torch.full((y.shape[0],), s, device=y.device, dtype=y.dtype)
        out.append((s, float(loss_fn(y, sig).mean())))
    return out


def default_sigmas(steps: int = 50) -> torch.Tensor:
    return edm.karras_sigmas(steps)
