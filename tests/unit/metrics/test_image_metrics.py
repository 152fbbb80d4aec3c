"""Tests of catdiff.metrics.images: Fréchet distance against closed forms, FD-digits, exact W2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catdiff import metrics as M


# ---- Fréchet distance ------------------------------------------------------------------------
def test_frechet_distance_identical_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 8)) @ rng.normal(size=(8, 8))
    assert abs(M.frechet_distance(a, a)) < 1e-6
    assert abs(M.frechet_distance(torch.from_numpy(a), a[::-1].copy())) < 1e-6


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = np.zeros(4), np.array([1.0, 2.0, 0.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
    a = mu1 + s1 * rng.normal(size=(50_000, 4))
    b = mu2 + s2 * rng.normal(size=(50_000, 4))
    # ‖μ1−μ2‖² + Σ (σ1 − σ2)² = 5 + 1 + 1 + 0 + 4
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2)
    assert expected == pytest.approx(11.0)
    assert M.frechet_distance(a, b) == pytest.approx(expected, abs=0.15)


def test_frechet_distance_singular_covariance_is_finite():
    rng = np.random.default_rng(2)
    a = np.concatenate([rng.normal(size=(300, 3)), np.zeros((300, 2))], axis=1)
    b = np.concatenate([rng.normal(size=(300, 3)) + 1.0, np.zeros((300, 2))], axis=1)
    fd = M.frechet_distance(a, b)
    assert np.isfinite(fd) and fd == pytest.approx(3.0, abs=0.5)


def test_fd_digits_real_vs_real_small_and_vs_noise_large():
    from sklearn.datasets import load_digits

    real = torch.from_numpy(load_digits().images.reshape(-1, 64).astype(np.int64))  # (1797, 64)
    perm = torch.randperm(real.shape[0], generator=torch.Generator().manual_seed(0))
    a, b = real[perm[:898]], real[perm[898:]]
    noise = torch.randint(0, 17, (898, 64), generator=torch.Generator().manual_seed(1))
    f = M.digits_featurizer()
    assert f is M.digits_featurizer()  # trained once per process
    assert f.accuracy > 0.95
    feats = f(a)
    assert feats.shape == (898, 64) and feats.dtype == np.float64 and (feats >= 0).all()
    fd_real, fd_noise = M.fd_digits(b, a), M.fd_digits(noise, a)
    assert fd_real < 0.1 * fd_noise
    assert M.fd_digits(a, a) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        f(torch.full((2, 64), 17))


# ---- Wasserstein-2 ---------------------------------------------------------------------------
def test_wasserstein2_shift_and_permutation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 3))
    shift = np.array([0.3, -1.2, 0.5])
    perm = rng.permutation(200)
    assert M.wasserstein2(a, a[perm]) == pytest.approx(0.0, abs=1e-12)
    assert M.wasserstein2(a, a[perm] + shift) == pytest.approx(np.linalg.norm(shift), rel=1e-9)
    # 1-D: sorted matching; {0, 1} vs {2, 3} → every point moves 2
    assert M.wasserstein2(np.array([1.0, 0.0]), np.array([2.0, 3.0])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        M.wasserstein2(a, a[:10])



def test_continuous_digits_report_fd_to_both_references():
    """sample_report on continuous digits: FD to the test split and to the training split; the
    training images themselves are at distance 0 from the training reference (identical feature
    sets), noise is far from both."""
    from catdiff.data.continuous import ContinuousDigits
    from catdiff.evaluate import sample_report

    ds = ContinuousDigits()
    train = ds.split("train")
    own = sample_report(train, ds)
    assert own["fd_digits_train"] == pytest.approx(0.0, abs=1e-6) and own["fd_digits"] > 0.1
    noise = sample_report(torch.rand(len(train), 64, generator=torch.Generator().manual_seed(0)) * 2 - 1, ds)
    assert noise["fd_digits_train"] > 10 * own["fd_digits"] and noise["fd_digits"] > 10 * own["fd_digits"]
