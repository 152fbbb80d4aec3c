"""Target lengths for non-autoregressive seq2seq: a length predictor p(|y| | source) and length-beam
× noise-beam decoding with reranking. Knows the seq2seq canvas (data/seq2seq.py) and the methods'
`sample` / `nelbo` interface; nothing of their networks or processes.

Difformer (Gao et al. 2024, official code zhjgao/difformer; METHODS.md §2) predicts the target
length with a head on its encoder (loss weight 0.1) and decodes `length_beam` lengths × `noise_beam`
noise draws, keeping the candidate an autoregressive model scores highest. Here the length
predictor is a separate small model over the source [our choice: one predictor, trained once per
dataset, serves every method — the canvas already lets each method place PAD itself, so plain
decoding needs no length at all].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .conditioning import Condition


class LengthPredictor(nn.Module):
    """Source tokens (B, S) → logits over target lengths 0..T: position-aware embeddings of the
    source, flattened, then a two-layer MLP."""

    def __init__(self, vocab_size: int, src_len: int, tgt_len: int, width: int = 256, embed: int = 32):
        super().__init__()
        self.shape = {"vocab_size": vocab_size, "src_len": src_len, "tgt_len": tgt_len, "width": width, "embed": embed}
        self.tok = nn.Embedding(vocab_size, embed)
        self.pos = nn.Parameter(torch.zeros(src_len, embed))
        self.mlp = nn.Sequential(nn.Linear(src_len * embed, width), nn.GELU(), nn.Linear(width, tgt_len + 1))

    def forward(self, src: torch.Tensor) -> torch.Tensor:
        return self.mlp((self.tok(src) + self.pos).flatten(1))

    def save(self, path: str | Path) -> None:
        torch.save({"shape": self.shape, "state": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> LengthPredictor:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(**blob["shape"])
        model.load_state_dict(blob["state"])
        return model


def fit_length_predictor(dataset, steps: int = 400, batch_size: int = 256, lr: float = 3e-3, seed: int = 0,
                         device: str | torch.device = "cpu") -> tuple[LengthPredictor, float]:
    """Train a LengthPredictor on the dataset's training stream (cross-entropy on the true target
    length); returns it and its accuracy on the validation split."""
    torch.manual_seed(seed)
    model = LengthPredictor(dataset.vocab_size, dataset.src_len, dataset.tgt_len).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        x = dataset.train_batch(step, batch_size).to(device)
        loss = F.cross_entropy(model(dataset.source(x)), dataset.target_length(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    val = dataset.split("val").to(device)
    with torch.no_grad():
        acc = float((model(dataset.source(val)).argmax(-1) == dataset.target_length(val)).float().mean())
    return model, acc


def length_condition(dataset, x: torch.Tensor, lengths: torch.Tensor) -> Condition:
    """Rows of x with the source + separator fixed and the target fixed to PAD from `lengths` on
    (positions before it free)."""
    pos = torch.arange(dataset.seq_len, device=x.device)[None, :]
    pad_from = dataset.cond_len + lengths[:, None]
    values = torch.where(pos >= pad_from, dataset.pad_id, x)
    source = (pos < dataset.cond_len).expand_as(values)
    return Condition(values, source | (pos >= pad_from), clean=source)


@torch.no_grad()
def beam_decode(method, dataset, x: torch.Tensor, cfg, length_model: LengthPredictor, length_beam: int = 3,
                noise_beam: int = 2, rerank=None, generator: torch.Generator | None = None) -> dict:
    """Targets for the sources of x (B, L): for each source the `length_beam` most likely lengths ×
    `noise_beam` draws, all sampled in one batch; the kept candidate maximises `rerank(candidates)`
    (e.g. an AR model's log p(target | source)), or, without a reranker, is the first draw of the
    most likely length. Returns samples (B, L), the chosen lengths and network calls per batch."""
    B = x.shape[0]
    k = min(length_beam, dataset.tgt_len + 1)
    dev = next(length_model.parameters()).device
    lengths = length_model(dataset.source(x).to(dev)).topk(k, -1).indices.to(x.device)  # (B, k)
    rows = x.repeat_interleave(k * noise_beam, 0)  # (B·k·n, L), grouped by source, then length
    cand_len = lengths.repeat_interleave(noise_beam, 1).reshape(-1)
    cond = length_condition(dataset, rows, cand_len)
    out = method.sample(len(rows), cfg, generator, condition=cond)
    cands = out.samples.view(B, k * noise_beam, -1)
    if rerank is None:
        best = torch.zeros(B, dtype=torch.long)
    else:
        scores = rerank(out.samples).view(B, k * noise_beam).to(torch.float64)
        best = scores.argmax(1).cpu()
    chosen = cands[torch.arange(B), best.to(cands.device)]
    return {"samples": chosen, "lengths": lengths.view(B, k)[torch.arange(B), (best // noise_beam).to(x.device)],
            "nfe": out.nfe, "candidates": k * noise_beam}
