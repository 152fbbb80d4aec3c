"""Sampling loops with one signature: a denoiser callable, a start state, a step count, a generator.

Samplers know no networks: `denoise(z_t, t)` is any callable returning log-probabilities (a
trained model wrapped by its method, or an exact oracle from a synthetic dataset), so the same
loop is tested against exact conditionals and used with trained models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .config import MASK_ORDERS
from .processes import gaussian
from .processes.coupled import CoupledProcess
from .processes.masked import posterior_step, unmask_probability
from .schedules import GaussianSchedule, MaskSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t (B,L), t (B,)) -> logp (B,L,K)


@dataclass
class DrawOptions:
    """How a token is drawn from predicted log-probabilities.

    temperature scales logits; top_k keeps the k most likely tokens; top_p keeps the smallest set
    of tokens with total probability ≥ top_p (nucleus); float64 draws in double precision
    (float32 Gumbel-max sampling is known to inflate sample-quality numbers, flow_matching #27; we
    draw by inverse CDF with one uniform per token, optionally in float64).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    float64: bool = False


def draw_categorical(logp: torch.Tensor, generator: torch.Generator | None, opts: DrawOptions) -> torch.Tensor:
    """Draw one index per row of logp (..., K) under `opts`; returns (...) int64."""
    dtype = torch.float64 if opts.float64 else torch.float32
    logits = logp.to(dtype)
    if opts.temperature != 1.0:
        if opts.temperature <= 0:
            return logits.argmax(-1)
        logits = logits / opts.temperature
    if opts.top_k is not None and opts.top_k < logits.shape[-1]:
        kth = torch.topk(logits, opts.top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if opts.top_p is not None and opts.top_p < 1.0:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        before = torch.cumsum(sorted_p, dim=-1) - sorted_p  # mass strictly before each token
        sorted_p = sorted_p.masked_fill(before >= opts.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    # inverse-CDF draw: one uniform per row, index = #{k : CDF_k <= u}
    cdf = torch.cumsum(probs, dim=-1)  # (..., K)
    u = torch.rand(probs.shape[:-1] + (1,), generator=generator, device=probs.device, dtype=dtype)
    idx = (cdf <= u * cdf[..., -1:]).sum(-1)
    return idx.clamp_max(probs.shape[-1] - 1)


def time_grid(steps: int, device=None) -> torch.Tensor:
    """(steps + 1,) uniform grid from t = 1 down to t = 0."""
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


def reveal_step(z: torch.Tensor, x0: torch.Tensor, logp: torch.Tensor, schedule: MaskSchedule, t: torch.Tensor,
                s: torch.Tensor, last: bool, mask_id: int, generator: torch.Generator | None, order: str,
                n0: torch.Tensor) -> torch.Tensor:
    """One token step t -> s of a masked chain started at t = 1 with n0 (B,) masks, in `order`
    (see `sample_masked`); the last step reveals every remaining mask."""
    if order == "confidence":
        one = torch.ones(1, device=z.device)
        left = torch.zeros(1, device=z.device) if last else \
            (1.0 - schedule.alpha(s[None]).double()) / (1.0 - schedule.alpha(one).double())
        return confidence_step(z, x0, logp, torch.round(n0.double() * left).long(), mask_id)
    p = torch.ones((), device=z.device) if last else unmask_probability(schedule, t, s)
    return posterior_step(z, x0, p, mask_id, generator)


def _check_order(order: str) -> None:
    if order not in MASK_ORDERS:
        raise ValueError(f"order must be one of {MASK_ORDERS}, got {order!r}")


@torch.no_grad()
def sample_masked(
    denoise: Denoiser,
    z: torch.Tensor,
    schedule: MaskSchedule,
    steps: int,
    mask_id: int,
    generator: torch.Generator | None = None,
    opts: DrawOptions | None = None,
    cache: bool = True,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    order: str = "random",
) -> tuple[torch.Tensor, int]:
    """MDLM sampler (Sahoo et al. 2024, §3.3 and Alg. 2): z (B, L) start (all masks, or some
    positions fixed by a condition).

    order="random" (ancestral, exact in the limit of many steps): each step t -> s reveals each
    masked token with probability (α_s - α_t)/(1 - α_t), its value drawn from p_θ(· | z_t).
    order="confidence" (a greedy heuristic, not a sampler of the model's distribution): each step
    reveals, per row, the number of tokens the schedule expects, n_0 (1 - α_s)/(1 - α_1) left
    masked (n_0 = masks at the start, rounded), choosing the positions whose drawn token is most
    probable (`confidence_step`). Either way the last step reveals every remaining mask. With
    `cache`, when a step changes no token the previous p_θ is reused and the network is not called
    (MDLM §4.2; exact when the denoiser ignores t, as MDLM's time-free SUBS model does, an
    approximation otherwise). Returns (x_0, number of denoiser calls).
    """
    _check_order(order)
    opts = opts or DrawOptions()
    grid = time_grid(steps, z.device)
    n0 = (z == mask_id).sum(1)  # (B,)
    nfe, logp = 0, None
    for j in range(steps):
        t, s = grid[j], grid[j + 1]
        if logp is None or not cache:
            logp = denoise(z, t.expand(z.shape[0]))  # (B, L, K)
            nfe += 1
        x0 = draw_categorical(logp, generator, opts)  # (B, L)
        z_next = reveal_step(z, x0, logp, schedule, t, s, j == steps - 1, mask_id, generator, order, n0)
        if not torch.equal(z_next, z):
            logp = None
        z = z_next
        if callback is not None:
            callback(j, z)
    return z, nfe


# ------------------------------------------------------------------------------------------
# Gaussian (embedding) diffusion. The denoiser maps (z_t (B,L,d), t (B,), x0_prev (B,L,d) or None)
# to (ẑ_0 (B,L,d), logits (B,L,K)); x0_prev is the self-conditioning input (Chen et al. 2022).
X0Denoiser = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], tuple[torch.Tensor, torch.Tensor]]
GAUSSIAN_SAMPLERS = ("ddpm", "ddim", "euler", "heun")


def gaussian_grid(schedule: GaussianSchedule, steps: int, device=None) -> torch.Tensor:
    """(steps,) times from t_max down to t_min, uniform in t (a respaced grid); one network call
    per point (two for Heun, except at the last point)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lo, hi = schedule.t_range
    return torch.linspace(hi, lo, steps, device=device) if steps > 1 else torch.tensor([hi], device=device)


@torch.no_grad()
def sample_gaussian(
    denoise: X0Denoiser,
    z: torch.Tensor,
    schedule: GaussianSchedule,
    steps: int,
    kind: str = "ddpm",
    generator: torch.Generator | None = None,
    *,
    self_cond: bool = False,
    clamp: Callable[[torch.Tensor], torch.Tensor] | None = None,
    early_stop: int = 0,
    eta: float = 0.0,
    anchor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Reverse Gaussian diffusion from z (B, L, d) at t_max; returns (logits of the last call, nfe).

    kind: "ddpm"  ancestral draw from q(z_s | z_t, ẑ_0) (VDM eqs. 31-33; Ho et al. 2020)
          "ddim"  z_s = a_s ẑ_0 + s_s ε̂ (+ η-scaled fresh noise; Song et al. 2021 eq. 12)
          "euler" probability-flow ODE in x = z/a, σ = s/a: dx/dσ = (x - ẑ_0)/σ (Karras et al. 2022,
                  Alg. 1 first order; identical to DDIM with η = 0, which a test checks)
          "heun"  the same ODE with Heun's 2nd-order correction (Karras et al. 2022, Alg. 1)
    With the CDCD parameterization ẑ_0 = Σ_k p_θ(k|z_t) e_k this ODE is score interpolation
    (Dieleman et al. 2022, §3.2): ∇ log p(z_t) ≈ (a ẑ_0 - z_t)/s².
    clamp: map ẑ_0 to the nearest clean embedding before it is used (Diffusion-LM §4.2).
    early_stop: skip the last `early_stop` grid points (Difformer decodes after 15 of 20 calls).
    anchor(z_t, t): re-imposes known parts of z_t before every network call (conditioning:
    fixed positions get their noised or clean embeddings, DiffuSeq-style).
    The tokens are the argmax (or a draw) of the returned logits: the caller decodes.
    """
    if kind not in GAUSSIAN_SAMPLERS:
        raise ValueError(f"unknown Gaussian sampler {kind!r}; choose one of {GAUSSIAN_SAMPLERS}")
    if not 0 <= early_stop < steps:
        raise ValueError(f"early_stop must be in [0, steps), got {early_stop} with steps={steps}")
    grid = gaussian_grid(schedule, steps, z.device)
    n_points = steps - early_stop
    B, nfe, prev = z.shape[0], 0, None

    def call(z_, t_):
        nonlocal nfe, prev
        x0, logits = denoise(z_, t_.expand(B), prev if self_cond else None)
        nfe += 1
        if clamp is not None:
            x0 = clamp(x0)
        if self_cond:
            prev = x0
        return x0, logits

    def coef(t_):
        return schedule.coefficients(t_.reshape(1, 1, 1).to(z.dtype))

    for j in range(n_points):
        t = grid[j]
        if anchor is not None:
            z = anchor(z, t)
        x0, logits = call(z, t)
        if callback is not None:
            callback(j, z, x0)
        if j == n_points - 1:
            break
        r = grid[j + 1]
        (a_t, s_t), (a_r, s_r) = coef(t), coef(r)
        if kind in ("ddpm", "ddim"):
            z = _latent_step(z, x0, a_t, s_t, a_r, s_r, kind, eta, generator)
        else:
            sig_t, sig_r = s_t / a_t, s_r / a_r
            x = z / a_t
            d1 = (x - x0) / sig_t  # dx/dσ at t
            x_r = x + (sig_r - sig_t) * d1
            if kind == "heun":
                if anchor is not None:
                    x_r = anchor(a_r * x_r, r) / a_r
                x0_r, _ = call(a_r * x_r, r)
                d2 = (x_r - x0_r) / sig_r
                x_r = x + (sig_r - sig_t) * 0.5 * (d1 + d2)
            z = a_r * x_r
    return logits, nfe


# ------------------------------------------------------------------------------------------
# Coupled tokens + latent (LDDM FUJI). The denoiser maps (z_t (B,L), y_t (B,P,dp), t_x (B,), t_y (B,))
# to (log p_θ(x_0 | z_t, y_t) (B,L,K), ŷ_0 (B,P,dp)).
CoupledDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                           tuple[torch.Tensor, torch.Tensor]]


def _latent_step(y, y0, a_t, s_t, a_s, s_s, kind: str, eta: float, generator):
    """One reverse Gaussian step t → s from the x0 prediction: DDPM posterior draw or DDIM(η)."""
    if kind == "ddpm":
        mean, var = gaussian.posterior(y, y0, a_t, s_t, a_s, s_s)
        return mean + var.sqrt() * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
    noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) if eta > 0 else None
    return gaussian.ddim_step(y, y0, a_t, s_t, a_s, s_s, eta, noise)


@torch.no_grad()
def sample_coupled(
    denoise: CoupledDenoiser,
    z: torch.Tensor,
    y: torch.Tensor,
    process: CoupledProcess,
    steps: int,
    generator: torch.Generator | None = None,
    opts: DrawOptions | None = None,
    kind: str = "ddim",
    eta: float = 0.0,
    lead: float = 1.0,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    order: str = "random",
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """FUJI joint sampler (METHODS.md §5): from z (B, L) all masks and y (B, P, dp) ~ N(0, I) at
    t = 1, `steps` uniform steps t → s, one joint network call each. Tokens: the MDLM posterior
    (reveal with (α_s - α_t)/(1 - α_t), values drawn from p_θ(· | z_t, y_t)); latent: DDIM(η) or
    the DDPM posterior from ŷ_0 at the clamped latent times. The last step reveals every
    remaining mask and sets y ← ŷ_0. `lead` > 1 runs the latent ahead of the tokens on the path
    t_y = t^lead [our option; meant for a network trained with independent times]. `order` of the
    token reveals as in `sample_masked`. Returns (x_0, ŷ_0, network calls = steps)."""
    if kind not in ("ddpm", "ddim"):
        raise ValueError(f"unknown latent sampler {kind!r}; choose 'ddpm' or 'ddim'")
    _check_order(order)
    opts = opts or DrawOptions()
    grid = time_grid(steps, z.device)
    B = z.shape[0]
    n0 = (z == process.mask_id).sum(1)
    for j in range(steps):
        t, s = grid[j], grid[j + 1]
        t_y, s_y = process.latent_time(t ** lead), process.latent_time(s ** lead)
        logp, y0 = denoise(z, y, t.expand(B), t_y.expand(B))
        x0 = draw_categorical(logp, generator, opts)  # (B, L)
        last = j == steps - 1
        z = reveal_step(z, x0, logp, process.tokens, t, s, last, process.mask_id, generator, order, n0)
        if last:
            y = y0
        elif s_y < t_y:
            (a_t, s_t), (a_s, s_s) = (process.latent.coefficients(v.to(y.dtype)) for v in (t_y, s_y))
            y = _latent_step(y, y0, a_t, s_t, a_s, s_s, kind, eta, generator)
        if callback is not None:
            callback(j, z, y)
    return z, y, steps


# ------------------------------------------------------------------------------------------
# EDM (Karras et al. 2022). The denoiser maps (x (B, ...), σ (B,)) to D(x; σ), the x0 estimate.
EDMDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample_edm(
    denoise: EDMDenoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    kind: str = "heun",
    generator: torch.Generator | None = None,
    *,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    anchor: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, int]:
    """Probability-flow ODE dx/dσ = (x - D(x; σ))/σ along `sigmas` (decreasing, e.g.
    edm.karras_sigmas); x starts at σ_0 (x = σ_0 n). "euler": first order; "heun": EDM Alg. 1 (2nd
    order, no correction on a step to σ = 0). s_churn > 0 adds EDM Alg. 2's stochastic churn:
    σ̂ = σ (1 + γ), x ← x + sqrt(σ̂² - σ²) S_noise ε before each step. anchor(x, σ) re-imposes known
    coordinates before every network call (inpainting). Returns (x, network calls)."""
    from .processes.edm import churn_gamma

    if kind not in ("euler", "heun"):
        raise ValueError(f"unknown EDM sampler {kind!r}; choose 'euler' or 'heun'")
    B, nfe = x.shape[0], 0
    n_steps = len(sigmas) - 1
    for i in range(n_steps):
        s_cur, s_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = churn_gamma(s_cur, n_steps, s_churn, s_tmin, s_tmax)
        s_hat = s_cur * (1.0 + gamma)
        if gamma > 0:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + (s_hat ** 2 - s_cur ** 2) ** 0.5 * s_noise * eps
        if anchor is not None:
            x = anchor(x, torch.tensor(s_hat, dtype=x.dtype, device=x.device))
        d0 = denoise(x, torch.full((B,), s_hat, device=x.device, dtype=x.dtype))
        nfe += 1
        d = (x - d0) / s_hat
        x_next = x + (s_next - s_hat) * d
        if kind == "heun" and s_next > 0:
            if anchor is not None:
                x_next = anchor(x_next, torch.tensor(s_next, dtype=x.dtype, device=x.device))
            d1 = denoise(x_next, torch.full((B,), s_next, device=x.device, dtype=x.dtype))
            nfe += 1
            x_next = x + (s_next - s_hat) * 0.5 * (d + (x_next - d1) / s_next)
        if callback is not None:
            callback(i, x_next, d0)
        x = x_next
    return x, nfe
