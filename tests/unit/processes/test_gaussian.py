import pytest
import torch

from catdiff.processes import gaussian as G
from catdiff.schedules import GaussianSchedule


def _coef(name="cosine", t=0.4, **kw):
    a, s = GaussianSchedule(name, **kw).coefficients(torch.tensor(t, dtype=torch.float64))
    return a, s


@pytest.mark.parametrize("kw", [dict(name="cosine"), dict(name="ve"), dict(name="sqrt", rescale=4.0)], ids=str)
def test_parameterization_round_trips(kw):
    g = torch.Generator().manual_seed(0)
    a, s = _coef(**kw)
    x0 = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 7, 3, generator=g, dtype=torch.float64)
    z = G.q_sample(x0, a, s, eps)
    assert torch.allclose(G.eps_from_x0(z, x0, a, s), eps)
    assert torch.allclose(G.x0_from_eps(z, eps, a, s), x0)
    v = G.v_from_x0_eps(x0, eps, a, s)
    assert torch.allclose(G.x0_from_v(z, v, a, s), x0)
    assert torch.allclose(G.eps_from_v(z, v, a, s), eps)


def test_forward_marginal_mean_and_variance():
    g = torch.Generator().manual_seed(1)
    a, s = _coef("sqrt", 0.3, rescale=3.0)
    x0 = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    n = 200_000
    z = G.q_sample(x0, a, s, torch.randn(n, 3, generator=g, dtype=torch.float64))
    se = float(s) / n**0.5
    assert torch.allclose(z.mean(0), a * x0, atol=5 * se)
    assert torch.allclose(z.var(0), (s * s).expand(3), rtol=0.02)


def test_posterior_equals_gaussian_conditioning():
    """q(z_s | z_t, x0) from the joint Gaussian of (z_s, z_t) given x0, derived independently:
    Cov(z_s, z_t) = a_{t|s} s_s², Var(z_t) = s_t²."""
    g = torch.Generator().manual_seed(2)
    sched = GaussianSchedule("linear")
    a_t, s_t = sched.coefficients(torch.tensor(0.7, dtype=torch.float64))
    a_s, s_s = sched.coefficients(torch.tensor(0.3, dtype=torch.float64))
    x0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    z_t = torch.randn(4, 3, generator=g, dtype=torch.float64)
    a_ts = a_t / a_s
    cov = a_ts * s_s**2
    mean_ref = a_s * x0 + cov / s_t**2 * (z_t - a_t * x0)
    var_ref = s_s**2 - cov**2 / s_t**2
    mean, var = G.posterior(z_t, x0, a_t, s_t, a_s, s_s)
    assert torch.allclose(mean, mean_ref) and torch.allclose(var, var_ref)


def test_posterior_monte_carlo():
    """Draw (z_s, z_t) from the forward chain, regress z_s on z_t: slope and residual variance."""
    g = torch.Generator().manual_seed(3)
    sched = GaussianSchedule("cosine")
    a_t, s_t = sched.coefficients(torch.tensor(0.6, dtype=torch.float64))
    a_s, s_s = sched.coefficients(torch.tensor(0.2, dtype=torch.float64))
    x0 = torch.tensor([0.8], dtype=torch.float64)
    n = 400_000
    z_s = G.q_sample(x0, a_s, s_s, torch.randn(n, 1, generator=g, dtype=torch.float64))
    a_ts, var_ts = a_t / a_s, s_t**2 - (a_t / a_s) ** 2 * s_s**2
    z_t = a_ts * z_s + var_ts.sqrt() * torch.randn(n, 1, generator=g, dtype=torch.float64)
    mean, var = G.posterior(z_t, x0, a_t, s_t, a_s, s_s)
    resid = z_s - mean
    assert abs(float(resid.mean())) < 5 * float(var.sqrt()) / n**0.5
    assert float(resid.var()) == pytest.approx(float(var), rel=0.01)


def test_discrete_kl_equals_snr_difference():
    """KL(q(z_s|z_t,x) ‖ q(z_s|z_t,x̂)) = ½ (SNR(s) - SNR(t)) ‖x - x̂‖² (VDM eq. 13), for any z_t."""
    g = torch.Generator().manual_seed(4)
    sched = GaussianSchedule("sqrt", rescale=2.0)
    t, s = torch.tensor(0.55, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    (a_t, s_t), (a_s, s_s) = sched.coefficients(t), sched.coefficients(s)
    x, xh, z = (torch.randn(6, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mq, vq = G.posterior(z, x, a_t, s_t, a_s, s_s)
    mp, vp = G.posterior(z, xh, a_t, s_t, a_s, s_s)
    kl = G.gaussian_kl(mq, vq.expand(6, 1), mp, vp.expand(6, 1))
    snr = lambda a, s_: (a / s_) ** 2  # noqa: E731
    ref = 0.5 * (snr(a_s, s_s) - snr(a_t, s_t)) * (x - xh).pow(2).sum(-1)
    assert torch.allclose(kl, ref, rtol=1e-9)


def test_diffusion_term_is_the_continuous_limit_of_the_kl_sum():
    sched = GaussianSchedule("cosine", shift=0.5)
    x, xh = torch.tensor([[1.0, -0.5]], dtype=torch.float64), torch.tensor([[0.2, 0.1]], dtype=torch.float64)
    grid = torch.linspace(0.1, 0.9, 4001, dtype=torch.float64)
    snr = torch.exp(sched.log_snr(grid))
    discrete = 0.5 * (snr[:-1] - snr[1:]).sum() * (x - xh).pow(2).sum()
    mid = 0.5 * (grid[1:] + grid[:-1])
    cont = (G.diffusion_term(x, xh, sched.vlb_weight(mid).view(-1, 1)) * (grid[1] - grid[0])).sum()
    assert float(cont) == pytest.approx(float(discrete), rel=1e-5)


def test_prior_kl_matches_gaussian_kl_and_vanishes_at_pure_noise():
    z0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    a1, s1 = _coef("sqrt", 0.999, rescale=4.0)
    v = G.prior_variance(a1, s1)
    ref = G.gaussian_kl(a1 * z0, (s1 * s1).view(1, 1), torch.zeros_like(z0), v.view(1, 1))
    assert torch.allclose(G.prior_kl(z0, a1, s1), ref)
    zero = G.prior_kl(z0, torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert float(zero) == pytest.approx(0.0, abs=1e-12)


def test_ddim_with_eta_one_is_the_ddpm_posterior():
    """Song et al. 2021 §4.1: with σ² = var of q(z_s|z_t,x̂0), the DDIM step is that posterior."""
    g = torch.Generator().manual_seed(5)
    sched = GaussianSchedule("sqrt", rescale=2.0)
    a_t, s_t = sched.coefficients(torch.tensor(0.6, dtype=torch.float64))
    a_s, s_s = sched.coefficients(torch.tensor(0.4, dtype=torch.float64))
    z, x0, n = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
    mean, var = G.posterior(z, x0, a_t, s_t, a_s, s_s)
    assert torch.allclose(G.ddim_step(z, x0, a_t, s_t, a_s, s_s, 1.0, n), mean + var.sqrt() * n)
    assert torch.allclose(G.ddim_step(z, x0, a_t, s_t, a_s, s_s), a_s * x0 + s_s * G.eps_from_x0(z, x0, a_t, s_t))
