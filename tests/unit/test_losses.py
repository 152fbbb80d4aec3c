"""losses.py: each term against its formula, and the one reduction (masked per-token means)."""

import math

import pytest
import torch

from catdiff import losses
from catdiff.losses import Term
from catdiff.schedules import MaskSchedule


def test_reduce_is_the_weighted_sum_of_per_token_means_over_covered_positions():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[False, True, True], [False, True, False]])
    seq = torch.tensor([3.0, 9.0])
    loss, metrics = losses.reduce({"a": Term(v, 2.0, mask), "b": Term(seq, 0.5, tokens=3), "c": Term(v, 0.0)})
    a = (2 + 3 + 5) / 3
    b = (3 + 9) / 2 / 3
    assert float(loss) == pytest.approx(2 * a + 0.5 * b)
    assert float(metrics["a"]) == pytest.approx(a) and float(metrics["c"]) == pytest.approx(3.5)  # logged only
    with pytest.raises(ValueError, match="weight 0"):
        losses.reduce({"c": Term(v, 0.0)})


def test_masked_nelbo_weights_masked_positions_only():
    """w(t) · -log p(x_i) at masked positions (MDLM eq. 10), zero at unmasked ones; linear schedule: w = 1/t."""
    K, m = 3, 3
    logp = torch.log_softmax(torch.randn(2, 4, K, generator=torch.Generator().manual_seed(0)), -1)
    x = torch.tensor([[0, 1, 2, 0], [2, 2, 1, 0]])
    z = torch.tensor([[m, 1, m, 0], [2, m, m, m]])
    t = torch.tensor([0.5, 0.25])
    got = losses.masked_nelbo(logp, x, z, t, MaskSchedule("linear"), m)
    want = torch.zeros(2, 4)
    for b in range(2):
        for i in range(4):
            if z[b, i] == m:
                want[b, i] = -logp[b, i, x[b, i]] / t[b]
    torch.testing.assert_close(got, want)


def test_cross_entropy_and_consistency_kl_match_their_definitions():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 4, generator=g)
    x = torch.randint(0, 4, (2, 5), generator=g)
    logp = torch.log_softmax(logits, -1)
    torch.testing.assert_close(losses.cross_entropy(logits, x), -logp.gather(-1, x[..., None])[..., 0])
    smooth = losses.cross_entropy(logits, x, 0.1)  # (1 - ε) CE + ε · mean_k(-log p_k)
    torch.testing.assert_close(smooth, 0.9 * losses.cross_entropy(logits, x) - 0.1 * logp.mean(-1))
    other = torch.log_softmax(torch.randn(2, 5, 4, generator=g), -1)
    kl = losses.consistency_kl(logp, other)
    assert (kl > 0).all() and torch.allclose(losses.consistency_kl(logp, logp), torch.zeros(2, 5), atol=1e-6)


def test_continuous_terms():
    z0 = torch.tensor([[[1.0, 2.0], [0.0, 0.0]]])
    x0 = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    torch.testing.assert_close(losses.x0_mse(x0, z0), torch.tensor([[2.5, 1.0]]))
    torch.testing.assert_close(losses.prior_energy(torch.tensor(0.5), z0), torch.tensor([[0.625, 0.0]]))
    w = losses.min_snr_weight(torch.tensor([math.log(2.0), math.log(50.0)]), 5.0)
    torch.testing.assert_close(w, torch.tensor([2.0, 5.0]))
    torch.testing.assert_close(losses.squared_norm(z0), torch.tensor([5.0]))
    d, y = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])
    torch.testing.assert_close(losses.denoising_mse(d, y, torch.tensor([2.0])), torch.tensor([5.0]))


def test_a_methods_loss_is_the_reduction_of_its_terms():
    """MDLM's loss per target token equals its summed per-sequence bound over the target count."""
    from catdiff.config import ModelConfig
    from catdiff.methods.mdlm import MDLM, MDLMOptions
    from catdiff.structs import Batch

    torch.manual_seed(0)
    m = MDLM(MDLMOptions(), ModelConfig(d_model=32, n_layers=1, n_heads=2), 5, 6)
    x = torch.randint(0, 5, (8, 6), generator=torch.Generator().manual_seed(2))
    target = torch.ones(8, 6, dtype=torch.bool)
    target[:, :2] = False  # a seq2seq-like source: clean, not scored
    out = m(Batch(x, target), torch.Generator().manual_seed(3))
    assert float(out.loss.detach()) == pytest.approx(float(out.nll.mean()) / 4, rel=1e-5)
