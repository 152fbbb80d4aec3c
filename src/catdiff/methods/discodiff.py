"""EDM and DisCo-Diff on continuous vectors (Karras et al. 2022; Xu et al. 2024, METHODS.md §4).

EDM: a preconditioned denoiser D(x; σ) = c_skip x + c_out F(c_in x, c_noise) trained with
λ(σ)‖D(y + σn; σ) - y‖², ln σ ~ N(P_mean, P_std²), sampled by the Heun ODE on the Karras grid.
DisCo-Diff adds m categorical latents z (k classes) from an encoder E(y) (straight-through Gumbel,
τ = 1, trained end to end with the denoiser; latent dropout to a learned null for guidance) and an
autoregressive prior p(z) (catdiff's AR model) trained in stage 2 on argmax latents of the frozen
encoder. Both stages run from one `catdiff train` (train.train_stages). Wires networks, process
and sampler; knows nothing of optimisers, checkpoints or data sources.
`discodiff-embed` puts the same latents on embedding diffusion of tokens (Difformer settings).
Shapes: B batch, D data dimension, m latents, k classes, E latent embedding width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..losses import Term, denoising_mse
from ..models.factory import build_network
from ..models.latents import (
    ConditionalMLP,
    LatentEmbedding,
    MLPEncoder,
    PatchDenoiser,
    ViTEncoder,
    gumbel_softmax_st,
)
from ..processes import edm
from ..samplers import edm as edm_sampler
from ..structs import Batch, SampleOutput
from .ar import AR
from .base import Method, NoOptions, Stage
from .embedding import DifformerOptions, EmbeddingDiffusion


@dataclass
class EDMOptions:
    sigma_data: float = 0.5  # σ_d (EDM Table 1); set it to the data's std (toy: ≈ 2.13)
    p_mean: float = edm.P_MEAN
    p_std: float = edm.P_STD
    sigma_min: float = edm.SIGMA_MIN
    sigma_max: float = edm.SIGMA_MAX
    rho: float = edm.RHO
    sampler: str = "heun"  # heun | euler
    s_churn: float = 0.0  # EDM Alg. 2 stochasticity (0 = the deterministic ODE)
    denoiser: str = "mlp"  # mlp (vectors) | vit (square images: patch tokens, a DiT-style transformer)
    width: int = 256  # MLP width / transformer d_model (METHODS.md §4 toy: a 4-layer MLP)
    layers: int = 4  # MLP layers / transformer blocks
    patch: int = 2  # patch side of the ViT denoiser and of DisCo-Diff's ViT encoder

    def __post_init__(self):
        if self.sampler not in ("heun", "euler"):
            raise ConfigError(f"method.sampler must be 'heun' or 'euler', got {self.sampler!r}")
        if self.denoiser not in ("mlp", "vit"):
            raise ConfigError(f"method.denoiser must be mlp or vit, got {self.denoiser!r}")
        if not 0 < self.sigma_min < self.sigma_max or self.sigma_data <= 0:
            raise ConfigError("need 0 < sigma_min < sigma_max and sigma_data > 0")


LATENT_STAGES = (Stage("encoder + denoiser"), Stage("prior", trains=("prior",), steps_key="prior_steps"))


def prior_stage_terms(prior: AR, z: torch.Tensor, generator=None):
    """Stage 2 of DisCo-Diff: the AR prior's NLL of the frozen encoder's latents z (B, m), and
    that NLL per latent tuple (logged as prior_nll)."""
    terms, nll = prior.loss_terms(Batch(z), generator)
    return {**terms, "prior_nll": Term(nll, 0.0)}, None


class EDM(Method):
    """Preconditioned Gaussian diffusion on (B, D) vectors; no latents."""

    name = "edm"
    Options = EDMOptions
    SampleOptions = edm_sampler.Options
    has_likelihood = False

    def __init__(self, options, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        if vocab_size != 0:
            raise ConfigError(f"method {self.name!r} is for continuous data (e.g. data.name=gaussians8), "
                              f"got a token dataset with K={vocab_size}")
        self.net = self._denoiser_net(options, seq_len, *self._latent_dims(options))

    @staticmethod
    def _latent_dims(o) -> tuple[int, int]:
        """(adaLN vector width, cross-attention slot width) of the latent conditioning; EDM: none."""
        return 0, 0

    @staticmethod
    def _denoiser_net(o, dim: int, cond_dim: int, context_dim: int):
        if o.denoiser == "mlp":
            return ConditionalMLP(dim, o.width, o.layers, cond_dim)
        try:
            return PatchDenoiser(dim, o.patch, o.width, o.layers, max(1, o.width // 32), cond_dim, context_dim)
        except ValueError as e:
            raise ConfigError(f"method.denoiser=vit: {e}") from None

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; σ) = c_skip x + c_out F(c_in x, c_noise, cond) (EDM eq. 7, Table 1)."""
        c_skip, c_out, c_in, c_noise = edm.precondition(sigma.view(-1, 1), self.options.sigma_data)
        return c_skip * x + c_out * self.net(c_in * x, c_noise, cond)

    def _cond(self, y, generator, train: bool):
        return None

    def denoising_loss(self, y: torch.Tensor, generator=None, sigma: torch.Tensor | None = None,
                       train: bool = True) -> torch.Tensor:
        """(B,) λ(σ)‖D(y + σn; σ) - y‖² / D with ln σ ~ N(P_mean, P_std²) unless σ is given."""
        o = self.options
        B = y.shape[0]
        if sigma is None:
            sigma = edm.sample_sigma(B, generator, y.device, o.p_mean, o.p_std)
        n = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        d = self.denoise(y + sigma.view(-1, 1) * n, sigma, self._cond(y, generator, train))
        return denoising_mse(d, y, edm.loss_weight(sigma, o.sigma_data))

    def loss_terms(self, batch, generator=None):
        return {"denoise": Term(self.denoising_loss(batch.tokens, generator))}, None

    @torch.no_grad()
    def validation_loss(self, batch, generator=None) -> torch.Tensor:
        return self.denoising_loss(Batch.of(batch).tokens, generator, train=False)

    def sigmas(self, steps: int, kind: str | None = None) -> torch.Tensor:
        """The Karras σ grid for a budget of `steps` network calls with sampler `kind`."""
        o = self.options
        return edm_sampler.grid(steps, kind or o.sampler, o.sigma_min, o.sigma_max, o.rho, device=self.device)

    def ode_denoiser(self, cond: torch.Tensor | None, guidance: float = 0.0):
        """D(x; σ) for the sampler; with guidance w: D_c + w (D_c - D_∅) (DisCo-Diff §3.3)."""
        null = getattr(self, "null_cond", None)

        def D(x, sigma):
            d = self.denoise(x, sigma, cond)
            if guidance > 0 and null is not None:
                d = d + guidance * (d - self.denoise(x, sigma, null(x.shape[0])))
            return d

        return D

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, latents: torch.Tensor | None = None, condition=None) -> SampleOutput:
        """n vectors within a budget of cfg.steps network calls (Heun: (steps + 1) // 2 Karras steps,
        2N - 1 calls; guidance: two calls per evaluation). A condition fixes
        coordinates (inpainting): they are re-imposed as value + σ·noise before every call
        (replacement). Replacement is approximate: with the exact denoiser of a correlated Gaussian
        it moves the free coordinates only about half-way to their conditional mean
        (tests/unit/processes/test_edm.py); exact when free and fixed coordinates are independent."""
        cond, info = self.latent_condition(n, cfg, generator, latents)
        x = self.options.sigma_max * torch.randn((n, self.seq_len), generator=generator, device=self.device)
        o = self.options
        fixed = self._condition(condition, n)
        anchor = None
        if fixed is not None:
            def anchor(x_, sigma):
                noise = torch.randn(x_.shape, generator=generator, device=x_.device, dtype=x_.dtype)
                return torch.where(fixed.fixed, fixed.values.to(x_.dtype) + sigma * noise, x_)
        kind = o.sampler if cfg.sampler == "auto" else cfg.sampler
        guidance = getattr(cfg, "guidance", 0.0) if cond is not None else 0.0
        budget = max(1, cfg.steps // 2) if guidance > 0 else cfg.steps
        r = edm_sampler.sample(self.ode_denoiser(cond, guidance), x, self.sigmas(budget, kind).to(x.dtype), kind=kind,
                               generator=generator, s_churn=o.s_churn, anchor=anchor)
        calls = r.nfe * (2 if guidance > 0 else 1)
        return SampleOutput(samples=r.state if fixed is None else fixed.impose(r.state), nfe=calls, info=info)

    def latent_condition(self, n, cfg, generator, latents):
        """(conditioning vector or None, info) for sampling n points; EDM has no latents."""
        return None, {}




@dataclass
class DisCoDiffOptions(EDMOptions):
    m: int = 1  # number of discrete latents (toy: 1; images 10-30)
    k: int = 8  # classes per latent (toy: 8; images 50-100)
    tau: float = 1.0  # Gumbel-softmax temperature in stage 1
    latent_drop: float = 0.1  # P(latent replaced by the learned null) in stage 1 (enables guidance)
    embed_dim: int = 64  # E
    encoder: str = "mlp"  # mlp (vectors, toy: 3 layers) | vit (square images: patches + m class tokens)
    enc_width: int = 128  # MLP width / ViT d_model
    enc_layers: int = 3  # MLP layers / ViT blocks
    # how the denoiser reads the latents: adaln (their embeddings summed into the noise-level
    # conditioning; the MLP's only way) | cross (every block cross-attends to the m latent slots;
    # DisCo-Diff's, denoiser=vit). Empty: cross for the ViT denoiser, adaln for the MLP.
    latent_cond: str = ""
    stage: int = 0  # 0: both stages from one command; 1: encoder + denoiser; 2: the AR prior (Method.stages)
    prior_steps: int = 1000  # optimizer steps of stage 2 when stage = 0

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in (0, 1, 2) or min(self.m, self.k, self.prior_steps) < 1:
            raise ConfigError("method.stage must be 0, 1 or 2; m, k and prior_steps >= 1")
        if self.encoder not in ("mlp", "vit"):
            raise ConfigError(f"method.encoder must be mlp or vit, got {self.encoder!r}")
        self.latent_cond = self.latent_cond or ("cross" if self.denoiser == "vit" else "adaln")
        if self.latent_cond not in ("cross", "adaln"):
            raise ConfigError(f"method.latent_cond must be cross or adaln, got {self.latent_cond!r}")
        if self.latent_cond == "cross" and self.denoiser != "vit":
            raise ConfigError("method.latent_cond=cross needs method.denoiser=vit (an MLP has no tokens to attend)")


class DisCoDiff(EDM):
    name = "discodiff"
    Options = DisCoDiffOptions
    SampleOptions = edm_sampler.LatentOptions

    @classmethod
    def stages(cls, options):
        return LATENT_STAGES

    def __init__(self, options, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        o = options
        if o.encoder == "vit":
            try:
                self.encoder = ViTEncoder(seq_len, o.m, o.k, o.patch, o.enc_width, o.enc_layers,
                                          max(1, o.enc_width // 32))
            except ValueError as e:
                raise ConfigError(f"method.encoder=vit: {e}") from None
        else:
            self.encoder = MLPEncoder(seq_len, o.m, o.k, o.enc_width, o.enc_layers)
        self.latent_emb = LatentEmbedding(o.m, o.k, o.embed_dim, tokens=o.latent_cond == "cross")
        prior_cfg = dataclasses.replace(model_cfg, local_mix=0)
        self.prior = AR(NoOptions(), prior_cfg, o.k, o.m)
        self.freeze_for_stage()

    @staticmethod
    def _latent_dims(o) -> tuple[int, int]:
        return (0, o.embed_dim) if o.latent_cond == "cross" else (o.embed_dim, 0)

    @torch.no_grad()
    def extract(self, y: torch.Tensor) -> torch.Tensor:
        """(B, m) latent indices of the frozen encoder: argmax of its logits (the τ → 0 limit)."""
        return self.encoder(y).argmax(-1)

    def null_cond(self, n: int) -> torch.Tensor:
        return self.latent_emb.null_batch(n)

    def _cond(self, y, generator, train: bool):
        o = self.options
        logits = self.encoder(y)  # (B, m, k)
        if train:
            z = gumbel_softmax_st(logits, o.tau, generator)  # one-hot forward, soft gradient
            drop = torch.rand(y.shape[0], generator=generator, device=y.device) < o.latent_drop
            return self.latent_emb(z, drop if o.latent_drop > 0 else None)
        return self.latent_emb.of_indices(logits.argmax(-1))

    def loss_terms(self, batch, generator=None):
        if self.options.stage == 2:  # AR prior on the latents of the frozen encoder
            return prior_stage_terms(self.prior, self.extract(batch.tokens), generator)
        return super().loss_terms(batch, generator)

    @torch.no_grad()
    def validation_loss(self, batch, generator=None) -> torch.Tensor:
        if self.options.stage == 2:
            return self.prior.nelbo(self.extract(Batch.of(batch).tokens))
        return super().validation_loss(batch, generator)

    def latent_condition(self, n, cfg, generator, latents):
        prior_calls = 0
        if latents is None:
            latents = self.prior.sample(n, cfg, generator).samples  # (n, m); cfg.temperature applies
            prior_calls = self.options.m
        return self.latent_emb.of_indices(latents), {"latents": latents, "prior_calls": prior_calls}




# ---- DisCo-Diff latents on embedding diffusion of tokens -------------------------------------

@dataclass
class DisCoEmbedOptions(DifformerOptions):
    """Difformer's defaults (its latent-free twin) + DisCo-Diff's latents over the token sequence."""

    m: int = 4  # latents
    k: int = 16  # classes per latent
    tau: float = 1.0
    latent_drop: float = 0.1
    latent_dim: int = 64  # width of the latent embeddings the denoiser is conditioned on
    latent_cond: str = "cross"  # cross: every block cross-attends to the m latent slots | adaln: their sum
    enc_layers: int = 2  # transformer encoder over the clean tokens
    enc_pool: str = "cls"  # cls: m extra class tokens read out k-way | mean: mean-pooled to m × k logits
    stage: int = 0  # 0: both stages from one command; 1: encoder + denoiser; 2: AR prior
    prior_steps: int = 1000

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in (0, 1, 2) or min(self.m, self.k, self.prior_steps, self.enc_layers) < 1:
            raise ConfigError("method.stage must be 0, 1 or 2; m, k, prior_steps and enc_layers >= 1")
        if self.latent_cond not in ("cross", "adaln") or self.enc_pool not in ("cls", "mean"):
            raise ConfigError("method.latent_cond must be cross or adaln; method.enc_pool cls or mean")


class DisCoDiffEmbed(EmbeddingDiffusion):
    """Embedding diffusion (Difformer settings) whose denoiser is also conditioned on m discrete
    latents of the clean sequence (straight-through Gumbel encoder, trained end to end; AR prior in
    stage 2). Bound: -log p(x) ≤ -log p(x | z(x)) - log p(z(x)) with z(x) the encoder's argmax,
    i.e. the conditional embedding-diffusion VLB plus the prior's exact NLL of the latents."""

    name = "discodiff-embed"
    Options = DisCoEmbedOptions

    @classmethod
    def stages(cls, options):
        return LATENT_STAGES

    def __init__(self, options, model_cfg, vocab_size: int, seq_len: int):
        cross = options.latent_cond == "cross"
        self.cond_dim, self.context_dim = (0, options.latent_dim) if cross else (options.latent_dim, 0)
        super().__init__(options, model_cfg, vocab_size, seq_len)
        o = options
        enc_cfg = dataclasses.replace(model_cfg, n_layers=o.enc_layers, local_mix=0)
        if o.enc_pool == "cls":  # ids K .. K+m-1 are the class tokens, appended after the sequence
            self.encoder = build_network(enc_cfg, vocab_in=vocab_size + o.m, vocab_out=o.k,
                                         seq_len=seq_len + o.m, causal=False, time_cond=False)
        else:
            self.encoder = build_network(enc_cfg, vocab_in=vocab_size, vocab_out=o.m * o.k,
                                                  seq_len=seq_len, causal=False, time_cond=False)
        self.latent_emb = LatentEmbedding(o.m, o.k, o.latent_dim, tokens=cross)
        self.prior = AR(NoOptions(), dataclasses.replace(model_cfg, local_mix=0), o.k, o.m)
        self.freeze_for_stage()

    def latent_logits(self, x: torch.Tensor) -> torch.Tensor:
        o = self.options
        if o.enc_pool == "cls":
            cls = torch.arange(self.vocab_size, self.vocab_size + o.m, device=x.device).expand(x.shape[0], -1)
            return self.encoder(torch.cat([x, cls], 1))[:, -o.m:]  # (B, m, k)
        return self.encoder(x).mean(1).view(x.shape[0], o.m, o.k)  # (B, m, k)

    @torch.no_grad()
    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """(B, m) argmax latents of the encoder."""
        return self.latent_logits(x).argmax(-1)

    def loss_terms(self, batch, generator=None):
        o, x = self.options, batch.tokens
        if o.stage == 2:
            return prior_stage_terms(self.prior, self.extract(x), generator)
        z = gumbel_softmax_st(self.latent_logits(x), o.tau, generator)
        drop = torch.rand(x.shape[0], generator=generator, device=x.device) < o.latent_drop
        with self.conditioned_on(self.latent_emb(z, drop if o.latent_drop > 0 else None)):
            return super().loss_terms(batch, generator)

    @torch.no_grad()
    def nelbo(self, batch, generator=None) -> torch.Tensor:
        batch = Batch.of(batch)
        z = self.extract(batch.tokens)
        with self.conditioned_on(self.latent_emb.of_indices(z)):
            cond_bound = super().nelbo(batch, generator)
        return cond_bound + self.prior.nelbo(z)

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, latents: torch.Tensor | None = None, condition=None) -> SampleOutput:
        """The latents come from the unconditional prior: a condition reaches only the diffusion."""
        z = latents if latents is not None else self.prior.sample(n, cfg, generator).samples
        with self.conditioned_on(self.latent_emb.of_indices(z)):
            out = super().sample(n, cfg, generator, condition=condition)
        out.info["latents"] = z
        return out

    @torch.no_grad()
    def ce_curve(self, x, ts, generator=None):
        with self.conditioned_on(self.latent_emb.of_indices(self.extract(x))):
            return super().ce_curve(x, ts, generator)


