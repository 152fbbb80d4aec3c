"""Noise schedules as pure functions of time t ∈ [0, 1] (data at t = 0, noise at t = 1).

This module knows nothing of tensors' meaning (tokens, embeddings), networks or losses: each
schedule maps a time tensor to a coefficient tensor and gives the exact derivative.

Masking schedules return α_t, the probability that a token is still clean (MDLM, Sahoo et al.
2024, arXiv 2406.07524, §3); α is decreasing with α_0 = 1 and α_1 ≈ 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class MaskSchedule:
    """α(t) and α'(t) of an absorbing (masking) process.

    name: "linear"    α = 1 - t                      (MDLM §3.4; α_1 = 0 exactly)
          "loglinear" α = 1 - (1 - eps) t            (SEDD's log-linear noise, σ(t) = -log α(t))
          "cosine"    α = cos(π t / 2)               (MDLM Table/appendix; MaskGIT-style)
    eps is the clamp that keeps α_1 > 0 for "loglinear" (1e-4 as in the LADD code) and bounds the
    smallest training time in `sample_times` for every schedule [our choice, documented there].
    """

    name: str = "linear"
    eps: float = 1e-4

    def __post_init__(self):
        if self.name not in MASK_SCHEDULES:
            raise ConfigError(
                f"unknown masking schedule {self.name!r}; choose one of {sorted(MASK_SCHEDULES)}"
            )
        if not 0.0 <= self.eps < 0.5:
            raise ConfigError(f"schedule eps must be in [0, 0.5), got {self.eps}")

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        if self.name == "linear":
            return 1.0 - t
        if self.name == "loglinear":
            return 1.0 - (1.0 - self.eps) * t
        return torch.cos(0.5 * math.pi * t)

    def dalpha(self, t: torch.Tensor) -> torch.Tensor:
        """dα/dt, in closed form (tests check it against autograd)."""
        if self.name == "linear":
            return -torch.ones_like(t)
        if self.name == "loglinear":
            return -(1.0 - self.eps) * torch.ones_like(t)
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def nelbo_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-α'_t / (1 - α_t): the continuous-time NELBO weight (MDLM eq. 10).

        For "cosine" 1 - cos(πt/2) is computed as 2 sin²(πt/4) to keep precision near t = 0.
        """
        if self.name == "cosine":
            one_minus_alpha = 2.0 * torch.sin(0.25 * math.pi * t) ** 2
        else:
            one_minus_alpha = 1.0 - self.alpha(t)
        return -self.dalpha(t) / one_minus_alpha


MASK_SCHEDULES = ("linear", "loglinear", "cosine")


def sample_times(
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    t_min: float = 1e-4,
    antithetic: bool = True,
) -> torch.Tensor:
    """(B,) training times in [t_min, 1).

    With `antithetic` the batch is low-discrepancy (MDLM §3.5.1 / VDM): t_i = (u + i/B) mod 1 with one
    shared u ~ U[0,1), so the batch covers [0,1) evenly and the estimator's variance drops.
    Times are then mapped affinely into [t_min, 1) [our choice: the integral over [0, t_min) is
    dropped; for t_min = 1e-4 it is ~1e-4 of the bound].
    """
    if antithetic:
        u = torch.rand((), generator=generator, device=device)
        t = (u + torch.arange(batch_size, device=device) / batch_size) % 1.0
    else:
        t = torch.rand(batch_size, generator=generator, device=device)
    return t_min + (1.0 - t_min) * t
