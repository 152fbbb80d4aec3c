"""The coupled (tokens + latent) process: each channel is its component process, times, and the
latent ELBO weight as the limit of the Gaussian KL between posteriors."""

import math

import pytest
import torch

from catdiff.processes import gaussian, masked
from catdiff.processes.coupled import CoupledProcess
from catdiff.schedules import GaussianSchedule, MaskSchedule, sample_times

K = 5


def proc(**kw):
    return CoupledProcess(MaskSchedule("linear"), GaussianSchedule("lddm", **kw), K)


def test_each_channel_is_its_component_process_run_alone():
    P = proc()
    x = torch.randint(0, K, (64, 12))
    y0 = torch.randn(64, 2, 3)
    t_x, t_y = torch.rand(64), torch.rand(64)
    z_t, y_t, eps = P.q_sample(x, y0, t_x, t_y, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    z_ref = masked.q_sample(x, t_x, P.tokens, K, g)  # the same draws, in the same order
    eps_ref = torch.randn(y0.shape, generator=g)
    a, s = P.latent.coefficients(t_y.view(-1, 1, 1))
    assert torch.equal(z_t, z_ref) and torch.equal(eps, eps_ref)
    torch.testing.assert_close(y_t, gaussian.q_sample(y0, a, s, eps_ref))


def test_marginal_moments_of_both_channels():
    P = proc()
    n = 40000
    x = torch.zeros(n, 4, dtype=torch.long)
    y0 = torch.full((n, 1, 2), 0.7)
    t = torch.full((n,), 0.3)
    z_t, y_t, _ = P.q_sample(x, y0, t, t, torch.Generator().manual_seed(0))
    rate = float((z_t == K).double().mean())
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / (4 * n))  # masked w.p. 1 - α_t = t
    a, s = (float(v) for v in P.latent.coefficients(torch.tensor(0.3)))
    assert abs(float(y_t.mean()) - 0.7 * a) < 4 * s / math.sqrt(2 * n)
    assert abs(float(y_t.var()) - s * s) < 0.03 * s * s


def test_shared_and_independent_times():
    P = proc(log_snr_max=5.0)
    lo, hi = P.latent.t_range
    assert 0.01 < lo < 0.02 and hi == 1.0  # λ = 5 ⇔ ᾱ = sigmoid(5) under (1-2ε)√(1-t) + ε
    g = torch.Generator().manual_seed(0)
    t_x, t_y = P.times(256, g, "cpu", 1e-4)
    assert torch.equal(t_y, t_x.clamp(lo, hi))
    t_x, t_y = P.times(256, g, "cpu", 1e-4, independent=True)
    assert t_y.min() >= lo and t_y.max() <= hi
    gaps = torch.sort(t_y).values.diff()  # still low-discrepancy: evenly spread over [lo, hi]
    assert torch.allclose(gaps, torch.full_like(gaps, (hi - lo) / 256), atol=1e-5)
    assert abs(float(torch.corrcoef(torch.stack([t_x, t_y]))[0, 1])) < 0.25  # unrelated pairs


@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_latent_elbo_weight_is_the_limit_of_the_posterior_kl(t):
    """½(-SNR'(t))‖y_0 - ŷ_0‖² = lim_{h→0} KL(q(y_s|y_t,y_0) ‖ q(y_s|y_t,ŷ_0)) / h, s = t - h."""
    P = proc()
    d = torch.float64
    g = torch.Generator().manual_seed(1)
    y0, y_hat = torch.randn(3, 1, 4, generator=g, dtype=d), torch.randn(3, 1, 4, generator=g, dtype=d)
    tt = torch.full((3,), t, dtype=d)
    y_t = P.noise(y0, tt, g)[0]
    diff, _ = P.latent_terms(y0, y_hat, tt)
    h = 1e-6
    (a_t, s_t), (a_s, s_s) = (P.latent.coefficients(torch.tensor(v, dtype=d)) for v in (t, t - h))
    m_q, v_q = gaussian.posterior(y_t, y0, a_t, s_t, a_s, s_s)
    m_p, v_p = gaussian.posterior(y_t, y_hat, a_t, s_t, a_s, s_s)
    kl = gaussian.gaussian_kl(m_q.flatten(1), v_q.reshape(1, 1), m_p.flatten(1), v_p.reshape(1, 1))
    torch.testing.assert_close(kl / h, diff, rtol=1e-4, atol=0)


def test_prior_kl_is_zero_for_a_zero_latent_and_grows_with_its_norm():
    P = proc()
    _, kl0 = P.latent_terms(torch.zeros(2, 1, 3), torch.zeros(2, 1, 3), torch.full((2,), 0.5))
    _, kl1 = P.latent_terms(torch.ones(2, 1, 3), torch.zeros(2, 1, 3), torch.full((2,), 0.5))
    assert torch.all(kl0.abs() < 1e-6) and torch.all(kl1 > kl0)


def test_sample_times_in_shared_mode_match_the_token_channel():
    P = proc()
    t_x, _ = P.times(16, torch.Generator().manual_seed(5), "cpu", 1e-3)
    torch.testing.assert_close(t_x, sample_times(16, torch.Generator().manual_seed(5), "cpu", 1e-3))
