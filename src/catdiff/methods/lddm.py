"""LDDM: masked discrete diffusion coupled with a continuous latent channel (Shariatian, Durmus,
Peluchetti, arXiv 2510.18114; code darioShar/LADD; METHODS.md §5), FUJI and SEQ variants.

Wires the latent encoder, the coupled process, the joint (MM-DiT) denoiser and, for SEQ, a latent
denoiser; it knows nothing of optimisers, checkpoints or data sources.

- FUJI: one network f(z_t, y_t, t_x, t_y) → (token logits, ŷ_0) with joint attention.
- SEQ: a latent denoiser g(y_t, t_y) → ŷ_0 and the token denoiser f fed the clean latent
  (t_y = the latent range's bottom, y ≈ y_0); sampling runs the latent chain, then the tokens.
Loss: w_x L_x + w_y L_y with L_x the MDLM NELBO conditioned on the latent (MDLM eq. 10) and L_y
the latent's continuous-time ELBO terms (VDM eq. 17 + prior KL) or an x0-MSE. `nelbo` always
returns the full bound L_x + L_y(ELBO) + prior in nats, on the same scale as MDLM's [our choice,
METHODS.md §5]: the bits the latent carries are paid for in L_y.
Shapes: B batch, L tokens, K vocabulary (mask id m = K), P latent slots, dp slot width.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..losses import Term, masked_nelbo, squared_norm
from ..models.factory import build_joint_network, build_network, model_size
from ..parameterizations import subs_log_probs
from ..processes.coupled import CoupledProcess
from ..samplers import coupled, gaussian, masked
from ..schedules import GaussianSchedule, MaskSchedule, sample_times
from ..structs import Batch, SampleOutput
from .base import Method, Stage


@dataclass
class LDDMOptions:
    n_patches: int = 1  # P latent slots ...
    patch_dim: int = 32  # ... of dp dimensions each (LADD: 1×32 on its synthetic task)
    normalize: bool = True  # L2-normalise each slot of y_0 to norm sqrt(dp) (unit scale per coordinate)
    # standardise every coordinate of the encoder's output over the batch before that (BatchNorm
    # without affine; running statistics in eval) [our encoder regularizer, issue 19]: y_0 cannot
    # collapse to a point, and its spread matches the N(0, I) prior's. A mean-pooled encoder starts
    # nearly constant across inputs; FUJI's token loss, which sees y only as noisily as the tokens,
    # then shrank it further (y_0 variance 3.8 → 0.005 in 100 steps on `mixture`, tiny preset).
    standardize: bool = False
    enc_layers: int = 2  # depth of the latent encoder (same width as the model)
    mask_schedule: str = "linear"  # token channel: MDLM α_t (schedules.MaskSchedule)
    eps: float = 1e-4
    t_min: float = 1e-4  # smallest token time (schedules.sample_times)
    antithetic: bool = True  # low-discrepancy times for both channels
    latent_schedule: str = "lddm"  # latent channel: ᾱ = (1-2ε) sqrt(1-t) + ε (schedules.GaussianSchedule)
    # the latent chain stops where log-SNR = this [our choice, as for embedding diffusion]: below it
    # the ELBO weight -SNR'(t) explodes (5e7 at t = 0 for "lddm") and ŷ_0 would have to match y_0 to
    # ~1e-4; the token denoiser then sees y at that noise level (s ≈ 0.08 for 5.0). None = full range.
    latent_log_snr_max: float | None = 5.0
    independent_times: bool = False  # FUJI: t_y drawn independently of t_x in training
    # FUJI: share of training rows whose latent sits at the latent range's bottom (t_y = lo, the clean
    # latent), whatever t_x: the token denoiser learns to read y_0 as latent-first sampling
    # (`sample.latent_steps`) and SEQ's token denoiser use it [our option, issue 19]. These rows
    # leave L_y (it is estimated, reweighted, on the others); the reported bound is unaffected.
    clean_latent: float = 0.0
    # FUJI: share of training rows whose tokens are all masked (t_x = 1), whatever t_y: the latent
    # denoiser learns ŷ_0 given no token, the prior that latent-first sampling runs (every token
    # masked while the latent moves) and that independent times reach only near t_x = 1 [our option,
    # issue 19, the mirror of clean_latent; drawn disjoint from its rows]. These rows leave L_x (it
    # is estimated, reweighted, on the others); the reported bound is unaffected.
    masked_tokens: float = 0.0
    w_x: float = 1.0
    w_y: float = 1.0
    latent_loss: str = "elbo"  # "elbo": ½(-SNR')‖y_0 - ŷ_0‖² + prior KL; "mse": ‖y_0 - ŷ_0‖²
    latent_drop: float = 0.15  # P(token denoiser trained without the latent): enables guidance
    enc_zero_max: float = 0.0  # per sequence r ~ U[0, max]: encoder inputs at masked positions hidden w.p. r
    w_l2: float = 0.0  # L2 penalty on y_0
    # False: the latent terms see sg[y_0] as their target (SEQ: also as g's input), so the encoder
    # learns from L_x only. With True, L_y (even at w_y = 0.05) pulled every y_0 to one point on
    # `mixture` (variance across examples 1e-5 of a norm-√32 latent after 600 steps, tiny preset):
    # at the ELBO's optimum a latent saves in L_x what it costs in L_y, so nothing favours using it.
    latent_grad: bool = False
    # FUJI, with latent_grad false: the joint network's noisy latent input y_t is built from y_0 on
    # every other row and from sg[y_0] on the rest, and L_y is counted on the sg rows only (×2): so L_y
    # reaches the encoder neither through its target nor through the input y_t, while L_x reaches it
    # through half the rows, at no extra compute. False = the path before issue 19: L_y's gradient
    # reached the encoder through y_t, and on `mixture` it collapsed y_0 to a point (y_0 variance
    # 5e-5 of a norm-√32 latent). Kept for that ablation (benchmarks/results/few_step/NOTES.md).
    detach_latent_input: bool = True
    # SEQ: two_stage=false trains everything jointly (one stage); true declares two stages, 1 = the
    # encoder + token denoiser, 2 = the latent denoiser on the frozen encoder's latents, for
    # stage2_steps steps. stage: 0 = every declared stage in sequence, k = stage k alone (Method.stages)
    two_stage: bool = False
    stage: int = 0
    stage2_steps: int = 1000
    sampler: str = "ddim"  # latent reverse kernel: ddim | ddpm
    lead: float = 1.0  # FUJI sampling path t_y = t^lead (> 1: latent ahead; train with independent_times)
    eta: float = 0.0  # DDIM η

    def __post_init__(self):
        MaskSchedule(self.mask_schedule, self.eps)
        GaussianSchedule(self.latent_schedule, log_snr_max=self.latent_log_snr_max)
        if min(self.n_patches, self.patch_dim, self.enc_layers) < 1:
            raise ConfigError("method.n_patches, patch_dim and enc_layers must be >= 1")
        if self.latent_loss not in ("elbo", "mse"):
            raise ConfigError(f"method.latent_loss must be 'elbo' or 'mse', got {self.latent_loss!r}")
        if self.sampler not in ("ddim", "ddpm"):
            raise ConfigError(f"method.sampler must be 'ddim' or 'ddpm', got {self.sampler!r}")
        if not 0 <= self.clean_latent < 1:
            raise ConfigError(f"method.clean_latent must be in [0, 1), got {self.clean_latent}")
        if not 0 <= self.masked_tokens < 1 or self.clean_latent + self.masked_tokens >= 1:
            raise ConfigError("method.masked_tokens must be in [0, 1) and clean_latent + masked_tokens < 1, got "
                              f"{self.masked_tokens} and {self.clean_latent}")
        if not 0 <= self.latent_drop < 1 or not 0 <= self.enc_zero_max <= 1:
            raise ConfigError("method.latent_drop must be in [0, 1) and enc_zero_max in [0, 1]")
        if self.lead <= 0:
            raise ConfigError(f"method.lead must be > 0, got {self.lead}")
        if self.stage not in (0, 1, 2) or self.stage2_steps < 1:
            raise ConfigError(f"method.stage must be 0, 1 or 2 and stage2_steps >= 1, got {self.stage}")


class LDDM(Method):
    """Shared parts of both variants: encoder, process, loss assembly, guidance."""

    variant = "fuji"
    Options = LDDMOptions

    def __init__(self, options: LDDMOptions, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        o = options
        if (o.stage or o.two_stage) and self.variant != "seq":
            raise ConfigError("method.stage and method.two_stage are for lddm-seq (two-stage training)")
        if (o.clean_latent or o.masked_tokens) and self.variant != "fuji":
            raise ConfigError("method.clean_latent and method.masked_tokens are for lddm-fuji (its joint network)")
        self.mask_id = vocab_size
        latent = GaussianSchedule(o.latent_schedule, log_snr_max=o.latent_log_snr_max)
        self.process = CoupledProcess(MaskSchedule(o.mask_schedule, o.eps), latent, vocab_size)
        enc_cfg = dataclasses.replace(model_cfg, n_layers=o.enc_layers, local_mix=0)
        self.encoder = build_network(enc_cfg, vocab_in=vocab_size + 1, vocab_out=o.n_patches * o.patch_dim,
                                              seq_len=seq_len, causal=False, time_cond=False)
        self.enc_norm = nn.BatchNorm1d(o.n_patches * o.patch_dim, affine=False) if o.standardize else None
        self.external_encoder: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.net = build_joint_network(model_cfg, vocab_in=vocab_size + 1, vocab_out=vocab_size,
                                                seq_len=seq_len, n_slots=o.n_patches, slot_dim=o.patch_dim)

    @property
    def t_clean(self) -> float:
        """The latent range's bottom: where the token denoiser reads a clean latent."""
        return self.process.latent.t_range[0]

    # ---- latent encoder -------------------------------------------------------------------
    def set_encoder(self, fn: Callable[[torch.Tensor], torch.Tensor] | None) -> None:
        """Use a frozen external encoder x (B, L) → y_0 (B, P, dp) instead of the learned one."""
        self.external_encoder = fn

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """y_0 = E(x): (B, L) tokens (mask ids allowed) → (B, P, dp), mean-pooled transformer outputs."""
        o = self.options
        if self.external_encoder is not None:
            with torch.no_grad():
                y = self.external_encoder(x)
        else:
            y = self.encoder(x).mean(1)  # (B, P·dp)
            if self.enc_norm is not None and self.training and x.shape[0] < 2:
                raise ConfigError("method.standardize needs at least 2 sequences per training batch (per process), "
                                  f"got {x.shape[0]}")
            if self.enc_norm is not None:
                y = self.enc_norm(y.float())
            y = y.view(x.shape[0], o.n_patches, o.patch_dim)  # (B, P, dp)
        if o.normalize:
            y = F.normalize(y, dim=-1) * math.sqrt(o.patch_dim)
        return y

    uses_probe = True

    @torch.no_grad()
    def diagnostics(self, probe=None) -> dict:
        """Spread of the encoder's y_0 over the probe's held-out rows (latent_spread): a collapsed
        encoder shows as a vanishing variance, an informative one on `mixture` as a between-component
        share near 1."""
        if probe is None or self.external_encoder is not None:
            return {}
        was = self.training
        self.eval()
        y = self.encode(probe.tokens.to(self.device))
        self.train(was)
        return latent_spread(y, probe.labels)

    def _encoder_input(self, x: torch.Tensor, z_t: torch.Tensor, generator) -> torch.Tensor:
        """x with masked-in-z_t positions hidden from the encoder w.p. r ~ U[0, enc_zero_max] per
        sequence (our reading of LADD's random zeroing of encoder inputs)."""
        if not self.training or self.options.enc_zero_max <= 0:
            return x
        B = x.shape[0]
        r = self.options.enc_zero_max * torch.rand(B, 1, generator=generator, device=x.device)
        hide = (z_t == self.mask_id) & (torch.rand(x.shape, generator=generator, device=x.device) < r)
        return torch.where(hide, torch.full_like(x, self.mask_id), x)

    # ---- token denoiser ---------------------------------------------------------------------
    def token_log_probs(self, z_t, y, t_x, t_y, drop=None, guidance: float = 0.0):
        """(log p_θ(x_0 | z_t, y) (B, L, K) under SUBS, ŷ_0 (B, P, dp)); with guidance w > 0 the
        logits are l_c + w (l_c - l_∅), l_∅ from a second call with the latent dropped."""
        logits, y_hat = self.net(z_t, y, t_x, t_y, drop)
        if guidance > 0:
            off = torch.ones(z_t.shape[0], dtype=torch.bool, device=z_t.device)
            logits_u, _ = self.net(z_t, y, t_x, t_y, off)
            logits = logits + guidance * (logits - logits_u)
        return subs_log_probs(logits, z_t, self.mask_id), y_hat

    def _drop(self, B: int, generator, device) -> torch.Tensor | None:
        if not self.training or self.options.latent_drop <= 0:
            return None
        return torch.rand(B, generator=generator, device=device) < self.options.latent_drop

    # ---- losses ---------------------------------------------------------------------------
    def _terms(self, batch: Batch, generator, train: bool) -> dict:
        """L_x per token (B, L) and per-sequence terms (B,) in nats: latent diffusion term, prior KL,
        latent MSE, ‖y_0‖², and `keep` (1 where the latent was not dropped)."""
        raise NotImplementedError

    def loss_terms(self, batch, generator=None):
        """w_x L_x + w_y L_y (+ w_l2 ‖y_0‖²), every term per token of the sequence; L_y is the
        latent's ELBO share (diffusion + prior) or its x0-MSE, paid only where the latent was kept.
        Stage 1 of two-stage SEQ drops L_y, stage 2 drops L_x."""
        o, L = self.options, self.seq_len
        T = self._terms(batch, generator, train=True)
        l_y = (T["diff"] + T["prior"]) if o.latent_loss == "elbo" else T["mse"]
        w_x = 0.0 if o.stage == 2 else o.w_x
        w_y = 0.0 if o.stage == 1 else o.w_y
        terms = {"L_x": Term(T["x"], w_x), "latent": Term(T["keep"] * l_y, w_y, tokens=L),
                 "L_y": Term(T["diff"], 0.0, tokens=L), "prior": Term(T["prior"], 0.0, tokens=L)}
        if o.w_l2:
            terms["l2"] = Term(T["l2"], o.w_l2, tokens=L)
        return terms, (T["x"].sum(-1) + T["diff"] + T["prior"]).detach()

    @torch.no_grad()
    def nelbo(self, batch, generator=None):
        T = self._terms(Batch.of(batch), generator, train=False)
        return (T["x"].sum(-1) + T["diff"] + T["prior"]).double()

    def _start(self, n: int, condition) -> torch.Tensor:
        """(n, L) all masks, fixed tokens of a condition unmasked (SUBS carries them over)."""
        z = torch.full((n, self.seq_len), self.mask_id, dtype=torch.long, device=self.device)
        return z if condition is None else self._condition(condition, n).impose(z)

    def _latent_kind(self, cfg) -> str:
        return self.options.sampler if cfg.sampler == "auto" else cfg.sampler

    def _token_grid(self, cfg) -> torch.Tensor:
        """The token chain's time grid: as many evaluations as the budget allows (two calls each
        with guidance)."""
        return masked.grid(coupled.guided_evaluations(cfg.steps, cfg.guidance), self.device)

    def _prior_latent(self, n: int, generator) -> torch.Tensor:
        o = self.options
        return torch.randn((n, o.n_patches, o.patch_dim), generator=generator, device=self.device)

    def _latent_chain(self, predict: Callable, n: int, steps: int, cfg, generator) -> tuple[torch.Tensor, int]:
        """The latent alone from N(0, I) at the range's top to ŷ_0 in `steps` calls of
        predict(y_t (n, P, dp), t_y (n,)) → ŷ_0: (ŷ_0, network calls)."""
        kind = self._latent_kind(cfg)
        r = gaussian.sample(lambda y_t, t, _prev: (predict(y_t, t),) * 2, self._prior_latent(n, generator),
                            gaussian.grid(self.process.latent, steps, kind, self.device), schedule=self.process.latent,
                            kind=kind, generator=generator, eta=self.options.eta)
        return r.state, r.nfe

    def _token_chain(self, z: torch.Tensor, y: torch.Tensor, cfg, generator, latent_calls: int) -> SampleOutput:
        """The MDLM chain from z given a fixed clean latent y (fed at the latent range's bottom)."""
        t_lo = torch.full((z.shape[0],), self.t_clean, device=self.device)

        def denoise(z_t, t):
            return self.token_log_probs(z_t, y, t, t_lo, guidance=cfg.guidance)[0]

        r = masked.sample(denoise, z, self._token_grid(cfg), schedule=self.process.tokens, mask_id=self.mask_id,
                          generator=generator, draw=cfg, order=cfg.order, cache=cfg.cache)
        token_calls = r.nfe * (2 if cfg.guidance > 0 else 1)
        calls = latent_calls + token_calls
        return SampleOutput(samples=r.state, nfe=calls, info={"latent": y, "network_calls": calls,
                                                        "latent_calls": latent_calls, "token_calls": token_calls})


class LDDMFuji(LDDM):
    """FUJI (fully joint): one joint denoiser over tokens and latent slots, both channels noised
    together (t_y = t_x clamped to the latent range, or independent times in training)."""

    name = "lddm-fuji"
    variant = "fuji"
    SampleOptions = coupled.Options

    def _terms(self, batch, generator, train: bool) -> dict:
        o, P, x = self.options, self.process, batch.tokens
        B = x.shape[0]
        independent = train and o.independent_times
        t_x, t_y = P.times(B, generator, x.device, o.t_min, o.antithetic, independent)
        split = train and (o.clean_latent > 0 or o.masked_tokens > 0)  # u picks clean / masked rows
        u = torch.rand(B, generator=generator, device=x.device) if split else None
        blind = torch.zeros(B, dtype=torch.bool, device=x.device)  # rows with every token masked
        if train and o.masked_tokens > 0:  # see LDDMOptions.masked_tokens
            blind = (u >= o.clean_latent) & (u < o.clean_latent + o.masked_tokens)
            t_x = torch.where(blind, torch.ones_like(t_x), t_x)
        z_t = P.mask(x, t_x, generator)  # (B, L)
        z_t = torch.where(blind.view(-1, 1), torch.full_like(z_t, self.mask_id), z_t)
        z_t = batch.clean_outside_target(z_t)  # seq2seq: the source stays clean
        y0 = self.encode(self._encoder_input(x, z_t, generator) if train else x)  # (B, P, dp)
        counts = torch.ones(B, dtype=torch.bool, device=x.device)  # rows whose L_y is counted
        y_in = y0
        if train and not o.latent_grad and o.detach_latent_input:  # see LDDMOptions.detach_latent_input
            # (B,) rows whose latent input is sg[y_0]: every other row, and the blind ones (their L_x is
            # not counted, so the encoder would learn nothing from them through y_t)
            sg = (torch.arange(B, device=x.device) % 2 == 1) | blind
            y_in = torch.where(sg.view(-1, 1, 1), y0.detach(), y0)
            counts = sg
        if train and o.clean_latent > 0:  # see LDDMOptions.clean_latent
            clean = u < o.clean_latent
            t_y = torch.where(clean, torch.full_like(t_y, self.t_clean), t_y)
            counts = counts & ~clean
        keep = counts.float() * (B / counts.sum().clamp(min=1))  # L_y on those rows, reweighted to the batch
        y_t, _ = P.noise(y_in, t_y, generator)
        drop = self._drop(B, generator, x.device) if train else None
        logp, y_hat = self.token_log_probs(z_t, y_t, t_x, t_y, drop)
        lo, hi = P.latent.t_range
        scale = (hi - lo) if independent else P.in_range(t_x)
        target = y0 if o.latent_grad else y0.detach()
        diff, prior = P.latent_terms(target, y_hat, t_y, scale)
        if drop is not None:
            keep = keep * (~drop).float()
        keep_x = (~blind).float() * (B / (~blind).sum().clamp(min=1))  # L_x on the other rows, reweighted
        l_x = masked_nelbo(logp, x, z_t, t_x, P.tokens, self.mask_id) * keep_x.view(-1, 1)
        return {"x": l_x, "diff": diff, "prior": prior,
                "mse": squared_norm(target - y_hat), "l2": squared_norm(y0), "keep": keep}

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, condition=None, latent: torch.Tensor | None = None) -> SampleOutput:
        """The joint chain (both channels move at every call, t_y = t^lead); given `latent` (n, P,
        dp) the token chain given that clean latent (as LDDMSeq.sample); or with
        `sample.latent_steps` = k the latent first: k calls move y alone from noise to ŷ_0 while every
        token stays masked (t_x = 1), then the token chain runs given that clean latent [our option;
        meant for a network trained with `method.independent_times`, which has seen t_y away from
        t_x]. A factorized first token step cannot then be incoherent: the latent decided first."""
        z = self._start(n, condition)
        if latent is not None:
            return self._token_chain(z, latent, cfg, generator, 0)
        if cfg.latent_steps:
            ones = torch.ones(n, device=self.device)
            y, latent_calls = self._latent_chain(lambda y_t, t: self.net(z, y_t, ones, t)[1], n, cfg.latent_steps,
                                                 cfg, generator)
            return self._token_chain(z, y, cfg, generator, latent_calls)
        y = self._prior_latent(n, generator)

        def denoise(z_t, y_t, t_x, t_y):
            return self.token_log_probs(z_t, y_t, t_x, t_y, guidance=cfg.guidance)

        r = coupled.sample(denoise, (z, y), self._token_grid(cfg), process=self.process, kind=self._latent_kind(cfg),
                           generator=generator, draw=cfg, eta=self.options.eta, lead=self.options.lead,
                           order=cfg.order)
        calls = r.nfe * (2 if cfg.guidance > 0 else 1)
        return SampleOutput(samples=r.state, nfe=calls, info={"latent": r.info["latent"], "network_calls": calls})


class LDDMSeq(LDDM):
    """SEQ (sequential): a latent denoiser g(y_t, t_y) over the P slots, and the token denoiser fed
    the clean latent at the bottom of the latent range (y_lo = a(lo) y_0 + s(lo) ε, s(lo) ≈ 0).
    Sampling: latent chain (`latent_steps`) to ŷ_0, then the MDLM chain given it (`steps`)."""

    name = "lddm-seq"
    variant = "seq"
    SampleOptions = coupled.SequentialOptions

    def __init__(self, options: LDDMOptions, model_cfg, vocab_size: int, seq_len: int):
        super().__init__(options, model_cfg, vocab_size, seq_len)
        o = options
        D = model_size(model_cfg)["d_model"]
        self.latent_in = nn.Linear(o.patch_dim, D)
        self.latent_net = build_network(dataclasses.replace(model_cfg, local_mix=0), vocab_in=1,
                                                 vocab_out=o.patch_dim, seq_len=o.n_patches, causal=False,
                                                 time_cond=True)
        self.freeze_for_stage()

    @classmethod
    def stages(cls, options) -> tuple[Stage, ...]:
        if not options.two_stage:
            return (Stage("joint"),)
        return (Stage("encoder + token denoiser"),
                Stage("latent denoiser", trains=("latent_in", "latent_net"), steps_key="stage2_steps"))

    def latent_denoise(self, y_t: torch.Tensor, t_y: torch.Tensor) -> torch.Tensor:
        """ŷ_0 = g(y_t, t_y): (B, P, dp)."""
        return self.latent_net(None, t_y, inputs_embeds=self.latent_in(y_t))

    def _terms(self, batch, generator, train: bool) -> dict:
        o, P, x = self.options, self.process, batch.tokens
        B, dev = x.shape[0], x.device
        t_x = sample_times(B, generator, dev, o.t_min, o.antithetic)
        z_t = P.mask(x, t_x, generator)  # (B, L)
        z_t = batch.clean_outside_target(z_t)  # seq2seq: the source stays clean
        if o.stage == 2:
            with torch.no_grad():
                y0 = self.encode(x)
        else:
            y0 = self.encode(self._encoder_input(x, z_t, generator) if train else x)  # (B, P, dp)
        lo, hi = P.latent.t_range
        t_lo = torch.full((B,), lo, device=dev)
        y_lo, _ = P.noise(y0, t_lo, generator)
        drop = self._drop(B, generator, dev) if train else None
        logp, _ = self.token_log_probs(z_t, y_lo, t_x, t_lo, drop)
        t_y = lo + (hi - lo) * sample_times(B, generator, dev, 0.0, o.antithetic)
        target = y0 if o.latent_grad else y0.detach()
        y_t, _ = P.noise(target, t_y, generator)
        y_hat = self.latent_denoise(y_t, t_y)
        diff, prior = P.latent_terms(target, y_hat, t_y, hi - lo)
        return {"x": masked_nelbo(logp, x, z_t, t_x, P.tokens, self.mask_id), "diff": diff, "prior": prior,
                "mse": squared_norm(target - y_hat), "l2": squared_norm(y0), "keep": torch.ones(B, device=dev)}

    @torch.no_grad()
    def sample_latent(self, n: int, cfg, generator=None) -> tuple[torch.Tensor, int]:
        """The latent chain alone: (ŷ_0 (n, P, dp), network calls)."""
        return self._latent_chain(self.latent_denoise, n, cfg.latent_steps or cfg.steps, cfg, generator)

    @torch.no_grad()
    def sample(self, n, cfg, generator=None, latent: torch.Tensor | None = None, condition=None) -> SampleOutput:
        """n samples; `latent` (n, P, dp) skips the latent chain (conditional MDLM given y). The latent
        chain does not see a condition (only the token chain does)."""
        y, latent_calls = (latent, 0) if latent is not None else self.sample_latent(n, cfg, generator)
        return self._token_chain(self._start(n, condition), y, cfg, generator, latent_calls)


def latent_spread(y: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """y_0 spread over N examples (N, P, dp): `y0_var` = Σ_coords Var_n(y) (total variance) and, with
    class labels (N,), `y0_between_share` = Σ_c (n_c/N) ‖ȳ_c - ȳ‖² / y0_var, the share of the total
    variance that lies between the classes' means (law of total variance: 1 = the latent is a
    function of the class, 0 = it ignores it)."""
    y = y.flatten(1).double()  # (N, D)
    centred = y - y.mean(0)
    total = float(centred.pow(2).sum(1).mean())
    out = {"y0_var": total}
    if labels is not None:
        labels = labels.to(y.device).long()
        n_c = torch.bincount(labels).double()  # (C,)
        sums = torch.zeros(n_c.numel(), y.shape[1], dtype=y.dtype, device=y.device).index_add_(0, labels, centred)
        present = n_c > 0
        between = float((sums[present].pow(2).sum(1) / n_c[present]).sum() / y.shape[0])
        out["y0_between_share"] = between / total if total > 0 else math.nan
    return out
