"""ODE diagnostics against fields with known geometry: straight flows have zero curvature, the
Gaussian denoiser's Jacobian is known in closed form, and latent switching follows the latent."""

import pytest
import torch

from catdiff.ode_diagnostics import curvature_along_trajectories, jacobian_norm, loss_by_sigma, switch_latents
from catdiff.processes import edm


def point_mass(mu):
    return lambda x, s: mu.expand_as(x)


def two_points(x, s):
    """Exact denoiser of ½δ(-1) + ½δ(+1) in 1-D, broadcast over D dims: E[y | x] = tanh(x/σ²)."""
    return torch.tanh(x / s.view(-1, 1) ** 2)


def test_straight_flows_have_zero_curvature_and_mixtures_do_not():
    x = 20.0 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = edm.karras_sigmas(20, 0.05, 20.0)
    flat = curvature_along_trajectories(point_mass(torch.tensor([1.0, -2.0], dtype=torch.float64)), x, sig)
    assert max(k for _, k, _ in flat) < 1e-6
    x1 = 20.0 * torch.randn(256, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x1 = torch.cat([x1, torch.zeros_like(x1)], 1) + torch.tensor([0.0, 0.5], dtype=torch.float64)
    bent = curvature_along_trajectories(two_points, x1, sig)
    assert max(k for _, k, _ in bent) > 1e-2


@pytest.mark.parametrize("sigma", [0.1, 1.0, 10.0])
def test_jacobian_norm_of_the_gaussian_field_is_exact(sigma):
    s2 = 0.25

    def gauss(x, s):  # data N(0, s2 I): D = s2/(σ² + s2) x
        return s2 / (s.view(-1, 1) ** 2 + s2) * x

    x = torch.randn(64, 3, dtype=torch.float64)
    c = s2 / (sigma ** 2 + s2)
    assert jacobian_norm(gauss, x, sigma) == pytest.approx(3 * ((1 - c) / sigma) ** 2, rel=1e-9)


def test_switching_latents_follows_the_latent_in_force_at_low_noise():
    mus = torch.tensor([[3.0, 0.0], [-3.0, 0.0]], dtype=torch.float64)

    def D(x, s, cond):  # exact denoiser of N(cond, 0.04 I)
        w = (0.04 / (s ** 2 + 0.04)).view(-1, 1)
        return cond + w * (x - cond)

    x = 80 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sig = edm.karras_sigmas(30)
    a, b = mus[0].expand(100, 2), mus[1].expand(100, 2)
    early = switch_latents(D, x, sig, a, b, sigma_switch=50.0)  # b from σ = 50 down: ends at b
    late = switch_latents(D, x, sig, a, b, sigma_switch=0.001)  # a nearly to the end: ends at a
    assert (early[:, 0] < 0).all() and (late[:, 0] > 0).all()
    curve = loss_by_sigma(lambda y, s: (y * s.view(-1, 1)).pow(2).sum(-1), torch.ones(4, 2), [1.0, 2.0])
    assert curve == [(1.0, 2.0), (2.0, 8.0)]
