"""Masked (absorbing) discrete diffusion, MDLM (Sahoo et al. 2024, arXiv 2406.07524).

Wires the masking process, a bidirectional transformer, SUBS and the continuous-time NELBO; it
knows nothing of optimisers, checkpoints or data sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..losses import Term, masked_nelbo
from ..models.factory import build_network
from ..parameterizations import subs_log_probs
from ..processes.masked import q_sample
from ..samplers import masked
from ..schedules import MaskSchedule, sample_times
from ..structs import Batch, SampleOutput
from .base import Method


@dataclass
class MDLMOptions:
    schedule: str = "linear"  # linear | loglinear | cosine (schedules.MaskSchedule)
    eps: float = 1e-4  # α clamp of the loglinear schedule (LADD code value)
    t_min: float = 1e-4  # smallest training time (schedules.sample_times)
    antithetic: bool = True  # low-discrepancy times over the batch (MDLM §3.5.1)

    def __post_init__(self):
        MaskSchedule(self.schedule, self.eps)  # raises ConfigError naming the schedule


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

    def _token_nelbo(self, batch: Batch, generator) -> torch.Tensor:
        """(B, L) per-token one-sample NELBO (losses.masked_nelbo); positions outside the target (a
        seq2seq source) stay clean, so their terms are zero."""
        x = batch.tokens
        t = sample_times(x.shape[0], generator, x.device, self.options.t_min, self.options.antithetic)
        z_t = q_sample(x, t, self.schedule, self.mask_id, generator)  # (B, L)
        z_t = batch.clean_outside_target(z_t)
        return masked_nelbo(self.log_probs(z_t, t), x, z_t, t, self.schedule, self.mask_id)

    def loss_terms(self, batch, generator=None):
        per_token = self._token_nelbo(batch, generator)  # (B, L)
        return {"nelbo": Term(per_token, mask=batch.target)}, per_token.sum(-1).detach()

    @torch.no_grad()
    def nelbo(self, batch, generator=None):
        return self._token_nelbo(Batch.of(batch), generator).sum(-1).double()

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, condition=None) -> SampleOutput:
        z = torch.full((n, self.seq_len), self.mask_id, dtype=torch.long, device=self.device)
        if condition is not None:  # fixed tokens start unmasked; SUBS carries them over
            z = self._condition(condition, n).impose(z)
        r = masked.sample(self.log_probs, z, masked.grid(cfg.steps, self.device), schedule=self.schedule,
                          mask_id=self.mask_id, generator=generator, draw=cfg, order=cfg.order, cache=cfg.cache)
        return SampleOutput(samples=r.state, nfe=r.nfe)
