"""Masked (absorbing) discrete diffusion, MDLM (Sahoo et al. 2024, arXiv 2406.07524).

Wires the masking process, a bidirectional transformer, SUBS and the continuous-time NELBO; it
knows nothing of optimisers, checkpoints or data sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.factory import build_network
from ..parameterizations import subs_log_probs
from ..processes.masked import q_sample
from ..samplers import masked
from ..schedules import MaskSchedule, sample_times
from ..structs import LossOutput, SampleOutput
from .base import Method


@dataclass
class MDLMOptions:
    schedule: str = "linear"  # linear | loglinear | cosine (schedules.MaskSchedule)
    eps: float = 1e-4  # α clamp of the loglinear schedule (LADD code value)
    t_min: float = 1e-4  # smallest training time (schedules.sample_times)
    antithetic: bool = True  # low-discrepancy times over the batch (MDLM §3.5.1)

    def __post_init__(self):
        MaskSchedule(self.schedule, self.eps)  # raises ConfigError naming the schedule


def nelbo_terms(logp: torch.Tensor, x: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                schedule: MaskSchedule, mask_id: int) -> torch.Tensor:
    """(B,) one-sample continuous-time NELBO in nats (MDLM eq. 10):
    w(t) Σ_{i: z_t^i = m} -log p_θ(x^i | z_t),  w(t) = -α'_t / (1 - α_t).

    logp (B, L, K) SUBS log-probabilities at z_t; x (B, L) clean tokens; t (B,) times.
    """
    nll_tok = -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (B, L)
    nll_tok = torch.where(z_t == mask_id, nll_tok, torch.zeros_like(nll_tok))
    return schedule.nelbo_weight(t) * nll_tok.sum(-1)  # (B,)


class MDLM(Method):
    name = "mdlm"
    Options = MDLMOptions
    SampleOptions = masked.Options

    def __init__(self, options: MDLMOptions, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        self.schedule = MaskSchedule(options.schedule, options.eps)
        self.mask_id = vocab_size  # m = K
        # input vocabulary K + 1 (the mask token), output K logits (SUBS: no mask logit)
        self.net = build_network(model_cfg, vocab_in=vocab_size + 1, vocab_out=vocab_size,
                                          seq_len=seq_len, causal=False)

    def log_probs(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B, L, K) SUBS log p_θ(x_0 | z_t)."""
        logits = self.net(z_t, t if self.model_cfg.time_cond else None)  # (B, L, K)
        return subs_log_probs(logits, z_t, self.mask_id)

    def _nelbo_terms(self, x: torch.Tensor, generator) -> torch.Tensor:
        B = x.shape[0]
        t = sample_times(B, generator, x.device, self.options.t_min, self.options.antithetic)
        z_t = q_sample(x, t, self.schedule, self.mask_id, generator)  # (B, L)
        if self.cond_len:  # seq2seq: the source stays clean (its terms are then zero)
            z_t = torch.where(self.target_mask(x), z_t, x)
        return nelbo_terms(self.log_probs(z_t, t), x, z_t, t, self.schedule, self.mask_id)

    def forward(self, x, generator=None) -> LossOutput:
        nelbo = self._nelbo_terms(x, generator)  # (B,)
        return LossOutput(loss=nelbo.mean() / (self.seq_len - self.cond_len), nll=nelbo.detach())

    @torch.no_grad()
    def nelbo(self, x, generator=None):
        return self._nelbo_terms(x, generator).double()

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, condition=None) -> SampleOutput:
        z = torch.full((n, self.seq_len), self.mask_id, dtype=torch.long, device=self.device)
        if condition is not None:  # fixed tokens start unmasked; SUBS carries them over
            z = self._condition(condition, n).impose(z)
        r = masked.sample(self.log_probs, z, masked.grid(cfg.steps, self.device), schedule=self.schedule,
                          mask_id=self.mask_id, generator=generator, draw=cfg, order=cfg.order, cache=cfg.cache)
        return SampleOutput(samples=r.state, nfe=r.nfe)
