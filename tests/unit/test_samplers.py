import pytest
import torch
from helpers import EnumeratedJoint
from scipy.stats import chisquare

from catdiff.errors import ConfigError
from catdiff.samplers import DrawOptions, SampleResult, draw_categorical, masked
from catdiff.schedules import MaskSchedule

K, L = 3, 3


def sample_masked(denoise, z, schedule, steps, mask_id, generator=None, draw=None, **kw):
    """masked.sample on the grid of a `steps` budget → (x, nfe)."""
    r = masked.sample(denoise, z, masked.grid(steps), schedule=schedule, mask_id=mask_id, generator=generator,
                      draw=draw, **kw)
    assert isinstance(r, SampleResult) and r.nfe <= steps  # the budget is never exceeded
    return r.state, r.nfe


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


def _peaked_denoiser(conf: torch.Tensor, K: int):
    """Time-free denoiser putting probability conf[i] on token (i mod K) at position i, the rest
    spread evenly: position i's draw is most confident where conf is largest."""
    L = conf.shape[0]
    p = ((1 - conf) / (K - 1))[:, None].expand(L, K).clone()
    p[torch.arange(L), torch.arange(L) % K] = conf
    logp = p.log()

    def denoise(z, t):
        return logp.expand(z.shape[0], L, K)

    return denoise


def test_confidence_order_reveals_the_scheduled_count_most_confident_first():
    """order="confidence" (MaskGIT/LLaDA): after step j of 4 with the linear schedule, round(8 s_j)
    masks remain (6, 4, 2, 0), and positions are revealed in decreasing confidence."""
    K, L = 4, 8
    conf = torch.tensor([0.30, 0.99, 0.50, 0.95, 0.60, 0.40, 0.90, 0.70])
    masks, revealed_at = [], torch.full((L,), -1)

    def watch(j, z):
        masks.append(int((z == K).sum()))
        revealed_at[(z[0] != K) & (revealed_at < 0)] = j

    z0 = torch.full((1, L), K)
    x, nfe = sample_masked(_peaked_denoiser(conf, K), z0, MaskSchedule("linear"), 4, K,
                           torch.Generator().manual_seed(0), DrawOptions(temperature=0.0), callback=watch,
                           order="confidence")
    assert masks == [6, 4, 2, 0]
    assert torch.equal(x[0], torch.arange(L) % K)  # argmax draws
    by_conf = torch.argsort(conf, descending=True)
    assert torch.equal(revealed_at[by_conf], torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
    assert nfe == 4  # every step changes tokens: no cache hit


def test_confidence_order_counts_only_free_positions_and_keeps_fixed_tokens():
    K, L = 3, 6
    conf = torch.linspace(0.4, 0.9, L)
    z0 = torch.full((2, L), K)
    z0[0, :2] = torch.tensor([2, 2])  # row 0: two fixed tokens, four free positions; row 1: six free
    masks = []
    x, _ = sample_masked(_peaked_denoiser(conf, K), z0, MaskSchedule("linear"), 2, K,
                         torch.Generator().manual_seed(0), callback=lambda j, z: masks.append((z == K).sum(1).tolist()),
                         order="confidence")
    assert masks == [[2, 3], [0, 0]]
    assert torch.equal(x[0, :2], torch.tensor([2, 2]))
    with pytest.raises(ConfigError, match="order must be one of"):
        sample_masked(_peaked_denoiser(conf, K), z0, MaskSchedule("linear"), 2, K, order="left-to-right")


def test_confidence_order_with_one_reveal_per_step_finds_the_mode_of_a_deterministic_chain():
    """Exact conditionals of a joint where every token equals the first: whatever is revealed
    first fixes the rest, so a confident sampler at one reveal per step never mixes tokens, and at
    temperature 1 its sequences cover all K constants."""
    K, L = 3, 3
    joint = EnumeratedJoint(K, L, seed=0)
    joint.p = (joint.seqs == joint.seqs[:, :1]).all(1).double() + 1e-12
    joint.p /= joint.p.sum()
    x, _ = sample_masked(joint.denoiser(K), torch.full((3000, L), K), MaskSchedule("linear"), L, K,
                         torch.Generator().manual_seed(0), order="confidence")
    assert (x == x[:, :1]).all()
    counts = torch.bincount(x[:, 0], minlength=K).double() / len(x)
    assert (counts - 1 / K).abs().max() < 0.05
