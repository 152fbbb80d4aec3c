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
