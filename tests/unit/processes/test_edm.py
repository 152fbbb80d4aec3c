"""EDM pieces: preconditioning gives unit-variance network inputs and targets, the weight is
c_out^-2, the Karras grid, and the ODE samplers' order of accuracy on a linear ODE."""

import math

import pytest
import torch

from catdiff.processes import edm
from catdiff.samplers import edm as edm_sampler


@pytest.mark.parametrize("sigma", [0.01, 0.5, 3.0, 80.0])
def test_preconditioning_gives_unit_variance_inputs_and_targets(sigma):
    sd = edm.SIGMA_DATA
    g = torch.Generator().manual_seed(0)
    y = sd * torch.randn(200000, generator=g, dtype=torch.float64)
    n = torch.randn(200000, generator=g, dtype=torch.float64)
    s = torch.tensor(sigma, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.precondition(s, sd)
    x = y + s * n
    assert abs(float((c_in * x).var()) - 1) < 0.02  # network input
    target = (y - c_skip * x) / c_out  # what F must output so that D = y
    assert abs(float(target.var()) - 1) < 0.02
    assert float(c_noise) == pytest.approx(math.log(sigma) / 4)
    assert float(edm.loss_weight(s, sd)) == pytest.approx(float(c_out) ** -2)


def test_sigma_distribution_and_karras_grid():
    s = edm.sample_sigma(100000, torch.Generator().manual_seed(0))
    assert abs(float(s.log().mean()) - edm.P_MEAN) < 0.02 and abs(float(s.log().std()) - edm.P_STD) < 0.02
    grid = edm.karras_sigmas(18)
    assert len(grid) == 19 and grid[-1] == 0
    assert float(grid[0]) == pytest.approx(80.0) and float(grid[-2]) == pytest.approx(0.002)
    assert torch.all(grid[1:] < grid[:-1])
    r = grid[:-1] ** (1 / 7)  # uniform in σ^{1/ρ}
    assert torch.allclose(r.diff(), r.diff()[:1].expand(17), atol=1e-9)


def exact_gaussian_denoiser(sd):
    """Data N(0, sd²): D(x; σ) = sd²/(σ² + sd²) x, so the ODE solution is x(σ) ∝ sqrt(σ² + sd²)."""
    return lambda x, s: sd ** 2 / (s.view(-1, 1) ** 2 + sd ** 2) * x


@pytest.mark.parametrize("kind,order", [("euler", 1), ("heun", 2)])
def test_ode_samplers_converge_at_their_order(kind, order):
    sd, s0, s1 = 0.5, 5.0, 0.05
    x0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = x0 * math.sqrt(s1 ** 2 + sd ** 2) / math.sqrt(s0 ** 2 + sd ** 2)
    errs = []
    for n in (8, 16, 32):
        sig = edm.karras_sigmas(n + 1, s1, s0)[:-1]  # n steps from s0 to s1, no step to 0
        x, nfe = sample_edm(exact_gaussian_denoiser(sd), x0.clone(), sig, kind)
        errs.append(float((x - exact).abs().max()))
        assert nfe == n * (2 if kind == "heun" else 1)
    for a, b in zip(errs, errs[1:], strict=False):
        assert a / b == pytest.approx(2 ** order, rel=0.25)


def sample_edm(denoise, x, sigmas, kind, generator=None, **kw):
    """edm_sampler.sample along an explicit σ grid → (x, nfe)."""
    r = edm_sampler.sample(denoise, x, sigmas, kind=kind, generator=generator, **kw)
    return r.state, r.nfe


@pytest.mark.parametrize("budget", [1, 2, 5, 9, 10, 99])
def test_grid_spends_at_most_the_call_budget(budget):
    """`steps` is the network-call budget: Euler takes that many steps, Heun (budget + 1) // 2
    (2N - 1 calls), and both end at σ = 0."""
    sd = torch.tensor([1.0, 0.5], dtype=torch.float64)
    for kind in edm_sampler.KINDS:
        sig = edm_sampler.grid(budget, kind)
        _, nfe = sample_edm(exact_gaussian_denoiser(sd), torch.zeros(3, 2, dtype=torch.float64), sig, kind)
        assert float(sig[-1]) == 0 and nfe <= budget
        assert nfe == (budget if kind == "euler" else 2 * ((budget + 1) // 2) - 1)


def test_heun_skips_the_correction_on_the_last_step_and_churn_is_seeded():
    sd = 0.5
    sig = edm.karras_sigmas(5, 0.01, 10.0)
    x0 = 10.0 * torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, nfe = sample_edm(exact_gaussian_denoiser(sd), x0, sig, "heun")
    assert nfe == 2 * 5 - 1
    a, _ = sample_edm(exact_gaussian_denoiser(sd), x0, sig, "heun", torch.Generator().manual_seed(3), s_churn=10)
    b, _ = sample_edm(exact_gaussian_denoiser(sd), x0, sig, "heun", torch.Generator().manual_seed(3), s_churn=10)
    c, _ = sample_edm(exact_gaussian_denoiser(sd), x0, sig, "heun")
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert edm.churn_gamma(1.0, 5, 10.0) == pytest.approx(math.sqrt(2) - 1)
    assert edm.churn_gamma(1.0, 5, 10.0, s_tmin=2.0) == 0.0


def _inpaint(rho: float, a: float, n: int = 20000, steps: int = 32):
    """Heun samples of 2-D data N(0, sd² [[1, ρ], [ρ, 1]]) with the exact denoiser
    D(x; σ) = Σ (Σ + σ² I)^-1 x and coordinate 0 fixed to a by replacement (a + σ·noise before
    every call, the anchor hook)."""
    sd = 0.5
    cov = sd ** 2 * torch.tensor([[1.0, rho], [rho, 1.0]], dtype=torch.float64)

    def denoise(x, s):
        return x @ (cov @ torch.linalg.inv(cov + float(s[0]) ** 2 * torch.eye(2, dtype=torch.float64))).T

    g = torch.Generator().manual_seed(0)
    sig = edm.karras_sigmas(steps).double()

    def anchor(x, s):
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        return torch.where(torch.tensor([True, False]), a + s * noise, x)

    x, _ = sample_edm(denoise, sig[0] * torch.randn(n, 2, generator=g, dtype=torch.float64), sig, "heun", g,
                      anchor=anchor)
    return x, sd


def test_inpainting_anchor_is_exact_for_independent_coordinates_and_pulls_correlated_ones():
    from scipy.stats import kstest, norm

    x, sd = _inpaint(rho=0.0, a=0.6)
    assert float((x[:, 0] - 0.6).abs().max()) < 0.01  # anchored at a + σ_min·noise before the last call
    assert kstest(x[:, 1].numpy(), norm(0, sd).cdf).pvalue > 1e-3  # the free marginal, untouched
    # correlated: replacement moves the free coordinate towards E[x1 | x0 = a] = ρ a, but only part
    # of the way (a known bias of replacement inpainting with ODE samplers; here about half)
    x, _ = _inpaint(rho=0.9, a=0.6)
    m = float(x[:, 1].mean())
    assert 0.2 * 0.54 < m < 0.54 and float(_inpaint(rho=0.9, a=-0.6)[0][:, 1].mean()) == pytest.approx(-m, abs=0.02)
