"""Helpers shared by the benchmark scripts: the envelope of an invocation, and one training run
with the overrides every benchmark sets (budget, output folder, quiet logging).

Results are written by `catdiff.metrics.report.write_result` into `benchmarks/results/<study>/`;
hand-written readings of them go to the NOTES.md beside them, never into the generated pages."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from catdiff.config import load_config
from catdiff.metrics.report import envelope
from catdiff.trainer import train


def start(args) -> dict:
    """The envelope of this invocation: its command line and parsed arguments (see `envelope`)."""
    return envelope(["python", *sys.argv], vars(args))


def bench_train(config: str, run_dir: Path, args, extra: list[str], log_every: int = 50, resume: bool = False) -> dict:
    """Train `config` into run_dir with the benchmark's budget (args.preset, batch_size, steps,
    minutes of this process's CPU time, so that runs sharing the cores get equal compute; seed,
    progress, overrides; args.data for kjv; a checkpoint every args.ckpt_every steps if set);
    `resume` continues the run from its newest checkpoint (the CPU budget counts across resumes);
    returns steps, wall and CPU time, tokens/s."""
    over = [f"model.preset={args.preset}", f"train.batch_size={args.batch_size}", f"train.out_dir={run_dir}",
            f"train.max_steps={args.steps}", f"train.max_minutes={args.minutes}", "train.budget_clock=cpu",
            f"train.log_every={log_every}", f"train.ckpt_every={getattr(args, 'ckpt_every', None) or 100000}",
            "train.eval_every=0", f"train.progress={str(args.progress).lower()}",
            f"train.seed={args.seed}", *extra, *args.overrides]
    if args.dataset == "kjv":
        over.append(f"data.path={args.data}")
    t0 = time.time()
    summary = train(load_config(config, over), resume=resume)
    if summary["status"] == "interrupted":
        raise SystemExit(f"interrupted while training {run_dir}; finished runs are in the JSON")
    return {"steps": summary["step"], "wall_s": time.time() - t0, "cpu_s": summary["budget_s"],
            "tokens_per_s": summary["tokens_per_s"]}


def add_budget_args(p, minutes: float, batch_size: int, num_samples: int) -> None:
    """The training-budget options every `bench_train` benchmark takes."""
    p.add_argument("--preset", default="tiny")
    p.add_argument("--minutes", type=float, default=minutes, help="training CPU minutes per run (the budget)")
    p.add_argument("--steps", type=int, default=100000, help="step cap per run")
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=num_samples)
    p.add_argument("--progress", action="store_true")


def logged_train_info(run_dir: Path) -> dict:
    """What `bench_train` returns, read back from a finished run's metrics.jsonl (--eval-only)."""
    recs = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in recs if "tokens_per_s" in r]
    if not logged:  # a run shorter than its logging interval
        return {"run": str(run_dir), "steps": max((r.get("step", 0) for r in recs), default=0), "wall_s": None,
                "cpu_s": None, "tokens_per_s": None}
    last = logged[-1]
    return {"run": str(run_dir), "steps": last["step"], "wall_s": last["elapsed_s"], "cpu_s": last.get("budget_s"),
            "tokens_per_s": last["tokens_per_s"]}

