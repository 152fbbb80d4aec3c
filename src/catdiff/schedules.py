"""Noise schedules as pure functions of time t ∈ [0, 1] (data at t = 0, noise at t = 1).

This module knows nothing of tensors' meaning (tokens, embeddings), networks or losses: each
schedule maps a time tensor to a coefficient tensor and gives the exact derivative.

Masking schedules return α_t, the probability that a token is still clean (MDLM, Sahoo et al.
2024, arXiv 2406.07524, §3); α is decreasing with α_0 = 1 and α_1 ≈ 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

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


# ------------------------------------------------------------------------------------------
# Gaussian schedules: z_t = a_t z_0 + s_t ε, SNR(t) = a_t² / s_t², λ_t = log SNR(t).
# Every base schedule is a log-SNR function λ(t) with a closed-form derivative; the forms and
# wrappers below turn it into (a_t, s_t). Tests check each derivative against autograd.

def _lam_cosine(t):
    """Cosine (Nichol & Dhariwal 2021; VDM notation): ᾱ = cos²(πt/2), λ = -2 log tan(πt/2)."""
    return -2.0 * torch.log(torch.tan(0.5 * math.pi * t))


def _dlam_cosine(t):
    return -2.0 * math.pi / torch.sin(math.pi * t)


_B0, _B1 = 0.1, 20.0  # VP-SDE linear β(t) = β0 + (β1 - β0) t (Song et al. 2021, §3.3; DDPM's linear)


def _lam_linear(t):
    """ᾱ = exp(-∫β) = exp(-β0 t - (β1-β0) t²/2);  λ = log ᾱ/(1-ᾱ) = -log expm1(∫β)."""
    return -torch.log(torch.expm1(_B0 * t + 0.5 * (_B1 - _B0) * t * t))


def _dlam_linear(t):
    g = _B0 * t + 0.5 * (_B1 - _B0) * t * t
    return -(_B0 + (_B1 - _B0) * t) / (-torch.expm1(-g))  # -β(t) / (1 - ᾱ)


_SQRT_DELTA = 1e-4  # Diffusion-LM's offset (Li et al. 2022, §4.2 / App. A)


def _lam_sqrt(t):
    """Diffusion-LM sqrt schedule: ᾱ = 1 - sqrt(t + δ), λ = log ᾱ - log(1 - ᾱ)."""
    r = torch.sqrt(t + _SQRT_DELTA)
    return torch.log1p(-r) - torch.log(r)


def _dlam_sqrt(t):
    r = torch.sqrt(t + _SQRT_DELTA)  # dλ/dt = dλ/dr · dr/dt, dr/dt = 1/(2r)
    return (-1.0 / (1.0 - r) - 1.0 / r) / (2.0 * r)


_LDDM_EPS = 1e-4  # LDDM's clamp (METHODS.md §5; darioShar/LADD)


def _lam_lddm(t):
    """LDDM latent default: ᾱ = (1 - 2ε) sqrt(1 - t) + ε, λ = log ᾱ - log(1 - ᾱ), with
    1 - ᾱ = (1 - 2ε) t / (1 + sqrt(1 - t)) + ε (no cancellation near t = 0)."""
    r = torch.sqrt(1.0 - t)
    abar = (1.0 - 2 * _LDDM_EPS) * r + _LDDM_EPS
    return torch.log(abar) - torch.log((1.0 - 2 * _LDDM_EPS) * t / (1.0 + r) + _LDDM_EPS)


def _dlam_lddm(t):
    r = torch.sqrt(1.0 - t)
    abar = (1.0 - 2 * _LDDM_EPS) * r + _LDDM_EPS
    one_minus = (1.0 - 2 * _LDDM_EPS) * t / (1.0 + r) + _LDDM_EPS
    dabar = -(1.0 - 2 * _LDDM_EPS) / (2.0 * r)  # dλ/dt = ᾱ' / (ᾱ (1 - ᾱ))
    return dabar / (abar * one_minus)


_GAUSS = {
    # name: (λ, dλ/dt, default t range). The range keeps λ finite: cosine has λ(0) = +∞ and
    # λ(1) = -∞; linear has λ(0) = +∞; sqrt has ᾱ ≤ 0 beyond t = 1 - δ.
    "cosine": (_lam_cosine, _dlam_cosine, (1e-4, 1.0 - 1e-4)),  # λ ∈ [-17.5, 17.5]
    "linear": (_lam_linear, _dlam_linear, (1e-4, 1.0)),  # λ ∈ [-10.05, 9.2]
    "sqrt": (_lam_sqrt, _dlam_sqrt, (0.0, 0.999)),  # λ ∈ [-7.7, 4.6]
    "lddm": (_lam_lddm, _dlam_lddm, (0.0, 1.0)),  # λ ∈ [-9.2, 9.2]; λ'(1) = -∞ (never evaluated there)
}
GAUSSIAN_SCHEDULES = tuple(_GAUSS) + ("ve",)


@dataclass(frozen=True)
class GaussianSchedule:
    """(a_t, s_t) of a Gaussian process, built from a log-SNR schedule.

    name:   cosine | linear | sqrt | lddm (VP shapes above) | ve (σ(t) = σ_min^{1-t} σ_max^t, CDCD/EDM)
    form:   "vp" (a² + s² = 1: a² = sigmoid λ, s² = sigmoid -λ) or "ve" (a = 1, s = e^{-λ/2});
            name "ve" implies form "ve".
    shift:  log-SNR shift λ → λ + 2 log shift (shifted cosine: CATDM, METHODS.md §3; shift < 1
            puts more training mass at high noise).
    rescale: Difformer noise factor F (Gao et al. 2024, code zhjgao/difformer); SNR → SNR / F².
    rescale_form: "vp"    ᾱ' = ᾱ / (F² - (F² - 1) ᾱ), i.e. λ → λ - 2 log F, then the VP form;
                  "noise" z_t = a_t z_0 + F s_t ε (same SNR, variance no longer 1).
    t_min / t_max: the usable time range (None = the schedule's default above; "ve" uses [0, 1]).
    log_snr_max: if set, t_min is raised to the time where λ(t) = log_snr_max [our choice, used by
            embedding diffusion]: the likelihood bound's decoder sits there, and the diffusion
            term stops before SNR → ∞ where an imperfect ẑ_0 costs -SNR'(t)·‖err‖² without limit.
    """

    name: str = "cosine"
    form: str = "vp"
    shift: float = 1.0
    rescale: float = 1.0
    rescale_form: str = "vp"
    sigma_min: float = 1.0  # "ve" only (CDCD: σ from 1 to 300 for √d-norm embeddings)
    sigma_max: float = 300.0
    t_min: float | None = None
    t_max: float | None = None
    log_snr_max: float | None = None

    def __post_init__(self):
        if self.name not in GAUSSIAN_SCHEDULES:
            raise ConfigError(f"unknown Gaussian schedule {self.name!r}; choose one of {sorted(GAUSSIAN_SCHEDULES)}")
        if self.form not in ("vp", "ve"):
            raise ConfigError(f"schedule form must be 'vp' or 've', got {self.form!r}")
        if self.rescale_form not in ("vp", "noise"):
            raise ConfigError(f"rescale_form must be 'vp' or 'noise', got {self.rescale_form!r}")
        if self.shift <= 0 or self.rescale <= 0:
            raise ConfigError(f"shift and rescale must be positive, got {self.shift}, {self.rescale}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ConfigError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        lo, hi = self.t_range
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"need 0 <= t_min < t_max <= 1, got {lo}, {hi}")

    @cached_property
    def t_range(self) -> tuple[float, float]:
        lo, hi = (0.0, 1.0) if self.name == "ve" else _GAUSS[self.name][2]
        lo, hi = (lo if self.t_min is None else self.t_min, hi if self.t_max is None else self.t_max)
        if self.log_snr_max is not None:
            lo = max(lo, self.t_at_log_snr(self.log_snr_max, lo, hi))
        return lo, hi

    def t_at_log_snr(self, lam: float, lo: float = 0.0, hi: float = 1.0) -> float:
        """The t in [lo, hi] with λ(t) = lam (bisection; λ is decreasing); lo or hi if out of range."""
        a, b = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
        if float(self.log_snr(a)) <= lam:
            return lo
        if float(self.log_snr(b)) >= lam:
            return hi
        for _ in range(80):
            m = 0.5 * (a + b)
            a, b = (m, b) if float(self.log_snr(m)) > lam else (a, m)
        return float(b)

    @property
    def ve(self) -> bool:
        return self.name == "ve" or self.form == "ve"

    def _base(self, t):
        if self.name == "ve":
            lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
            return -2.0 * (lo + (hi - lo) * t), torch.full_like(t, -2.0 * (hi - lo))
        lam, dlam, _ = _GAUSS[self.name]
        return lam(t), dlam(t)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """λ(t) after shift and rescaling."""
        return self._base(t)[0] + 2.0 * math.log(self.shift) - 2.0 * math.log(self.rescale)

    def dlog_snr(self, t: torch.Tensor) -> torch.Tensor:
        """dλ/dt in closed form (shift and rescale are constants in λ)."""
        return self._base(t)[1]

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, s_t) with z_t = a_t z_0 + s_t ε."""
        noise_form = self.rescale != 1.0 and self.rescale_form == "noise"
        lam = self.log_snr(t) + (2.0 * math.log(self.rescale) if noise_form else 0.0)
        if self.ve:
            a, s = torch.ones_like(lam), torch.exp(-0.5 * lam)
        else:
            a, s = torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
        return (a, s * self.rescale) if noise_form else (a, s)

    def vlb_weight(self, t: torch.Tensor) -> torch.Tensor:
        """-dSNR/dt = -λ'(t) e^{λ(t)} ≥ 0: the continuous-time diffusion-loss weight of
        ½ ‖z_0 - ẑ_0‖² (Kingma et al. 2021, VDM eq. 17); depends only on SNR(t)."""
        return -self.dlog_snr(t) * torch.exp(self.log_snr(t))
