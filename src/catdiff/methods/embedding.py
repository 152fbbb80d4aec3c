"""Gaussian diffusion in a learned embedding space: embed-naive, Diffusion-LM, CDCD, Difformer and
CATDM as one method with switchable loss terms (METHODS.md §1.3, §2, §3). It wires the embedding
table, the Gaussian process, the transformer and the samplers; it knows nothing of optimisers,
checkpoints or data sources.

Every variant has the same parts: clean embeddings z_0 = c·Ê[x] (models/encoders.py), noising
z_t = a_t z_0 + s_t ε (processes/gaussian.py), a transformer on z_t that predicts either ẑ_0
directly ("x0") or K logits whose softmax mixes the table, ẑ_0 = Σ_k p_θ(k|z_t) c·Ê_k ("logits":
CDCD's score interpolation), and readout logits ẑ_0 Êᵀ for x0 models. The variants differ only in
their defaults (see the Options subclasses at the bottom) and every part stays switchable for
ablations. Loss terms (each a per-token mean, weighted by its w_*):

  mse       ‖ẑ_0 - z_0‖² / d                                (Diffusion-LM L_simple; CATDM L_DM)
  ce        -log p_θ(x | z_t) with label smoothing           (CDCD's loss; Difformer's anchor loss
                                                              when p_θ is the readout of ẑ_0)
  rounding  -log softmax(z_0 Êᵀ)[x] on the *true* z_0         (Diffusion-LM rounding term)
  prior     ‖a_{t_max} z_0‖² / d                               (Diffusion-LM's L_T term, code tT_loss)
  recon     -log p_θ(x | z_{t_min}) on a sub-batch            (CATDM L_0; the VLB's decoder term)
  cm        KL(sg p_θ(·|z_s, s) ‖ p_θ(·|z_t, t)), s ~ U(t_min, t), shared ε   (CATDM L_CM [our choice])

`nelbo` is the same variational bound for every variant (VDM, Kingma et al. 2021, eqs. 11-17):
-log p_θ(x | z_{t_min}) + ∫ ½(-SNR'(t)) ‖z_0 - ẑ_0(z_t)‖² dt + KL(q(z_{t_max}|x) ‖ p(z_{t_max})),
the decoder being the network's categorical prediction at t_min and, by default, ẑ_0 the mean
embedding under that prediction, Σ_k p_θ(k|z_t) c·Ê_k [our choices: any function of z_t gives a
valid bound; this one is exact at high SNR once p_θ is sure, where a raw regression output pays
-SNR'(t)·‖err‖²]. t_min sits at log-SNR `log_snr_max`. Every method so reports bits on one
scale with MDLM and AR.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .. import losses
from ..errors import ConfigError
from ..losses import Term
from ..models.encoders import TokenEmbedding
from ..models.factory import build_network
from ..processes import gaussian
from ..samplers import draw_categorical
from ..samplers import gaussian as gaussian_sampler
from ..schedules import GaussianSchedule, sample_times
from ..structs import Batch, SampleOutput
from .base import Method


@dataclass
class EmbeddingOptions:
    """All switches of embedding diffusion; the registered variants change only the defaults."""

    # embeddings (models/encoders.py)
    embed_dim: int = 64  # d
    scale: bool = True  # z_0 = √d·Ê[x] (Difformer; CDCD's norm-√d embeddings)
    normalize: bool = False  # L2-normalised rows (CDCD)
    frozen: bool = False  # keep the random table fixed (no end-to-end training)
    in_norm: str = "after"  # LayerNorm "after" the input projection (Difformer), "before" it, or "none"
    # process (schedules.GaussianSchedule)
    schedule: str = "cosine"  # cosine | linear | sqrt | ve
    form: str = "vp"  # vp | ve
    shift: float = 1.0  # log-SNR shift 2·log(shift) (CATDM's shifted cosine)
    rescale: float = 1.0  # Difformer's F at training
    rescale_decode: float | None = None  # F at sampling (None = as in training)
    rescale_form: str = "noise"  # noise: z = a z0 + F s ε (Difformer code) | vp: ᾱ/(F² - (F²-1)ᾱ)
    sigma_min: float = 1.0  # ve only
    sigma_max: float = 300.0
    t_min: float | None = None  # None = the schedule's own range
    t_max: float | None = None
    log_snr_max: float | None = 5.0  # raises t_min to λ(t) = 5 (schedules.GaussianSchedule) [our choice]
    # the bound's ẑ_0: "posterior" Σ_k p_θ(k|z_t)·c·Ê_k (the model's categorical belief) or "net" (raw ẑ_0)
    bound_x0: str = "posterior"
    # network output: "x0" (ẑ_0 directly) or "logits" (ẑ_0 = softmax(logits)·table, CDCD)
    param: str = "x0"
    self_cond: float = 0.0  # probability of self-conditioning in training (Chen et al. 2022)
    drop_prob: float = 0.0  # random dropping: z_0 → learned [DROP] vector before noising (CATDM)
    # loss weights (module docstring)
    w_mse: float = 1.0
    # per-time weight of the mse term: "none", or "min_snr" = min(SNR(t), mse_gamma) (Hang et al.
    # 2023, min-SNR-γ for x0 targets), which stops high-noise times from pulling z_0 to the centroid
    mse_weight: str = "none"
    mse_gamma: float = 5.0
    w_ce: float = 0.0
    w_rounding: float = 0.0
    w_prior: float = 0.0
    w_recon: float = 0.0
    w_cm: float = 0.0
    label_smoothing: float = 0.0
    recon_frac: float = 0.25  # share of the batch that also pays the recon term (one extra call)
    antithetic: bool = True
    # sampling defaults (SampleConfig.sampler / clamp / early_stop override them)
    sampler: str = "ddpm"  # ddpm | ddim | euler | heun
    clamp: bool = False
    early_stop: int = 0

    def __post_init__(self):
        if self.embed_dim < 1:
            raise ConfigError(f"method.embed_dim must be positive, got {self.embed_dim}")
        if self.param not in ("x0", "logits"):
            raise ConfigError(f"method.param must be 'x0' or 'logits', got {self.param!r}")
        if self.mse_weight not in ("none", "min_snr") or self.mse_gamma <= 0:
            raise ConfigError(f"method.mse_weight must be 'none' or 'min_snr' (mse_gamma > 0), got {self.mse_weight!r}")
        if self.in_norm not in ("after", "before", "none"):
            raise ConfigError(f"method.in_norm must be 'after', 'before' or 'none', got {self.in_norm!r}")
        if self.bound_x0 not in ("posterior", "net"):
            raise ConfigError(f"method.bound_x0 must be 'posterior' or 'net', got {self.bound_x0!r}")
        if self.sampler not in gaussian_sampler.KINDS:
            raise ConfigError(f"method.sampler {self.sampler!r} unknown; choose one of {tuple(gaussian_sampler.KINDS)}")
        for k in ("self_cond", "drop_prob", "label_smoothing"):
            if not 0.0 <= getattr(self, k) < 1.0:
                raise ConfigError(f"method.{k} must be in [0, 1), got {getattr(self, k)}")
        if not 0.0 < self.recon_frac <= 1.0:
            raise ConfigError(f"method.recon_frac must be in (0, 1], got {self.recon_frac}")
        if any(getattr(self, k) < 0 for k in ("w_mse", "w_ce", "w_rounding", "w_prior", "w_recon", "w_cm")):
            raise ConfigError("loss weights method.w_* must be >= 0")
        self.train_schedule()  # raises ConfigError naming the bad schedule setting
        self.decode_schedule()

    def train_schedule(self) -> GaussianSchedule:
        return GaussianSchedule(self.schedule, self.form, self.shift, self.rescale, self.rescale_form,
                                self.sigma_min, self.sigma_max, self.t_min, self.t_max, self.log_snr_max)

    def decode_schedule(self) -> GaussianSchedule:
        f = self.rescale if self.rescale_decode is None else self.rescale_decode
        return GaussianSchedule(self.schedule, self.form, self.shift, f, self.rescale_form,
                                self.sigma_min, self.sigma_max, self.t_min, self.t_max, self.log_snr_max)


def effective_rank(m: torch.Tensor) -> float:
    """exp(entropy of the normalised singular values) of the centred rows (Roy & Vetterli 2007)."""
    sv = torch.linalg.svdvals((m - m.mean(0)).double())
    p = sv / sv.sum().clamp_min(1e-300)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


class EmbeddingDiffusion(Method):
    """Base of the five registered variants; behaviour is set by the options alone."""

    name = "embedding"
    Options = EmbeddingOptions
    SampleOptions = gaussian_sampler.Options
    cond_dim = 0  # width of an extra per-sequence conditioning vector (DisCo-Diff latents); 0 = none
    context_dim = 0  # width of conditioning slots the network cross-attends to (DisCo-Diff latents); 0 = none

    def __init__(self, options: EmbeddingOptions, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        o = options
        if model_cfg.tie_weights:
            raise ConfigError("model.tie_weights does not apply to embedding diffusion (the readout is the "
                              "embedding table already); set it to false")
        self.schedule = o.train_schedule()
        self.decode_sched = o.decode_schedule()
        self.emb = TokenEmbedding(vocab_size, o.embed_dim, scale=o.scale, normalize=o.normalize, frozen=o.frozen)
        if o.drop_prob > 0:
            self.drop_vec = nn.Parameter(torch.zeros(o.embed_dim))
        d_in = o.embed_dim * (2 if o.self_cond > 0 else 1)
        out = o.embed_dim if o.param == "x0" else vocab_size
        self.net = build_network(model_cfg, vocab_in=1, vocab_out=out, seq_len=seq_len, causal=False,
                                          time_cond=True, cond_dim=self.cond_dim, context_dim=self.context_dim)
        self._cond: torch.Tensor | None = None  # set by `conditioned_on`
        D = self.net.cfg.d_model
        self.in_proj = nn.Linear(d_in, D)
        self.in_norm = nn.LayerNorm(D if o.in_norm == "after" else d_in) if o.in_norm != "none" else nn.Identity()

    # ---- the denoiser ---------------------------------------------------------------------
    @contextmanager
    def conditioned_on(self, cond: torch.Tensor | None):
        """Every denoiser call inside the block gets `cond` — the (B, cond_dim) vector or the
        (B, M, context_dim) slots of a conditioned subclass — without threading it through the loss
        terms and samplers."""
        prev, self._cond = self._cond, cond
        try:
            yield
        finally:
            self._cond = prev

    def denoise(self, z_t: torch.Tensor, t: torch.Tensor, x0_prev: torch.Tensor | None = None,
                schedule: GaussianSchedule | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t (B, L, d), t (B,) → (ẑ_0 (B, L, d), logits (B, L, K)).

        The input is scaled by c_in = 1/sqrt(a_t² + s_t²) (EDM's c_in for unit-variance data; 1 in
        the VP form) [our choice], so VE and rescaled processes reach the network at unit scale."""
        sched = schedule or self.schedule
        a, s = sched.coefficients(t.reshape(-1, 1, 1).to(z_t.dtype))
        h = z_t * torch.rsqrt(a * a + s * s)
        if self.options.self_cond > 0:
            h = torch.cat([h, torch.zeros_like(z_t) if x0_prev is None else x0_prev], -1)  # (B, L, 2d)
        h = self.in_norm(self.in_proj(h)) if self.options.in_norm == "after" else self.in_proj(self.in_norm(h))
        if self.context_dim:
            out = self.net(None, t, inputs_embeds=h, context=self._cond)  # (B, L, d or K)
        else:
            out = self.net(None, t, inputs_embeds=h, cond=self._cond)
        if self.options.param == "x0":
            return out, self.emb.readout(out)
        return torch.softmax(out.float(), -1) @ self.emb.table(), out  # score interpolation (CDCD §3.2)

    def _denoise_sc(self, z_t, t, generator, enabled: bool):
        """Self-conditioning in training: with probability p (one coin per batch, as in Chen et al.'s
        code) a first no-grad pass provides ẑ_0 as the extra input."""
        prev = None
        p = self.options.self_cond
        if enabled and p > 0 and float(torch.rand((), generator=generator, device=z_t.device)) < p:
            with torch.no_grad():
                prev = self.denoise(z_t, t)[0].detach()
        return self.denoise(z_t, t, prev)

    # ---- training -------------------------------------------------------------------------
    def _times(self, B: int, generator, device) -> torch.Tensor:
        lo, hi = self.schedule.t_range
        u = sample_times(B, generator, device, 0.0, self.options.antithetic)  # (B,) in [0, 1)
        return lo + (hi - lo) * u

    def loss_terms(self, batch, generator=None):
        """The switchable terms of the module docstring (losses.py), each over the target positions."""
        o, x, target = self.options, batch.tokens, batch.target
        B, dev = x.shape[0], x.device
        z0 = self.emb(x)  # (B, L, d): the regression target (gradients reach the table)
        z_in = z0
        if o.drop_prob > 0:  # CATDM random dropping (METHODS.md §3 [our choice])
            drop = torch.rand(x.shape, generator=generator, device=dev) < o.drop_prob  # (B, L)
            z_in = torch.where((drop & batch.target_mask()).unsqueeze(-1), self.drop_vec.to(z0.dtype), z0)
        t = self._times(B, generator, dev)
        a, s = self.schedule.coefficients(t.view(B, 1, 1))
        eps = torch.randn(z0.shape, generator=generator, device=dev, dtype=z0.dtype)
        z_t = self._clean_source(gaussian.q_sample(z_in, a, s, eps), z0, target)
        x0_hat, logits = self._denoise_sc(z_t, t, generator, enabled=True)
        terms = {}
        if o.w_mse:
            mse = losses.x0_mse(x0_hat, z0)  # (B, L)
            if o.mse_weight == "min_snr":
                mse = mse * losses.min_snr_weight(self.schedule.log_snr(t), o.mse_gamma)[:, None]
            terms["mse"] = Term(mse, o.w_mse, target)
        if o.w_ce:
            terms["ce"] = Term(losses.cross_entropy(logits, x, o.label_smoothing), o.w_ce, target)
        if o.w_rounding:  # on every position's true embedding, as Diffusion-LM's code does
            terms["rounding"] = Term(losses.cross_entropy(self.emb.readout(z0), x), o.w_rounding)
        if o.w_prior:
            a1, _ = self.schedule.coefficients(torch.tensor(self.schedule.t_range[1], device=dev))
            terms["prior"] = Term(losses.prior_energy(a1, z0), o.w_prior)
        if o.w_recon:  # the decoder term at t_min on the first recon_frac of the batch (one extra call)
            n = max(1, int(round(o.recon_frac * B)))
            t0 = torch.full((n,), self.schedule.t_range[0], device=dev)
            a0, s0 = self.schedule.coefficients(t0.view(n, 1, 1))
            z_lo = gaussian.q_sample(z_in[:n], a0, s0, torch.randn(z0[:n].shape, generator=generator, device=dev))
            sub = None if target is None else target[:n]
            logits_lo = self.denoise(self._clean_source(z_lo, z0[:n], sub), t0)[1]
            terms["recon"] = Term(losses.cross_entropy(logits_lo, x[:n]), o.w_recon, sub)
        if o.w_cm:
            lo = self.schedule.t_range[0]
            u = torch.rand(B, generator=generator, device=dev)
            s_time = lo + (t - lo) * u  # s ~ U(t_min, t): a less noisy point on the same trajectory
            a_s, s_s = self.schedule.coefficients(s_time.view(B, 1, 1))
            with torch.no_grad():
                z_s = self._clean_source(gaussian.q_sample(z_in, a_s, s_s, eps), z0, target)
                logp_s = torch.log_softmax(self.denoise(z_s, s_time)[1].float(), -1)
            kl = losses.consistency_kl(logp_s, torch.log_softmax(logits.float(), -1))
            terms["cm"] = Term(kl, o.w_cm, target)
        return terms, None

    @staticmethod
    def _clean_source(z_t: torch.Tensor, z0: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """z_t with the positions outside the target (a seq2seq source) clean, as in sampling."""
        if target is None:
            return z_t
        return torch.where(target.unsqueeze(-1), z_t, z0.to(z_t.dtype))

    # ---- likelihood bound -------------------------------------------------------------------
    def _x0_eval(self, z_t, t):
        """ẑ_0 at evaluation: with self-conditioning, two passes (the second fed the first)."""
        x0, logits = self.denoise(z_t, t)
        if self.options.self_cond > 0:
            x0, logits = self.denoise(z_t, t, x0)
        return x0, logits

    @torch.no_grad()
    def nelbo(self, batch, generator=None) -> torch.Tensor:
        """(B,) one-sample VLB in nats (module docstring): decoder + diffusion + prior terms, over
        the target positions (seq2seq: a bound on -log p(target | source))."""
        batch = Batch.of(batch)
        x, target = batch.tokens, batch.target
        B, dev = x.shape[0], x.device
        keep = batch.target_mask().double()  # (B, L)
        lo, hi = self.schedule.t_range
        z0 = self.emb(x).float()  # (B, L, d)
        # decoder term at t_min
        t0 = torch.full((B,), lo, device=dev)
        a0, s0 = self.schedule.coefficients(t0.view(B, 1, 1))
        z_lo = gaussian.q_sample(z0, a0, s0, torch.randn(z0.shape, generator=generator, device=dev))
        z_lo = self._clean_source(z_lo, z0, target)
        logp = torch.log_softmax(self._x0_eval(z_lo, t0)[1].double(), -1)
        rec = (losses.token_nll(logp, x) * keep).sum(-1)  # (B,)
        # diffusion term: (t_max - t_min) E_t[½ w(t) ‖z0 - ẑ0‖²]
        t = self._times(B, generator, dev)
        a, s = self.schedule.coefficients(t.view(B, 1, 1))
        z_t = gaussian.q_sample(z0, a, s, torch.randn(z0.shape, generator=generator, device=dev))
        z_t = self._clean_source(z_t, z0, target)
        x0_hat, logits = self._x0_eval(z_t, t)
        if self.options.bound_x0 == "posterior":  # any function of z_t gives a valid bound
            x0_hat = torch.softmax(logits.double(), -1) @ self.emb.table().double()
        w = self.schedule.vlb_weight(t.double()).view(B, 1)
        diff = (hi - lo) * (gaussian.diffusion_term(z0.double(), x0_hat.double(), w) * keep).sum(-1)  # (B,)
        # prior term at t_max
        a1, s1 = self.schedule.coefficients(torch.tensor(hi, device=dev, dtype=torch.float64))
        prior = (gaussian.prior_kl(z0.double(), a1, s1) * keep).sum(-1)  # (B,)
        return rec + diff + prior

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n, cfg, generator=None, condition=None) -> SampleOutput:
        o = self.options
        kind = o.sampler if cfg.sampler == "auto" else cfg.sampler
        clamp = cfg.clamp if cfg.clamp is not None else o.clamp
        early = cfg.early_stop if cfg.early_stop is not None else o.early_stop
        sched = self.decode_sched
        a1, s1 = sched.coefficients(torch.tensor(sched.t_range[1], device=self.device))
        z = torch.randn((n, self.seq_len, o.embed_dim), generator=generator, device=self.device)
        z = z * gaussian.prior_variance(a1, s1).sqrt()  # z_{t_max} ~ p(z_{t_max})
        cond = self._condition(condition, n)
        r = gaussian_sampler.sample(
            lambda z_, t_, prev: self.denoise(z_, t_, prev, schedule=sched), z,
            gaussian_sampler.grid(sched, cfg.steps, kind, self.device), schedule=sched, kind=kind,
            generator=generator, self_cond=o.self_cond > 0, clamp=self.emb.clamp if clamp else None,
            early_stop=early, anchor=None if cond is None else self._anchor(cond, sched, generator))
        # decode: argmax of the last prediction (Diffusion-LM / Difformer rounding), or a draw at temperature > 0
        logits = r.info["logits"]
        x = logits.argmax(-1) if cfg.temperature == 1.0 and cfg.top_k is None and cfg.top_p is None \
            else draw_categorical(torch.log_softmax(logits.float(), -1), generator, cfg)
        return SampleOutput(samples=x if cond is None else cond.impose(x), nfe=r.nfe)

    def _anchor(self, cond, sched: GaussianSchedule, generator):
        """z_t ↦ z_t with fixed positions replaced: the seq2seq source by its clean embeddings (as in
        training), other fixed tokens by a fresh draw of q(z_t | x) (DiffuSeq-style replacement)."""
        e = self.emb(cond.values)  # (n, L, d)
        fixed = cond.fixed.unsqueeze(-1)
        source = cond.clean_mask().unsqueeze(-1)  # (n, L, 1): clean conditions (a seq2seq source)

        def anchor(z, t):
            a, s = sched.coefficients(t.reshape(1, 1, 1).to(z.dtype))
            noisy = a * e + s * torch.randn(e.shape, generator=generator, device=e.device, dtype=e.dtype)
            return torch.where(fixed, torch.where(source, e, noisy).to(z.dtype), z)

        return anchor

    @torch.no_grad()
    def ce_curve(self, x: torch.Tensor, ts, generator=None) -> list[float]:
        """Mean per-token -log p_θ(x | z_t) in nats at each t of `ts` (clipped to the schedule's
        range): the denoising cross-entropy curve CATDM uses to show collapse."""
        lo, hi = self.schedule.t_range
        z0 = self.emb(x)
        out = []
        for t in ts:
            tt = torch.full((x.shape[0],), min(max(float(t), lo), hi), device=x.device)
            a, s = self.schedule.coefficients(tt.view(-1, 1, 1))
            z_t = gaussian.q_sample(z0, a, s, torch.randn(z0.shape, generator=generator, device=x.device))
            out.append(float(losses.cross_entropy(self._x0_eval(z_t, tt)[1], x).mean()))
        return out

    # ---- collapse diagnostics (logged with every training record) ------------------------------
    @torch.no_grad()
    def diagnostics(self, probe=None) -> dict:
        return embedding_diagnostics(self.emb)


@torch.no_grad()
def embedding_diagnostics(emb: TokenEmbedding) -> dict:
    """Spread of the clean embeddings c·Ê: mean pairwise distance, mean norm, effective rank, and
    nearest-neighbour decodability = share of tokens whose clean embedding rounds back to itself."""
    E = emb.table().float()  # (K, d)
    K = E.shape[0]
    dist = torch.cdist(E, E)  # (K, K)
    return {"emb_pairwise": float(dist.sum() / max(K * (K - 1), 1)),
            "emb_norm": float(E.norm(dim=-1).mean()),
            "emb_rank": effective_rank(E),
            "emb_decodable": float((emb.round(E) == torch.arange(K, device=E.device)).float().mean())}


# ---- the registered variants: defaults from their sources -------------------------------------

@dataclass
class NaiveOptions(EmbeddingOptions):
    """x0-MSE + decoder term, trained end to end, plain cosine schedule: the collapse-prone baseline."""

    w_recon: float = 1.0


@dataclass
class DiffusionLMOptions(EmbeddingOptions):
    """Li et al. 2022: sqrt schedule, L_simple + L_T + rounding on the true z_0 (code: improved-diffusion
    text branch); embeddings unscaled-by-norm, clamping available at sampling."""

    schedule: str = "sqrt"
    in_norm: str = "none"
    w_rounding: float = 1.0
    w_prior: float = 1.0


@dataclass
class CDCDOptions(EmbeddingOptions):
    """Dieleman et al. 2022: cross-entropy training, L2-normalised embeddings of norm √d, VE with
    σ ∈ [1, 300], score interpolation and an Euler ODE sampler (time warping not implemented)."""

    schedule: str = "ve"
    form: str = "ve"
    normalize: bool = True
    in_norm: str = "none"
    param: str = "logits"
    w_mse: float = 0.0
    w_ce: float = 1.0
    sampler: str = "euler"


@dataclass
class DifformerOptions(EmbeddingOptions):
    """Gao et al. 2024 (code zhjgao/difformer): sqrt schedule, noise rescaling F = 4 in training and
    F = 1 in decoding (released scripts), anchor loss with label smoothing 0.1, self-conditioning 0.5,
    LayerNorm after the input projection."""

    schedule: str = "sqrt"
    rescale: float = 4.0
    rescale_decode: float | None = 1.0
    w_ce: float = 1.0
    label_smoothing: float = 0.1
    self_cond: float = 0.5


@dataclass
class CATDMOptions(EmbeddingOptions):
    """Nguyen, Lai et al. 2024 (METHODS.md §3, faithful in spirit): L_DM + L_0 + λ_CM L_CM, shifted
    cosine (shift 0.1), random dropping 0.1. The paper's terms are "re-weighted"; the sources do not
    say how, and we weight L_DM by min(SNR(t), 5) (min-SNR-γ): with the unweighted x0-MSE the
    shifted schedule puts most training times at high noise, where the loss pulls every embedding
    to the centroid, and the embeddings collapsed in our runs (benchmarks/results/
    embedding_collapse/embedding_collapse_mixture_tiny.md). `method.mse_weight=none` restores the unweighted term."""

    mse_weight: str = "min_snr"
    shift: float = 0.1
    drop_prob: float = 0.1
    w_recon: float = 1.0
    w_cm: float = 1.0


def _variant(name: str, options: type, doc: str) -> type:
    cls = type(name.replace("-", "_").title().replace("_", ""), (EmbeddingDiffusion,),
               {"name": name, "Options": options, "__doc__": doc, "__module__": __name__})
    return cls


EmbedNaive = _variant("embed-naive", NaiveOptions, NaiveOptions.__doc__)
DiffusionLM = _variant("diffusion-lm", DiffusionLMOptions, DiffusionLMOptions.__doc__)
CDCD = _variant("cdcd", CDCDOptions, CDCDOptions.__doc__)
Difformer = _variant("difformer", DifformerOptions, DifformerOptions.__doc__)
CATDM = _variant("catdm", CATDMOptions, CATDMOptions.__doc__)

__all__ = ["CATDM", "CDCD", "DiffusionLM", "Difformer", "EmbedNaive", "EmbeddingDiffusion", "EmbeddingOptions",
           "embedding_diagnostics", "effective_rank"]
