"""Gaussian samplers against exact denoisers of a Gaussian mixture on embeddings."""

import pytest
import torch

from catdiff.errors import ConfigError
from catdiff.samplers import gaussian
from catdiff.schedules import GaussianSchedule

# four tokens with embeddings in d = 2, probabilities π
E = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
PI = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)


def exact_denoiser(schedule, calls=None):
    """p(k | z_t) ∝ π_k N(z_t; a e_k, s² I); ẑ_0 = Σ_k p(k|z_t) e_k (score interpolation with the exact p)."""

    def f(z, t, prev):
        if calls is not None:
            calls.append(float(t[0]))
        a, s = schedule.coefficients(t.view(-1, 1, 1).double())
        d2 = (z.unsqueeze(-2) - a.unsqueeze(-1) * E).pow(2).sum(-1)  # (B, L, K)
        logits = PI.log() - 0.5 * d2 / (s * s)
        return torch.softmax(logits, -1) @ E, logits

    return f


def sample_gaussian(denoise, z, schedule, steps, kind="ddpm", generator=None, **kw):
    """gaussian.sample on the grid of a `steps` budget → (logits of the last call, nfe)."""
    r = gaussian.sample(denoise, z, gaussian.grid(schedule, steps, kind), schedule=schedule, kind=kind,
                        generator=generator, **kw)
    assert r.nfe <= steps  # the budget is never exceeded
    return r.info["logits"], r.nfe


def test_score_interpolation_is_the_exact_mixture_score():
    sched = GaussianSchedule("cosine")
    t = torch.tensor([0.5], dtype=torch.float64)
    a, s = sched.coefficients(t)
    z = torch.randn(1, 3, 2, dtype=torch.float64, requires_grad=True)
    comp = -0.5 * (z.unsqueeze(-2) - a * E).pow(2).sum(-1) / s**2  # (1, 3, K) up to constants
    logp = torch.logsumexp(PI.log() + comp, -1).sum()
    (score,) = torch.autograd.grad(logp, z)
    x0, _ = exact_denoiser(sched)(z.detach(), t, None)
    assert torch.allclose(score, (a * x0 - z.detach()) / s**2, atol=1e-10)


@pytest.mark.parametrize("kind", list(gaussian.KINDS))
def test_samplers_reproduce_the_token_distribution(kind):
    sched = GaussianSchedule("cosine")
    g = torch.Generator().manual_seed(0)
    n = 4000
    a1, s1 = sched.coefficients(torch.tensor(sched.t_range[1]))
    z = torch.randn(n, 1, 2, generator=g, dtype=torch.float64) * (a1**2 + s1**2).sqrt()
    logits, nfe = sample_gaussian(exact_denoiser(sched), z, sched, 199 if kind == "heun" else 100, kind, g)
    x = logits.argmax(-1).view(-1)
    freq = torch.bincount(x, minlength=4).double() / n
    assert float((freq - PI).abs().sum() / 2) < 0.035  # total variation (SE ≈ 0.01)
    assert nfe == (199 if kind == "heun" else 100)


def test_euler_equals_ddim_eta0_and_samplers_are_seed_deterministic():
    sched = GaussianSchedule("sqrt", rescale=2.0)
    z = torch.randn(8, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out_e, _ = sample_gaussian(exact_denoiser(sched), z, sched, 17, "euler")
    out_d, _ = sample_gaussian(exact_denoiser(sched), z, sched, 17, "ddim", eta=0.0)
    assert torch.allclose(out_e, out_d, atol=1e-9)
    r1, _ = sample_gaussian(exact_denoiser(sched), z, sched, 9, "ddpm", torch.Generator().manual_seed(5))
    r2, _ = sample_gaussian(exact_denoiser(sched), z, sched, 9, "ddpm", torch.Generator().manual_seed(5))
    r3, _ = sample_gaussian(exact_denoiser(sched), z, sched, 9, "ddpm", torch.Generator().manual_seed(6))
    assert torch.equal(r1, r2) and not torch.equal(r1, r3)


def test_grid_early_stop_and_call_count():
    sched = GaussianSchedule("sqrt")
    calls = []
    z = torch.zeros(2, 3, 2, dtype=torch.float64)
    _, nfe = sample_gaussian(exact_denoiser(sched, calls), z, sched, 20, "ddpm", torch.Generator().manual_seed(0),
                             early_stop=5)
    assert nfe == 15 == len(calls)  # Difformer: a 20-step grid, decoded after 15 calls
    lo, hi = sched.t_range
    assert calls[0] == pytest.approx(hi) and calls[1] == pytest.approx(hi - (hi - lo) / 19)
    calls.clear()
    _, nfe = sample_gaussian(exact_denoiser(sched, calls), z, sched, 8, "heun")  # budget 8: 4 points, 7 calls
    assert nfe == len(calls) == 7 and calls[-1] == pytest.approx(lo)
    assert len(gaussian.grid(sched, 7, "heun")) == 4 and len(gaussian.grid(sched, 1, "heun")) == 1
    with pytest.raises(ConfigError):
        sample_gaussian(exact_denoiser(sched), z, sched, 4, "ddpm", early_stop=4)
    with pytest.raises(ConfigError):
        sample_gaussian(exact_denoiser(sched), z, sched, 4, "nope")


def test_self_conditioning_feeds_the_previous_prediction_and_clamp_applies():
    sched = GaussianSchedule("cosine")
    seen = []
    base = exact_denoiser(sched)

    def f(z, t, prev):
        seen.append(None if prev is None else prev.clone())
        return base(z, t, prev)

    z = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    clamp = lambda x: torch.ones_like(x)  # noqa: E731
    sample_gaussian(f, z, sched, 3, "ddim", self_cond=True, clamp=clamp)
    assert seen[0] is None and torch.equal(seen[1], torch.ones(2, 3, 2, dtype=torch.float64))
