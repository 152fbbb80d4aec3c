"""Autoregressive transformer baseline: exact NLL and KV-cached ancestral sampling.

Also the judge model for generative perplexity and (later) the prior over discrete latents; it
knows nothing of diffusion processes, optimisers or data sources.
"""

from __future__ import annotations

import torch

from ..losses import Term, token_nll
from ..models.factory import build_network
from ..samplers import ar, draw_categorical
from ..structs import Batch, SampleOutput
from .base import Method, NoOptions


class AR(Method):
    name = "ar"
    Options = NoOptions
    SampleOptions = ar.Options
    exact_likelihood = True

    def __init__(self, options, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        self.bos_id = vocab_size  # inputs are [BOS, x_0, ..., x_{L-2}]
        self.net = build_network(model_cfg, vocab_in=vocab_size + 1, vocab_out=vocab_size,
                                          seq_len=seq_len, causal=True, time_cond=False)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(x[:, :1], self.bos_id)
        return torch.cat([bos, x[:, :-1]], dim=1)  # (B, L)

    def token_nll(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) exact -log p(x_i | x_<i) in nats."""
        logits = self.net(self._inputs(x))  # (B, L, K)
        return token_nll(torch.log_softmax(logits.float(), dim=-1), x)

    def _target_nll(self, batch: Batch) -> torch.Tensor:
        """(B, L) -log p(x_i | x_<i) at target positions, 0 elsewhere (seq2seq: the source is given)."""
        nll = self.token_nll(batch.tokens)
        return nll if batch.target is None else nll * batch.target

    def loss_terms(self, batch, generator=None):
        nll = self._target_nll(batch)
        return {"nll": Term(nll, mask=batch.target)}, nll.sum(-1).detach()

    @torch.no_grad()
    def nelbo(self, batch, generator=None):
        return self._target_nll(Batch.of(batch)).sum(-1).double()

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) exact log p(x): the judge interface of metrics.generative_perplexity."""
        return -self.nelbo(x)

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, condition=None) -> SampleOutput:
        """Ancestral sampling with a KV cache, one network call per free position after the common
        fixed prefix (fed in one call). Later fixed positions are forced as they come: the model
        then sees only their left context (exact for prefixes, not for general infilling)."""
        cond = self._condition(condition, n)
        p = cond.prefix_length() if cond is not None else 0
        cache = self.net.new_cache(n)
        out = torch.empty((n, self.seq_len), dtype=torch.long, device=self.device)
        tok = torch.full((n, 1), self.bos_id, dtype=torch.long, device=self.device)
        if p:
            out[:, :p] = cond.values[:, :p]
            tok = torch.cat([tok, out[:, :p]], 1)[:, :self.seq_len]
        calls = 0
        for i in range(p, self.seq_len):
            logits = self.net(tok, cache=cache)[:, -1]  # (n, K)
            calls += 1
            nxt = draw_categorical(torch.log_softmax(logits.float(), -1), generator, cfg)
            if cond is not None:
                nxt = torch.where(cond.fixed[:, i], cond.values[:, i], nxt)
            out[:, i] = nxt
            tok = nxt.unsqueeze(1)
        return SampleOutput(samples=out, nfe=calls)
