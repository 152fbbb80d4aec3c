"""Turn raw network outputs into predictions; knows no process internals beyond the mask id.

SUBS (MDLM, Sahoo et al. 2024, §3.2): the network emits K logits per position (the mask logit is
-inf by construction: there is no output for it), giving p_θ(x_0 | z_t) over the K real tokens;
"carry-over unmasking" sets the prediction at an unmasked position to the one-hot of its token.
"""

from __future__ import annotations

import torch


def subs_log_probs(logits: torch.Tensor, z_t: torch.Tensor, mask_id: int) -> torch.Tensor:
    """(B, L, K) log p_θ(x_0 | z_t) under SUBS: log-softmax at masked positions, log one-hot elsewhere."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, L, K)
    unmasked = z_t != mask_id
    if unmasked.any():
        onehot = torch.full_like(logp, float("-inf"))
        idx = torch.where(unmasked, z_t, 0).unsqueeze(-1)  # (B, L, 1)
        onehot.scatter_(-1, idx, 0.0)
        logp = torch.where(unmasked.unsqueeze(-1), onehot, logp)
    return logp
