"""The synthetic seq2seq suite: canvas layout, every task's target recomputed independently in
plain Python, determinism, the state round trip and typed sources."""

import json

import pytest
import torch

from catdiff.build import rebuild_dataset
from catdiff.data.seq2seq import TASKS, SyntheticSeq2Seq


def reference_target(ds: SyntheticSeq2Seq, src: list[int]) -> list[int]:
    if ds.task == "copy":
        return src
    if ds.task == "reverse":
        return src[::-1]
    if ds.task == "sort":
        return sorted(src)
    if ds.task == "add":
        a, b = _split_plus(src)
        return [int(c) for c in str(a + b)]
    out = []
    for v in src:  # grammar: the homomorphism, symbol by symbol
        out += [int(r) for r in ds.rules[v][:ds.rule_len[v]]]
    return out


def _split_plus(src):
    i = src.index(10)
    return int("".join(map(str, src[:i]))), int("".join(map(str, src[i + 1:])))


@pytest.mark.parametrize("task", TASKS)
def test_targets_are_the_exact_answers(task):
    ds = SyntheticSeq2Seq(task=task, min_len=1, max_len=6, seed=1)
    x = ds.train_batch(0, 300)
    assert x.shape == (300, ds.seq_len) and (x[:, ds.src_len] == ds.sep_id).all()
    assert int(x.max()) < ds.vocab_size and ds.cond_len == ds.src_len + 1
    for row in x:
        src, tgt = ds.symbols(ds.source(row[None])[0]), ds.symbols(ds.target(row[None])[0])
        assert tgt == reference_target(ds, src), (task, src, tgt)
        n = len(tgt)  # after the content: only PAD
        assert (ds.target(row[None])[0, n:] == ds.pad_id).all() and int(ds.target_length(row[None])) == n
        assert (ds.source(row[None])[0, len(src):] == ds.pad_id).all()
        if task != "add":
            assert 1 <= len(src) <= 6
    if task == "add":  # operands of 1..6 digits without leading zeros (a one-digit operand may be 0)
        lens = [len(str(a)) for row in x for a in _split_plus(ds.symbols(ds.source(row[None])[0]))]
        assert min(lens) == 1 and max(lens) == 6


def test_streams_are_deterministic_and_splits_differ():
    ds = SyntheticSeq2Seq(task="reverse", seed=3)
    assert torch.equal(ds.train_batch(5, 8), SyntheticSeq2Seq(task="reverse", seed=3).train_batch(5, 8))
    assert not torch.equal(ds.train_batch(5, 8), ds.train_batch(6, 8))
    assert not torch.equal(ds.train_batch(5, 8, rank=1, world=2), ds.train_batch(5, 8))
    assert not torch.equal(ds.split("val")[:8], ds.split("test")[:8])
    state = json.loads(json.dumps(ds.state()))
    again = rebuild_dataset(state)
    assert torch.equal(again.split("test"), ds.split("test"))


def test_grammar_rules_depend_on_the_seed_only():
    a, b = SyntheticSeq2Seq(task="grammar", seed=0), SyntheticSeq2Seq(task="grammar", seed=0, max_len=4)
    assert (a.rules == b.rules).all() and not (a.rules == SyntheticSeq2Seq(task="grammar", seed=1).rules).all()


def test_typed_sources_and_bad_arguments():
    ds = SyntheticSeq2Seq(task="add", max_len=3)
    canvas = ds.prompt_canvas("12+345")
    assert ds.symbols(canvas[:ds.src_len]) == [1, 2, 10, 3, 4, 5] and canvas[ds.src_len] == ds.sep_id
    assert (ds.target(canvas[None]) == ds.pad_id).all()
    assert ds.decode(ds.split("test")[0]).count("→") == 1
    with pytest.raises(ValueError, match="digits and one"):
        ds.prompt_canvas("1a+2")
    with pytest.raises(ValueError, match="at most"):
        SyntheticSeq2Seq(task="reverse", max_len=3).prompt_canvas("1 2 3 4")
    with pytest.raises(ValueError, match="task must be one of"):
        SyntheticSeq2Seq(task="translate")
    with pytest.raises(ValueError, match="max_len"):
        SyntheticSeq2Seq(min_len=5, max_len=2)
