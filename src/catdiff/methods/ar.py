"""Autoregressive transformer baseline: exact NLL and KV-cached ancestral sampling.

Also the judge model for generative perplexity and (later) the prior over discrete latents; it
knows nothing of diffusion processes, optimisers or data sources.
"""

from __future__ import annotations

import torch

from .. import registry
from ..samplers import DrawOptions, draw_categorical
from ..structs import LossOutput, SampleOutput
from .base import Method, NoOptions


@registry.register_method
class AR(Method):
    name = "ar"
    Options = NoOptions
    exact_likelihood = True

    def __init__(self, options, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        self.bos_id = vocab_size  # inputs are [BOS, x_0, ..., x_{L-2}]
        self.net = registry.build_network(model_cfg, vocab_in=vocab_size + 1, vocab_out=vocab_size,
                                          seq_len=seq_len, causal=True, time_cond=False)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        bos = torch.full_like(x[:, :1], self.bos_id)
        return torch.cat([bos, x[:, :-1]], dim=1)  # (B, L)

    def token_nll(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) exact -log p(x_i | x_<i) in nats."""
        logits = self.net(self._inputs(x))  # (B, L, K)
        logp = torch.log_softmax(logits.float(), dim=-1)
        return -logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)

    def forward(self, x, generator=None) -> LossOutput:
        nll = self.token_nll(x).sum(-1)  # (B,)
        return LossOutput(loss=nll.mean() / self.seq_len, nll=nll.detach())

    @torch.no_grad()
    def nelbo(self, x, generator=None):
        return self.token_nll(x).sum(-1).double()

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) exact log p(x): the judge interface of metrics.generative_perplexity."""
        return -self.nelbo(x)

    @torch.no_grad()
    def sample(self, n, cfg, generator=None) -> SampleOutput:
        """Ancestral sampling, one token per network call with a KV cache (L calls)."""
        opts = DrawOptions(cfg.temperature, cfg.top_k, cfg.top_p, cfg.float64)
        cache = self.net.new_cache(n)
        tok = torch.full((n, 1), self.bos_id, dtype=torch.long, device=self.device)
        out = torch.empty((n, self.seq_len), dtype=torch.long, device=self.device)
        for i in range(self.seq_len):
            logits = self.net(tok, cache=cache)[:, -1]  # (n, K)
            nxt = draw_categorical(torch.log_softmax(logits.float(), -1), generator, opts)
            out[:, i] = nxt
            tok = nxt.unsqueeze(1)
        return SampleOutput(samples=out, nfe=self.seq_len)
