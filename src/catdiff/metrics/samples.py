"""Sample metrics of DESIGN.md §4: samples scored against a dataset's exact likelihood and exact
conditionals (sample NLL, coherence, component KL, total variation, infills), the generic statistics
(unigram entropy, distinct-n) and generative perplexity under a judge, in float64.

It must not know models, processes or training: it sees token tensors (N, L) in [0, K), datasets
following `catdiff.data.base.CategoricalDataset` (duck-typed) and callables (log-likelihoods).
Shapes: N = number of samples, L = sequence length, K = vocabulary size, M = mixture components.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ._util import _tokens
from .likelihood import MeanAccumulator

__all__ = [
    "unigram_entropy",
    "distinct_n",
    "sample_metrics",
    "enumerate_probs",
    "total_variation",
    "expected_tv_noise",
    "generative_perplexity",
    "infill_log_prob",
    "exact_infills",
    "MAX_ENUMERABLE",
]

MAX_ENUMERABLE = 2**22  # largest K**L that `total_variation` / `enumerate_probs` will enumerate


# ---- generic sample statistics (§4 text: entropy and distinct-n, reported with gen-PPL) -------
def unigram_entropy(samples: torch.Tensor, vocab_size: int | None = None) -> float:
    """Entropy in bits of the token histogram pooled over all samples: −Σ_k p̂_k log2 p̂_k.

    Uniform tokens give ≈ log2 K; collapsed (repetitive) samples give values near 0.
    `vocab_size` only fixes the histogram length (zero counts contribute 0 either way).
    """
    x = _tokens(samples).reshape(-1)
    if x.numel() == 0:
        return math.nan
    counts = torch.bincount(x, minlength=vocab_size or 0).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def distinct_n(samples: torch.Tensor, n: int) -> float:
    """Distinct-n = (# unique n-grams) / (# n-grams), n-grams taken within each sample, pooled.

    N samples of length L hold N·(L − n + 1) n-grams (none crosses a sample boundary). 1.0 means no
    n-gram repeats; low values flag repetitive samples. nan if L < n.
    """
    x = _tokens(samples)
    if n < 1:
        raise ValueError("n must be >= 1")
    if x.shape[1] < n or x.shape[0] == 0:
        return math.nan
    grams = x.unfold(1, n, 1).reshape(-1, n)  # (N·(L−n+1), n)
    return torch.unique(grams, dim=0).shape[0] / grams.shape[0]


# ---- exact-likelihood sample metrics (§4 synthetic) -----------------------------------------
def _real_reference(dataset: Any, real: torch.Tensor | None, n: int, seed: int) -> torch.Tensor:
    if real is not None:
        return _tokens(real)
    try:
        return _tokens(dataset.split("test"))
    except (NotImplementedError, AttributeError, KeyError, ValueError):
        return _tokens(dataset.sample(n, torch.Generator().manual_seed(seed)))


def sample_metrics(
    samples: torch.Tensor,
    dataset: Any,
    real: torch.Tensor | None = None,
    *,
    entropy_n: int = 20000,
    entropy_seed: int = 0,
    real_n: int = 20000,
    real_seed: int = 1,
    max_n: int = 4,
) -> dict[str, float]:
    """Sample metrics of §4 for model samples (N, L) against a dataset.

    Always (any dataset): `n_samples`, `unigram_entropy` (bits), `distinct_1` … `distinct_{max_n}`.

    If `dataset.exact` (exact `log_prob`, `entropy`):
      - `sample_nll` = mean_x −log p_data(x) / L over the samples (nats/token), `sample_nll_stderr`.
      - `entropy_per_token` = H / L from `dataset.entropy(n=entropy_n, seed=entropy_seed)` (nats),
        with `entropy_per_token_stderr`.
      - `excess` = sample_nll − H/L (≈ 0 for exact samples; > 0 for off-distribution samples;
        it can be < 0 for samples concentrated on likely sequences), `excess_stderr` (both stderrs
        added in quadrature).
      - `coherence` = share of samples with log p_data(x) ≥ q, where q is the 1st percentile
        (linear interpolation) of log p_data over real data: `real` if given, else
        `dataset.split("test")`, else `real_n` fresh samples (seed `real_seed`). "≥" rather than
        ">" because discrete data has ties at the percentile; exact samples score ≈ 0.99.
        `coherence_threshold` = q (nats per sequence).
    If the dataset also has `latent_assignments` / `latent_marginals` (coverage of its hidden
    variable; `mixture`: the component, name "component"; `hmm`: the state at every position, name
    "state"; `binsaw`: the bin of the shift's phase, name "shift"), with ê_g the histogram of the
    samples' most likely latent at slot g (argmax of the exact posterior) and p_g its true law:
      - `<name>_kl` = mean_g KL(ê_g ‖ p_g) = Σ_c ê ln(ê / p) in nats (0 ln 0 = 0, so it is finite: at
        most ln(1 / min p)). ≈ (C − 1) / (2N) for exact samples on `mixture`; ln M when a uniform
        mixture collapses onto one mode. On `hmm` exact samples score above 0 too (the posterior
        argmax is not the state), so compare with the oracle's row. On `binsaw` (16 bins) 4096
        exact samples score 0.0015.
      - `<name>_entropy` = mean_g H(ê_g) and `<name>_entropy_true` = mean_g H(p_g), nats: a
        mode-seeking sampler shows as an entropy below the truth.
      - one slot (`mixture`, `binsaw`): `<name>s_covered` = number of classes that are the argmax
        of ≥ 1 sample, and `<name>s_total` = their number (M components, C shift bins).
    """
    x = _tokens(samples)
    n, seq_len = x.shape
    out: dict[str, float] = {"n_samples": float(n)}

    if getattr(dataset, "exact", False):
        lp = torch.as_tensor(dataset.log_prob(x)).to(torch.float64).reshape(-1)  # (N,)
        nll = MeanAccumulator().update(-lp / seq_len)
        h, h_se = dataset.entropy(n=entropy_n, seed=entropy_seed)
        h_tok, h_tok_se = float(h) / seq_len, float(h_se) / seq_len
        out["sample_nll"] = nll.mean
        out["sample_nll_stderr"] = nll.stderr
        out["entropy_per_token"] = h_tok
        out["entropy_per_token_stderr"] = h_tok_se
        out["excess"] = nll.mean - h_tok
        out["excess_stderr"] = math.sqrt(nll.stderr**2 + h_tok_se**2) if n > 1 else math.nan

        ref = _real_reference(dataset, real, real_n, real_seed)
        lp_real = torch.as_tensor(dataset.log_prob(ref)).to(torch.float64).reshape(-1).numpy()
        q = float(np.percentile(lp_real, 1.0))
        out["coherence"] = float((lp >= q).to(torch.float64).mean())
        out["coherence_threshold"] = q

        if hasattr(dataset, "latent_assignments"):
            out.update(latent_coverage(dataset, x))

    out["unigram_entropy"] = unigram_entropy(x, getattr(dataset, "vocab_size", None))
    for k in range(1, max_n + 1):
        out[f"distinct_{k}"] = distinct_n(x, k)
    return out


def latent_coverage(dataset: Any, x: torch.Tensor) -> dict[str, float]:
    """Coverage of the dataset's hidden variable by samples x (N, L): see `sample_metrics`."""
    name = dataset.latent_name
    truth = torch.as_tensor(dataset.latent_marginals()).to(torch.float64)  # (G, C)
    a = torch.as_tensor(dataset.latent_assignments(x)).long()  # (N, G)
    emp = torch.nn.functional.one_hot(a, truth.shape[1]).to(torch.float64).mean(0)  # (G, C)
    xlogx = torch.special.xlogy(emp, emp)  # 0 ln 0 = 0
    kl = (xlogx - torch.special.xlogy(emp, truth)).sum(1)  # (G,)
    out = {f"{name}_kl": float(kl.mean()), f"{name}_entropy": float(-xlogx.sum(1).mean()),
           f"{name}_entropy_true": float(-torch.special.xlogy(truth, truth).sum(1).mean())}
    if truth.shape[0] == 1:
        out[f"{name}s_covered"] = float(int((emp > 0).sum()))
        out[f"{name}s_total"] = float(truth.shape[1])
    return out


# ---- total variation on enumerable spaces (§4: "small spaces: TV from ≥ 10^5 samples") -------
def _check_enumerable(vocab_size: int, seq_len: int) -> int:
    size = vocab_size**seq_len
    if size > MAX_ENUMERABLE:
        raise ValueError(
            f"K^L = {vocab_size}^{seq_len} = {size} exceeds {MAX_ENUMERABLE} (2**22): "
            "space too large to enumerate"
        )
    return size


def _encode(x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(N, L) tokens → (N,) base-K index, position 0 most significant."""
    seq_len = x.shape[1]
    powers = vocab_size ** torch.arange(seq_len - 1, -1, -1, dtype=torch.int64)  # (L,)
    return (x * powers).sum(dim=1)


def _decode_all(vocab_size: int, seq_len: int, start: int, stop: int) -> torch.Tensor:
    """Sequences with base-K indices start..stop−1, as (stop − start, L) int64."""
    idx = torch.arange(start, stop, dtype=torch.int64)
    powers = vocab_size ** torch.arange(seq_len - 1, -1, -1, dtype=torch.int64)
    return (idx[:, None] // powers) % vocab_size


def enumerate_probs(
    log_prob_fn: Callable[[torch.Tensor], torch.Tensor],
    vocab_size: int,
    seq_len: int,
    chunk: int = 65536,
) -> torch.Tensor:
    """(K^L,) float64 exact probabilities of every sequence, indexed base K (position 0 most
    significant), from a callable returning (B,) log p in nats. Refuses K^L > 2**22."""
    size = _check_enumerable(vocab_size, seq_len)
    parts = []
    with torch.no_grad():
        for s in range(0, size, chunk):
            xs = _decode_all(vocab_size, seq_len, s, min(s + chunk, size))
            parts.append(torch.as_tensor(log_prob_fn(xs)).to(torch.float64).reshape(-1).exp())
    return torch.cat(parts)


def total_variation(
    samples: torch.Tensor,
    dist: Callable[[torch.Tensor], torch.Tensor] | torch.Tensor,
    vocab_size: int,
    *,
    atol: float = 1e-4,
) -> float:
    """TV(p̂, p) = ½ Σ_x |p̂(x) − p(x)| over all K^L sequences.

    p̂ is the empirical distribution of the (N, L) samples; p is either a log-prob callable
    (enumerated with `enumerate_probs`) or a (K^L,) probability vector in the same base-K order.
    Raises if K^L > 2**22 or if p does not sum to 1 within `atol`. Even exact samples give
    TV > 0: see `expected_tv_noise` for the size of that floor (§4 asks for ≥ 10^5 samples).
    """
    x = _tokens(samples)
    seq_len = x.shape[1]
    size = _check_enumerable(vocab_size, seq_len)
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= vocab_size):
        raise ValueError(f"tokens outside [0, {vocab_size})")
    if callable(dist):
        p = enumerate_probs(dist, vocab_size, seq_len)
    else:
        p = torch.as_tensor(dist).to(torch.float64).reshape(-1)
        if p.numel() != size:
            raise ValueError(f"probability vector has {p.numel()} entries, expected K^L = {size}")
    total = float(p.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"reference distribution sums to {total}, not 1")
    emp = torch.bincount(_encode(x, vocab_size), minlength=size).to(torch.float64) / x.shape[0]
    return 0.5 * float((emp - p).abs().sum())


def expected_tv_noise(probs: torch.Tensor, n: int) -> float:
    """Approximate E[TV(p̂_n, p)] for n exact samples: Σ_x sqrt(p_x (1 − p_x) / (2π n)).

    (Normal approximation of each count: E|p̂_x − p_x| ≈ σ_x √(2/π); an upper estimate when many
    p_x ≪ 1/n.) The floor a perfect sampler reaches; compare measured TVs against it.
    """
    p = torch.as_tensor(probs).to(torch.float64).reshape(-1)
    return float(torch.sqrt(p * (1 - p) / (2 * math.pi * n)).sum())


# ---- generative perplexity (§4 text) --------------------------------------------------------
def generative_perplexity(
    samples: torch.Tensor,
    judge_log_prob: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 256,
    vocab_size: int | None = None,
) -> dict[str, float]:
    """Generative perplexity of samples under a judge: gen-PPL = exp(−Σ_x log p_judge(x) / Σ_x L).

    `judge_log_prob` maps (B, L) tokens to (B,) total log-likelihoods in nats over all L tokens
    (e.g. a catdiff AR model). Returned with `unigram_entropy` (bits) of the samples, because a
    low gen-PPL from repetitive, low-entropy samples is not an achievement (§4: report entropy
    next to gen-PPL, always). Keys: gen_ppl, nll_per_token (nats), unigram_entropy, n_tokens.
    """
    x = _tokens(samples)
    n, seq_len = x.shape
    total = 0.0
    with torch.no_grad():
        for s in range(0, n, batch_size):
            lp = torch.as_tensor(judge_log_prob(x[s : s + batch_size]))
            total += float(lp.detach().to("cpu", torch.float64).sum())
    n_tokens = n * seq_len
    nll_tok = -total / n_tokens
    return {
        "gen_ppl": math.exp(nll_tok),
        "nll_per_token": nll_tok,
        "unigram_entropy": unigram_entropy(x, vocab_size),
        "n_tokens": float(n_tokens),
    }


# ---- infilling on datasets with exact conditionals (mixture, hmm) ---------------------------------
def _over_free_positions(dataset: Any, x: torch.Tensor, fixed: torch.Tensor, visit) -> torch.Tensor:
    """Walk every row's free positions left to right, each time with the exact conditionals
    p(x_i | positions observed so far) (one dataset call per column, vectorised over rows):
    visit(probs (B, K), current (B,), todo (B,)) returns the tokens to place. Returns the filled x."""
    x, fixed = x.long().clone(), fixed.bool()
    order = torch.sort((~fixed).long(), dim=1, stable=True).indices  # fixed first, then free in order
    observed = fixed.clone()
    rows = torch.arange(x.shape[0])
    for j in range(int(fixed.sum(1).min()), x.shape[1]):
        pos = order[:, j]
        todo = ~observed[rows, pos]  # rows with fewer free positions have none left at column j
        if not bool(todo.any()):
            continue
        probs = dataset.conditionals(x, observed)[rows, pos]  # (B, K)
        x[rows, pos] = torch.where(todo, visit(probs, x[rows, pos], todo), x[rows, pos])
        observed[rows, pos] = True
    return x


@torch.no_grad()
def infill_log_prob(dataset: Any, x: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
    """(B,) exact log p(x_free | x_fixed) in nats by the chain rule over the free positions, each
    factor from the dataset's exact conditionals p(x_i | observed) (mixture, hmm)."""
    out = torch.zeros(x.shape[0], dtype=torch.float64)

    def score(probs, current, todo):
        p = probs.gather(1, current[:, None])[:, 0].clamp_min(1e-300).log()
        out.add_(torch.where(todo, p, torch.zeros_like(p)))
        return current

    _over_free_positions(dataset, x, fixed, score)
    return out


@torch.no_grad()
def exact_infills(dataset: Any, values: torch.Tensor, fixed: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, L) exact draws of the free positions given the fixed ones (ancestral over the free
    positions with exact conditionals): the reference an infilling sampler should match."""

    def draw(probs, current, todo):
        u = torch.rand(len(probs), 1, generator=generator, dtype=torch.float64)
        return (probs.cumsum(-1) < u * probs.sum(-1, keepdim=True)).sum(-1).clamp_max(probs.shape[-1] - 1)

    return _over_free_positions(dataset, torch.where(fixed, values.long(), 0), fixed, draw)
