"""Embedding collapse and its cures (issue: embedding diffusion). Trains embed-naive, diffusion-lm,
cdcd, difformer and catdm, plus CATDM's ablations and Difformer with F = 1, at one budget (same
preset, batch and optimizer steps; wall time reported), then measures per run: the embedding
statistics over training, CE(t), the likelihood bound (bits/token) and sample metrics at 10/50/200
steps. Writes benchmarks/results/embedding_collapse/embedding_collapse_<dataset>_<preset>.{json,md} and a PNG.

    python benchmarks/embedding_collapse.py --dataset mixture --preset small --steps 400 --batch-size 32
    python benchmarks/embedding_collapse.py --dataset kjv --preset small --minutes 5 --judge runs/bench_kjv/ar
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_train, start  # noqa: E402

from catdiff import metrics  # noqa: E402
from catdiff.diagnose import diagnose_run, plot_diagnostics  # noqa: E402
from catdiff.evaluate import likelihood, load_judge, load_run, step_sweep  # noqa: E402
from catdiff.metrics.report import finish, read_result, write_result  # noqa: E402

RUNS = {  # label: (method, extra overrides)
    "embed-naive": ("embed-naive", []),
    "diffusion-lm": ("diffusion-lm", []),
    "cdcd": ("cdcd", []),
    "difformer": ("difformer", []),
    "difformer F=1": ("difformer", ["method.rescale=1.0"]),
    "catdm": ("catdm", []),
    "catdm -CM": ("catdm", ["method.w_cm=0.0"]),
    "catdm -shift": ("catdm", ["method.shift=1.0"]),
    "catdm -drop": ("catdm", ["method.drop_prob=0.0"]),
    # not in the list: catdm weights L_DM by min(SNR, 5) since the tiny-preset runs showed the
    # unweighted term collapsing it (results/embedding_collapse/); these isolate that weighting
    "catdm unweighted": ("catdm", ["method.mse_weight=none"]),
    "embed-naive min-SNR": ("embed-naive", ["method.mse_weight=min_snr"]),
}


def run_one(label: str, args, judge) -> dict:
    method, extra = RUNS[label]
    run_dir = Path(args.runs) / args.dataset / label.replace(" ", "_").replace("=", "")
    if not args.eval_only:
        shutil.rmtree(run_dir, ignore_errors=True)
        train_info = bench_train(f"configs/{method}/{args.dataset}.yaml", run_dir, args, extra, log_every=25)
    else:
        recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
        last = [r for r in recs if "tokens_per_s" in r][-1]
        train_info = {"steps": last["step"], "wall_s": last["elapsed_s"], "tokens_per_s": last["tokens_per_s"]}
    cfg, m, ds = load_run(run_dir)
    lik = likelihood(m, ds, "test", passes=args.passes, max_examples=args.max_examples, batch_size=64)
    diag = diagnose_run(run_dir, n_t=21, max_examples=min(256, args.max_examples), plot=False)
    rows = step_sweep(m, ds, [10, 50, 200], replace(cfg.sample, batch_size=256, seed=0), args.num_samples, judge,
                      progress=False)
    hist = diag["history"]
    first = {k: v[0][1] for k, v in hist.items() if v}
    return {"label": label, "method": method, "overrides": extra, "train": train_info, "likelihood": lik,
            "diagnostics": diag, "initial": first, "samples": rows}


def table(res: dict) -> str:
    rows = []
    for r in res["runs"]:
        f, i = r["diagnostics"]["final"], r["initial"]
        ce = dict(zip(r["diagnostics"]["t"], r["diagnostics"]["ce"], strict=True))
        row = {"run": r["label"], "steps": r["train"]["steps"], "wall_s": r["train"]["wall_s"],
               "bits/token": r["likelihood"]["bits_per_token"],
               "spread first→last": f"{i.get('emb_pairwise', float('nan')):.3g}→{f['emb_pairwise']:.3g}",
               "norm": f["emb_norm"], "rank": f["emb_rank"], "decodable": f["emb_decodable"],
               "CE(0.25)": ce.get(0.25, float("nan")), "CE(0.5)": ce.get(0.5, float("nan"))}
        for s in r["samples"]:
            for k in ("excess", "coherence", "gen_ppl") + (("unigram_entropy",) if "gen_ppl" in s else ()):
                if k in s:
                    row[f"{k}@{s['steps']}"] = s[k]
        rows.append(row)
    return metrics.format_table(rows, list(rows[0]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mixture", "kjv"], default="mixture")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (the budget)")
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock cap per run (0 = none)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="comma-separated labels (default: all runs)")
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=512)
    p.add_argument("--judge", default=None, help="AR run directory for gen-PPL (text)")
    p.add_argument("--data", default="../shared/data/kjv.txt")
    p.add_argument("--runs", default="runs/bench_collapse")
    p.add_argument("--out", default="benchmarks/results/embedding_collapse")
    p.add_argument("--eval-only", action="store_true", help="re-evaluate existing runs")
    p.add_argument("--progress", action="store_true")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = p.parse_args(argv)
    labels = args.only.split(",") if args.only else list(RUNS)
    judge = load_judge(args.judge) if args.judge else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"embedding_collapse_{args.dataset}_{args.preset}"
    env = start(args)
    res = {"budget": {"preset": args.preset, "steps": args.steps, "minutes": args.minutes,
                      "batch_size": args.batch_size}, "runs": []}
    if args.only and (out / f"{stem}.json").is_file():  # keep the other runs of an earlier invocation
        res["runs"] = [r for r in read_result(out / f"{stem}.json")[1]["runs"] if r["label"] not in labels]
    for label in labels:
        print(f"[{label}] ...", flush=True)
        res["runs"].append(run_one(label, args, judge))
        res["runs"].sort(key=lambda r: list(RUNS).index(r["label"]) if r["label"] in RUNS else len(RUNS))
        write_result(out, stem, env, res)  # partial results survive
    plot_diagnostics([r["diagnostics"] for r in res["runs"]], out / f"{stem}_diagnostics.png",
                     labels=[r["label"] for r in res["runs"]])
    md = (f"# Embedding collapse on `{args.dataset}` ({args.preset} preset, batch {args.batch_size}, "
          f"{args.steps} steps{f', ≤ {args.minutes:g} min' if args.minutes else ''} per run)\n\n" + table(res) +
          "\n\nspread = mean pairwise distance of the clean embeddings (first logged step → end); CE(t) = "
          "denoising cross-entropy in nats/token (uniform = log K); excess = sample NLL − H/L in nats/token; "
          f"sample columns at 10/50/200 steps.\n\n![diagnostics]({stem}_diagnostics.png)\n")
    write_result(out, stem, finish(env), res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
