import pytest
import torch
from helpers import EnumeratedJoint
from scipy.stats import chisquare

from catdiff.samplers import DrawOptions, draw_categorical, sample_masked
from catdiff.schedules import MaskSchedule

K, L = 3, 3


def _counts(x, joint):
    return torch.bincount(joint.index(x), minlength=K**L).double()


def test_one_step_sampler_draws_the_product_of_marginals():
    """With one step every token is drawn independently from p(x_i | all masked): the product
    of the exact marginals, a known distribution (chi-square test)."""
    joint = EnumeratedJoint(K, L, seed=1)
    g = torch.Generator().manual_seed(0)
    n = 20000
    z = torch.full((n, L), K)
    x, nfe = sample_masked(joint.denoiser(K), z, MaskSchedule("linear"), 1, K, g)
    assert nfe == 1
    marg = joint.conditionals(torch.full((1, L), K), K)[0]  # (L, K)
    prod = marg[0][joint.seqs[:, 0]] * marg[1][joint.seqs[:, 1]] * marg[2][joint.seqs[:, 2]]
    assert chisquare(_counts(x, joint).numpy(), (prod * n).numpy()).pvalue > 1e-3


def test_many_step_sampler_reproduces_the_joint():
    """With exact conditionals and many steps (rarely two reveals in one step) the sampler draws
    from the joint itself."""
    joint = EnumeratedJoint(K, L, seed=2)
    g = torch.Generator().manual_seed(1)
    n = 20000
    x, nfe = sample_masked(joint.denoiser(K), torch.full((n, L), K), MaskSchedule("cosine"), 256, K, g)
    emp = _counts(x, joint) / n
    tv = 0.5 * (emp - joint.p).abs().sum()
    assert tv < 0.03
    assert chisquare(_counts(x, joint).numpy(), (joint.p * n).numpy()).pvalue > 1e-4


def test_sampler_is_seed_deterministic_and_cache_is_exact_for_time_free_denoiser():
    joint = EnumeratedJoint(K, L, seed=3)
    s = MaskSchedule("linear")
    runs = []
    for cache in (True, True, False):
        g = torch.Generator().manual_seed(7)
        runs.append(sample_masked(joint.denoiser(K), torch.full((2, L), K), s, 32, K, g, cache=cache))
    (a, nfe_a), (b, _), (c, nfe_c) = runs
    assert torch.equal(a, b)
    assert torch.equal(a, c)  # same draws consumed, reused p equals recomputed p
    assert nfe_c == 32 and nfe_a < 32
    g = torch.Generator().manual_seed(8)
    d, _ = sample_masked(joint.denoiser(K), torch.full((2, L), K), s, 32, K, g)
    assert not torch.equal(a, d)


def test_draw_options():
    g = torch.Generator().manual_seed(0)
    logp = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(20000, 4)
    assert torch.all(draw_categorical(logp, g, DrawOptions(top_k=1)) == 0)
    assert torch.all(draw_categorical(logp, g, DrawOptions(temperature=0.0)) == 0)
    nuc = draw_categorical(logp, g, DrawOptions(top_p=0.7, float64=True))
    freq = torch.bincount(nuc, minlength=4).double() / len(nuc)
    assert freq[2] == 0 and freq[3] == 0  # nucleus {0, 1} has mass 0.8 >= 0.7
    assert freq[0] == pytest.approx(0.5 / 0.8, abs=0.02)
    hot = draw_categorical(logp, g, DrawOptions(temperature=2.0))
    freq = torch.bincount(hot, minlength=4).double() / len(hot)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64).sqrt()
    assert torch.allclose(freq, p / p.sum(), atol=0.02)
