"""Evaluation metrics of DESIGN.md §4 as pure functions, one module per thing measured.

`likelihood` (bits/token, perplexity bound, NELBO gap, the running mean), `samples` (samples
against a dataset's exact likelihood and conditionals, entropy, distinct-n, total variation,
gen-PPL, infills), `images` (Fréchet distance, FD-digits, W2), `seq2seq` (exact match, BLEU,
chrF) and `report` (Markdown tables, the results envelope and its writer). None of them knows
models, processes or training: they see tensors, duck-typed datasets and callables, in float64.
Shapes: N = number of samples, L = sequence length, K = vocabulary size, D = feature dimension.

This package re-exports the names the rest of catdiff, the tests and the benchmarks use as
`metrics.<name>`; everything else is imported from its module.
"""

from .images import digits_featurizer, fd_digits, frechet_distance, wasserstein2
from .likelihood import MeanAccumulator, bits_per_token, nelbo_gap, perplexity_bound
from .report import format_table
from .samples import (
    distinct_n,
    enumerate_probs,
    exact_infills,
    expected_tv_noise,
    generative_perplexity,
    infill_log_prob,
    latent_coverage,
    sample_metrics,
    total_variation,
    unigram_entropy,
)
from .seq2seq import bleu, chrf, exact_match

__all__ = [  # by module
    "bits_per_token", "perplexity_bound", "nelbo_gap", "MeanAccumulator",
    "unigram_entropy", "distinct_n", "sample_metrics", "latent_coverage", "enumerate_probs", "total_variation",
    "expected_tv_noise",
    "generative_perplexity", "infill_log_prob", "exact_infills",
    "frechet_distance", "digits_featurizer", "fd_digits", "wasserstein2",
    "exact_match", "bleu", "chrf",
    "format_table",
]
