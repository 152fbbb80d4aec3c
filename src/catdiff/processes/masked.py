"""The absorbing (masking) forward process and its posterior; it never calls a network.

MDLM (Sahoo et al. 2024, arXiv 2406.07524): each token independently becomes the mask id m with
probability 1 - α_t (eq. 2); from t to s < t a masked token is revealed with probability
(α_s - α_t) / (1 - α_t) (eq. 6, the true posterior with x_0 replaced by the denoiser's p_θ).
Shapes: B batch, L length, K vocabulary (mask id m = K).
"""

from __future__ import annotations

import torch

from ..schedules import MaskSchedule


def q_sample(
    x: torch.Tensor, t: torch.Tensor, schedule: MaskSchedule, mask_id: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z_t ~ q(z_t | x): mask each of x (B, L) independently with probability 1 - α(t), t (B,)."""
    alpha = schedule.alpha(t).unsqueeze(-1)  # (B, 1)
    u = torch.rand(x.shape, generator=generator, device=x.device)
    return torch.where(u >= alpha, torch.full_like(x, mask_id), x)


def unmask_probability(schedule: MaskSchedule, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """P(token revealed at s | masked at t) = (α_s - α_t) / (1 - α_t), for 0 <= s < t (MDLM eq. 6)."""
    a_t, a_s = schedule.alpha(t), schedule.alpha(s)
    return ((a_s - a_t) / (1.0 - a_t)).clamp(0.0, 1.0)


def posterior_step(
    z_t: torch.Tensor, x0_sample: torch.Tensor, p_unmask: torch.Tensor, mask_id: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One ancestral step z_t -> z_s (MDLM eq. 7 with the SUBS carry-over).

    z_t (B, L) current tokens; x0_sample (B, L) a draw from p_θ(x_0 | z_t) for every position;
    p_unmask (B,) or scalar reveal probability. Masked positions are revealed to x0_sample with
    probability p_unmask, otherwise stay masked; revealed tokens are carried over unchanged.
    """
    masked = z_t == mask_id
    p = torch.as_tensor(p_unmask, device=z_t.device, dtype=torch.float32)
    if p.dim() == 1:
        p = p.unsqueeze(-1)  # (B, 1)
    reveal = torch.rand(z_t.shape, generator=generator, device=z_t.device) < p
    return torch.where(masked & reveal, x0_sample, z_t)
