"""Target-length prediction and length × noise beam decoding (length.py)."""

import torch

from catdiff.data.seq2seq import SyntheticSeq2Seq
from catdiff.length import LengthPredictor, beam_decode, fit_length_predictor, length_condition
from catdiff.structs import SampleOutput


def test_the_predictor_learns_a_grammar_tasks_lengths(tmp_path):
    ds = SyntheticSeq2Seq(task="grammar", min_len=1, max_len=6, n_val=512)
    model, acc = fit_length_predictor(ds, steps=300)
    assert acc > 0.97, acc  # |h(x)| is a sum of per-symbol rule lengths
    model.save(tmp_path / "length.pt")
    again = LengthPredictor.load(tmp_path / "length.pt")
    x = ds.split("test")[:16]
    assert torch.equal(again(ds.source(x)), model(ds.source(x)))


def test_length_condition_pads_from_the_length():
    ds = SyntheticSeq2Seq(task="reverse", max_len=4)
    x = ds.split("test")[:2]
    c = length_condition(ds, x, torch.tensor([1, 3]))
    tgt_fixed = c.fixed[:, ds.cond_len:]
    assert tgt_fixed.tolist() == [[False, True, True, True], [False, False, False, True]]
    assert c.fixed[:, :ds.cond_len].all() and (c.values[:, ds.cond_len:][tgt_fixed] == ds.pad_id).all()


class FakeMethod:
    """Fills free positions with a per-candidate constant: candidate j of every source gets j."""

    def sample(self, n, cfg, generator=None, condition=None):
        fill = torch.arange(n).remainder(6).view(-1, 1).expand(n, condition.values.shape[1])
        return SampleOutput(samples=condition.impose(fill), nfe=7)


class FixedLengths(torch.nn.Module):
    def __init__(self, T):
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(T + 1, dtype=torch.float))  # longest first

    def forward(self, src):
        return self.w.expand(src.shape[0], -1)


def test_beam_decode_keeps_the_reranker_best_of_lengths_times_draws():
    ds = SyntheticSeq2Seq(task="reverse", max_len=4)
    x = ds.split("test")[:3]
    T = ds.tgt_len

    def rerank(c):  # prefers the candidate filled with 4: length rank 2, second draw (2·2 + 0 = 4)
        return -(ds.target(c)[:, 0] - 4).abs().double()

    r = beam_decode(FakeMethod(), ds, x, None, FixedLengths(T), length_beam=3, noise_beam=2, rerank=rerank)
    assert r["candidates"] == 6 and r["nfe"] == 7
    assert (ds.target(r["samples"])[:, 0] == 4).all() and (r["lengths"] == T - 2).all()
    assert torch.equal(r["samples"][:, :ds.cond_len], x[:, :ds.cond_len])
    # the chosen length is imposed: PAD from it on
    assert (ds.target(r["samples"])[:, T - 2:] == ds.pad_id).all()
    plain = beam_decode(FakeMethod(), ds, x, None, FixedLengths(T), length_beam=3, noise_beam=2)
    assert (plain["lengths"] == T).all()  # no reranker: first draw of the most likely length
