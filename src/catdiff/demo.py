"""`make demo`: MDLM and the AR baseline on the `mixture` dataset, end to end.

Trains both, evaluates the likelihood bound against the exact entropy, samples MDLM at
1..64 steps next to the exact-conditional oracle (the best any factorized masked sampler can do),
prints a table and saves a plot. `benchmarks/mixture.py` runs the same study at a larger budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from . import metrics
from .build import load_run
from .config import load_config
from .evaluate import draw_samples, likelihood
from .oracle import oracle_samples
from .plot import plot_runs
from .trainer import train

STEPS = (1, 2, 4, 8, 16, 32, 64)


def run(out: Path, *, preset: str = "tiny", mdlm_steps: int = 1500, ar_steps: int = 800,
        batch_size: int = 128, lr: float = 2e-3, num_samples: int = 1000, extra=(), progress=True) -> dict:
    """Train MDLM and AR on `mixture`, then measure bounds and the few-step curve; returns a dict."""
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    common = ["data.name=mixture", f"model.preset={preset}", f"train.batch_size={batch_size}",
              "train.warmup_steps=50", "train.ckpt_every=100000", "train.log_every=50", f"train.lr={lr}",
              f"train.progress={str(progress).lower()}", *extra]
    results: dict = {"config": {"preset": preset, "batch_size": batch_size, "lr": lr, "extra": list(extra)}}
    for name, steps in (("mdlm", mdlm_steps), ("ar", ar_steps)):
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        cfg = load_config(None, common + [f"method.name={name}", f"train.max_steps={steps}",
                                          f"train.out_dir={run_dir}"])
        print(f"[{name}] training {steps} steps ({preset} preset, batch {batch_size}) ...", flush=True)
        summary = train(cfg)
        _, method, ds = load_run(run_dir)
        lik = likelihood(method, ds, "test", passes=8, max_examples=2048)
        results[name] = {"train_steps": steps, "train_seconds": summary["elapsed_s"],
                         "train_tokens_per_s": summary["tokens_per_s"], "likelihood": lik}
    _, mdlm, ds = load_run(out / "mdlm")
    rows = []
    for k in STEPS:
        samples, sec = draw_samples(mdlm, num_samples, mdlm.sample_options(steps=k, seed=0))
        m = metrics.sample_metrics(samples.samples, ds)
        o = metrics.sample_metrics(oracle_samples(ds, num_samples, k, seed=0), ds)
        rows.append({"steps": k, "nfe": samples.nfe, "mdlm_sample_nll": m["sample_nll"], "mdlm_excess": m["excess"],
                     "mdlm_excess_se": m["excess_stderr"], "mdlm_coherence": m["coherence"],
                     "mdlm_component_kl": m["component_kl"], "oracle_excess": o["excess"],
                     "oracle_coherence": o["coherence"], "sec_per_sample": sec})
    _, ar, _ = load_run(out / "ar")
    ar_s, sec = draw_samples(ar, num_samples, ar.sample_options(seed=0))
    am = metrics.sample_metrics(ar_s.samples, ds)
    results["ar"]["samples"] = {k: am[k] for k in ("sample_nll", "excess", "coherence", "component_kl")}
    results["ar"]["samples"]["sec_per_sample"] = sec
    results["rows"] = rows
    results["entropy_per_token"] = am["entropy_per_token"]
    return results


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    ks = [r["steps"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].errorbar(ks, [r["mdlm_excess"] for r in rows], [2 * r["mdlm_excess_se"] for r in rows],
                   fmt="o-", label="MDLM (trained)")
    ax[0].plot(ks, [r["oracle_excess"] for r in rows], "k--", label="exact-conditional oracle")
    ax[0].axhline(results["ar"]["samples"]["excess"], color="C1", label="AR (L steps)")
    ax[0].set(xscale="log", xlabel="sampling steps", ylabel="sample NLL − H/L (nats/token)",
              title="few-step excess on mixture")
    ax[1].plot(ks, [r["mdlm_coherence"] for r in rows], "o-", label="MDLM")
    ax[1].plot(ks, [r["oracle_coherence"] for r in rows], "k--", label="oracle")
    ax[1].axhline(results["ar"]["samples"]["coherence"], color="C1", label="AR")
    ax[1].set(xscale="log", xlabel="sampling steps", ylabel="coherence", ylim=(0, 1.02))
    for a in ax:
        a.set_xticks(ks, [str(k) for k in ks])
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(res: dict) -> str:
    lines = []
    for name in ("mdlm", "ar"):
        lik = res[name]["likelihood"]
        lines.append(f"- {name}: {lik['bits_per_token']:.4f} bits/token, NELBO gap {100 * lik['nelbo_gap']:.2f}% "
                     f"(bound {lik['nelbo_nats']:.3f} ± {lik['nelbo_nats_se']:.3f} nats/seq vs exact entropy "
                     f"{lik['entropy_nats']:.3f}); {res[name]['train_steps']} steps in "
                     f"{res[name]['train_seconds']:.0f}s")
    a = res["ar"]["samples"]
    lines.append(f"- AR samples: excess {a['excess']:.4f} nats/token, coherence {a['coherence']:.3f}")
    lines.append("")
    cols = ["steps", "nfe", "mdlm_excess", "mdlm_excess_se", "oracle_excess", "mdlm_coherence", "oracle_coherence",
            "mdlm_component_kl"]
    lines.append(metrics.format_table(res["rows"], cols))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--scale", type=float, default=1.0, help="multiply the training steps (smoke: 0.01)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.time()
    res = run(out, mdlm_steps=max(10, int(1500 * args.scale)), ar_steps=max(10, int(800 * args.scale)),
              num_samples=args.num_samples)
    plot(res, out / "few_step.png")
    plot_runs([out / "mdlm", out / "ar"], out / "curves.png")  # the training curves of both runs
    (out / "results.json").write_text(json.dumps(res, indent=1))
    print("\n" + report(res))
    print(f"\nplots: {out / 'few_step.png'}, {out / 'curves.png'}   results: {out / 'results.json'}   "
          f"total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
