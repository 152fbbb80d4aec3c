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


@dataclass
class Batch:
    """What a dataset hands to a method: tokens (B, L) (or vectors (B, D)) and `target`, a (B, L)
    bool mask of the positions the loss and the bound cover (None: every position). Seq2seq data
    leaves its source out of the target: the source is a clean condition, never noised or scored."""

    tokens: torch.Tensor
    target: torch.Tensor | None = None

    @classmethod
    def of(cls, x: torch.Tensor | Batch) -> Batch:
        """A batch as it is, or a bare tensor as a batch whose every position is a target."""
        return x if isinstance(x, Batch) else cls(x)

    def to(self, device) -> Batch:
        return Batch(self.tokens.to(device), None if self.target is None else self.target.to(device))

    def target_mask(self) -> torch.Tensor:
        """(B, L) bool target mask, all True when the batch has none."""
        if self.target is not None:
            return self.target
        return torch.ones(self.tokens.shape[:2], dtype=torch.bool, device=self.tokens.device)

    def clean_outside_target(self, z_t: torch.Tensor) -> torch.Tensor:
        """A noised z_t (B, L) with the positions outside the target (a seq2seq source) set back to
        their clean tokens: a condition is never noised."""
        return z_t if self.target is None else torch.where(self.target, z_t, self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class Probe:
    """A fixed held-out batch the trainer hands to `Method.diagnostics` (for methods that set
    `uses_probe`): tokens (N, L) and, where the dataset knows it, each example's true latent class
    `labels` (N,) (the `mixture` component), else None."""

    tokens: torch.Tensor
    labels: torch.Tensor | None = None
