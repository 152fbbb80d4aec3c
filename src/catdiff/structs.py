"""Typed records passed between layers; they hold tensors and know nothing of how they are made.

Shape legend used across catdiff: B batch, L sequence length, K vocabulary size (real tokens),
m = K the mask id, d model width, T number of time points.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    """What a method's training forward returns.

    loss: scalar to back-propagate (mean per token over the batch).
    nll: (B,) detached per-sequence bound in nats (NELBO for diffusion, exact NLL for AR), or None
         when the training loss is not a likelihood bound (embedding diffusion: see `nelbo`).
    metrics: extra scalars for logging.
    """

    loss: torch.Tensor
    nll: torch.Tensor | None
    metrics: dict = field(default_factory=dict)


@dataclass
class SampleOutput:
    """samples (N, L) int64 tokens; nfe = network calls per batch; extra per-method info."""

    samples: torch.Tensor
    nfe: int
    info: dict = field(default_factory=dict)
