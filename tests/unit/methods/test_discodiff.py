"""EDM and DisCo-Diff on vectors: the latent-conditional ODE, the prior's NLL, sampling with given
latents, guidance call counts, seed determinism, and the gaussians8 toy data."""

import math

import pytest
import torch

from catdiff import registry
from catdiff.config import ModelConfig
from catdiff.data.continuous import Gaussians8
from catdiff.errors import ConfigError
from catdiff.processes import edm
from catdiff.samplers import edm as edm_sampler

PRIOR = ModelConfig(preset="tiny", d_model=32, n_layers=1, n_heads=2)


def build(name="discodiff", **kw):
    cls = registry.method_class(name)
    torch.manual_seed(0)
    return cls(cls.Options(sigma_data=2.13, width=64, **kw), PRIOR, 0, 2)


def test_gaussians8_matches_its_specification():
    d = Gaussians8()
    assert torch.allclose(d.means.norm(dim=1), torch.full((8,), 3.0, dtype=torch.float64))
    x, c = d.sample_with_latent(16000, torch.Generator().manual_seed(0))
    resid = x.double() - d.means[c]
    assert abs(float(resid.std()) - 0.2) < 0.005 and torch.equal(d.component(x), c)
    assert torch.bincount(c, minlength=8).min() > 1800
    assert torch.equal(d.train_batch(3, 10), d.train_batch(3, 10)) and d.split("test").shape == (8000, 2)
    # at a mean the density is (1/8)·N(0; 0, 0.04 I) (the other components are ≥ 2.3 away: negligible)
    lp = float(d.log_prob(d.means[:1].float()))
    assert lp == pytest.approx(math.log(1 / 8 / (2 * math.pi * 0.04)), abs=1e-6)


def test_the_exact_conditional_ode_maps_noise_to_the_latents_component():
    """With the true component as the latent and the exact denoiser of N(μ_c, s² I), the ODE
    transports N(0, σ_max²) to N(μ_c, s²) (every sample ends within 5 s of μ_c)."""
    d = Gaussians8()
    s = d.std
    c = torch.randint(0, 8, (500,), generator=torch.Generator().manual_seed(0))
    mu = d.means[c]

    def exact(x, sigma):  # E[y | x, c] for y ~ N(μ_c, s² I), x = y + σ n
        w = (s * s / (sigma * sigma + s * s)).view(-1, 1)
        return mu + w * (x - mu)

    x0 = 80.0 * torch.randn(500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = edm_sampler.sample(exact, x0, edm.karras_sigmas(40), kind="heun").state
    assert torch.equal(d.component(x), c) and float((x - mu).norm(dim=1).max()) < 5 * s
    assert abs(float((x - mu).std()) - s) < 0.02


def test_prior_nll_on_extracted_latents_is_finite_and_decreases():
    m = build(stage=2)
    d = Gaussians8()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    x = d.split("val")[:512]
    before = float(m.validation_loss(x).mean())
    for step in range(60):
        loss = m(d.train_batch(step, 256), torch.Generator().manual_seed(step)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = float(m.validation_loss(x).mean())
    assert math.isfinite(before) and after < before - 0.05
    assert all(p.grad is None for p in m.encoder.parameters())  # stage 2 leaves the encoder alone


def test_sampling_is_seeded_takes_given_latents_and_counts_calls():
    m = build()
    m.eval()
    cfg = m.sample_options(steps=11)  # a budget of 11 calls: 6 Heun steps
    a = m.sample(10, cfg, torch.Generator().manual_seed(0))
    b = m.sample(10, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a.samples, b.samples) and a.samples.shape == (10, 2) and a.nfe == 2 * 6 - 1
    z = torch.full((10, 1), 3)
    c = m.sample(10, cfg, torch.Generator().manual_seed(0), latents=z)
    assert torch.equal(c.info["latents"], z) and c.info["prior_calls"] == 0
    g = m.sample(10, m.sample_options(steps=22, guidance=1.0), torch.Generator().manual_seed(0), latents=z)
    assert g.nfe == 2 * (2 * 6 - 1) and not torch.allclose(g.samples, c.samples)
    e = build("edm")
    assert e.sample(4, e.sample_options(steps=11), torch.Generator().manual_seed(0)).nfe == 11


def test_gradients_reach_the_encoder_in_stage_one_and_bad_settings_are_refused():
    m = build(stage=1, latent_drop=0.0)
    m(Gaussians8().train_batch(0, 64), torch.Generator().manual_seed(0)).loss.backward()
    assert float(sum(p.grad.abs().sum() for p in m.encoder.parameters())) > 0
    with pytest.raises(ConfigError, match="continuous"):
        registry.method_class("edm")(registry.method_class("edm").Options(), PRIOR, 8, 16)
    with pytest.raises(ConfigError, match="sampler"):
        build(sampler="rk4")


def test_continuous_digits_round_trip_to_the_17_levels():
    from catdiff.data.continuous import ContinuousDigits
    from catdiff.data.images import Digits

    c, d = ContinuousDigits(), Digits()
    x = c.split("test")
    assert x.dtype == torch.float32 and float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(c.to_tokens(x), d.split("test")) and c.vocab_size == 0 and c.kind == "vector"
    assert torch.equal(c.to_tokens(x + 0.05), d.split("test"))  # rounding to the nearest level
    assert torch.equal(c.train_batch(2, 8), d.train_batch(2, 8).float() / 8 - 1)


def build_embed(**kw):
    cls = registry.method_class("discodiff-embed")
    torch.manual_seed(0)
    return cls(cls.Options(embed_dim=8, m=2, k=3, enc_layers=1, **kw), PRIOR, 5, 6)


@pytest.mark.parametrize("latent_cond,enc_pool", [("cross", "cls"), ("adaln", "mean")])
def test_discodiff_embed_bound_is_conditional_vlb_plus_prior_nll(latent_cond, enc_pool):
    m = build_embed(latent_cond=latent_cond, enc_pool=enc_pool)
    m.eval()
    x = torch.randint(0, 5, (7, 6), generator=torch.Generator().manual_seed(0))
    z = m.extract(x)
    with m.conditioned_on(m.latent_emb.of_indices(z)):
        cond = super(type(m), m).nelbo(x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(m.nelbo(x, torch.Generator().manual_seed(1)), cond + m.prior.nelbo(z))
    # the latent changes the denoiser's output (the conditioning is wired through)
    zt = torch.randn(7, 6, 8)
    t = torch.full((7,), 0.5)
    for p in m.net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    with m.conditioned_on(m.latent_emb.of_indices(z)):
        a = m.denoise(zt, t)[1]
    with m.conditioned_on(m.latent_emb.of_indices((z + 1) % 3)):
        b = m.denoise(zt, t)[1]
    assert not torch.allclose(a, b)


def test_discodiff_embed_stages_and_sampling_with_given_latents():
    m = build_embed(stage=1, latent_drop=0.0)
    for p in m.net.parameters():  # leave the adaLN-Zero init, through which the latent enters
        p.data.add_(0.05 * torch.randn_like(p))
    m.train()
    x = torch.randint(0, 5, (16, 6), generator=torch.Generator().manual_seed(0))
    m(x, torch.Generator().manual_seed(0)).loss.backward()
    assert float(sum(p.grad.abs().sum() for p in m.encoder.parameters() if p.grad is not None)) > 0
    m2 = build_embed(stage=2)
    m2.train()
    m2(x, torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is None for p in m2.net.parameters()) and all(p.grad is None for p in m2.encoder.parameters())
    m2.eval()
    z = torch.tensor([[0, 1], [2, 2]])
    a = m2.sample(2, m2.sample_options(steps=3), torch.Generator().manual_seed(4), latents=z)
    b = m2.sample(2, m2.sample_options(steps=3), torch.Generator().manual_seed(4), latents=z)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.info["latents"], z)


def test_latent_embedding_slots_and_the_vit_encoder():
    from catdiff.models.latents import LatentEmbedding, ViTEncoder

    emb = LatentEmbedding(3, 4, 5, tokens=True)
    z = torch.tensor([[0, 3, 1], [2, 2, 0]])
    onehot = torch.nn.functional.one_hot(z, 4).float()
    torch.testing.assert_close(emb(onehot), emb.of_indices(z))
    assert emb(onehot).shape == (2, 3, 5) and torch.equal(emb(onehot, torch.tensor([True, False]))[0], emb.null)
    summed = LatentEmbedding(3, 4, 5)
    summed.table.data.copy_(emb.table.data)
    torch.testing.assert_close(summed.of_indices(z), emb.of_indices(z).sum(1))
    # ViT: patches of a 4x4 image in raster order of 2x2 blocks; every pixel reaches every class token
    vit = ViTEncoder(16, m=2, k=3, patch=2, d_model=32, n_layers=1, n_heads=2)
    y = torch.arange(16.0).view(1, 16).requires_grad_(True)
    seen = []
    vit.embed.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    out = vit(y)
    assert out.shape == (1, 2, 3)
    assert seen[0][0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]  # second patch: rows 0-1, columns 2-3
    out[0, 1].sum().backward()
    assert bool((y.grad != 0).all())
    with pytest.raises(ValueError, match="square images"):
        ViTEncoder(15, 1, 2)


def test_discodiff_with_a_vit_encoder_trains_end_to_end():
    cls = registry.method_class("discodiff")
    torch.manual_seed(0)
    m = cls(cls.Options(sigma_data=0.5, width=64, m=2, k=4, encoder="vit", enc_width=32, enc_layers=1,
                        latent_drop=0.0), PRIOR, 0, 64)
    m(torch.randn(8, 64), torch.Generator().manual_seed(0)).loss.backward()
    assert float(sum(p.grad.abs().sum() for p in m.encoder.parameters() if p.grad is not None)) > 0
    assert m.extract(torch.randn(5, 64)).shape == (5, 2)
    with pytest.raises(ConfigError, match="square images"):
        cls(cls.Options(encoder="vit"), PRIOR, 0, 2)


def test_patchify_round_trips_in_raster_order():
    from catdiff.models.latents import patchify, unpatchify

    y = torch.arange(32.0).view(2, 16)  # two 4x4 images
    tiles = patchify(y, 4, 2)
    assert tiles.shape == (2, 4, 4)
    assert tiles[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0] and tiles[0, 2].tolist() == [8.0, 9.0, 12.0, 13.0]
    assert torch.equal(unpatchify(tiles, 4, 2), y)


def test_patch_denoiser_is_per_patch_at_init_and_mixes_patches_after_a_step():
    """adaLN-Zero blocks are the identity at init, so each output patch depends on its own input
    patch only; one optimizer step on a loss that needs other patches opens attention."""
    from catdiff.models.latents import PatchDenoiser

    torch.manual_seed(0)
    net = PatchDenoiser(16, patch=2, d_model=32, n_layers=2, n_heads=2)
    x, c = torch.randn(3, 16), torch.zeros(3)

    def cross_patch_grad():
        xg = x.clone().requires_grad_(True)
        net(xg, c)[:, 0].sum().backward()  # pixel 0 lives in patch 0 (pixels 0, 1, 4, 5)
        own = torch.zeros(16, dtype=torch.bool)
        own[[0, 1, 4, 5]] = True
        return float(xg.grad[:, ~own].abs().sum()), float(xg.grad[:, own].abs().sum())

    other, own = cross_patch_grad()
    assert other == 0.0 and own > 0
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.zero_grad()
    (net(x, c)[:, 0] - x[:, -1]).pow(2).mean().backward()  # pixel 0 must learn the last pixel
    opt.step()
    other, _ = cross_patch_grad()
    assert other > 0


@pytest.mark.parametrize("latent_cond", ["cross", "adaln"])
def test_discodiff_with_a_vit_denoiser_reads_its_latents(latent_cond):
    """Both latent routes into the patch transformer: the denoiser's output depends on z once the
    zero-initialised conditioning has taken an optimizer step, and the encoder gets gradients."""
    cls = registry.method_class("discodiff")
    torch.manual_seed(0)
    o = cls.Options(sigma_data=0.5, denoiser="vit", width=32, layers=1, m=2, k=3, embed_dim=8, latent_drop=0.0,
                    latent_cond=latent_cond)
    m = cls(o, PRIOR, 0, 16)
    assert (m.net.net.cfg.context_dim > 0) == (latent_cond == "cross")
    y = torch.randn(16, 16)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for step in range(2):
        opt.zero_grad()
        m(y, torch.Generator().manual_seed(step)).loss.backward()
        opt.step()
    assert float(sum(p.grad.abs().sum() for p in m.encoder.parameters() if p.grad is not None)) > 0
    x, sigma = torch.randn(2, 16), torch.full((2,), 1.0)
    with torch.no_grad():
        a = m.denoise(x, sigma, m.latent_emb.of_indices(torch.tensor([[0, 0], [0, 0]])))
        b = m.denoise(x, sigma, m.latent_emb.of_indices(torch.tensor([[1, 2], [2, 1]])))
    assert float((a - b).abs().max()) > 1e-4


def test_vit_denoiser_settings_are_checked():
    edm_cls, dd = registry.method_class("edm"), registry.method_class("discodiff")
    assert dd.Options(denoiser="vit").latent_cond == "cross" and dd.Options().latent_cond == "adaln"
    with pytest.raises(ConfigError, match="square images"):
        edm_cls(edm_cls.Options(denoiser="vit"), PRIOR, 0, 15)
    with pytest.raises(ConfigError, match="denoiser"):
        edm_cls.Options(denoiser="unet")
    with pytest.raises(ConfigError, match="needs method.denoiser=vit"):
        dd.Options(latent_cond="cross")
