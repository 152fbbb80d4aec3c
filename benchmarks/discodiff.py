"""DisCo-Diff against its latent-free twin at equal optimizer steps and batch (issue: DisCo-Diff;
METHODS.md §4). Three settings (--dataset):

- gaussians8: EDM vs DisCo-Diff on the 8-Gaussian toy (paper: W2 0.118 vs 0.27). Same 4-layer MLP
  denoiser; DisCo-Diff adds the 3-layer encoder (m = 1, k = 8) and its AR prior (stage 2). Exact W2
  to fresh data at several NFE (3 sample seeds; the W2 between two data sets of the same size is
  the noise floor), ODE curvature κ(σ) (mean and median over trajectories, float64), Jacobian norm
  and loss against σ, latent switching. → discodiff_toy.{json,md,png}
- digits: EDM vs DisCo-Diff (m = 4, k = 16) on 8×8 digits as continuous vectors: FD-digits to the
  test split and to the training split (EDM's FID reference) at several Heun step counts,
  curvature/Jacobian/loss. `--retrain-prior` keeps a trained stage 1 and retrains only the AR prior
  (stage 2) for --prior-steps. → discodiff_digits.{json,md,png}
- mixture: difformer vs discodiff-embed (m = 1, k = 16) on the categorical mixture: bits/token
  (DisCo-Diff's bound adds the prior's NLL of the latents) and sample metrics at several steps.
  → discodiff_mixture.{json,md,png}

    python benchmarks/discodiff.py --dataset gaussians8 --steps 5000
    python benchmarks/discodiff.py --dataset digits --steps 4000
    python benchmarks/discodiff.py --dataset mixture --steps 1500
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import start  # noqa: E402

from catdiff import metrics  # noqa: E402
from catdiff.config import load_config  # noqa: E402
from catdiff.diagnose import ode_record, plot_ode  # noqa: E402
from catdiff.evaluate import draw_samples, likelihood, load_run, step_sweep  # noqa: E402
from catdiff.metrics.report import finish, read_result, write_result  # noqa: E402
from catdiff.ode_diagnostics import switch_latents  # noqa: E402
from catdiff.trainer import train  # noqa: E402

HEUN_STEPS = (3, 4, 5, 10, 25, 50)


def heun_budget(k: int) -> int:
    """The network-call budget (sample.steps) of k Heun steps: 2k - 1 calls."""
    return 2 * k - 1


PAIRS = {"gaussians8": ("edm", "discodiff"), "digits": ("edm", "discodiff"),
         "mixture": ("difformer", "discodiff-embed")}
EMBED_STEPS = (4, 8, 16, 32, 64, 128)
TRAIN_RECORD = "bench_train.json"  # train_one's record in the run directory, for --eval-only


def retrain_prior(name: str, args) -> dict:
    """Stage 2 only, from scratch, on the existing run's frozen stage 1 (train_stages with resume:
    a finished stage 1 returns at once)."""
    run = Path(args.runs) / args.dataset / name
    for stale in ("checkpoints", "metrics.jsonl"):
        p = run / stale
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    over = [f"train.out_dir={run}", f"train.max_steps={args.steps}", "train.progress=false",
            f"train.seed={args.seed}", f"method.prior_steps={args.prior_steps}", *args.overrides]
    t0 = time.time()
    summary = train(load_config(f"configs/{name}/{args.dataset}.yaml", over), resume=True)
    return {**previous_train(args, name), "prior_steps": summary["step"], "prior_wall_s": time.time() - t0}


def train_one(name: str, args) -> dict:
    run = Path(args.runs) / args.dataset / name
    shutil.rmtree(run, ignore_errors=True)
    over = [f"train.out_dir={run}", f"train.max_steps={args.steps}", "train.progress=false",
            f"train.seed={args.seed}", *args.overrides]
    latents = name.startswith("discodiff")
    if latents:
        over.append(f"method.prior_steps={args.prior_steps}")
    t0 = time.time()
    summary = train(load_config(f"configs/{name}/{args.dataset}.yaml", over))
    info = {"run": str(run), "wall_s": time.time() - t0, "steps": summary.get("stage1", summary)["step"],
            "prior_steps": summary["step"] if latents else 0}
    (run / TRAIN_RECORD).write_text(json.dumps(info))
    return info


def reference(ds, n: int, seed: int) -> torch.Tensor:
    """n fresh data points (a new set per seed: the estimate's sampling error includes the data's)."""
    return ds.sample(n, torch.Generator().manual_seed(10_000 + seed))


def w2_rows(method, ds, cfg, n: int, seeds=(0, 1, 2)) -> list[dict]:
    rows = []
    for steps in HEUN_STEPS:
        vals, nfe = [], 0
        for s in seeds:
            out, _ = draw_samples(method, n, replace(cfg, steps=heun_budget(steps), seed=s, batch_size=n))
            vals.append(metrics.wasserstein2(out.samples, reference(ds, n, s)))
            nfe = out.nfe
        rows.append({"heun_steps": steps, "nfe": nfe, "w2": float(np.mean(vals)),
                     "w2_se": float(np.std(vals, ddof=1) / np.sqrt(len(vals)))})
    return rows


def prior_check(method, ds, scfg, args, steps=(5, 10)) -> list[dict]:
    """Is the AR prior what limits DisCo-Diff? FD-digits (to the test and training images) with
    latents from the prior vs iid draws from the training images' own latents (a perfect prior of
    the training set), at `steps` Heun steps, mean over args.seeds sample seeds."""
    train = ds.split("train")
    extracted = method.extract(train.to(method.device))
    ref = {"fd_digits": ds.to_tokens(ds.split("test")), "fd_digits_train": ds.to_tokens(train)}
    rows = []
    for k in steps:
        for source in ("prior", "training latents"):
            vals = []
            for s in range(args.seeds):
                g = torch.Generator().manual_seed(s)
                lat = None if source == "prior" else extracted[torch.randint(0, len(train), (args.num_samples,),
                                                                             generator=torch.Generator().manual_seed(s))]
                out = method.sample(args.num_samples, replace(scfg, steps=heun_budget(k), seed=s), g, latents=lat)
                tok = ds.to_tokens(out.samples)
                vals.append([metrics.fd_digits(tok, ref[key]) for key in ref])
            v = np.array(vals)
            rows.append({"steps": k, "nfe": out.nfe, "latents": source,
                         **{key: float(v[:, j].mean()) for j, key in enumerate(ref)},
                         **{f"{key} ±": float(v[:, j].std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
                            for j, key in enumerate(ref)}})
    return rows


def switching(method, ds, n: int = 500, seed: int = 0) -> list[dict]:
    """Generate with latent a until σ_switch, then latent b: share of samples whose component is
    b's (the component most samples with b alone land in)."""
    g = torch.Generator().manual_seed(seed)
    k = method.options.k
    with torch.no_grad():
        cond = {z: method.latent_condition(n, None, g, torch.full((n, 1), z))[0] for z in range(k)}
        sig = method.sigmas(50, "euler")  # 50 σ steps
        x = float(sig[0]) * torch.randn((n, 2), generator=g)
        comp = {}
        for z in range(k):  # the component each latent generates on its own
            alone = switch_latents(method.denoise, x, sig, cond[z], cond[z], 0.0)
            comp[z] = int(torch.mode(ds.component(alone)).values)
        rows = []
        for s_switch in (80.0, 20.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.05):
            hits = []
            for a in range(k):
                b = (a + k // 2) % k
                end = switch_latents(method.denoise, x, sig, cond[a], cond[b], s_switch)
                hits.append(float((ds.component(end) == comp[b]).double().mean()))
            rows.append({"sigma_switch": s_switch, "share_ending_in_b": float(np.mean(hits))})
    return rows


def plot_samples(samples: dict, real: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(samples) + 1, figsize=(4 * (len(samples) + 1), 4))
    for ax, (name, x) in zip(axes, [("data", real)] + list(samples.items()), strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(name)
        ax.set_aspect("equal")
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def curvature_summary(res: dict, a: str, b: str) -> str:
    """Mean over the σ grid of each method's κ statistics, and the share of grid points where b's is lower."""
    parts = []
    for key, label in (("curvature", "mean κ"), ("curvature_median", "median κ")):
        ca, cb = res["methods"][a]["ode"][key], res["methods"][b]["ode"][key]
        lower = sum(kb < ka for (_, ka), (_, kb) in zip(ca, cb, strict=True)) / len(ca)
        big = [(ka, kb) for (s, ka), (_, kb) in zip(ca, cb, strict=True) if s >= 1.0]
        lower_big = sum(kb < ka for ka, kb in big) / max(len(big), 1)
        parts.append(f"{label} averaged over the σ grid: {a} {np.mean([k for _, k in ca]):.4g}, "
                     f"{b} {np.mean([k for _, k in cb]):.4g}; {b}'s is lower at {100 * lower:.0f}% of the "
                     f"{len(ca)} grid points ({100 * lower_big:.0f}% of those with σ ≥ 1)")
    return ". ".join(parts) + "."


def run_toy(args, res: dict, out: Path) -> str:
    samples, records = {}, []
    for name in PAIRS["gaussians8"]:
        print(f"[{name}] ...", flush=True)
        info = previous_train(args, name) if args.eval_only else train_one(name, args)
        cfg, m, ds = load_run(info["run"])
        r = {"train": info, "w2": w2_rows(m, ds, cfg.sample, args.num_samples, range(args.seeds))}
        r["ode"] = rec = ode_record(m, ds, n=512, seed=0)
        records.append(rec)
        if name == "discodiff":
            r["switching"] = switching(m, ds)
        samples[name] = draw_samples(m, args.num_samples, replace(cfg.sample, steps=25, seed=0,
                                                                   batch_size=args.num_samples))[0].samples
        res["methods"][name] = r
    real = ds.split("test")
    floor = [metrics.wasserstein2(ds.sample(args.num_samples, torch.Generator().manual_seed(20_000 + i)),
                                  reference(ds, args.num_samples, i)) for i in range(3)]
    res["w2_noise_floor"] = {"mean": float(np.mean(floor)), "values": floor}
    plot_ode(records, out / "discodiff_toy_ode.png", labels=list(res["methods"]))
    plot_samples(samples, real[:args.num_samples], out / "discodiff_toy_samples.png")
    rows = []
    for h in range(len(HEUN_STEPS)):
        row = {"heun steps": HEUN_STEPS[h]}
        for name, r in res["methods"].items():
            row[f"{name} nfe"] = r["w2"][h]["nfe"]
            row[f"{name} W2"] = r["w2"][h]["w2"]
            row[f"{name} ±"] = r["w2"][h]["w2_se"]
        rows.append(row)
    return ("# EDM vs DisCo-Diff on the 8-Gaussian toy\n\n" + metrics.format_table(rows, list(rows[0])) +
            f"\n\nW2 (mean over {args.seeds} sample seeds, ± its standard error) noise floor (two independent "
            f"data sets of {args.num_samples}): "
            f"{res['w2_noise_floor']['mean']:.4f}. " + curvature_summary(res, "edm", "discodiff") +
            "\n\nLatent switching (DisCo-Diff; latent a until σ_switch, then b):\n\n" +
            metrics.format_table(res["methods"]["discodiff"]["switching"], ["sigma_switch", "share_ending_in_b"]) +
            "\n\n![samples](discodiff_toy_samples.png)\n\n![ode](discodiff_toy_ode.png)\n")


def report_stem(dataset: str) -> str:
    return "discodiff_toy" if dataset == "gaussians8" else f"discodiff_{dataset}"


def previous_train(args, name: str) -> dict:
    """The training record of an existing run (--eval-only): the one train_one left in the run,
    else the previous report's."""
    run = Path(args.runs) / args.dataset / name
    if (run / TRAIN_RECORD).exists():
        return json.loads((run / TRAIN_RECORD).read_text())
    old_path = Path(args.out) / f"{report_stem(args.dataset)}.json"
    old = read_result(old_path)[1] if old_path.exists() else {}
    return old["methods"][name]["train"] if name in old.get("methods", {}) else {"run": str(run), "steps": None,
                                                                                 "prior_steps": None, "wall_s": None}


def run_pair(args, res: dict, out: Path) -> str:
    """digits (FD-digits by Heun steps + ODE diagnostics) or mixture (bits/token + sample metrics)."""
    a, b = PAIRS[args.dataset]
    steps_list = tuple(map(heun_budget, HEUN_STEPS)) if args.dataset == "digits" else EMBED_STEPS
    records = []
    first = "fd_digits" if args.dataset == "digits" else "excess"
    second = "coherence" if args.dataset == "mixture" else "fd_digits_train"
    for name in (a, b):
        print(f"[{name}] ...", flush=True)
        if args.eval_only or (args.retrain_prior and name == a):
            info = previous_train(args, name)
        else:
            info = retrain_prior(name, args) if args.retrain_prior else train_one(name, args)
        cfg, m, ds = load_run(info["run"])
        r = {"train": info}
        if m.has_likelihood:
            r["likelihood"] = likelihood(m, ds, "test", passes=2, max_examples=1024, batch_size=256)
        r["samples_by_seed"] = [step_sweep(m, ds, steps_list, replace(cfg.sample, seed=s, batch_size=args.num_samples),
                                           args.num_samples, progress=False) for s in range(args.seeds)]
        r["samples"] = r["samples_by_seed"][0]
        if args.dataset == "digits":
            r["ode"] = rec = ode_record(m, ds, n=256, seed=0)
            records.append(rec)
            if name == b:
                r["prior_check"] = prior_check(m, ds, cfg.sample, args)
        res["methods"][name] = r

    def by_steps(key: str, with_nfe: bool) -> list[dict]:
        """One row per step count: each method's mean of `key` over sample seeds, ± its standard error."""
        rows = []
        for i, k in enumerate(steps_list):
            row = {"steps": k}
            for name, r in res["methods"].items():
                vals = [seed_rows[i][key] for seed_rows in r["samples_by_seed"]]
                if with_nfe:
                    row[f"{name} nfe"] = r["samples"][i]["nfe"]
                row[f"{name} {key}"] = float(np.mean(vals))
                if len(vals) > 1:
                    row[f"{name} ±"] = float(np.std(vals, ddof=1) / np.sqrt(len(vals)))
                if key == first and second == "coherence":
                    row[f"{name} {second}"] = float(np.mean([sr[i][second] for sr in r["samples_by_seed"]]))
            rows.append(row)
        return rows

    rows = by_steps(first, True)
    train_rows = [{"method": n, "steps": r["train"]["steps"], "prior steps": r["train"]["prior_steps"],
                   "wall_s": r["train"]["wall_s"],
                   **({"bits/token": r["likelihood"]["bits_per_token"]} if "likelihood" in r else {})}
                  for n, r in res["methods"].items()]
    stem = report_stem(args.dataset)
    md = (f"# {a} vs {b} on `{args.dataset}` (equal optimizer steps and batch)\n\n" +
          metrics.format_table(train_rows, list(train_rows[0])) +
          f"\n\n{first} by sampling steps (mean over {args.seeds} sample seeds, ± its standard error):\n\n" +
          metrics.format_table(rows, list(rows[0])) + "\n")
    if args.dataset == "digits":
        rows2 = by_steps(second, False)
        md += (f"\n{second} (FD to the {len(ds.split('train'))} training images, the reference of EDM's FID: "
               "a smaller floor, and it rewards memorisation):\n\n" + metrics.format_table(rows2, list(rows2[0]))
               + "\n")
        # the estimators' floors: iid draws from the training images (a perfect memoriser) in place of samples
        train_tok, test_tok = ds.to_tokens(ds.split("train")), ds.to_tokens(ds.split("test"))
        boot = [train_tok[torch.randint(0, len(train_tok), (args.num_samples,),
                                        generator=torch.Generator().manual_seed(10_000 + i))] for i in range(3)]
        res["fd_floor"] = [metrics.fd_digits(b_, test_tok) for b_ in boot]
        res["fd_train_floor"] = [metrics.fd_digits(b_, train_tok) for b_ in boot]
        md += (f"\nFloors — {args.num_samples} draws with replacement from the training images in place of "
               "samples (3 draws): fd_digits " + ", ".join(f"{v:.3g}" for v in res["fd_floor"]) +
               "; fd_digits_train " + ", ".join(f"{v:.3g}" for v in res["fd_train_floor"]) + ".\n")
        rows3 = res["methods"][b]["prior_check"]
        md += (f"\nIs the prior the limit? {b} with latents from its AR prior vs iid draws of the training "
               "images' own latents (a perfect prior of the training set):\n\n" +
               metrics.format_table(rows3, list(rows3[0])) + "\n")
    if records:
        plot_ode(records, out / f"{stem}_ode.png", labels=[a, b])
        md += "\n" + curvature_summary(res, a, b) + f"\n\n![ode]({stem}_ode.png)\n"
    return md


def combine(paths: list[str], out: Path, env: dict) -> str:
    """Training-seed spread of digits reports (one per training seed): per method and step count the
    mean over training seeds of each run's sample-seed mean, ± the standard error across training
    seeds, and the difference b − a with its standard error (unpaired). → discodiff_digits_seeds.*"""
    reports = [read_result(p_)[1] for p_ in paths]
    a, b = PAIRS["digits"]
    rows, res = [], {"reports": paths, "rows": []}
    for i, k in enumerate(HEUN_STEPS):
        row = {"steps": k, "nfe": reports[0]["methods"][a]["samples"][i]["nfe"]}
        for key in ("fd_digits", "fd_digits_train"):
            stats = {}
            for name in (a, b):
                per_run = [np.mean([sr[i][key] for sr in r["methods"][name]["samples_by_seed"]]) for r in reports]
                stats[name] = (float(np.mean(per_run)), float(np.std(per_run, ddof=1) / np.sqrt(len(per_run))))
                row[f"{name} {key}"], row[f"{name} {key} ±"] = stats[name]
            row[f"{b} − {a} {key}"] = stats[b][0] - stats[a][0]
            row[f"{b} − {a} {key} ±"] = float(np.hypot(stats[a][1], stats[b][1]))
        rows.append(row)
    res["rows"] = rows

    def cols(key: str) -> list[str]:
        return ["steps", "nfe"] + [c for c in rows[0] if c.split()[-1] == key or c.endswith(f"{key} ±")]

    md = (f"# {a} vs {b} on `digits` across {len(reports)} training seeds\n\nReports: " +
          ", ".join(f"`{p_}`" for p_ in paths) +
          "\n\nfd_digits (test reference), mean over training seeds ± standard error across them:\n\n"
          + metrics.format_table(rows, cols("fd_digits")) +
          "\n\nfd_digits_train (training reference):\n\n" + metrics.format_table(rows, cols("fd_digits_train")) + "\n")
    write_result(out, "discodiff_digits_seeds", finish(env), res, md)
    return md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(PAIRS), default="gaussians8")
    p.add_argument("--steps", type=int, default=5000, help="stage-1 / twin optimizer steps (equal budget)")
    p.add_argument("--prior-steps", type=int, default=1000)
    p.add_argument("--num-samples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", default="runs/bench_discodiff")
    p.add_argument("--out", default="benchmarks/results/discodiff")
    p.add_argument("--seeds", type=int, default=3, help="sample seeds per step count")
    p.add_argument("--eval-only", action="store_true", help="re-evaluate the runs already trained")
    p.add_argument("--retrain-prior", action="store_true",
                   help="keep the trained runs' stage 1, retrain DisCo-Diff's prior for --prior-steps, evaluate")
    p.add_argument("--train-only", metavar="METHOD",
                   help="train this method of the pair and stop (evaluate later with --eval-only)")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="digits reports of several training seeds → their spread (discodiff_digits_seeds.*)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    if args.combine:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        print(combine(args.combine, Path(args.out), start(args)))
        return 0
    if args.train_only and args.train_only not in PAIRS[args.dataset]:
        p.error(f"--train-only must be one of {PAIRS[args.dataset]}")
    env = start(args)
    res = {"dataset": args.dataset, "budget": {"steps": args.steps, "prior_steps": args.prior_steps}, "methods": {}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.train_only:  # one method's training, e.g. the two of a pair in parallel processes
        print(json.dumps(train_one(args.train_only, args)))
        return 0
    md = run_toy(args, res, out) if args.dataset == "gaussians8" else run_pair(args, res, out)
    stem = report_stem(args.dataset)
    write_result(out, stem, finish(env), res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
