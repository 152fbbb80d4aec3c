"""Throughput: catdiff's training step against a plain PyTorch transformer of the same shape, matmul
peaks of the dtype in use, and MDLM sampling with the old and the new sample options, in one run.

    python benchmarks/throughput.py                          # the KJV setting (~8 min on 2 cores)
    python benchmarks/throughput.py --no-compile             # without the compiled sampling path (~6 min)
    python benchmarks/throughput.py --quick --preset tiny --out /tmp/tp   # smoke test (seconds)

Everything is measured in this process, round by round and interleaved, so that load drift on a
shared machine hits every mode alike (the order of the modes rotates from round to round):

1. Peaks: fp32 and bf16 square `torch.mm` into preallocated outputs (sizes 1024, 2048, 4096;
   FLOP/s = 2n³/time, best of the repeats of one size; a round's peak = the best size), measured
   at the start and after every timed round. Reported per dtype: the max and the median over
   rounds, and the bf16/fp32 ratio of each.
2. Training step at the KJV setting (configs/mdlm/kjv.yaml: MDLM, loglinear schedule, preset small
   = 6 layers x 384, 6 heads, local_mix 3; K = 75 characters, L = 256, batch 32), on random tokens:
   - catdiff: the method from `build_method` on the config loaded from the YAML (the corpus is not
     read: a stand-in dataset gives K and L), and the body of the trainer's loop (trainer.py): lr
     set, forward under the trainer's autocast, loss read back, zero_grad, backward,
     clip_grad_norm_(train.grad_clip), fused AdamW over `param_groups`, EMA update (the trainer's
     own `_update_ema`). Data loading, logging and checkpoints are left out.
   - reference (the yardstick, `Reference` below): token embedding (K+1 ids) + learned positions,
     n pre-LN blocks (LayerNorm, qkv Linear, non-causal `F.scaled_dot_product_attention`, out
     Linear, residual; LayerNorm, Linear D→4D, GELU, Linear 4D→D, residual), final LayerNorm,
     Linear head to K, cross-entropy on every position; plain `torch.optim.AdamW(lr=train.lr)`
     (defaults otherwise), clip_grad_norm_(1.0); no EMA. Same D, heads, layers, K, L, batch.
   Modes: catdiff fp32 (amp off), bf16 (amp bf16), auto (amp auto: the probe's choice is
   recorded; its step is then the bf16 or the fp32 step, so that row is that mode's
   measurement, not a third one), reference fp32, reference bf16 (autocast), and unless
   --no-compile catdiff with model.compile=true in fp32 and bf16 ("compiled"; the first warm-up
   step compiles, its excess over the median step is reported as the one-off cost); and, when the
   config has no time conditioning, "adaln fp32": catdiff fp32 with the network of the issue's
   start (`ISSUE_START`: model.time_cond=true, adaLN in every block). Warm-up steps
   excluded; each round times `steps_per_round` steps per mode. Headline: tokens/s of the
   median step (best alongside).
   MFU = flops_per_token x tokens/s / median peak of the dtype in use (fp32 or bf16).
   flops_per_token (training) = 6 N + 12 n_layers L D, N = matmul weights per token:
   catdiff: `catdiff.models.transformer.flops_per_token` (adds its per-sequence adaLN/time weights
   / L); reference: N = n_layers (3D² qkv + D² out + 8D² MLP) + D K head, with the same attention
   term 12 n_layers L D (QKᵀ and AV, forward + backward) — `reference_flops_per_token`.
   Ratios in the same run: catdiff fp32 / reference fp32, catdiff auto / reference fp32,
   catdiff bf16 / reference bf16, catdiff fp32 / adaln fp32 (median tokens/s).
3. Sampling: MDLM's sampler (`evaluate.draw_samples`, what `catdiff sample` runs: the sampler
   under the options' autocast, no grad), batch 32, 64 steps, untrained weights (timing only),
   fixed seed: the old path = catdiff before issue 18 (the issue-start network, `ISSUE_START`,
   with the config's sample options and amp off), the new path = the configured network with amp
   auto, and, where the model config has a `compile` option, the new path with the network
   compiled (`maybe_compile`, as the trainer does). One warm-up chain of 2 steps each; timed in
   the first `sampling_rounds` rounds. nfe (network calls) is reported per path: the same seed
   makes the same number of calls unless a draw differs under bf16 or between the networks.
4. Load: the envelope's load averages at start and end; contended when the 1-min load at start
   exceeded 0.3 or at the end exceeded 0.3 + this run's own threads (`report.finish`).

Writes <out>/throughput.{json,md} (default out: benchmarks/results/throughput).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import statistics
import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from catdiff.build import build_method
from catdiff.config import ModelConfig, load_config
from catdiff.evaluate import draw_samples
from catdiff.metrics.report import envelope, finish, write_result
from catdiff.models.factory import model_size
from catdiff.models.transformer import PRESETS, flops_per_token, maybe_compile
from catdiff.runtime import AUTO_MIN_SPEEDUP, amp_dtype, bf16_speedup, compile_enabled
from catdiff.trainer import Trainer, lr_at, param_groups

ROOT = Path(__file__).resolve().parent.parent
KJV_CONFIG = ROOT / "configs" / "mdlm" / "kjv.yaml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "throughput"
CPU = torch.device("cpu")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
NAMES = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _autocast(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else nullcontext()


# ---- peaks -----------------------------------------------------------------------------------
class PeakMeter:
    """fp32 and bf16 matmul FLOP/s of square `torch.mm` into preallocated outputs; one call of
    `measure()` = one round: for each dtype and size one untimed warm-up, then repeats until
    `seconds` have passed (at least 2), best of them; the round's peak of a dtype = its best size."""

    def __init__(self, sizes=(1024, 2048, 4096), seconds: float = 0.25):
        self.sizes, self.seconds = tuple(sizes), seconds
        g = torch.Generator().manual_seed(0)
        self.mats = {(name, n): tuple(t.to(dt) for t in (torch.randn(n, n, generator=g), torch.randn(n, n, generator=g),
                                                         torch.empty(n, n)))
                     for name, dt in DTYPES.items() for n in self.sizes}
        self.rounds: list[dict] = []

    def _one(self, name: str, n: int) -> float:
        a, b, c = self.mats[(name, n)]
        torch.mm(a, b, out=c)  # warm-up: threads, caches, pages of c
        best, runs, start = math.inf, 0, time.perf_counter()
        while runs < 2 or time.perf_counter() - start < self.seconds:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        return 2 * n**3 / best

    def measure(self) -> dict:
        r = {}
        for name in DTYPES:
            by_size = {str(n): self._one(name, n) for n in self.sizes}
            r[name] = {"flops": max(by_size.values()), "by_size": by_size}
        self.rounds.append(r)
        return r

    def summary(self) -> dict:
        """Per dtype: max and median over rounds of the round's peak, every round's peak, and the
        best of each size; bf16_over_fp32: the ratio of the maxima and of the medians."""
        out = {"sizes": list(self.sizes), "seconds_per_size": self.seconds, "n_rounds": len(self.rounds)}
        for name in DTYPES:
            per_round = [r[name]["flops"] for r in self.rounds]
            out[name] = {"max": max(per_round), "median": statistics.median(per_round), "per_round": per_round,
                         "by_size_max": {str(n): max(r[name]["by_size"][str(n)] for r in self.rounds)
                                         for n in self.sizes}}
        out["bf16_over_fp32"] = {k: out["bf16"][k] / out["fp32"][k] for k in ("max", "median")}
        return out


# ---- the catdiff step --------------------------------------------------------------------------
# The network catdiff ran at the start of issue 18: adaLN time conditioning. The shipped KJV config
# still has it; for a config without it (model.time_cond=false, as MDLM's recipe), the old sampling
# path and the "adaln" training row are built with it.
ISSUE_START = ("model.time_cond=true",)


def kjv_config(preset: str, seq_len: int, batch_size: int, config: str | Path = KJV_CONFIG, extra=()):
    """The config `catdiff train configs/mdlm/kjv.yaml` runs, at another preset/L/batch if asked,
    plus `extra` overrides (only its method, model, train and sample sections are used here)."""
    return load_config(config, [f"model.preset={preset}", f"data.seq_len={seq_len}",
                                f"train.batch_size={batch_size}", *extra])


def build_catdiff(cfg, vocab_size: int, seq_len: int):
    """The configured method for a stand-in dataset (build_method reads only K and L), seeded as
    the trainer seeds it."""
    torch.manual_seed(cfg.train.seed)
    return build_method(cfg, SimpleNamespace(vocab_size=vocab_size, seq_len=seq_len))


def catdiff_step(cfg, amp: str, vocab_size: int, seq_len: int, batch_size: int, seed: int = 0,
                 compiled: bool = False) -> Callable[[], float]:
    """One training step as trainer.Trainer runs it (see the module docstring), on a cycle of 4
    random (B, L) batches; returns the loss. `compiled` compiles the network whatever
    model.compile says (else: as the trainer decides). Attributes: .net (the transformer), .dtype
    (autocast dtype or None), .tokens (per step)."""
    tc = cfg.train
    method = build_catdiff(cfg, vocab_size, seq_len).train()
    if compiled or compile_enabled(cfg.model.compile, CPU):  # as the trainer does
        method.net = maybe_compile(method.net, True)
    try:  # the trainer's optimizer: fused AdamW over param_groups, else the unfused one
        opt = torch.optim.AdamW(param_groups(method, tc.weight_decay), lr=tc.lr, betas=tc.betas, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.AdamW(param_groups(method, tc.weight_decay), lr=tc.lr, betas=tc.betas)
    dtype = amp_dtype(amp, CPU)
    # the trainer's EMA state; `Trainer._update_ema` reads only .ema, .cfg, .step and .method
    state = SimpleNamespace(cfg=cfg, method=method, step=0, ema=(
        {k: v.detach().clone().float() for k, v in method.state_dict().items()} if tc.ema > 0 else None))
    gen = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen) for _ in range(4)]

    def step() -> float:
        x = batches[state.step % len(batches)]  # (B, L)
        for group in opt.param_groups:
            group["lr"] = lr_at(state.step, tc)
        with _autocast(dtype):
            loss = method(x, gen).loss
        value = float(loss.detach().float())  # the trainer reads the loss every step (divergence check)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(method.parameters(), tc.grad_clip or float("inf"))
        if not math.isfinite(float(gnorm)):  # the trainer stops here (divergence)
            raise RuntimeError("non-finite gradient norm")
        opt.step()
        Trainer._update_ema(state)
        state.step += 1
        return value

    step.net, step.dtype, step.tokens = method.net, dtype, batch_size * seq_len
    return step


# ---- the reference step ----------------------------------------------------------------------
class RefBlock(nn.Module):
    """Pre-LN block: x + out(SDPA(qkv(LN x))), then x + W2 GELU(W1 LN x)."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.qkv, self.out = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln2, self.fc1, self.fc2 = nn.LayerNorm(d), nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)  # (B, H, L, Dh), non-causal
        x = x + self.out(a.transpose(1, 2).reshape(B, L, D))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class Reference(nn.Module):
    """Plain bidirectional transformer: ids in [0, K] (K = mask) → (B, L, K) logits."""

    def __init__(self, vocab_size: int, seq_len: int, d_model: int, n_layers: int, n_heads: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size + 1, d_model), nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(RefBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln, self.head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab_size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.tok(z) + self.pos.weight[: z.shape[1]]  # (B, L, D)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))  # (B, L, K)


def reference_flops_per_token(vocab_size: int, seq_len: int, d_model: int, n_layers: int) -> float:
    """Training FLOPs per token of `Reference`: 6 N + 12 n_layers L D, N = n_layers (3D² + D² + 8D²)
    + D K (qkv, attention output, MLP up and down; head); embeddings, norms, biases not counted."""
    D = d_model
    n = n_layers * (3 * D * D + D * D + 2 * D * 4 * D) + D * vocab_size
    return 6 * n + 12 * n_layers * seq_len * D


def reference_step(vocab_size: int, seq_len: int, batch_size: int, size: dict, lr: float, amp: str,
                   seed: int = 0) -> Callable[[], float]:
    """One plain training step of `Reference` (half the positions masked, cross-entropy on all);
    `amp` "fp32" or "bf16" (autocast). Attributes as `catdiff_step`."""
    torch.manual_seed(seed)
    model = Reference(vocab_size, seq_len, **size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    dtype = DTYPES[amp] if amp != "fp32" else None
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(4):
        x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen)  # (B, L)
        masked = torch.rand(batch_size, seq_len, generator=gen) < 0.5
        batches.append((torch.where(masked, vocab_size, x), x))
    count = [0]

    def step() -> float:
        z, x = batches[count[0] % len(batches)]
        count[0] += 1
        with _autocast(dtype):
            loss = F.cross_entropy(model(z).reshape(-1, vocab_size).float(), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    step.net, step.dtype, step.tokens = model, dtype, batch_size * seq_len
    return step


# ---- sampling --------------------------------------------------------------------------------
def sample_paths(cfg, method, batch_size: int, steps: int, compile: bool | None = None, old_method=None,
                 old_how: str = "") -> dict:
    """{name: (method, options, how)}: old = `old_method` (default: `method`) with the config's
    sample options and amp off; new = `method` with the same options and amp auto; new_compiled
    (when `compile` and the model or sample options have a `compile` option) = new with
    compilation on. Options unknown to this script are kept as the config sets them, for every
    path."""
    base = dataclasses.replace(cfg.sample, steps=steps, batch_size=batch_size, num_samples=batch_size)
    has = {f.name for f in dataclasses.fields(base)}
    off = {"compile": False} if "compile" in has else {}
    paths = {"old": (old_method or method, dataclasses.replace(base, amp="off", **off), "amp off" + old_how),
             "new": (method, dataclasses.replace(base, amp="auto", **off), "amp auto")}
    model_compile = "compile" in {f.name for f in dataclasses.fields(ModelConfig)}
    if compile is None:
        compile = True
    if compile and "compile" in has:  # the sampler compiles by itself
        paths["new_compiled"] = (method, dataclasses.replace(base, amp="auto", compile=True),
                                 "amp auto, sample.compile")
    elif compile and model_compile:  # compile the network as the trainer does for model.compile
        twin = copy.deepcopy(method)
        twin.net = maybe_compile(twin.net, True)
        paths["new_compiled"] = (twin, dataclasses.replace(base, amp="auto"), "amp auto, model.compile")
    return paths


def sampler(method, opts) -> Callable[[], int]:
    """One call of `draw_samples` (its own generator seeded by opts.seed); returns nfe."""
    def call() -> int:
        return draw_samples(method, opts.num_samples, opts)[0].nfe
    return call


# ---- the run ---------------------------------------------------------------------------------
@dataclasses.dataclass
class Budget:
    rounds: int = 3  # timed rounds (peak measured at the start and after each)
    steps_per_round: int = 2  # timed training steps per mode per round
    warmup: int = 2  # untimed training steps per mode (catdiff's first two steps are slow)
    sizes: tuple = (1024, 2048, 4096)  # peak matmul sizes
    peak_seconds: float = 0.25  # per dtype and size, per peak round
    sample_steps: int = 64
    sampling_rounds: int = 1  # rounds in which each sampling path is timed (one chain each)

    @classmethod
    def quick(cls) -> Budget:
        return cls(rounds=1, steps_per_round=1, warmup=2, sizes=(1024, 2048), peak_seconds=0.05, sample_steps=8,
                   sampling_rounds=1)


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def _rotated(names: list[str], r: int) -> list[str]:
    k = r % len(names) if names else 0
    return names[k:] + names[:k]


def _stats(times: list[float]) -> dict:
    return {"times": times, "median": statistics.median(times), "best": min(times)}


def run(*, preset: str = "small", vocab_size: int = 75, seq_len: int = 256, batch_size: int = 32,
        budget: Budget | None = None, quick: bool = False, sampling: bool = True, compile: bool | None = None,
        config: str | Path = KJV_CONFIG, out: str | Path | None = DEFAULT_OUT, command=None, log=None) -> dict:
    """Run the benchmark; returns {"envelope", "results"} (also written unless out=None).
    `compile`: time the compiled sampling path (default: unless quick)."""
    budget = budget or (Budget.quick() if quick else Budget())
    if sampling and not 1 <= budget.sampling_rounds <= budget.rounds:
        raise ValueError(f"sampling_rounds must be in [1, rounds={budget.rounds}], got {budget.sampling_rounds}")
    compile = (not quick) if compile is None else compile
    log = log or (lambda *a: print(*a, flush=True))
    threads = torch.get_num_threads()
    setting = {"preset": preset, "vocab_size": vocab_size, "seq_len": seq_len, "batch_size": batch_size,
               "config": str(Path(config).resolve().relative_to(ROOT)) if Path(config).resolve().is_relative_to(ROOT)
               else str(config), "sampling": sampling, "compile_sampling": compile, "quick": quick}
    env = envelope(command or ["python", *sys.argv], {**setting, "budget": dataclasses.asdict(budget)})
    cfg = kjv_config(preset, seq_len, batch_size, config)
    # the issue-start network, when the config no longer is it (else old = the configured network)
    old_cfg = None if cfg.model.time_cond else kjv_config(preset, seq_len, batch_size, config, ISSUE_START)
    size = model_size(cfg.model)
    setting.update(size, local_mix=cfg.model.local_mix, method=dict(cfg.method), threads=threads,
                   train={k: getattr(cfg.train, k) for k in ("lr", "betas", "weight_decay", "grad_clip", "ema")},
                   model_compile=cfg.model.compile)

    meter = PeakMeter(budget.sizes, budget.peak_seconds)
    p0 = meter.measure()
    log(f"peaks (start): fp32 {p0['fp32']['flops'] / 1e9:.0f}, bf16 {p0['bf16']['flops'] / 1e9:.0f} GFLOP/s")
    speedup = bf16_speedup(CPU)
    auto = amp_dtype("auto", CPU)
    auto_info = {"picked": NAMES[auto], "bf16_speedup_probe": speedup, "min_speedup": AUTO_MIN_SPEEDUP}
    log(f"amp auto picks {NAMES[auto]} (probe: bf16 {speedup:.2f}x fp32, threshold {AUTO_MIN_SPEEDUP}x)")

    # training modes; catdiff auto is the bf16 or the fp32 step, whichever the probe picked
    steps = {"catdiff_fp32": catdiff_step(cfg, "off", vocab_size, seq_len, batch_size),
             "catdiff_bf16": catdiff_step(cfg, "bf16", vocab_size, seq_len, batch_size),
             "reference_fp32": reference_step(vocab_size, seq_len, batch_size, size, cfg.train.lr, "fp32"),
             "reference_bf16": reference_step(vocab_size, seq_len, batch_size, size, cfg.train.lr, "bf16")}
    if old_cfg is not None:  # catdiff fp32 with the issue-start network (adaLN): what dropping it bought
        steps["adaln_fp32"] = catdiff_step(old_cfg, "off", vocab_size, seq_len, batch_size)
    if compile:  # model.compile=true rows; their first warm-up step compiles (recorded)
        steps.update({f"compiled_{d}": catdiff_step(cfg, a, vocab_size, seq_len, batch_size, compiled=True)
                      for d, a in (("fp32", "off"), ("bf16", "bf16"))})
    auto_as = "catdiff_bf16" if auto == torch.bfloat16 else "catdiff_fp32"
    log(f"training: {preset} ({size['n_layers']}x{size['d_model']}, {size['n_heads']} heads), K={vocab_size}, "
        f"L={seq_len}, batch {batch_size}; {budget.warmup} warm-up + {budget.rounds}x{budget.steps_per_round} "
        f"timed steps per mode")
    warm = {k: [_timed(f)[0] for _ in range(budget.warmup)] for k, f in steps.items()}

    paths, stimes, nfes, swarm, compile_note = {}, {}, {}, {}, {}
    if sampling:
        method = build_catdiff(cfg, vocab_size, seq_len).eval()
        old = None if old_cfg is None else build_catdiff(old_cfg, vocab_size, seq_len).eval()
        paths = sample_paths(cfg, method, batch_size, budget.sample_steps, compile, old,
                             "" if old is None else ", " + " ".join(ISSUE_START) + " (issue start)")
        for name, (m, opts, _) in paths.items():  # warm-up: a 2-step chain (the compiled path compiles here)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                swarm[name] = _timed(sampler(m, dataclasses.replace(opts, steps=min(2, opts.steps))))[0]
            fell_back = [str(w.message) for w in caught if "falling back to eager" in str(w.message)
                         or "running eagerly" in str(w.message)]
            if name == "new_compiled":
                compile_note = {"compiled": not fell_back, "warnings": fell_back}
            stimes[name], nfes[name] = [], []
        log(f"sampling: {', '.join(paths)}; warm-up {', '.join(f'{v:.1f}s' for v in swarm.values())}")

    times = {k: [] for k in steps}
    for r in range(budget.rounds):
        for k in _rotated(list(steps), r):
            times[k] += [_timed(steps[k])[0] for _ in range(budget.steps_per_round)]
        if sampling and r < budget.sampling_rounds:
            for k in _rotated(list(paths), r):
                m, opts, _ = paths[k]
                dt, nfe = _timed(sampler(m, opts))
                stimes[k].append(dt)
                nfes[k].append(nfe)
        p = meter.measure()
        log(f"round {r + 1}/{budget.rounds}: " + ", ".join(f"{k} {statistics.median(v):.2f}s" for k, v in times.items())
            + (", " + ", ".join(f"sample/{k} {v[-1]:.1f}s" for k, v in stimes.items() if v) if stimes else "")
            + f"; peaks fp32 {p['fp32']['flops'] / 1e9:.0f}, bf16 {p['bf16']['flops'] / 1e9:.0f} GFLOP/s")

    peaks = meter.summary()
    results = {"benchmark": "throughput", "setting": setting, "budget": dataclasses.asdict(budget),
               "peaks": peaks, "amp_auto": auto_info,
               "training": training_rows(steps, times, warm, auto_as, cfg, peaks, vocab_size, seq_len, size)}
    if sampling:
        results["sampling"] = sampling_rows(paths, stimes, nfes, swarm, compile_note, peaks, batch_size, seq_len,
                                            budget.sample_steps)
    env = finish(env, own_threads=threads)
    for line in summary_lines(results):
        log(line)
    if out is not None:
        path = write_result(out, "throughput", env, results, markdown(results, env))
        log(f"wrote {path} and {path.with_suffix('.md')}")
    return {"envelope": env, "results": results}


def training_rows(steps, times, warm, auto_as, cfg, peaks, K, L, size) -> dict:
    """Per mode: step times, tokens/s (median = headline, best), FLOPs per token, MFU against the
    median (and the max) peak of its dtype, ratio to reference fp32; and the headline ratios."""
    modes = {}
    for name, st in steps.items():
        impl, amp = name.split("_")
        if impl in ("catdiff", "compiled", "adaln"):
            net = st.net
            fpt = flops_per_token(net.cfg, L, training=True)
            params = sum(p.numel() for p in net.parameters())
            amp_setting = {"fp32": "off", "bf16": "bf16"}[amp]
        else:
            fpt = reference_flops_per_token(K, L, size["d_model"], size["n_layers"])
            params = sum(p.numel() for p in st.net.parameters())
            amp_setting = amp
        dtype = NAMES[st.dtype]
        s = _stats(times[name])
        tps_med, tps_best = st.tokens / s["median"], st.tokens / s["best"]
        modes[name] = {"implementation": impl, "amp": amp_setting, "dtype": dtype, "params": params,
                       "tokens_per_step": st.tokens, "flops_per_token": fpt, "step_s": {**s, "warmup": warm[name]},
                       "tokens_per_s_median": tps_med, "tokens_per_s_best": tps_best,
                       "mfu": fpt * tps_med / peaks[dtype]["median"],
                       "mfu_best": fpt * tps_best / peaks[dtype]["median"],
                       "mfu_vs_max_peak": fpt * tps_med / peaks[dtype]["max"], "peak_dtype": dtype}
    modes["catdiff_auto"] = {**modes[auto_as], "amp": "auto", "measured_as": auto_as}
    ref = modes["reference_fp32"]["tokens_per_s_median"]
    for row in modes.values():
        row["ratio_to_reference_fp32"] = row["tokens_per_s_median"] / ref
    order = ["catdiff_fp32", "catdiff_bf16", "catdiff_auto", "adaln_fp32", "compiled_fp32", "compiled_bf16",
             "reference_fp32", "reference_bf16"]
    modes = {k: modes[k] for k in order if k in modes}
    tps = {k: v["tokens_per_s_median"] for k, v in modes.items()}
    pairs = [("catdiff_fp32", "reference_fp32"), ("catdiff_auto", "reference_fp32"), ("catdiff_bf16", "reference_bf16"),
             ("compiled_fp32", "reference_fp32"), ("compiled_fp32", "catdiff_fp32"), ("compiled_bf16", "catdiff_bf16"),
             ("adaln_fp32", "reference_fp32"), ("catdiff_fp32", "adaln_fp32")]
    ratios = {f"{a}/{b}": tps[a] / tps[b] for a, b in pairs if a in tps and b in tps}
    for k in ("compiled_fp32", "compiled_bf16"):  # what compilation costs once: first step minus a median step
        if k in modes:
            modes[k]["compile_s"] = modes[k]["step_s"]["warmup"][0] - modes[k]["step_s"]["median"]
    return {"modes": modes, "ratios": ratios, "catdiff_step": "trainer loop body: lr, forward (autocast), loss "
            "read, zero_grad, backward, clip_grad_norm_, fused AdamW(param_groups), EMA",
            "reference_step": "forward (autocast), cross-entropy, zero_grad, backward, clip_grad_norm_(1.0), AdamW"}


def sampling_rows(paths, stimes, nfes, swarm, compile_note, peaks, B, L, n_steps) -> dict:
    rows = {}
    for name, (m, opts, how) in paths.items():
        dtype = NAMES[amp_dtype(opts.amp, CPU)]
        s = _stats(stimes[name])
        nfe = nfes[name][-1]
        fwd = flops_per_token(m.net.cfg, L, training=False)
        rows[name] = {"how": how, "options": dataclasses.asdict(opts), "dtype": dtype, "nfe": nfe,
                      "nfe_per_round": nfes[name], "chain_s": {**s, "warmup_2_steps": swarm[name]},
                      "samples_per_s": B / s["median"], "samples_per_s_best": B / s["best"],
                      "tokens_per_s": B * L / s["median"], "network_s_per_call": s["median"] / max(nfe, 1),
                      "network_mfu": fwd * B * L * nfe / s["median"] / peaks[dtype]["median"]}
        if name == "new_compiled":
            rows[name].update(compile_note)
    old = rows["old"]["samples_per_s"]
    ratios = {f"{k}/old": v["samples_per_s"] / old for k, v in rows.items() if k != "old"}
    all_nfe = {n for v in nfes.values() for n in v}
    return {"paths": rows, "ratios": ratios, "nfe_equal": len(all_nfe) == 1, "steps": n_steps, "batch_size": B,
            "weights": "untrained (timing only)", "runner": "catdiff.evaluate.draw_samples"}


# ---- output ----------------------------------------------------------------------------------
def summary_lines(res: dict) -> list[str]:
    pk = res["peaks"]
    lines = [f"peaks: fp32 max {pk['fp32']['max'] / 1e9:.0f} / median {pk['fp32']['median'] / 1e9:.0f}, bf16 max "
             f"{pk['bf16']['max'] / 1e9:.0f} / median {pk['bf16']['median'] / 1e9:.0f} GFLOP/s; bf16/fp32 "
             f"{pk['bf16_over_fp32']['median']:.2f} (median)"]
    for k, r in res["training"]["modes"].items():
        lines.append(f"  {k:15s} {r['tokens_per_s_median']:8.0f} tok/s (best {r['tokens_per_s_best']:.0f}), MFU "
                     f"{r['mfu']:.1%} of {r['dtype']} peak, x{r['ratio_to_reference_fp32']:.2f} reference fp32")
    lines.append("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in res["training"]["ratios"].items()))
    if "sampling" in res:
        for k, r in res["sampling"]["paths"].items():
            lines.append(f"  sample/{k:12s} {r['samples_per_s']:.2f} samples/s ({r['tokens_per_s']:.0f} tok/s), "
                         f"nfe {r['nfe']}, {r['dtype']}")
        lines.append("  ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in res["sampling"]["ratios"].items()))
    return lines


def markdown(res: dict, env: dict) -> str:
    st, pk, tr = res["setting"], res["peaks"], res["training"]
    g = 1e9
    lines = [
        "# Throughput", "",
        f"Preset {st['preset']} ({st['n_layers']} layers x {st['d_model']}, {st['n_heads']} heads, local_mix "
        f"{st['local_mix']}), K = {st['vocab_size']}, L = {st['seq_len']}, batch {st['batch_size']}, config "
        f"`{st['config']}`, {st['threads']} threads. Every figure below is from this one process, measured round by "
        f"round with the modes interleaved.", "",
        "## Matmul peaks (square torch.mm)", "",
        f"Sizes {', '.join(map(str, pk['sizes']))}; measured at the start and after each of "
        f"{pk['n_rounds'] - 1} timed rounds.", "",
        "| dtype | max GFLOP/s | median GFLOP/s | per round GFLOP/s | best by size GFLOP/s |",
        "|---|---:|---:|---|---|"]
    for d in DTYPES:
        lines.append(f"| {d} | {pk[d]['max'] / g:.0f} | {pk[d]['median'] / g:.0f} | "
                     f"{', '.join(f'{v / g:.0f}' for v in pk[d]['per_round'])} | "
                     f"{', '.join(f'{n}: {v / g:.0f}' for n, v in pk[d]['by_size_max'].items())} |")
    a = res["amp_auto"]
    lines += ["", f"bf16 / fp32 peak: {pk['bf16_over_fp32']['max']:.2f} (max), {pk['bf16_over_fp32']['median']:.2f} "
              f"(median). amp auto picks **{a['picked']}** (its 512² probe: bf16 {a['bf16_speedup_probe']:.2f}x fp32, "
              f"threshold {a['min_speedup']}x).", "",
              "## Training step", "",
              "tokens/s of the median step (best alongside); MFU = FLOPs/token x tokens/s (median) / median peak of "
              "the dtype in use.", "",
              "| mode | amp | dtype | params | GFLOP/token | step s (median) | tokens/s (median) | tokens/s (best) "
              "| MFU | x reference fp32 |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for k, r in tr["modes"].items():
        name = k.replace("_", " ") + (f" (= {r['measured_as'].replace('_', ' ')})" if "measured_as" in r else "")
        lines.append(f"| {name} | {r['amp']} | {r['dtype']} | {r['params'] / 1e6:.2f} M | "
                     f"{r['flops_per_token'] / g:.4f} | {r['step_s']['median']:.3f} | {r['tokens_per_s_median']:.0f} | "
                     f"{r['tokens_per_s_best']:.0f} | {r['mfu']:.1%} | {r['ratio_to_reference_fp32']:.2f} |")
    compiled = [f"{k.replace('_', ' ')} {r['compile_s']:.0f} s" for k, r in tr["modes"].items() if "compile_s" in r]
    lines += ["", "Ratios (median tokens/s): " + ", ".join(f"{k} **{v:.2f}**" for k, v in tr["ratios"].items()) + ".",
              *([f"compiled = catdiff with model.compile=true; one-off compilation (first warm-up step minus the "
                 f"median step): {', '.join(compiled)}."] if compiled else []),
              "", f"catdiff step: {tr['catdiff_step']}. Reference step: {tr['reference_step']}. FLOPs/token = 6N + "
              "12 n_layers L D (N = matmul weights per token; catdiff: `flops_per_token`, reference: "
              "`reference_flops_per_token` in the script).", ""]
    if "sampling" in res:
        sm = res["sampling"]
        lines += ["## Sampling (MDLM)", "",
                  f"Batch {sm['batch_size']}, {sm['steps']} steps, {sm['weights']}, fixed seed; "
                  f"`{sm['runner']}`; nfe equal on every path: {sm['nfe_equal']}.", "",
                  "| path | options | dtype | nfe | s per chain (median) | samples/s | tokens/s | s per network call "
                  "| x old |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for k, r in sm["paths"].items():
            ratio = 1.0 if k == "old" else sm["ratios"][f"{k}/old"]
            lines.append(f"| {k} | {r['how']} | {r['dtype']} | {r['nfe']} | {r['chain_s']['median']:.2f} | "
                         f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['network_s_per_call']:.3f} | "
                         f"{ratio:.2f} |")
        lines.append("")
    lines += ["Command:", "", "```", env["command"], "```", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=sorted(PRESETS))
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 1 step, sizes 1024/2048, "
                   "8 sampling steps, no compiled path")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; quick 1)")
    p.add_argument("--steps-per-round", type=int, default=None, help="timed training steps per mode per round "
                   "(default 2; quick 1)")
    p.add_argument("--sampling-rounds", type=int, default=None, help="rounds with a timed sampling chain per path "
                   "(default 1)")
    p.add_argument("--sample-steps", type=int, default=None, help="sampling steps (default 64; quick 8)")
    p.add_argument("--no-sampling", action="store_true")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="time the compiled training steps and sampling path (default: on, off with --quick)")
    p.add_argument("--vocab-size", type=int, default=75, help="K (default 75, KJV's characters)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--config", default=str(KJV_CONFIG))
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    budget = Budget.quick() if a.quick else Budget()
    for key in ("rounds", "steps_per_round", "sampling_rounds", "sample_steps"):
        if getattr(a, key) is not None:
            setattr(budget, key, getattr(a, key))
    argv_list = sys.argv[1:] if argv is None else list(argv)
    return run(preset=a.preset, vocab_size=a.vocab_size, seq_len=a.seq_len, batch_size=a.batch_size, budget=budget,
               quick=a.quick, sampling=not a.no_sampling, compile=a.compile, config=a.config, out=a.out,
               command=["python", "benchmarks/throughput.py", *argv_list])


if __name__ == "__main__":
    main()
