"""Throughput benchmark: fp32 matmul peak, training tokens/s and MFU, sampling tokens/s.

    python benchmarks/throughput.py                       # small + base, eager and compiled
    python benchmarks/throughput.py --presets small --no-compile --quick

1. Peak: best-of fp32 `torch.mm` of 1024², 2048² and 4096² matrices into preallocated outputs
   (FLOP/s = 2n³/time), measured in this process at the start and after every timed round; the
   maximum over all sizes and rounds is the denominator (the conservative choice).
2. Training: a full step (forward, loss, backward, AdamW) of each preset; warm-up steps excluded;
   tokens/s = B·L / step time; MFU = flops_per_token · tokens/s / peak (fp32, no autocast).
   The step is pluggable: `run(..., make_step=your_factory)` with the signature of `make_step`.
3. Sampling: forward-only tokens/s of the bidirectional model at the training batch (one network
   call of a masked-diffusion sampler), and KV-cached generation tokens/s of the causal twin.

Eager and compiled steps alternate round by round, so load drift on a shared machine hits both
alike. Timings are best-of (the least disturbed run) with the median alongside.
Writes <out>/throughput.{json,md} (default out: benchmarks/results/throughput).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from catdiff.metrics.report import envelope, finish, write_result
from catdiff.models.transformer import (
    PRESETS,
    Transformer,
    TransformerConfig,
    flops_per_token,
    maybe_compile,
)

ROOT = Path(__file__).resolve().parent.parent


# ---- peak --------------------------------------------------------------------------------
def measure_peak(sizes=(1024, 2048, 4096), seconds: float = 1.0) -> dict:
    """Best fp32 matmul FLOP/s over square sizes, each repeated for ~`seconds` (min 3 runs)."""
    out = {}
    for n in sizes:
        a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
        torch.mm(a, b, out=c)  # warm-up (threads, caches, pages of c)
        best, start, runs = float("inf"), time.perf_counter(), 0
        while runs < 3 or time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - t0)
            runs += 1
        out[n] = 2 * n**3 / best
    return {"flops": max(out.values()), "by_size": {str(n): f for n, f in out.items()}}


# ---- training step -----------------------------------------------------------------------
LossFn = Callable[[Transformer, torch.Tensor, torch.Generator], torch.Tensor]


def default_loss(model: Transformer, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the model's logits against random tokens, at random t (when conditioned)."""
    t = torch.rand(x.shape[0], generator=gen) if model.cfg.time_cond else None
    logits = model(x, t)  # (B, L, K)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))


def mdlm_loss(model: Transformer, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The real MDLM training loss (catdiff.methods.mdlm): low-discrepancy t, masking, SUBS,
    continuous-time NELBO per token; mask id = out_size. This is what `catdiff train` runs."""
    from catdiff.losses import masked_nelbo
    from catdiff.parameterizations import subs_log_probs
    from catdiff.processes.masked import q_sample
    from catdiff.schedules import MaskSchedule, sample_times

    schedule, m = MaskSchedule("loglinear"), model.cfg.out_size
    t = sample_times(x.shape[0], gen)
    z = q_sample(x, t, schedule, m, gen)  # (B, L)
    logp = subs_log_probs(model(z, t), z, m)  # (B, L, K)
    return masked_nelbo(logp, x, z, t, schedule, m).mean()


def make_adamw(params, lr: float) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # fused unsupported on this device/version
        return torch.optim.AdamW(params, lr=lr)


def make_step(model_cfg: TransformerConfig, batch_size: int, *, compile: bool = False,
              loss_fn: LossFn | None = None, lr: float = 1e-4, seed: int = 0) -> Callable[[], float]:
    """A zero-argument function running one full training step on a fresh random batch
    (forward, loss, backward, AdamW step) and returning the loss. Attributes: `.model`,
    `.tokens` (tokens per step), `.flops` (model FLOPs per step, see flops_per_token)."""
    torch.manual_seed(seed)
    model = Transformer(model_cfg).train()
    maybe_compile(model, compile)
    opt = make_adamw(model.parameters(), lr)
    loss_fn = loss_fn or mdlm_loss
    gen = torch.Generator().manual_seed(seed)
    L = model_cfg.seq_len

    def step() -> float:
        x = torch.randint(0, model_cfg.out_size, (batch_size, L), generator=gen)  # (B, L)
        loss = loss_fn(model, x, gen)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step.model = model
    step.tokens = batch_size * L
    step.flops = flops_per_token(model_cfg, L, training=True) * step.tokens
    return step


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int, reps: int,
                     between: Callable[[], object] | None = None) -> dict[str, dict]:
    """Seconds per call of each named function: `warmup` untimed calls each, then `reps` rounds
    calling every function once per round (interleaved, so load drift on a shared machine hits
    all of them alike), with `between()` run after each round (e.g. a peak re-measurement).
    Returns {name: {best, median, times, warmup}}."""
    warm = {k: [_timed(f) for _ in range(warmup)] for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            times[k].append(_timed(f))
        if between is not None:
            between()
    return {k: {"best": min(v), "median": statistics.median(v), "times": v, "warmup": warm[k]}
            for k, v in times.items()}


# ---- sampling ----------------------------------------------------------------------------
def forward_sampler(model: Transformer, batch_size: int, seed: int = 0) -> Callable[[], None]:
    """One bidirectional network call on a (B, L) batch: the unit of work of a masked sampler."""
    gen = torch.Generator().manual_seed(seed)
    L = model.cfg.seq_len
    x = torch.randint(0, model.cfg.vocab_size, (batch_size, L), generator=gen)
    t = torch.rand(batch_size, generator=gen) if model.cfg.time_cond else None

    @torch.inference_mode()
    def call():
        model(x, t)

    return call


def cached_generator(model: Transformer, batch_size: int, n_tokens: int | None = None) -> Callable[[], torch.Tensor]:
    """Greedy KV-cached generation of n_tokens (default seq_len) tokens, one network call per token."""
    L, bos = n_tokens or model.cfg.seq_len, model.cfg.vocab_size - 1

    @torch.inference_mode()
    def generate() -> torch.Tensor:
        cache = model.new_cache(batch_size)
        tok = torch.full((batch_size, 1), bos, dtype=torch.long)
        out = torch.empty(batch_size, L, dtype=torch.long)
        for i in range(L):
            logits = model(tok, cache=cache)[:, -1]  # (B, K)
            out[:, i] = tok[:, 0] = logits.argmax(-1)
        return out

    return generate


# ---- one preset --------------------------------------------------------------------------
def preset_config(preset: str, vocab_size: int, seq_len: int, *, causal: bool = False) -> TransformerConfig:
    """MDLM layout for the bidirectional model (inputs K+1 with the mask id, outputs K); the
    causal twin has inputs K+1 with a BOS id, outputs K, and no time conditioning."""
    return TransformerConfig(vocab_size=vocab_size + 1, out_size=vocab_size, seq_len=seq_len,
                             causal=causal, time_cond=not causal, **PRESETS[preset])


@dataclass
class Budget:
    """How long each measurement runs (`quick` = a smoke test, seconds instead of minutes)."""

    warmup: int = 2  # untimed training steps (the first compiles when compiling)
    steps: int = 8  # timed training steps (best-of and median)
    base_steps: int = 3  # timed steps for the base preset (~8x the FLOPs of small per step)
    forward_reps: int = 3  # timed bidirectional forwards
    gen_reps: int = 2  # timed KV-cached generations
    gen_tokens: int | None = None  # positions generated (None: seq_len)
    peak_seconds: float = 0.5  # per matmul size, per peak round (one round after every timed round)

    @classmethod
    def quick(cls) -> Budget:
        return cls(warmup=1, steps=2, base_steps=1, forward_reps=1, gen_reps=1, gen_tokens=16, peak_seconds=0.2)


def bench_preset(preset: str, *, modes=("eager", "compiled"), batch_size: int, seq_len: int, vocab_size: int,
                 budget: Budget, make_step=make_step, between=None, log=print) -> list[dict]:
    """Training and bidirectional-forward throughput of one preset in each mode (interleaved),
    plus KV-cached generation (eager: maybe_compile routes cache= calls to eager), reported on
    the eager row. MFU is filled in by `run` against the peak of the whole run."""
    cfg = preset_config(preset, vocab_size, seq_len)
    n_steps = budget.base_steps if preset == "base" else budget.steps
    tokens = batch_size * seq_len
    log(f"[{preset}] training {'/'.join(modes)}: batch {batch_size} x {seq_len}, {budget.warmup} warm-up + "
        f"{n_steps} timed steps each (interleaved)")
    steps = {mode: make_step(cfg, batch_size, compile=mode == "compiled") for mode in modes}
    tr = time_interleaved(steps, budget.warmup, n_steps, between)
    models = {mode: st.model for mode, st in steps.items()}
    del steps  # frees the optimiser states
    rows = {}
    for mode, model in models.items():
        rows[mode] = {
            "preset": preset, "mode": mode, **PRESETS[preset], "batch_size": batch_size, "seq_len": seq_len,
            "vocab_size": vocab_size, "params_non_embedding": model.num_params(), "params": model.num_params(False),
            "flops_per_token_train": flops_per_token(cfg, seq_len, training=True),
            "flops_per_token_forward": flops_per_token(cfg, seq_len, training=False),
            "train_step_s": tr[mode], "train_tokens_per_s": tokens / tr[mode]["best"],
            "train_tokens_per_s_median": tokens / tr[mode]["median"],
        }
        log(f"[{preset}/{mode}] step best {tr[mode]['best']:.3f}s median {tr[mode]['median']:.3f}s (warm-up "
            f"{', '.join(f'{w:.1f}' for w in tr[mode]['warmup'])}s): {rows[mode]['train_tokens_per_s']:.0f} tok/s")
        model.eval()

    fw = time_interleaved({m: forward_sampler(model, batch_size) for m, model in models.items()},
                          2, budget.forward_reps)
    for mode in modes:
        rows[mode]["forward_s"] = fw[mode]
        rows[mode]["forward_tokens_per_s"] = tokens / fw[mode]["best"]
        log(f"[{preset}/{mode}] bidirectional forward (batch {batch_size}): "
            f"{rows[mode]['forward_tokens_per_s']:.0f} tok/s")
    del models

    if budget.gen_reps > 0:
        torch.manual_seed(0)
        causal = Transformer(preset_config(preset, vocab_size, seq_len, causal=True)).eval()
        n = min(budget.gen_tokens or seq_len, seq_len)
        gn = time_interleaved({"eager": cached_generator(causal, batch_size, n)}, 1, budget.gen_reps)["eager"]
        row = rows.get("eager", rows[modes[0]])
        row.update(generate_s=gn, generate_tokens=n, generate_tokens_per_s=batch_size * n / gn["best"],
                   generate_calls_per_sample=n)
        log(f"[{preset}] KV-cached generation, eager (batch {batch_size}, {n} tokens, one call each): "
            f"{row['generate_tokens_per_s']:.0f} tok/s")
    return [rows[m] for m in modes]


# ---- output ------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    peak = result["peak"]["flops"]
    lines = [
        "# Throughput", "",
        f"fp32 matmul peak measured in-process: **{peak / 1e9:.0f} GFLOP/s**.",
        f"Batch {result['batch_size']} x sequence {result['seq_len']}, vocabulary {result['vocab_size']}, fp32. "
        "Times are best-of (median MFU alongside).", "",
        "| preset | mode | params (non-emb) | GFLOP/token (train) | train tok/s | MFU | MFU (median) "
        "| forward tok/s (bidir.) | forward MFU | KV-cached gen. tok/s (causal) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        gen = f"{r['generate_tokens_per_s']:.0f}" if "generate_tokens_per_s" in r else "–"
        lines.append(
            f"| {r['preset']} | {r['mode']} | {r['params_non_embedding'] / 1e6:.2f} M | "
            f"{r['flops_per_token_train'] / 1e9:.3f} | {r['train_tokens_per_s']:.0f} | {r['train_mfu']:.1%} | "
            f"{r['train_mfu_median']:.1%} | {r['forward_tokens_per_s']:.0f} | {r['forward_mfu']:.1%} | {gen} |")
    lines += ["", "MFU = flops_per_token x tokens/s / peak; flops_per_token = 6N + 12 n_layers L d "
              "(N = matmul weights per token; see `catdiff.models.transformer.flops_per_token`).", ""]
    return "\n".join(lines)


def run(presets=("small", "base"), *, modes=("eager", "compiled"), batch_size: int = 32, seq_len: int = 256,
        vocab_size: int = 256, quick: bool = False, budget: Budget | None = None,
        out: str | Path | None = ROOT / "benchmarks" / "results" / "throughput", make_step=make_step,
        command: list[str] | str | None = None,
        log=None) -> dict:
    """Run the benchmark and return the result dict (also written as JSON + Markdown unless out=None).

    From Python, e.g. a smoke test: `run(["tiny"], modes=["eager"], quick=True, out=None)`.
    `make_step` is a factory with the signature of `make_step` here (its result needs `.model`,
    the Transformer whose forward is also timed); to time another loss on the same network:
    `run(..., make_step=functools.partial(make_step, loss_fn=my_loss))`, with
    `my_loss(model, x, generator) -> scalar` and x (B, L) random tokens in [0, K).
    """
    budget = budget or (Budget.quick() if quick else Budget())
    log = log or (lambda *a: print(*a, flush=True))
    env = envelope(command or ["python", *sys.argv],
                   {"presets": list(presets), "modes": list(modes), "batch_size": batch_size, "seq_len": seq_len,
                    "vocab_size": vocab_size, "quick": quick, "budget": asdict(budget)})
    peaks = [measure_peak(seconds=budget.peak_seconds)]
    log(f"fp32 matmul peak: {peaks[0]['flops'] / 1e9:.0f} GFLOP/s")

    def remeasure():
        peaks.append(measure_peak(seconds=budget.peak_seconds))

    rows = []
    for preset in presets:
        rows += bench_preset(preset, modes=tuple(modes), batch_size=batch_size, seq_len=seq_len,
                             vocab_size=vocab_size, budget=budget, make_step=make_step, between=remeasure, log=log)
    remeasure()
    peak = max(p["flops"] for p in peaks)
    by_size = {n: max(p["by_size"][n] for p in peaks) for n in peaks[0]["by_size"]}
    for r in rows:  # MFU against the best peak seen in the whole run
        r["train_mfu"] = r["flops_per_token_train"] * r["train_tokens_per_s"] / peak
        r["train_mfu_median"] = r["flops_per_token_train"] * r["train_tokens_per_s_median"] / peak
        r["forward_mfu"] = r["flops_per_token_forward"] * r["forward_tokens_per_s"] / peak
    result = {
        "benchmark": "throughput",
        "batch_size": batch_size, "seq_len": seq_len, "vocab_size": vocab_size, "dtype": "float32",
        "quick": quick, "budget": asdict(budget),
        "peak": {"flops": peak, "by_size": by_size, "rounds": [p["flops"] for p in peaks]},
        "results": rows,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
    }
    log(f"peak over the run: {peak / 1e9:.0f} GFLOP/s (rounds: "
        f"{', '.join(f'{p / 1e9:.0f}' for p in result['peak']['rounds'])})")
    for r in rows:
        log(f"  {r['preset']:6s} {r['mode']:8s} train {r['train_tokens_per_s']:7.0f} tok/s  MFU {r['train_mfu']:.1%}"
            f" (median {r['train_mfu_median']:.1%})  forward {r['forward_tokens_per_s']:7.0f} tok/s"
            + (f"  generate {r['generate_tokens_per_s']:.0f} tok/s" if "generate_tokens_per_s" in r else ""))
    if out is not None:
        path = write_result(out, "throughput", finish(env), result, markdown(result))
        log(f"wrote {path} and {path.with_suffix('.md')}")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["small", "base"], choices=sorted(PRESETS))
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=256, help="data vocabulary K (default 256)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compiled only (--compile), eager only (--no-compile); default: both")
    p.add_argument("--quick", action="store_true", help="short run (fewer steps and repeats)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "throughput"))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    modes = {None: ("eager", "compiled"), True: ("compiled",), False: ("eager",)}[a.compile]
    argv_list = sys.argv[1:] if argv is None else list(argv)
    command = ["python", "benchmarks/throughput.py", *argv_list]
    return run(a.presets, modes=modes, batch_size=a.batch_size, seq_len=a.seq_len, vocab_size=a.vocab_size,
               quick=a.quick, out=a.out, command=command)


if __name__ == "__main__":
    main()
