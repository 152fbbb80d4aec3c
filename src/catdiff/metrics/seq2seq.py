"""Generated outputs against references (seq2seq, translation): exact match of strings or token rows,
corpus BLEU and chrF by sacreBLEU.

It must not know models, datasets or how the outputs were generated: it sees lists of strings or
(N, L) token rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import MissingExtra

__all__ = ["exact_match", "bleu", "chrf"]


def _match_items(x: Any, name: str) -> list:
    """Comparable items of a list of strings / sequences or of an (N, L) tensor / array."""
    if isinstance(x, str):
        raise ValueError(f"{name} must be a list of strings or rows, got one str")
    if isinstance(x, (torch.Tensor, np.ndarray)):
        if x.ndim != 2:
            raise ValueError(f"{name} must be (N, L) rows, got shape {tuple(x.shape)}")
        return [tuple(r) for r in x.tolist()]
    return [v if isinstance(v, str) else tuple(torch.as_tensor(v).reshape(-1).tolist()) for v in x]


def exact_match(pred: Any, ref: Any) -> float:
    """Fraction of items of `pred` identical to the item of `ref` at the same index.

    Items are strings (e.g. detokenized targets) or token rows (an (N, L) tensor, or a list of 1-D
    sequences); two rows match when every position does.
    """
    p, r = _match_items(pred, "pred"), _match_items(ref, "ref")
    if len(p) != len(r):
        raise ValueError(f"pred and ref must have the same length, got {len(p)} and {len(r)}")
    if not p:
        raise ValueError("exact_match needs at least one pair")
    return sum(a == b for a, b in zip(p, r, strict=True)) / len(p)


def _text_corpus(hyps: Any, refs: Any) -> tuple[list[str], list[str]]:
    for name, v in (("hyps", hyps), ("refs", refs)):
        if isinstance(v, str) or not all(isinstance(s, str) for s in v):
            raise ValueError(f"{name} must be a list of strings")
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise ValueError(f"hyps and refs must have the same length, got {len(hyps)} and {len(refs)}")
    if not hyps:
        raise ValueError("need at least one hypothesis")
    return hyps, refs


def _sacrebleu():
    try:
        import sacrebleu
    except ImportError:
        raise MissingExtra("BLEU / chrF need the `sacrebleu` package: pip install sacrebleu") from None
    return sacrebleu


def bleu(hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a") -> float:
    """Corpus BLEU in [0, 100] (Papineni et al. 2002) of one reference per hypothesis, by sacreBLEU
    (Post 2018) with its defaults: 13a tokenization, exponential smoothing. Pass tokenize="char"
    for character-level outputs (or "intl", "none", ... as sacreBLEU accepts)."""
    hyps, refs = _text_corpus(hyps, refs)
    return float(_sacrebleu().corpus_bleu(hyps, [refs], tokenize=tokenize).score)


def chrf(hyps: Sequence[str], refs: Sequence[str], word_order: int = 0) -> float:
    """Corpus chrF in [0, 100] (Popović 2015) by sacreBLEU; word_order=2 gives chrF++."""
    hyps, refs = _text_corpus(hyps, refs)
    return float(_sacrebleu().corpus_chrf(hyps, [refs], word_order=word_order).score)
