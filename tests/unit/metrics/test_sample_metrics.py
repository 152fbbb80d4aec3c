"""Tests of catdiff.metrics.samples: values against closed forms and exact tiny distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from catdiff import metrics as M
from catdiff.data.base import CategoricalDataset


# ---- stand-in datasets (duck-typed like data/synthetic.py's Mixture) -------------------------
class PeakedMixture(CategoricalDataset):
    """p(x) = Σ_m w_m Π_i probs[m, i, x_i]; each component puts `peak` on its own symbol."""

    name = "mixture-standin"
    exact = True

    def __init__(self, weights, seq_len=8, vocab_size=6, peak=0.8, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)  # (M,)
        n_comp = self.weights.numel()
        self.seq_len, self.vocab_size = seq_len, vocab_size
        modes = torch.randint(0, vocab_size, (n_comp, seq_len), generator=g)  # (M, L)
        modes[:, 0] = torch.arange(n_comp) % vocab_size  # components differ for sure
        rest = (1 - peak) / (vocab_size - 1)
        probs = torch.full((n_comp, seq_len, vocab_size), rest, dtype=torch.float64)
        probs.scatter_(2, modes[..., None], peak)
        self.probs = probs  # (M, L, K)

    def _log_joint(self, x):  # (B, M)
        lp = self.probs.log()[:, torch.arange(self.seq_len)[None, :], x]  # (M, B, L)
        return self.weights.log() + lp.sum(-1).T

    def log_prob(self, x):
        return torch.logsumexp(self._log_joint(x.long()), dim=1)

    def component_log_posterior(self, x):
        return torch.log_softmax(self._log_joint(x.long()), dim=1)

    latent_name = "component"

    def latent_assignments(self, x):  # (B, 1)
        return self.component_log_posterior(x).argmax(1, keepdim=True)

    def latent_marginals(self):  # (1, M)
        return self.weights[None]

    def sample(self, n, generator, component=None):
        if component is None:
            comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        else:
            comp = torch.full((n,), component, dtype=torch.int64)
        p = self.probs[comp].reshape(-1, self.vocab_size)  # (n·L, K)
        return torch.multinomial(p, 1, generator=generator).reshape(n, self.seq_len)

    def split(self, name):
        return self.sample(20000, torch.Generator().manual_seed(1000 + (name == "test")))


@pytest.fixture(scope="module")
def mix():
    return PeakedMixture([0.4, 0.3, 0.2, 0.1], seq_len=12, peak=0.9)


@pytest.fixture(scope="module")
def true_samples(mix):
    return mix.sample(4000, torch.Generator().manual_seed(123))


# ---- generic sample statistics ---------------------------------------------------------------
def test_unigram_entropy():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 8, (1000, 200), generator=g)
    assert M.unigram_entropy(x) == pytest.approx(3.0, abs=2e-3)
    assert M.unigram_entropy(torch.zeros(5, 7, dtype=torch.long)) == 0.0
    # two symbols with frequencies 1/4, 3/4
    y = torch.tensor([[0, 1, 1, 1]])
    h = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))
    assert M.unigram_entropy(y, vocab_size=5) == pytest.approx(h, rel=1e-12)


def test_distinct_n_hand_made():
    x = torch.tensor([[0, 1, 0, 1], [2, 3, 2, 3]])
    assert M.distinct_n(x, 1) == pytest.approx(4 / 8)
    # bigrams 01 10 01 | 23 32 23: 4 unique of 6 (the boundary bigram 12 must not count)
    assert M.distinct_n(x, 2) == pytest.approx(4 / 6)
    assert M.distinct_n(x, 3) == pytest.approx(1.0)  # 010 101 | 232 323
    assert M.distinct_n(torch.zeros(3, 5, dtype=torch.long), 3) == pytest.approx(1 / 9)
    assert math.isnan(M.distinct_n(x, 5))


# ---- exact-likelihood sample metrics ---------------------------------------------------------
def test_sample_metrics_on_true_samples(mix, true_samples):
    out = M.sample_metrics(true_samples, mix)
    assert 0.975 <= out["coherence"] <= 1.0
    assert abs(out["excess"]) < 4 * out["excess_stderr"]
    assert out["excess_stderr"] < 0.02
    assert out["component_kl"] < 0.005
    assert out["components_covered"] == 4 and out["components_total"] == 4
    h, _ = mix.entropy(n=20000, seed=0)
    assert out["entropy_per_token"] == pytest.approx(h / mix.seq_len, rel=1e-12)
    nll = -mix.log_prob(true_samples) / mix.seq_len
    assert out["sample_nll"] == pytest.approx(float(nll.mean()), rel=1e-12)
    assert out["excess"] == pytest.approx(out["sample_nll"] - out["entropy_per_token"], rel=1e-12)
    for k in ("unigram_entropy", "distinct_1", "distinct_2", "distinct_3", "distinct_4"):
        assert k in out
    assert out["distinct_1"] == pytest.approx(mix.vocab_size / true_samples.numel())


def test_sample_metrics_detects_bad_samples(mix):
    g = torch.Generator().manual_seed(7)
    noise = torch.randint(0, mix.vocab_size, (4000, mix.seq_len), generator=g)
    out = M.sample_metrics(noise, mix)
    assert out["coherence"] < 0.02
    assert out["excess"] > 20 * out["excess_stderr"]
    # mode collapse onto the lightest component: KL(emp ‖ w) = ln(1 / 0.1)
    one = mix.sample(2000, torch.Generator().manual_seed(8), component=3)
    out = M.sample_metrics(one, mix)
    assert out["component_kl"] == pytest.approx(math.log(10.0), rel=1e-3)
    assert out["components_covered"] == 1
    assert out["coherence"] > 0.9  # coherent but not diverse: only component KL catches it
    assert out["component_entropy"] == 0.0  # one component: the entropy shows the collapse too
    w = mix.weights
    assert out["component_entropy_true"] == pytest.approx(float(-(w * w.log()).sum()), rel=1e-12)


def test_sample_metrics_explicit_real_and_threshold(mix, true_samples):
    real = mix.sample(5000, torch.Generator().manual_seed(9))
    out = M.sample_metrics(true_samples, mix, real=real)
    q = float(np.percentile(mix.log_prob(real).numpy(), 1.0))
    assert out["coherence_threshold"] == pytest.approx(q)
    share = float((mix.log_prob(true_samples) >= q).double().mean())
    assert out["coherence"] == pytest.approx(share)


def test_sample_metrics_generic_only_for_non_exact_dataset():
    class Plain:
        vocab_size = 4
        exact = False

    x = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    out = M.sample_metrics(x, Plain())
    assert "sample_nll" not in out and "coherence" not in out and "component_kl" not in out
    assert out["unigram_entropy"] == pytest.approx(2.0)
    assert out["distinct_4"] == pytest.approx(0.5)


def test_sample_metrics_with_the_real_mixture():
    from catdiff.data import synthetic

    ds = synthetic.Mixture(num_components=4, seq_len=8, vocab_size=6, seed=0)
    x = ds.sample(2000, torch.Generator().manual_seed(5))
    out = M.sample_metrics(x, ds, entropy_n=5000)
    assert abs(out["excess"]) < 5 * out["excess_stderr"]
    assert out["coherence"] > 0.95
    assert out["component_kl"] < 0.05


# ---- total variation -------------------------------------------------------------------------
def _table_log_prob(table: torch.Tensor, vocab_size: int):
    def f(x):
        idx = (x * vocab_size ** torch.arange(x.shape[1] - 1, -1, -1)).sum(1)
        return table[idx].log()

    return f


def test_total_variation_exact_samples_small_and_encoding_order():
    K, L = 3, 3
    g = torch.Generator().manual_seed(0)
    table = torch.rand(K**L, generator=g, dtype=torch.float64) ** 3
    table /= table.sum()
    n = 100_000
    idx = torch.multinomial(table, n, replacement=True, generator=g)
    x = torch.stack([idx // 9, (idx // 3) % 3, idx % 3], dim=1)  # base K, first most significant
    fn = _table_log_prob(table, K)
    probs = M.enumerate_probs(fn, K, L)
    assert torch.allclose(probs, table, rtol=1e-12, atol=0)
    tv = M.total_variation(x, fn, K)
    floor = M.expected_tv_noise(table, n)
    assert 0 < tv < 2 * floor and floor < 0.02
    assert M.total_variation(x, table, K) == pytest.approx(tv, rel=1e-12)
    # a wrong distribution is far away
    assert M.total_variation(x, torch.full((K**L,), 1 / K**L), K) > 5 * floor
    # point mass on sequence (2, 0, 1) = index 19, samples all equal to it: TV exactly 0
    point = torch.zeros(K**L, dtype=torch.float64)
    point[19] = 1.0
    assert M.total_variation(torch.tensor([[2, 0, 1]] * 5), point, K) == 0.0


def test_total_variation_disjoint_support_is_one_and_limits():
    K, L = 2, 4
    table = torch.zeros(K**L, dtype=torch.float64)
    table[: K ** (L - 1)] = 1 / K ** (L - 1)  # all mass on x_0 = 0
    x = torch.ones(50, L, dtype=torch.long)
    assert M.total_variation(x, table, K) == 1.0
    with pytest.raises(ValueError, match="2\\*\\*22"):
        M.total_variation(torch.zeros(3, 23, dtype=torch.long), lambda x: x.sum(1) * 0.0, 2)
    with pytest.raises(ValueError, match="sums to"):
        M.total_variation(x, table * 0.5, K)


# ---- generative perplexity -------------------------------------------------------------------
def test_generative_perplexity_uniform_judge_is_k():
    K, L = 11, 9
    x = torch.randint(0, K, (300, L), generator=torch.Generator().manual_seed(0))
    sizes = []

    def judge(batch):
        sizes.append(batch.shape[0])
        return torch.full((batch.shape[0],), -L * math.log(K), dtype=torch.float32)

    out = M.generative_perplexity(x, judge, batch_size=128)
    assert out["gen_ppl"] == pytest.approx(K, rel=1e-6)
    assert out["nll_per_token"] == pytest.approx(math.log(K), rel=1e-6)
    assert out["n_tokens"] == 300 * L
    assert out["unigram_entropy"] == pytest.approx(M.unigram_entropy(x))
    assert sizes == [128, 128, 44]


def test_generative_perplexity_pools_tokens_not_sequences():
    x = torch.zeros(2, 4, dtype=torch.long)

    def judge(batch):  # first sequence log p = −4, second −12 → mean 2 nats/token
        return torch.tensor([-4.0, -12.0])

    assert M.generative_perplexity(x, judge)["gen_ppl"] == pytest.approx(math.exp(2.0))


def test_latent_coverage_hand_computed():
    class Two:
        latent_name = "state"

        def latent_marginals(self):  # (G=2 slots, C=2)
            return torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)

        def latent_assignments(self, x):
            return x[:, :2]

    x = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 0]])  # slot 0: (3/4, 1/4); slot 1: (3/4, 1/4)
    out = M.latent_coverage(Two(), x)
    e = torch.tensor([0.75, 0.25], dtype=torch.float64)
    kl0 = float((e * (e / torch.tensor([0.5, 0.5], dtype=torch.float64)).log()).sum())
    kl1 = float((e * (e / torch.tensor([0.9, 0.1], dtype=torch.float64)).log()).sum())
    assert out["state_kl"] == pytest.approx((kl0 + kl1) / 2, rel=1e-12)
    assert out["state_entropy"] == pytest.approx(float(-(e * e.log()).sum()), rel=1e-12)
    h1 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert out["state_entropy_true"] == pytest.approx((math.log(2) + h1) / 2, rel=1e-12)
    assert "states_covered" not in out  # counts only for a single slot


def test_hmm_state_coverage():
    from catdiff.data import synthetic

    ds = synthetic.HMM(seed=0)
    g = torch.Generator().manual_seed(3)
    # the true state law p(z_i) = init · trans^i, against an ancestral simulation of the chain
    n = 20000
    z = torch.multinomial(ds.init, n, replacement=True, generator=g)
    freq = [torch.bincount(z, minlength=ds.num_states)]
    for _ in range(1, ds.seq_len):
        z = torch.multinomial(ds.trans[z], 1, generator=g).squeeze(1)
        freq.append(torch.bincount(z, minlength=ds.num_states))
    emp = torch.stack(freq).double() / n
    marg = ds.latent_marginals()
    assert marg.shape == (ds.seq_len, ds.num_states)
    assert torch.allclose(marg.sum(1), torch.ones(ds.seq_len, dtype=torch.float64))
    assert (emp - marg).abs().max() < 0.02
    exact = M.sample_metrics(ds.sample(4000, g), ds, entropy_n=2000)
    one = ds.sample(4000, g)
    one[:] = one[0]  # every sample the same sequence: a collapsed sampler
    collapsed = M.sample_metrics(one, ds, entropy_n=2000)
    assert exact["state_kl"] < 0.1 < 1.0 < collapsed["state_kl"]
    assert collapsed["state_entropy"] == 0.0 < exact["state_entropy"]
    assert exact["state_entropy"] == pytest.approx(exact["state_entropy_true"], abs=0.15)
