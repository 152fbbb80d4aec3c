"""LDDM (FUJI and SEQ): loss decomposition, gradients, samplers (determinism, network-call counts,
reduction to MDLM), guidance, two-stage freezing, and the joint network."""

import pytest
import torch
from torch import nn

from catdiff import registry
from catdiff.config import ModelConfig
from catdiff.errors import ConfigError
from catdiff.methods.mdlm import MDLM, MDLMOptions
from catdiff.models.joint import JointConfig, JointTransformer
from catdiff.samplers import coupled, masked
from catdiff.structs import Batch

K, L = 6, 10
TINY = ModelConfig(preset="tiny", d_model=32, n_layers=1, n_heads=2)


def build(name, **kw):
    cls = registry.method_class(name)
    torch.manual_seed(0)
    return cls(cls.Options(patch_dim=4, **kw), TINY, K, L)


class CallCounter(nn.Module):
    """Wraps a network and counts its forward calls."""

    def __init__(self, net):
        super().__init__()
        self.inner, self.calls = net, 0

    def forward(self, *a, **kw):
        self.calls += 1
        return self.inner(*a, **kw)


def data(n=12, seed=0):
    return torch.randint(0, K, (n, L), generator=torch.Generator().manual_seed(seed))


# ---- the joint network --------------------------------------------------------------------
def test_joint_network_shapes_zero_init_and_dropped_latent():
    net = JointTransformer(JointConfig(vocab_size=K + 1, out_size=K, seq_len=L, n_slots=3, slot_dim=4,
                                       d_model=32, n_heads=2, n_layers=2))
    z, y, t = torch.randint(0, K + 1, (5, L)), torch.randn(5, 3, 4), torch.rand(5)
    logits, y_hat = net(z, y, t, t)
    assert logits.shape == (5, L, K) and y_hat.shape == (5, 3, 4)
    assert torch.all(y_hat == 0)  # zero-initialised head: ŷ starts at the prior mean
    for p in net.parameters():  # leave the zero init
        p.data.add_(0.05 * torch.randn_like(p))
    drop = torch.tensor([True, True, False, False, False])
    a, _ = net(z, y, t, t, drop)
    b, _ = net(z, torch.randn(5, 3, 4), t, t, drop)
    assert torch.allclose(a[:2], b[:2]) and not torch.allclose(a[2:], b[2:])  # dropped rows ignore y
    # both channels' times matter
    assert not torch.allclose(net(z, y, t, t)[0], net(z, y, t, 1 - t)[0])


# ---- losses -------------------------------------------------------------------------------
class TokensOnly(nn.Module):
    """A joint network with the coupling off: token logits from an MDLM network (ignores y),
    ŷ_0 from the noisy latent alone (ignores tokens)."""

    def __init__(self, mdlm_net):
        super().__init__()
        self.mdlm_net = mdlm_net

    def forward(self, z, y, t_x, t_y, drop=None):
        return self.mdlm_net(z, t_x), 0.5 * y


def test_with_the_coupling_off_the_bound_is_the_sum_of_the_component_bounds():
    m = build("lddm-fuji")
    mdlm = MDLM(MDLMOptions(), TINY, K, L)
    m.net = TokensOnly(mdlm.net)
    m.eval()
    x = data()
    T = m._terms(Batch(x), torch.Generator().manual_seed(7), train=False)
    # the token term is MDLM's NELBO with the same draws (times, then masks)
    ref_x = mdlm._token_nelbo(Batch(x), torch.Generator().manual_seed(7))
    torch.testing.assert_close(T["x"], ref_x)
    # the latent term is the Gaussian ELBO of y_0 = E(x) under ŷ_0 = y_t / 2, recomputed by hand
    g = torch.Generator().manual_seed(7)
    t_x, t_y = m.process.times(len(x), g, "cpu", m.options.t_min)
    m.process.mask(x, t_x, g)  # consumes the mask draws, as _terms does
    y0 = m.encode(x)
    y_t, _ = m.process.noise(y0, t_y, g)
    w = m.process.latent.vlb_weight(t_y) * m.process.in_range(t_x)
    torch.testing.assert_close(T["diff"], 0.5 * w * (y0 - 0.5 * y_t).pow(2).flatten(1).sum(-1))
    torch.testing.assert_close(m.nelbo(x, torch.Generator().manual_seed(7)).float(),
                               T["x"].sum(-1) + T["diff"] + T["prior"])


@pytest.mark.parametrize("name", ["lddm-fuji", "lddm-seq"])
def test_gradients_reach_encoder_and_denoisers(name):
    m = build(name, latent_drop=0.0)
    for p in m.parameters():  # leave the zero inits so that every path carries gradient
        p.data.add_(0.02 * torch.randn_like(p))
    m.train()
    m(data(), torch.Generator().manual_seed(0)).loss.backward()
    enc = [p.grad for p in m.encoder.parameters()]
    assert all(gr is not None for gr in enc) and sum(float(gr.abs().sum()) for gr in enc) > 0
    assert float(m.net.tok_emb.weight.grad.abs().sum()) > 0
    if name == "lddm-seq":
        assert float(m.latent_in.weight.grad.abs().sum()) > 0


def test_seq_stage_two_trains_only_the_latent_denoiser():
    m = build("lddm-seq", two_stage=True, stage=2)
    for p in m.parameters():
        p.data.add_(0.02 * torch.randn_like(p))
    m.train()
    out = m(data(), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(p.grad is None for p in m.encoder.parameters()) and all(p.grad is None for p in m.net.parameters())
    assert float(m.latent_in.weight.grad.abs().sum()) > 0
    m1 = build("lddm-seq", two_stage=True, stage=1)  # stage 1: the latent denoiser gets no gradient
    m1.train()
    m1(data(), torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in m1.latent_net.parameters())


def test_stage_is_refused_for_fuji_and_options_are_validated():
    with pytest.raises(ConfigError, match="lddm-seq"):
        build("lddm-fuji", stage=1)
    with pytest.raises(ConfigError, match="latent_loss"):
        build("lddm-fuji", latent_loss="l1")


def test_encoder_zeroing_hides_only_masked_positions():
    m = build("lddm-fuji", enc_zero_max=1.0)
    m.train()
    x = data(200)
    z = torch.where(torch.rand(x.shape) < 0.5, torch.full_like(x, K), x)
    xe = m._encoder_input(x, z, torch.Generator().manual_seed(0))
    hidden = xe == K
    assert torch.all(z[hidden] == K) and 0.1 < float(hidden.double().mean()) < 0.4  # E[r]·P(masked) = 0.25
    m.eval()
    assert torch.equal(m._encoder_input(x, z, None), x)


def test_latent_dropout_only_in_training_and_mse_option():
    m = build("lddm-fuji", latent_drop=0.5, latent_loss="mse")
    m.train()
    out = m(data(64), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and set(out.metrics) == {"L_x", "latent", "L_y", "prior"}
    assert m._drop(64, torch.Generator().manual_seed(0), "cpu").float().mean() > 0.3
    m.eval()
    assert m._drop(64, None, "cpu") is None


# ---- samplers ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lddm-fuji", "lddm-seq"])
@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_samplers_are_seed_deterministic_and_count_network_calls(name, guidance):
    m = build(name)
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    m.eval()
    m.net = CallCounter(m.net)
    if name == "lddm-seq":
        m.latent_net = CallCounter(m.latent_net)
    seq = {"latent_steps": 3} if name == "lddm-seq" else {}
    cfg = m.sample_options(steps=5, guidance=guidance, cache=False, **seq)
    a = m.sample(4, cfg, torch.Generator().manual_seed(11))
    b = m.sample(4, cfg, torch.Generator().manual_seed(11))
    assert torch.equal(a.samples, b.samples) and a.samples.shape == (4, L) and (a.samples < K).all()
    # the budget of 5 calls: 5 evaluations, or 2 guided ones of two calls each
    per_step, evals = (2, 2) if guidance > 0 else (1, 5)
    if name == "lddm-fuji":
        assert m.net.calls == 2 * evals * per_step and a.nfe == evals * per_step <= 5
    else:
        assert m.latent_net.calls == 2 * 3 and m.net.calls == 2 * evals * per_step
        assert a.nfe == 3 + evals * per_step and a.info["latent_calls"] == 3


def test_fuji_sampler_with_the_latent_ignored_is_the_mdlm_sampler():
    """Exact denoiser of an enumerable law that ignores y: with deterministic DDIM on the latent,
    the joint loop makes the same token draws as the MDLM sampler (no caching)."""
    from tests.helpers import EnumeratedJoint

    law = EnumeratedJoint(K=3, L=3)
    table = law.denoiser(mask_id=3)
    m = build("lddm-fuji")
    z = torch.full((50, 3), 3)
    y = torch.randn(50, 1, 4)

    def joint(z_t, y_t, t_x, t_y):
        return table(z_t, t_x), torch.zeros_like(y_t)

    process = m.process.__class__(m.process.tokens, m.process.latent, 3)
    for order in ("random", "confidence"):  # the same reveal rule in both loops
        r1 = coupled.sample(joint, (z, y), masked.grid(4), process=process, kind="ddim",
                            generator=torch.Generator().manual_seed(2), order=order)
        r2 = masked.sample(table, z, masked.grid(4), schedule=m.process.tokens, mask_id=3,
                           generator=torch.Generator().manual_seed(2), cache=False, order=order)
        assert torch.equal(r1.state, r2.state) and r1.nfe == r2.nfe == 4 and torch.all(r1.info["latent"] == 0), order


def test_seq_with_a_fixed_latent_is_conditional_mdlm():
    m = build("lddm-seq")
    for p in m.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    m.eval()
    y = torch.randn(6, 1, 4)
    cfg = m.sample_options(steps=4, cache=False)
    out = m.sample(6, cfg, torch.Generator().manual_seed(3), latent=y)
    t_lo = torch.full((6,), m.t_clean)

    def cond(z_t, t):  # conditional MDLM: the token denoiser with y fixed
        return m.token_log_probs(z_t, y, t, t_lo)[0]

    z = torch.full((6, L), K)
    r = masked.sample(cond, z, masked.grid(4), schedule=m.process.tokens, mask_id=K,
                      generator=torch.Generator().manual_seed(3), cache=False)
    ref, nfe = r.state, r.nfe
    assert torch.equal(out.samples, ref) and out.info["latent_calls"] == 0 and out.nfe == nfe == 4
    z_half = torch.where(torch.rand(6, L) < 0.5, K, data(6))  # the latent does condition the tokens
    assert not torch.allclose(cond(z_half, torch.full((6,), 0.5)),
                              m.token_log_probs(z_half, -3 * y, torch.full((6,), 0.5), t_lo)[0])


def test_external_encoder_hook():
    m = build("lddm-fuji", normalize=False)
    m.set_encoder(lambda x: x[:, :4].float().unsqueeze(1))  # (B, 1, 4): a fixed feature map
    x = data()
    torch.testing.assert_close(m.encode(x), x[:, :4].float().unsqueeze(1))
    m.set_encoder(None)
    assert m.encode(x).shape == (len(x), 1, 4)


def _encoder_grad(name, **kw) -> float:
    m = build(name, latent_drop=0.0, **kw)
    for p in m.parameters():  # leave the zero inits so that every path carries gradient
        p.data.add_(0.02 * torch.randn_like(p))
    m.train()
    m(data(), torch.Generator().manual_seed(0)).loss.backward()
    return sum(0.0 if p.grad is None else float(p.grad.abs().sum()) for p in m.encoder.parameters())


@pytest.mark.parametrize("name", ["lddm-fuji", "lddm-seq"])
def test_latent_grad_off_keeps_the_latent_loss_out_of_the_encoder(name):
    """With w_x = 0 only the latent terms remain: their gradient reaches the encoder iff latent_grad
    (FUJI: neither through the target nor through the joint network's noisy input y_t)."""
    assert _encoder_grad(name, w_x=0.0, latent_grad=True) > 0
    assert _encoder_grad(name, w_x=0.0, latent_grad=False) == 0
    assert _encoder_grad(name, w_x=1.0, w_y=0.0, latent_grad=False) > 0  # the token loss still reaches it


def test_fuji_pre_fix_path_leaks_the_latent_loss_through_the_input():
    """detach_latent_input=false is the path before issue 19 (kept for the ablation): L_y's gradient
    reaches the encoder through y_t although its target is sg[y_0]."""
    assert _encoder_grad("lddm-fuji", w_x=0.0, latent_grad=False, detach_latent_input=False) > 0


def test_fuji_latent_loss_rows_are_reweighted_to_the_batch():
    """L_y is counted on the rows whose input is sg[y_0] (every other row), times B / their number, so
    that its batch mean estimates the same expectation; L_x covers every row; eval is unchanged."""
    m = build("lddm-fuji", latent_drop=0.0)
    m.train()
    x = data(12)
    T = m._terms(Batch(x), torch.Generator().manual_seed(3), train=True)
    sg = torch.arange(12) % 2 == 1
    torch.testing.assert_close(T["keep"], sg.float() * 2.0)
    terms, _ = m.loss_terms(Batch(x), torch.Generator().manual_seed(3))
    torch.testing.assert_close(terms["latent"].value, 2.0 * sg.float() * (T["diff"] + T["prior"]))
    assert T["x"].shape == (12, L)
    m.eval()
    assert torch.all(m._terms(Batch(x), torch.Generator().manual_seed(3), train=False)["keep"] == 1)


def test_latent_spread_total_and_between_share():
    from catdiff.methods.lddm import latent_spread

    y = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 2.0]]).view(4, 1, 2)
    labels = torch.tensor([0, 0, 1, 1])
    # mean (0, 0.5); total = Σ_coords Var: var_x = 1, var_y = mean((.5²,.5²,.5²,1.5²)) = 0.75
    out = latent_spread(y, labels)
    assert out["y0_var"] == pytest.approx(1.75)
    # class means (1, 0) and (-1, 1): between = ½(1 + .25) + ½(1 + .25) = 1.25
    assert out["y0_between_share"] == pytest.approx(1.25 / 1.75)
    assert "y0_between_share" not in latent_spread(y)
    assert latent_spread(torch.ones(5, 1, 3))["y0_var"] == 0.0  # a collapsed encoder


def test_lddm_diagnostics_are_logged_with_the_training_records(tmp_path):
    import json

    from catdiff.config import load_config
    from catdiff.trainer import train

    cfg = load_config("configs/lddm-fuji/mixture.yaml",
                      ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.max_steps=4",
                       "train.log_every=2", "train.batch_size=16", "train.progress=false",
                       f"train.out_dir={tmp_path / 'run'}"])
    train(cfg)
    recs = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in recs if "loss" in r]
    assert logged and all(r["y0_var"] > 0 and 0 <= r["y0_between_share"] <= 1 for r in logged)
    assert recs[0]["step"] == 0 and "y0_var" in recs[0]  # the spread before any update


def test_fuji_latent_first_sampling():
    """sample.latent_steps = k: k calls with every token masked (t_x = 1) move the latent alone down
    the latent grid, then the token chain runs at the latent range's bottom; calls add up."""
    m = build("lddm-fuji")
    m.eval()
    seen = []

    class Spy(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, z_t, y_t, t_x, t_y, drop=None):
            seen.append((float(t_x[0]), float(t_y[0]), bool((z_t == K).all())))
            return self.inner(z_t, y_t, t_x, t_y, drop)

    m.net = Spy(m.net)
    cfg = coupled.Options(steps=4, latent_steps=3)
    out = m.sample(5, cfg, torch.Generator().manual_seed(0))
    m.net = m.net.inner
    lo, hi = m.process.latent.t_range
    assert out.nfe == 7 and out.info["latent_calls"] == 3 and out.info["token_calls"] == 4
    assert [s[0] for s in seen[:3]] == [1.0, 1.0, 1.0] and all(s[2] for s in seen[:3])
    assert [s[1] for s in seen[:3]] == pytest.approx(torch.linspace(hi, lo, 3).tolist(), rel=1e-6)
    assert all(s[1] == pytest.approx(lo) for s in seen[3:]) and (out.samples < K).all()
    a = m.sample(5, cfg, torch.Generator().manual_seed(1)).samples
    b = m.sample(5, cfg, torch.Generator().manual_seed(1)).samples
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="latent_steps"):
        coupled.Options(latent_steps=0)


def test_fuji_lead_runs_the_latent_ahead_of_the_tokens():
    m = build("lddm-fuji")
    seen = []

    def joint(z_t, y_t, t_x, t_y):
        seen.append((float(t_x[0]), float(t_y[0])))
        return torch.zeros(z_t.shape + (K,)).log_softmax(-1), torch.zeros_like(y_t)

    z, y = torch.full((2, L), K), torch.randn(2, 1, 4)
    coupled.sample(joint, (z, y), masked.grid(4), process=m.process, generator=torch.Generator().manual_seed(0),
                   lead=3.0)
    lo, hi = m.process.latent.t_range
    for t_x, t_y in seen:
        assert t_y == pytest.approx(min(max(t_x ** 3, lo), hi), rel=1e-6) and t_y <= t_x


def test_standardized_encoder_cannot_collapse():
    """method.standardize: every coordinate of the pooled encoder output has batch mean 0 and
    variance 1 in training (BatchNorm without affine), running statistics in eval; so even an
    encoder whose outputs barely differ yields a spread-out y_0."""
    m = build("lddm-fuji", standardize=True, normalize=False)
    m.train()
    x = data(64)
    with torch.no_grad():
        raw = m.encoder(x).mean(1)
    assert float(raw.var(0).max()) < 0.05  # a mean-pooled encoder at init barely tells inputs apart
    y = m.encode(x).flatten(1).detach()
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    v = raw.var(0, unbiased=False)  # BatchNorm divides by sqrt(v + eps), eps = 1e-5
    torch.testing.assert_close(y.var(0, unbiased=False), v / (v + 1e-5), atol=1e-4, rtol=1e-4)
    assert float(y.var(0).min()) > 0.9
    m.eval()
    a, b = m.encode(x[:3]), m.encode(x[:3])
    assert torch.equal(a, b) and not torch.allclose(a, y[:3].view(3, 1, 4))  # running stats, not the batch's
    assert "enc_norm.running_mean" in m.state_dict()


def test_fuji_clean_latent_rows_leave_the_latent_loss():
    """method.clean_latent: those rows see the latent at t_y = lo and leave L_y, which the remaining
    counted rows estimate with weights summing to the batch size."""
    m = build("lddm-fuji", latent_drop=0.0, clean_latent=0.5, independent_times=True)
    m.train()
    x = data(64)
    T = m._terms(Batch(x), torch.Generator().manual_seed(5), train=True)
    keep = T["keep"]
    counted = keep > 0
    assert float(keep.sum()) == pytest.approx(64.0)
    assert not counted[::2].any()  # even rows feed the encoder, never L_y
    assert 8 < int(counted.sum()) < 24  # about half of the 32 sg rows are clean
    with pytest.raises(ConfigError, match="clean_latent"):
        build("lddm-fuji", clean_latent=1.0)


def test_fuji_masked_tokens_rows_train_the_latent_prior():
    """method.masked_tokens: those rows reach the network with every token masked at t_x = 1, are
    disjoint from the clean-latent rows, leave L_x (the others' L_x reweighted to the batch) and all
    count in L_y with a detached latent input (the encoder learns nothing from them)."""
    m = build("lddm-fuji", latent_drop=0.0, clean_latent=0.25, masked_tokens=0.5, independent_times=True)
    m.train()
    seen = {}

    def spy(module, args, out):
        seen["z"], seen["y"], seen["t_x"], seen["t_y"] = args[:4]
    m.net.register_forward_hook(spy)
    x = data(64)
    T = m._terms(Batch(x), torch.Generator().manual_seed(5), train=True)
    blind = (seen["z"] == m.mask_id).all(1) & (seen["t_x"] == 1)
    clean = seen["t_y"] == m.t_clean
    assert 20 < int(blind.sum()) < 44 and not (blind & clean).any()  # about half of 64
    assert torch.isfinite(T["x"]).all()
    assert (T["x"][blind] == 0).all()
    # the others' L_x is scaled by B / #others: undo it and compare with a plain evaluation
    ref = masked_nelbo_rows(m, x, seen)
    torch.testing.assert_close(T["x"][~blind], ref[~blind] * 64 / int((~blind).sum()))
    keep = T["keep"]
    assert float(keep.sum()) == pytest.approx(64.0)
    assert (keep[blind] > 0).all() and not (keep[clean] > 0).any()
    # L_y of blind rows never reaches the encoder
    m.zero_grad()
    (T["keep"] * T["diff"] * blind.float()).sum().backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0 for p in m.encoder.parameters())
    with pytest.raises(ConfigError, match="masked_tokens"):
        build("lddm-fuji", clean_latent=0.5, masked_tokens=0.5)
    for kw in ({"masked_tokens": 0.25}, {"clean_latent": 0.5}):  # FUJI-only: SEQ refuses, never ignores
        with pytest.raises(ConfigError, match="are for lddm-fuji"):
            build("lddm-seq", **kw)


def masked_nelbo_rows(m, x, seen):
    """L_x per token (B, L) of the network's call that `seen` recorded, without any reweighting."""
    from catdiff.losses import masked_nelbo
    with torch.no_grad():
        logp, _ = m.token_log_probs(seen["z"], seen["y"], seen["t_x"], seen["t_y"])
    return masked_nelbo(logp, x, seen["z"], seen["t_x"], m.process.tokens, m.mask_id)
