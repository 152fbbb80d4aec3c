"""Every training loss term of catdiff, as per-token (B, L) or per-sequence (B,) values with the
positions they cover, and the one reduction that turns a method's terms into its scalar loss.

It knows tensors, schedules and the formulas (each cited); no network, method, optimiser or data
source: a method computes predictions and hands them here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .schedules import MaskSchedule


@dataclass
class Term:
    """One loss term. value: (B, L) per token or (B,) per sequence, in nats (or squared units);
    mask: (B, L) bool, the positions a per-token term covers (None: every position); tokens: a
    per-sequence term is divided by it to read per token; weight: its weight in the loss (0: the
    term is only logged)."""

    value: torch.Tensor
    weight: float = 1.0
    mask: torch.Tensor | None = None
    tokens: int = 1

    def per_token(self) -> torch.Tensor:
        """The term's mean per covered token: Σ value·mask / Σ mask, or mean(value) / tokens."""
        v = self.value
        if v.dim() == 1:
            return v.mean() / self.tokens
        if self.mask is None:
            return v.mean()
        m = self.mask.to(v.dtype)
        return (v * m).sum() / m.sum().clamp_min(1.0)


def reduce(terms: dict[str, Term]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(Σ_k weight_k · per-token mean of term k, {name: detached per-token mean}): the one place
    where per-token terms become the scalar that is back-propagated."""
    loss, metrics = None, {}
    for name, term in terms.items():
        v = term.per_token()
        metrics[name] = v.detach()
        if term.weight:
            loss = term.weight * v if loss is None else loss + term.weight * v
    if loss is None:
        raise ValueError("every loss term has weight 0: nothing to train")
    return loss, metrics


# ---- discrete terms ---------------------------------------------------------------------------
def token_nll(logp: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B, L) -log p(x_i | ·) from log-probabilities logp (B, L, K)."""
    return -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)


def masked_nelbo(logp: torch.Tensor, x: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                 schedule: MaskSchedule, mask_id: int) -> torch.Tensor:
    """(B, L) per-token one-sample continuous-time NELBO in nats (MDLM, Sahoo et al. 2024, eq. 10):
    w(t) · -log p_θ(x^i | z_t) at masked positions z_t^i = m, 0 elsewhere; w(t) = -α'_t / (1 - α_t).
    Its sum over positions is the sequence's bound."""
    nll = torch.where(z_t == mask_id, token_nll(logp, x), torch.zeros((), dtype=logp.dtype, device=logp.device))
    return schedule.nelbo_weight(t)[:, None] * nll


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """(B, L) -log softmax(logits)[x] with label smoothing (CDCD's loss; Difformer's anchor loss
    when the logits are the readout of ẑ_0; Diffusion-LM's rounding on the clean embeddings)."""
    K = logits.shape[-1]
    ce = F.cross_entropy(logits.float().reshape(-1, K), x.reshape(-1), label_smoothing=smoothing, reduction="none")
    return ce.view(x.shape)


def consistency_kl(logp_s: torch.Tensor, logp_t: torch.Tensor) -> torch.Tensor:
    """(B, L) KL(p_s ‖ p_t) = Σ_k p_s (log p_s - log p_t): CATDM's consistency matching between the
    prediction at a less noisy point s (a stopped-gradient target) and at t (METHODS.md §3)."""
    return (logp_s.exp() * (logp_s - logp_t)).sum(-1)


# ---- continuous terms -------------------------------------------------------------------------
def x0_mse(x0_hat: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """(B, L) ‖ẑ_0 - z_0‖² / d per position (Diffusion-LM's L_simple; CATDM's L_DM)."""
    return (x0_hat - z0).pow(2).mean(-1)


def min_snr_weight(log_snr: torch.Tensor, gamma: float) -> torch.Tensor:
    """min(SNR(t), γ) (Hang et al. 2023, min-SNR-γ for x0 targets): high-noise times stop pulling
    every embedding to the centroid."""
    return torch.exp(log_snr).clamp_max(gamma)


def prior_energy(a1: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
    """(B, L) ‖a_{t_max} z_0‖² / d: Diffusion-LM's L_T term (its code's tT_loss)."""
    return (a1 * z0).pow(2).mean(-1)


def squared_norm(y: torch.Tensor) -> torch.Tensor:
    """(B,) ‖y‖² over every dimension but the batch (latent MSE, L2 penalty)."""
    return y.pow(2).flatten(1).sum(-1)


def denoising_mse(d: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B,) λ(σ) ‖D(y + σn; σ) - y‖² / D: EDM's training loss (Karras et al. 2022, eq. 2 with the
    weight λ(σ) of Table 1) on (B, D) vectors."""
    return weight * (d - y).pow(2).mean(-1)
