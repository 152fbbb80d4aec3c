"""FUJI's encoder collapse on `mixture`, variant by variant (issue 19): for each trained LDDM run
given, the encoder's y_0 spread over 1024 test sequences (total variance, between-component share)
and the sample metrics at 4 and 8 token steps, with the joint chain and latent-first
(`sample.latent_steps` = the token steps), 512 samples each. Each row carries the run's method
options and training steps, so the table says which change did what. Writes
benchmarks/results/few_step/fuji_collapse.{json,md}.

    python benchmarks/few_step.py --train-only --tag e1 --minutes 4 --methods "lddm-fuji+method.x=y,…"
    python benchmarks/fuji_collapse.py runs/bench_few_step/e1/mixture/seed0/*
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import start  # noqa: E402
from few_step import latent_report  # noqa: E402

from catdiff import metrics  # noqa: E402
from catdiff.evaluate import draw_samples, load_run, with_steps  # noqa: E402
from catdiff.metrics.report import finish, write_result  # noqa: E402

TOGGLES = ("detach_latent_input", "standardize", "independent_times", "clean_latent")


def evaluate(run: str, num_samples: int) -> dict:
    cfg, m, ds = load_run(run)
    recs = [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    opts = asdict(m.options)
    row = {"run": Path(run).name, **{k: opts[k] for k in TOGGLES}, "train_steps": max(r["step"] for r in recs),
           **latent_report(m, ds)}
    scfg = replace(cfg.sample, batch_size=256, seed=0)
    for first in (False, True):
        for k in (4, 8):
            out, _ = draw_samples(m, num_samples, with_steps(replace(scfg, latent_steps=k if first else None), k))
            r = metrics.sample_metrics(out.samples, ds)
            tag = f"{'latent_first' if first else 'joint'}_{k}"
            row.update({f"excess_{tag}": r["excess"], f"excess_se_{tag}": r["excess_stderr"],
                        f"component_kl_{tag}": r["component_kl"], f"nfe_{tag}": out.nfe})
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--num-samples", type=int, default=512)
    p.add_argument("--out", default="benchmarks/results/few_step")
    args = p.parse_args(argv)
    env = start(args)
    rows = []
    for run in args.runs:
        print(f"[{run}]", flush=True)
        rows.append(evaluate(run, args.num_samples))
    cols = ["run", *TOGGLES, "train_steps", "y0_var", "y0_between_share"] + [
        f"{m}_{c}_{k}" for c in ("joint", "latent_first") for k in (4, 8) for m in ("excess", "component_kl")]
    md = ("# FUJI's encoder on `mixture`: which change cures the collapse\n\n"
          + metrics.format_table(rows, cols, headers={}) + "\n")
    write_result(args.out, "fuji_collapse", finish(env), rows, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
