"""The token-tensor contract shared by the metrics: (N, L) integer tokens as an int64 CPU tensor."""

from __future__ import annotations

import numpy as np
import torch


def _tokens(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, L) int64 CPU tensor from a token tensor or array."""
    t = torch.as_tensor(x).detach().cpu()
    if t.dim() != 2:
        raise ValueError(f"expected (N, L) tokens, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise ValueError(f"expected integer tokens, got dtype {t.dtype}")
    return t.to(torch.int64)
