"""Conditioning: the Condition type and templates; fixed positions survive sampling in every
registered method; an exact denoiser started from a condition draws the true conditional; the
seq2seq source is clean in training inputs; AR prefills a shared prefix."""

from pathlib import Path

import pytest
import torch

from catdiff import registry
from catdiff.build import build_dataset, build_method
from catdiff.conditioning import Condition, from_template, template
from catdiff.config import load_config
from catdiff.data.synthetic import Mixture
from catdiff.metrics import expected_tv_noise
from catdiff.oracle import oracle_denoiser
from catdiff.samplers import StepOptions, masked
from catdiff.schedules import MaskSchedule

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2"]


def test_condition_helpers():
    c = Condition.prefix(torch.tensor([4, 5]), 5)
    assert c.fixed.tolist() == [[True, True, False, False, False]] and c.values[0, :2].tolist() == [4, 5]
    assert c.prefix_length() == 2
    t = template("ab__c_", lambda s: [ord(ch) for ch in s], 8)
    assert t.fixed.tolist() == [[True, True, False, False, True, False, False, False]]
    assert t.values[0, [0, 1, 4]].tolist() == [97, 98, 99] and t.prefix_length() == 2
    x = torch.zeros(3, 8, dtype=torch.long)
    assert t.for_batch(3, "cpu").impose(x)[:, 4].tolist() == [99, 99, 99]
    emb = t.for_batch(3, "cpu").impose(torch.zeros(3, 8, 2))  # broadcast over a trailing axis
    assert emb[0, 0].tolist() == [97.0, 97.0]
    assert from_template([0.5, None], 3).values.dtype == torch.float64
    with pytest.raises(ValueError, match="more than the sequence length"):
        Condition.prefix(torch.arange(6), 5)
    with pytest.raises(ValueError, match="cannot serve"):
        Condition(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool)).for_batch(3, "cpu")
    with pytest.raises(ValueError, match="bool"):
        Condition(torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        Condition.prefix(torch.tensor([7]), 5).check(5, 4)


def build(name: str):
    """A small untrained method of `name` on seq2seq data (tokens) or gaussians8 (vectors)."""
    data = "gaussians8" if name in ("edm", "discodiff") else "seq2seq"
    cfg = load_config(ROOT / f"configs/{name}/{data}.yaml", SMALL)
    ds = build_dataset(cfg.data)
    torch.manual_seed(0)
    return build_method(cfg, ds), ds, cfg


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_fixed_positions_survive_sampling_in_every_method(name):
    method, ds, cfg = build(name)
    g = torch.Generator().manual_seed(1)
    n = 6
    if ds.kind == "vector":
        values = torch.randn(n, ds.seq_len, generator=g)
        fixed = torch.tensor([[True, False]] * n)
    else:
        values = ds.split("test")[:n]
        fixed = torch.rand(values.shape, generator=g) < 0.5
        fixed[:, :ds.cond_len] = True  # the source, and random target positions (infilling)
    cond = Condition(values, fixed)
    budget = {} if name == "ar" else {"steps": 4}  # AR has no step budget
    out = method.sample(n, method.sample_options(seed=0, **budget), torch.Generator().manual_seed(0), condition=cond)
    assert torch.equal(out.samples[fixed].to(values.dtype), values[fixed]), name
    assert out.samples.shape == values.shape
    one = method.sample(n, method.sample_options(**budget), torch.Generator().manual_seed(0),
                        condition=Condition(values[:1], fixed[:1]))  # one row serves every sample
    assert torch.equal(one.samples[:, fixed[0]].to(values.dtype), values[:1, fixed[0]].expand(n, -1))


@pytest.mark.parametrize("name", ["mdlm", "lddm-fuji", "lddm-seq"])
def test_confidence_order_keeps_fixed_positions_in_masked_methods(name):
    method, ds, _ = build(name)
    values = ds.split("test")[:5]
    fixed = torch.rand(values.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    out = method.sample(5, method.sample_options(steps=3, order="confidence"), torch.Generator().manual_seed(0),
                        condition=Condition(values, fixed))
    assert torch.equal(out.samples[fixed], values[fixed])
    assert (out.samples < ds.vocab_size).all()  # every mask revealed


def test_masked_sampler_never_changes_fixed_tokens_midway():
    method, ds, _ = build("mdlm")
    x = ds.split("test")[:4]
    cond = Condition.leading(x, ds.cond_len).for_batch(4, "cpu")
    seen = []
    z = cond.impose(torch.full_like(x, method.mask_id))
    masked.sample(method.log_probs, z, masked.grid(8), schedule=method.schedule, mask_id=method.mask_id,
                  generator=torch.Generator().manual_seed(0),
                  callback=lambda j, z_: seen.append(z_[:, :ds.cond_len].clone()))
    assert all(torch.equal(s, x[:, :ds.cond_len]) for s in seen)


def test_the_exact_denoiser_draws_the_true_conditional_from_a_condition():
    """mixture with L = 5, K = 3: positions 0 and 3 fixed; with the exact conditionals as the
    denoiser and many small steps, the infills follow p(x_1, x_2, x_4 | x_0, x_3) (enumerated)."""
    ds = Mixture(vocab_size=3, seq_len=5, num_components=4, seed=3)
    values = torch.tensor([[2, 0, 0, 1, 0]])
    fixed = torch.tensor([[True, False, False, True, False]])
    n, K = 20000, 3
    z = Condition(values, fixed).for_batch(n, "cpu").impose(torch.full((n, 5), K))
    x = masked.sample(oracle_denoiser(ds, K), z, masked.grid(256), schedule=MaskSchedule("linear"), mask_id=K,
                      generator=torch.Generator().manual_seed(0)).state
    assert torch.equal(x[:, [0, 3]], values[:, [0, 3]].expand(n, -1))
    free = x[:, [1, 2, 4]]
    idx = (free * torch.tensor([9, 3, 1])).sum(1)
    emp = torch.bincount(idx, minlength=27).double() / n
    grid = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    full = values.expand(27, -1).clone()
    full[:, [1, 2, 4]] = grid
    exact = torch.softmax(ds.log_prob(full), 0)
    tv = 0.5 * float((emp - exact).abs().sum())
    assert tv < 3 * expected_tv_noise(exact, n), (tv, expected_tv_noise(exact, n))


@pytest.mark.parametrize("name", ["mdlm", "lddm-fuji", "difformer"])
def test_seq2seq_training_keeps_the_source_clean(name):
    """The network input at the source positions is the clean source in every training draw."""
    method, ds, _ = build(name)
    x = ds.train_batch(0, 16)
    seen = []
    if name == "difformer":
        orig = method.denoise

        def spy(z_t, t, *a, **k):
            seen.append(z_t[:, :ds.cond_len])
            return orig(z_t, t, *a, **k)

        method.denoise = spy
        clean = method.emb(x)[:, :ds.cond_len]
    else:
        net = method.net
        orig = net.forward

        def spy(*a, **k):
            seen.append(a[0][:, :ds.cond_len])
            return orig(*a, **k)

        net.forward = spy
        clean = x[:, :ds.cond_len]
    method(ds.batch(x), torch.Generator().manual_seed(0))  # the dataset's Batch: the target excludes the source
    assert seen and all(torch.allclose(s.float(), clean.float()) for s in seen)


def test_ar_prefills_a_shared_prefix():
    method, ds, _ = build("ar")
    x = ds.split("test")[:3]
    cond = Condition.leading(x, ds.cond_len)
    out = method.sample(3, method.sample_options(), torch.Generator().manual_seed(0), condition=cond)
    assert out.nfe == ds.seq_len - ds.cond_len
    assert torch.equal(out.samples[:, :ds.cond_len], x[:, :ds.cond_len])


def test_exact_infill_likelihood_and_draws_match_enumeration():
    from catdiff.metrics import exact_infills, infill_log_prob

    ds = Mixture(vocab_size=3, seq_len=5, num_components=4, seed=3)
    grid = torch.stack(torch.meshgrid(*[torch.arange(3)] * 5, indexing="ij"), -1).reshape(-1, 5)  # all 243
    logp = ds.log_prob(grid)
    for fixed_pos in ([0, 3], [1, 2, 4], []):
        fixed = torch.zeros(5, dtype=torch.bool)
        fixed[fixed_pos] = True
        ref = torch.tensor([[2, 0, 1, 1, 0]])
        same = (grid[:, fixed] == ref[:, fixed]).all(1)
        exact = torch.softmax(logp[same], 0)  # p(x_free | x_fixed) by enumeration
        got = infill_log_prob(ds, grid[same], fixed.expand(int(same.sum()), -1)).exp()
        assert torch.allclose(got, exact, atol=1e-10), fixed_pos
    # rows with different masks in one batch
    fx = torch.tensor([[True, False, False, True, False], [False] * 5])
    both = infill_log_prob(ds, grid[:2], fx)
    assert torch.allclose(both[1], logp[1]) and torch.allclose(both[0], infill_log_prob(ds, grid[:1], fx[:1])[0])
    # exact draws follow the enumerated conditional
    n = 20000
    fixed = torch.tensor([True, False, False, True, False])
    draws = exact_infills(ds, torch.tensor([[2, 0, 0, 1, 0]]).expand(n, -1), fixed.expand(n, -1),
                          torch.Generator().manual_seed(0))
    assert (draws[:, fixed] == torch.tensor([2, 1])).all()
    idx = (draws[:, ~fixed] * torch.tensor([9, 3, 1])).sum(1)
    emp = torch.bincount(idx, minlength=27).double() / n
    same = (grid[:, fixed] == torch.tensor([2, 1])).all(1)
    exact = torch.softmax(logp[same], 0)
    assert 0.5 * float((emp - exact).abs().sum()) < 3 * expected_tv_noise(exact, n)


def test_infill_report_of_an_exact_sampler_has_no_excess():
    """A 'method' that draws exact infills scores excess ≈ 0; one that ignores the condition's
    context (uniform infills) scores a large excess."""
    from catdiff.evaluate import infill_report
    from catdiff.metrics import exact_infills
    from catdiff.structs import SampleOutput

    ds = Mixture(vocab_size=4, seq_len=8, num_components=4, seed=1, n_test=2000)

    class Exact:
        device = torch.device("cpu")

        def sample(self, n, cfg, generator=None, condition=None):
            g = torch.Generator().manual_seed(5)
            return SampleOutput(exact_infills(ds, condition.values, condition.fixed, g), 1)

    class Uniform:
        device = torch.device("cpu")

        def sample(self, n, cfg, generator=None, condition=None):
            return SampleOutput(condition.impose(torch.randint(0, 4, condition.values.shape, generator=generator)), 1)

    good = infill_report(Exact(), ds, StepOptions(batch_size=2000), 2000)
    bad = infill_report(Uniform(), ds, StepOptions(batch_size=2000), 2000)
    assert abs(good["infill_excess"]) < 4 * good["infill_entropy_se"] and bad["infill_excess"] > 0.5


def test_embedding_anchor_imposes_clean_sources_and_noised_fixed_tokens():
    """The anchor of embedding methods: seq2seq source positions get their clean embeddings,
    other fixed positions a fresh draw of q(z_t | x) = N(a_t e, s_t² I), free positions are left."""
    method, ds, _ = build("difformer")
    n = 4000
    x = ds.split("test")[:1].expand(n, -1)
    fixed = torch.zeros_like(x, dtype=torch.bool)
    fixed[:, :ds.cond_len] = True
    fixed[:, ds.cond_len + 1] = True  # one target token fixed (infilling)
    cond = Condition(x, fixed, clean=torch.arange(ds.seq_len).expand(n, -1) < ds.cond_len)
    sched = method.decode_sched
    t = torch.tensor(0.5)
    z = torch.randn(n, ds.seq_len, method.options.embed_dim)
    with torch.no_grad():
        out = method._anchor(cond, sched, torch.Generator().manual_seed(0))(z, t)
        e = method.emb(x)
    a, s = sched.coefficients(t.reshape(1, 1, 1))
    torch.testing.assert_close(out[:, :ds.cond_len], e[:, :ds.cond_len])
    free = ~fixed[0]
    torch.testing.assert_close(out[:, free], z[:, free])
    eps = (out[:, ds.cond_len + 1] - a[0, 0] * e[:, ds.cond_len + 1]) / s[0, 0]  # (n, d)
    assert abs(float(eps.mean())) < 0.01 and abs(float(eps.std()) - 1) < 0.01


def test_fit_pads_a_short_condition_with_free_positions():
    c = Condition(torch.tensor([[3, 0, 0, 5]]), torch.tensor([[True, False, False, True]]))
    f = c.fit(7)
    assert f.values.shape == f.fixed.shape == (1, 7) and f.clean is None
    assert f.values.tolist() == [[3, 0, 0, 5, 0, 0, 0]] and f.values.dtype == torch.long
    assert f.fixed.tolist() == [[True, False, False, True, False, False, False]]
    assert c.fit(4) is c  # already the right length: unchanged
    rows = Condition(torch.tensor([[0.5, 1.5], [2.5, 3.5]], dtype=torch.float64),
                     torch.tensor([[True, False], [True, True]]), clean=torch.tensor([[True, False], [True, True]]))
    g = rows.fit(3)  # several rows, float values, a clean mask: each padded alike
    assert g.values.dtype == torch.float64 and g.values[:, 2].tolist() == [0.0, 0.0]
    assert g.fixed.tolist() == [[True, False, False], [True, True, False]]
    assert g.clean.tolist() == [[True, False, False], [True, True, False]]
    assert g.clean_mask().tolist() == g.fixed.tolist()


def test_fit_refuses_a_condition_longer_than_the_sequence():
    c = Condition(torch.zeros(1, 6, dtype=torch.long), torch.zeros(1, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="covers 6 positions, more than the 5"):
        c.fit(5)


def test_short_condition_is_padded_when_sampling():
    """The API pads a short template as the CLI does: a 4-position condition on a 32-long MDLM."""
    cfg = load_config(ROOT / "configs/mdlm/mixture.yaml", ["model.preset=tiny", *SMALL])
    ds = build_dataset(cfg.data)
    torch.manual_seed(0)
    method = build_method(cfg, ds)
    L = method.seq_len
    assert L > 4
    cond = Condition(values=torch.tensor([[3, 0, 0, 5]]), fixed=torch.tensor([[True, False, False, True]]))
    out = method.sample(8, method.sample_options(steps=4, seed=0), torch.Generator().manual_seed(0), condition=cond)
    assert out.samples.shape == (8, L)
    assert out.samples[:, 0].tolist() == [3] * 8 and out.samples[:, 3].tolist() == [5] * 8
    too_long = Condition(torch.zeros(1, L + 1, dtype=torch.long), torch.zeros(1, L + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="more than the"):
        method.sample(2, method.sample_options(steps=4), condition=too_long)
