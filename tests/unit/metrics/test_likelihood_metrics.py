"""Tests of catdiff.metrics.likelihood: units against closed forms, the running mean against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from catdiff import metrics as M


# ---- units -----------------------------------------------------------------------------------
def test_bits_and_perplexity_on_known_numbers():
    seq_len = 10
    assert M.bits_per_token(seq_len * math.log(2) * 3.0, seq_len) == pytest.approx(3.0, rel=1e-12)
    per_seq = torch.tensor([1.0, 3.0], dtype=torch.float64) * seq_len * math.log(2)
    assert M.bits_per_token(per_seq, seq_len) == pytest.approx(2.0, rel=1e-12)
    assert M.perplexity_bound(seq_len * math.log(5.0), seq_len) == pytest.approx(5.0, rel=1e-12)
    assert M.perplexity_bound(0.0, seq_len) == 1.0
    # ln K nats/token is log2 K bits and perplexity K
    assert M.bits_per_token(64 * math.log(17), 64) == pytest.approx(math.log2(17))


def test_nelbo_gap():
    assert M.nelbo_gap(110.0, 100.0) == pytest.approx(0.1)
    assert M.nelbo_gap(torch.tensor([95.0, 105.0]), 100.0) == pytest.approx(0.0, abs=1e-12)
    assert M.nelbo_gap(90.0, 100.0) == pytest.approx(-0.1)
    with pytest.raises(ValueError):
        M.nelbo_gap(1.0, 0.0)


def test_mean_accumulator_matches_numpy_including_merge():
    rng = np.random.default_rng(0)
    v = 1e6 + rng.normal(size=1001) * 0.01  # large mean, tiny spread: no cancellation allowed
    a, b = M.MeanAccumulator(), M.MeanAccumulator()
    for chunk in np.array_split(v[:600], 7):
        a.update(torch.from_numpy(chunk))
    b.update(v[600:])
    a.merge(b)
    assert a.count == 1001
    assert a.mean == pytest.approx(v.mean(), rel=1e-15)
    assert a.std == pytest.approx(v.std(ddof=1), rel=1e-8)
    assert a.stderr == pytest.approx(v.std(ddof=1) / math.sqrt(v.size), rel=1e-8)
    assert a.sum == pytest.approx(v.sum(), rel=1e-14)
    # merging into an empty one and from_state round-trip
    c = M.MeanAccumulator().merge(M.MeanAccumulator.from_state(*a.state()))
    assert (c.count, c.mean, c.stderr) == (a.count, a.mean, a.stderr)
    assert math.isnan(M.MeanAccumulator().mean)
    assert math.isnan(M.MeanAccumulator().update([1.0]).stderr)
    # without torch.distributed, all_reduce is a copy
    r = a.all_reduce()
    assert r is not a and r.state() == a.state()


def test_mean_accumulator_all_reduce_single_process_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("torch.distributed unavailable or already initialised")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        acc = M.MeanAccumulator().update(torch.tensor([1.0, 2.0, 4.0]))
        out = acc.all_reduce()
        assert out.count == 3 and out.mean == pytest.approx(7 / 3)
        assert out.var == pytest.approx(np.var([1, 2, 4], ddof=1))
    finally:
        dist.destroy_process_group()
