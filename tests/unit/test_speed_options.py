"""Issue 18's training options: activation checkpointing changes memory, not mathematics; the
budget-following learning-rate schedule; a budget that counts across resumes."""

import math

import pytest
import torch

from catdiff.config import TrainConfig, load_config
from catdiff.errors import ConfigError
from catdiff.models.transformer import Transformer, TransformerConfig
from catdiff.trainer import Trainer, lr_at


def _grads(checkpoint: bool):
    torch.manual_seed(0)
    net = Transformer(TransformerConfig(vocab_size=11, out_size=10, seq_len=16, d_model=32, n_layers=3, n_heads=2,
                                        local_mix=3, dropout=0.1, checkpoint=checkpoint))
    x, t = torch.randint(0, 11, (4, 16)), torch.rand(4)
    torch.manual_seed(1)  # the same dropout masks: checkpoint replays the RNG in its recomputation
    loss = torch.nn.functional.cross_entropy(net(x, t).reshape(-1, 10), x.clamp_max(9).reshape(-1))
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in net.named_parameters()}


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    (l0, g0), (l1, g1) = _grads(False), _grads(True)
    assert torch.equal(l0, l1)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-7, msg=k)


def test_checkpointing_is_off_without_gradients():
    net = Transformer(TransformerConfig(vocab_size=11, out_size=10, seq_len=8, d_model=32, n_layers=1, n_heads=2,
                                        checkpoint=True))
    with torch.no_grad():  # sampling: no recomputation, the plain forward
        assert net(torch.zeros(2, 8, dtype=torch.long), torch.rand(2)).shape == (2, 8, 10)


def test_budget_schedule_decays_over_the_time_budget():
    tc = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, max_steps=10**6, max_minutes=10,
                     lr_schedule="budget")
    assert lr_at(0, tc, 0.0) == pytest.approx(1e-4)  # warm-up counts steps
    assert lr_at(10, tc, 0.0) == pytest.approx(1e-3)
    assert lr_at(10, tc, 300.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half the budget: half way down
    assert lr_at(99, tc, 600.0) == pytest.approx(1e-4) and lr_at(99, tc, 900.0) == pytest.approx(1e-4)
    steps = TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, max_steps=110, max_minutes=10)
    assert lr_at(60, steps, 600.0) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2))))
    with pytest.raises(ConfigError, match="lr_schedule=budget"):
        load_config("configs/mdlm/mixture.yaml", ["train.lr_schedule=budget", "train.max_minutes=0"])


def test_the_budget_counts_across_a_resume(tmp_path):
    cfg = load_config("configs/mdlm/mixture.yaml", ["model.preset=tiny", "train.max_steps=8", "train.batch_size=8",
                                                     "train.progress=false", "train.max_minutes=5",
                                                     "train.lr_schedule=budget", f"train.out_dir={tmp_path}"])
    first = Trainer(cfg)
    assert first.fit(until_step=4)["status"] == "paused"
    spent = first.budget_s()
    again = Trainer(cfg, resume=True)
    assert 0 < again.budget_used <= spent  # saved at the pause's checkpoint, a moment before
    assert again.fit()["budget_s"] > again.budget_used
