"""Embedding-diffusion variants: loss terms, stop-gradients, diagnostics and the likelihood bound."""

import pytest
import torch

from catdiff import registry
from catdiff.config import ModelConfig
from catdiff.methods.embedding import EmbeddingOptions, effective_rank, embedding_diagnostics
from catdiff.models.encoders import TokenEmbedding

VARIANTS = ["embed-naive", "diffusion-lm", "cdcd", "difformer", "catdm"]
K, L = 6, 8


def build(name, **opts):
    cls = registry.method_class(name)
    torch.manual_seed(0)
    return cls(cls.Options(**opts), ModelConfig(preset="tiny", d_model=32, n_layers=1, n_heads=2), K, L)


def batch(n=16, seed=0):
    return torch.randint(0, K, (n, L), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_loss_bound_and_samples(name):
    m = build(name, embed_dim=8)
    x = batch()
    out = m(x, torch.Generator().manual_seed(0))
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert m.emb.weight.grad is not None and m.emb.weight.grad.abs().sum() > 0  # trained end to end
    nb = m.nelbo(x, torch.Generator().manual_seed(1))
    assert nb.shape == (16,) and nb.dtype == torch.float64 and torch.isfinite(nb).all() and (nb > 0).all()
    s = m.sample(3, m.sample_options(steps=4), torch.Generator().manual_seed(2))
    assert s.samples.shape == (3, L) and s.samples.dtype == torch.long
    assert int(s.samples.min()) >= 0 and int(s.samples.max()) < K
    assert s.nfe == (7 if m.options.sampler == "heun" else 4)


def test_variant_defaults_follow_their_sources():
    o = {n: registry.method_class(n).Options() for n in VARIANTS}
    assert o["difformer"].rescale == 4.0 and o["difformer"].rescale_decode == 1.0 and o["difformer"].w_ce == 1.0
    assert o["difformer"].label_smoothing == 0.1 and o["difformer"].self_cond == 0.5
    assert o["diffusion-lm"].schedule == "sqrt" and o["diffusion-lm"].w_rounding == 1.0
    assert o["cdcd"].param == "logits" and o["cdcd"].normalize and o["cdcd"].schedule == "ve"
    assert o["catdm"].w_cm > 0 and o["catdm"].shift < 1 and o["catdm"].drop_prob > 0
    assert o["catdm"].mse_weight == "min_snr" and o["embed-naive"].mse_weight == "none"
    assert o["embed-naive"].w_ce == 0 and o["embed-naive"].w_cm == 0


def test_terms_reported_match_switches():
    m = build("catdm", embed_dim=8)
    out = m(batch(), torch.Generator().manual_seed(0))
    assert set(out.metrics) == {"mse", "recon", "cm"}
    m = build("diffusion-lm", embed_dim=8)
    assert set(m(batch(), torch.Generator().manual_seed(0)).metrics) == {"mse", "rounding", "prior"}


def _patch_logits(m, fn):
    """Replace the denoiser by fn(z_t, t) -> logits (K per position), x0 = softmax · table."""

    def denoise(z_t, t, x0_prev=None, schedule=None):
        logits = fn(z_t, t)
        return torch.softmax(logits, -1) @ m.emb.table(), logits

    m.denoise = denoise


def test_cm_term_is_zero_when_predictions_agree_and_positive_otherwise():
    m = build("catdm", embed_dim=8, w_mse=0.0, w_recon=0.0, drop_prob=0.0)
    w = torch.randn(8, K, generator=torch.Generator().manual_seed(3))
    _patch_logits(m, lambda z, t: (z[..., :8] @ w) * 0 + torch.arange(K, dtype=z.dtype))  # constant in z and t
    assert float(m(batch(), torch.Generator().manual_seed(0)).metrics["cm"]) == pytest.approx(0.0, abs=1e-7)
    _patch_logits(m, lambda z, t: z @ w)  # depends on the noise level through z
    assert float(m(batch(), torch.Generator().manual_seed(0)).metrics["cm"]) > 1e-3


def test_cm_target_is_stop_gradient():
    """Only the prediction at the noisier time t carries a graph; the target at s < t does not."""
    m = build("catdm", embed_dim=8, w_mse=0.0, w_recon=0.0, drop_prob=0.0)
    w = torch.randn(8, K, generator=torch.Generator().manual_seed(3), requires_grad=True)
    flags = []

    def fn(z, t):
        out = z @ w
        flags.append(out.requires_grad)
        return out

    _patch_logits(m, fn)
    m(batch(), torch.Generator().manual_seed(0)).loss.backward()
    assert flags == [True, False]
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_gradient_routes():
    # rounding is computed on the true z_0: it trains the table, never the denoiser
    m = build("diffusion-lm", embed_dim=8, w_mse=0.0, w_prior=0.0)
    m(batch(), torch.Generator().manual_seed(0)).loss.backward()
    assert m.emb.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.net.parameters())
    # a frozen table gets no gradient, the network still does
    m = build("difformer", embed_dim=8, frozen=True)
    m(batch(), torch.Generator().manual_seed(0)).loss.backward()
    assert m.emb.weight.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.parameters())
    # random dropping trains the [DROP] vector
    m = build("catdm", embed_dim=8, drop_prob=0.5)
    m(batch(), torch.Generator().manual_seed(0)).loss.backward()
    assert m.drop_vec.grad.abs().sum() > 0


def test_readout_rounding_and_clamp():
    emb = TokenEmbedding(K, 4, scale=True, normalize=True)
    x = torch.arange(K)
    z0 = emb(x)
    assert torch.allclose(z0.norm(dim=-1), torch.full((K,), 2.0))  # √d norm
    assert torch.equal(emb.round(z0), x)  # normalised rows: each is its own argmax
    assert torch.allclose(emb.clamp(z0 + 1e-3), z0)


def test_diagnostics_see_collapse():
    emb = TokenEmbedding(K, 8)
    d0 = embedding_diagnostics(emb)
    assert d0["emb_decodable"] > 0.5 and d0["emb_pairwise"] > 1.0 and d0["emb_rank"] > 4
    with torch.no_grad():
        emb.weight.copy_(torch.ones(K, 8) * 0.3 + 1e-4 * torch.randn(K, 8))  # collapsed to one point
    d1 = embedding_diagnostics(emb)
    assert d1["emb_pairwise"] < 0.01 * d0["emb_pairwise"]
    assert effective_rank(torch.eye(5)) == pytest.approx(4.0, rel=1e-6)  # centred identity has rank 4


def test_bound_pays_the_full_decoder_cost_of_a_uniform_readout():
    """Uniform logits cost exactly L·log K in the decoder term; the Gaussian terms are >= 0."""
    m = build("cdcd", embed_dim=4)
    x = batch(4)
    m.eval()
    _patch_logits(m, lambda z, t: torch.zeros(z.shape[:-1] + (K,)))  # uniform prediction
    uniform = m.nelbo(x, torch.Generator().manual_seed(0))
    assert torch.all(uniform >= L * torch.log(torch.tensor(float(K))) - 1e-6)


def test_bad_options_are_config_errors():
    from catdiff.errors import ConfigError

    for bad in [dict(param="eps"), dict(sampler="x"), dict(self_cond=1.0), dict(w_cm=-1.0), dict(schedule="nope"),
                dict(recon_frac=0.0), dict(embed_dim=0), dict(in_norm="middle")]:
        with pytest.raises(ConfigError):
            EmbeddingOptions(**bad)


@pytest.mark.parametrize("where", ["after", "before", "none"])
def test_layernorm_placement(where):
    m = build("difformer", embed_dim=8, in_norm=where)
    assert isinstance(m.in_norm, torch.nn.LayerNorm) == (where != "none")
    if where != "none":
        assert m.in_norm.normalized_shape[0] == (32 if where == "after" else 16)  # D, or 2d with self-conditioning
    assert torch.isfinite(m(batch(), torch.Generator().manual_seed(0)).loss)


def test_min_snr_weight_scales_the_mse_term_per_example():
    """One example per batch: weighted mse = min(SNR(t), γ) · unweighted mse, t from the same draw."""
    m = build("embed-naive", embed_dim=8, w_recon=0.0, antithetic=False)
    x = batch(1)
    for seed in range(4):
        plain = float(m(x, torch.Generator().manual_seed(seed)).metrics["mse"])
        t = m._times(1, torch.Generator().manual_seed(seed), x.device)  # forward's first draw
        snr = float(torch.exp(m.schedule.log_snr(t)))
        for gamma in (1e9, 1.0):
            m.options.mse_weight, m.options.mse_gamma = "min_snr", gamma
            weighted = float(m(x, torch.Generator().manual_seed(seed)).metrics["mse"])
            assert weighted == pytest.approx(min(snr, gamma) * plain, rel=1e-4)
        m.options.mse_weight = "none"
