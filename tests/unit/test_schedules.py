import math

import pytest
import torch

from catdiff.errors import ConfigError
from catdiff.schedules import MASK_SCHEDULES, MaskSchedule, sample_times


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_mask_schedule_endpoints_and_monotone(name):
    s = MaskSchedule(name)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    a = s.alpha(t)
    assert a[0] == pytest.approx(1.0, abs=1e-12)
    expected_end = s.eps if name == "loglinear" else 0.0
    assert a[-1] == pytest.approx(expected_end, abs=1e-12)
    assert torch.all(a[1:] < a[:-1])


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_mask_schedule_derivative_matches_autograd(name):
    s = MaskSchedule(name)
    t = torch.rand(64, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(s.alpha(t).sum(), t)
    assert torch.allclose(s.dalpha(t.detach()), g, atol=1e-12)


@pytest.mark.parametrize("name", MASK_SCHEDULES)
def test_nelbo_weight_definition(name):
    s = MaskSchedule(name)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    w = s.nelbo_weight(t)
    assert torch.allclose(w, -s.dalpha(t) / (1 - s.alpha(t)), rtol=1e-10)
    assert torch.all(w > 0)
    if name == "linear":
        assert torch.allclose(w, 1 / t)


def test_cosine_weight_is_accurate_near_zero():
    s = MaskSchedule("cosine")
    t = torch.tensor([1e-6], dtype=torch.float32)
    # -α'/(1-α) ≈ (π/2)(πt/2) / ((πt/2)²/2) = 2/t for small t
    assert float(s.nelbo_weight(t)) == pytest.approx(2 / 1e-6, rel=1e-3)


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown masking schedule"):
        MaskSchedule("quadratic")


def test_antithetic_times_cover_the_interval():
    g = torch.Generator().manual_seed(0)
    t = sample_times(16, g, t_min=0.0)
    gaps = torch.sort(t).values.diff()
    assert torch.allclose(gaps, torch.full_like(gaps, 1 / 16), atol=1e-6)
    t2 = sample_times(1000, g, t_min=0.01, antithetic=False)
    assert t2.min() >= 0.01 and t2.max() < 1.0
    assert abs(float(t2.mean()) - 0.505) < 4 * math.sqrt(0.99**2 / 12 / 1000)


# ---- Gaussian schedules ---------------------------------------------------------------------
from catdiff.schedules import GAUSSIAN_SCHEDULES, GaussianSchedule  # noqa: E402

GAUSS_VARIANTS = [dict(name=n) for n in GAUSSIAN_SCHEDULES] + [
    dict(name="cosine", shift=0.1), dict(name="sqrt", rescale=4.0, rescale_form="noise"),
    dict(name="sqrt", rescale=4.0, rescale_form="vp"), dict(name="cosine", form="ve")]


@pytest.mark.parametrize("kw", GAUSS_VARIANTS, ids=str)
def test_gaussian_log_snr_decreasing_and_consistent(kw):
    g = GaussianSchedule(**kw)
    lo, hi = g.t_range
    t = torch.linspace(lo, hi, 2001, dtype=torch.float64)
    lam = g.log_snr(t)
    assert torch.isfinite(lam).all()
    assert torch.all(lam[1:] < lam[:-1])  # SNR strictly decreasing
    a, s = g.coefficients(t)
    assert torch.allclose(2 * (a.log() - s.log()), lam, atol=1e-9)  # (a, s) carry exactly that SNR
    if not g.ve and not (g.rescale != 1 and g.rescale_form == "noise"):
        assert torch.allclose(a * a + s * s, torch.ones_like(a), atol=1e-12)  # variance preserving
    if g.ve:
        assert torch.all(a == 1)


@pytest.mark.parametrize("kw", GAUSS_VARIANTS, ids=str)
def test_gaussian_dlog_snr_matches_autograd(kw):
    g = GaussianSchedule(**kw)
    lo, hi = g.t_range
    t = (lo + (hi - lo) * torch.rand(64, dtype=torch.float64)).requires_grad_(True)
    (grad,) = torch.autograd.grad(g.log_snr(t).sum(), t)
    assert torch.allclose(g.dlog_snr(t.detach()), grad, rtol=1e-9, atol=1e-9)


def test_gaussian_endpoints():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    # cosine: ᾱ = cos²(πt/2) at interior points; endpoints clipped to a finite range
    g = GaussianSchedule("cosine")
    tt = torch.tensor([0.25, 0.5], dtype=torch.float64)
    assert torch.allclose(g.coefficients(tt)[0] ** 2, torch.cos(0.5 * math.pi * tt) ** 2)
    assert g.coefficients(torch.tensor(g.t_range[0], dtype=torch.float64))[0] > 0.9999999
    assert g.coefficients(torch.tensor(g.t_range[1], dtype=torch.float64))[0] < 2e-4
    # sqrt: ᾱ(0) = 1 - sqrt(1e-4) = 0.99 (Diffusion-LM)
    a, _ = GaussianSchedule("sqrt").coefficients(t[:1])
    assert float(a[0] ** 2) == pytest.approx(0.99, abs=1e-12)
    # lddm: ᾱ = (1 - 2ε) sqrt(1 - t) + ε, so ᾱ(0) = 1 - ε and ᾱ(1) = ε (LADD's latent default)
    g = GaussianSchedule("lddm")
    tt = torch.tensor([0.0, 0.3, 0.9, 1.0], dtype=torch.float64)
    eps = 1e-4
    assert torch.allclose(g.coefficients(tt)[0] ** 2, (1 - 2 * eps) * torch.sqrt(1 - tt) + eps, rtol=1e-10)
    # ve: σ(0) = σ_min, σ(1) = σ_max
    _, s = GaussianSchedule("ve", sigma_min=0.5, sigma_max=80.0).coefficients(t)
    assert torch.allclose(s, torch.tensor([0.5, 80.0], dtype=torch.float64))


@pytest.mark.parametrize("form", ["noise", "vp"])
@pytest.mark.parametrize("base", ["sqrt", "cosine", "linear"])
def test_rescaling_divides_snr_by_f_squared(form, base):
    F = 4.0
    g0, g = GaussianSchedule(base), GaussianSchedule(base, rescale=F, rescale_form=form)
    t = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    a0, s0 = g0.coefficients(t)
    a, s = g.coefficients(t)
    assert torch.allclose((a / s) ** 2, (a0 / s0) ** 2 / F**2, rtol=1e-10)
    if form == "noise":  # Difformer code: z = sqrt(ᾱ) z0 + F sqrt(1-ᾱ) ε
        assert torch.allclose(a, a0) and torch.allclose(s, F * s0)
    else:  # ᾱ' = ᾱ / (F² - (F² - 1) ᾱ)
        abar = a0**2
        assert torch.allclose(a**2, abar / (F**2 - (F**2 - 1) * abar), rtol=1e-10)


def test_shift_moves_log_snr_by_constant():
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    d = GaussianSchedule("cosine", shift=0.1).log_snr(t) - GaussianSchedule("cosine").log_snr(t)
    assert torch.allclose(d, torch.full_like(d, 2 * math.log(0.1)))


def test_vlb_weight_integrates_to_snr_difference():
    g = GaussianSchedule("sqrt", rescale=2.0)
    lo, hi = 0.1, 0.9
    t = torch.linspace(lo, hi, 200001, dtype=torch.float64)
    integral = torch.trapezoid(g.vlb_weight(t), t)
    snr = torch.exp(g.log_snr(torch.tensor([lo, hi], dtype=torch.float64)))
    assert float(integral) == pytest.approx(float(snr[0] - snr[1]), rel=1e-6)


@pytest.mark.parametrize("bad", [dict(name="nope"), dict(form="x"), dict(shift=0.0), dict(rescale_form="y"),
                                 dict(t_min=0.5, t_max=0.4), dict(name="ve", sigma_min=3.0, sigma_max=2.0)])
def test_gaussian_schedule_rejects_bad_settings(bad):
    with pytest.raises(ConfigError):
        GaussianSchedule(**bad)


@pytest.mark.parametrize("kw", [dict(name="cosine"), dict(name="cosine", shift=0.1), dict(name="linear")], ids=str)
def test_log_snr_max_raises_t_min_to_that_snr(kw):
    g = GaussianSchedule(**kw, log_snr_max=5.0)
    lo, hi = g.t_range
    assert float(g.log_snr(torch.tensor(lo, dtype=torch.float64))) == pytest.approx(5.0, abs=1e-9)
    assert hi == GaussianSchedule(**kw).t_range[1]
    # a bound below the schedule's own maximum leaves the range alone (sqrt: λ(0) = 4.6)
    assert GaussianSchedule("sqrt", log_snr_max=5.0).t_range == GaussianSchedule("sqrt").t_range
