"""Distances between sets of images or points: Fréchet distance and FD-digits with its fixed feature
net (DESIGN.md §4), and the exact Wasserstein-2 between point sets (DisCo-Diff's toy), in float64.

It must not know models, processes, datasets or training: it sees feature arrays (N, D), point
sets (N, D) and digit tokens (N, 64) in 0..16.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import numpy as np
import torch

from ._util import _tokens

__all__ = ["frechet_distance", "DIGITS_RECIPE", "DigitsFeaturizer", "digits_featurizer", "fd_digits", "wasserstein2"]


# ---- Fréchet distance (§4 FD-digits) --------------------------------------------------------
def frechet_distance(feats_a: Any, feats_b: Any, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D):

        FD = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})

    (Dowson & Landau 1982; the FID formula of Heusel et al. 2017, Eq. 6). Means and covariances
    (ddof = 1) in float64; the matrix square root by `scipy.linalg.sqrtm`. If that is not finite
    (singular product), eps·I is added to both covariances; a complex result with non-negligible
    imaginary diagonal raises, otherwise the real part is used (as pytorch-fid does).
    """
    from scipy import linalg

    a = np.asarray(torch.as_tensor(feats_a).detach().cpu().to(torch.float64))
    b = np.asarray(torch.as_tensor(feats_b).detach().cpu().to(torch.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D) features, got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("need at least 2 points per set to estimate a covariance")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sig_a = np.atleast_2d(np.cov(a, rowvar=False))
    sig_b = np.atleast_2d(np.cov(b, rowvar=False))

    with warnings.catch_warnings():  # singular products are expected (dead features); see below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sig_a @ sig_b)
        if not np.isfinite(covmean).all():
            off = np.eye(sig_a.shape[0]) * eps
            covmean = linalg.sqrtm((sig_a + off) @ (sig_b + off))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has imaginary component {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sig_a) + np.trace(sig_b) - 2 * np.trace(covmean))


DIGITS_RECIPE: dict[str, Any] = {
    "data": "sklearn.datasets.load_digits, pixels / 16",
    "split": "train_test_split(test_size=0.25, random_state=0, stratify=y)",
    "model": "MLPClassifier(hidden_layer_sizes=(64,), random_state=0, max_iter=400)",
    "features": "ReLU(x @ W1 + b1): the 64 hidden activations",
}


class DigitsFeaturizer:
    """Features for FD-digits (§4): hidden activations of catdiff's fixed digits classifier.

    Recipe (`DIGITS_RECIPE`): scikit-learn `MLPClassifier(hidden_layer_sizes=(64,), random_state=0,
    max_iter=400)` fit on 75% of `load_digits()` (pixels 0..16 scaled by /16; stratified split,
    random_state=0). `accuracy` is its accuracy on the held-out 25% (≈ 0.97). Calling it on
    (N, 64) tokens in 0..16 returns (N, 64) float64 features ReLU(x/16 · W1 + b1).
    Build it through `digits_featurizer()`, which trains once per process (~1 s, deterministic).
    """

    n_features = 64

    def __init__(self) -> None:
        from sklearn.datasets import load_digits
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.model_selection import train_test_split
        from sklearn.neural_network import MLPClassifier

        d = load_digits()
        x, y = d.data / 16.0, d.target
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
        clf = MLPClassifier(hidden_layer_sizes=(64,), random_state=0, max_iter=400)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x_tr, y_tr)
        self.classifier = clf
        self.accuracy = float(clf.score(x_te, y_te))
        self.recipe = dict(DIGITS_RECIPE)
        self._w = np.asarray(clf.coefs_[0], dtype=np.float64)  # (64, 64)
        self._b = np.asarray(clf.intercepts_[0], dtype=np.float64)  # (64,)

    def __call__(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        x = _tokens(tokens)
        if x.shape[1] != 64:
            raise ValueError(f"digits are (N, 64), got {tuple(x.shape)}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) > 16):
            raise ValueError("digit tokens must lie in 0..16")
        pix = x.numpy().astype(np.float64) / 16.0  # (N, 64)
        return np.maximum(pix @ self._w + self._b, 0.0)  # (N, 64)


@functools.lru_cache(maxsize=1)
def digits_featurizer() -> DigitsFeaturizer:
    """The process-wide `DigitsFeaturizer` (trained on first use)."""
    return DigitsFeaturizer()


def fd_digits(samples_tokens: torch.Tensor, real_tokens: torch.Tensor) -> float:
    """FD-digits (§4) = `frechet_distance` of `DigitsFeaturizer` features of generated (N, 64)
    and real (M, 64) digit tokens in 0..16. Depends on the sample sizes (biased upward for small
    N); compare numbers computed with the same N and M."""
    f = digits_featurizer()
    return frechet_distance(f(samples_tokens), f(real_tokens))


# ---- Wasserstein-2 between point sets (DisCo-Diff toy) --------------------------------------
def wasserstein2(a: Any, b: Any) -> float:
    """Exact W2 between two equal-size empirical measures (N, D):

        W2 = ( min_π (1/N) Σ_i ‖a_i − b_π(i)‖² )^{1/2}

    over permutations π, solved by `scipy.optimize.linear_sum_assignment` on squared Euclidean
    costs (O(N³); fine for N up to a few thousand).
    """
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    a = np.asarray(torch.as_tensor(a).detach().cpu().to(torch.float64))
    b = np.asarray(torch.as_tensor(b).detach().cpu().to(torch.float64))
    if a.ndim == 1:
        a, b = a[:, None], b[:, None]
    if a.shape != b.shape:
        raise ValueError(f"need equal-size point sets, got {a.shape} and {b.shape}")
    cost = cdist(a, b, "sqeuclidean")  # (N, N)
    rows, cols = linear_sum_assignment(cost)
    return math.sqrt(max(float(cost[rows, cols].mean()), 0.0))
