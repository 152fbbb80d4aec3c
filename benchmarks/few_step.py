"""Few-step generation: MDLM vs LDDM-FUJI vs LDDM-SEQ at equal training compute (issue: LDDM).

Per dataset, trains the three methods from their shipped configs with the same preset, batch and
budget of CPU time (`--minutes` of each training process's CPU time, so runs sharing the
cores still get equal compute; steps reached are reported), then measures the likelihood bound
(bits/token; LDDM's includes the latent's cost), the few-step curve of every sample metric at
{1, 2, 4, 8, 16, 32, 64, 128} token steps (SEQ's latent chain gets as many steps as the tokens;
`--latent-grid` adds SEQ rows with other latent budgets), wall-clock per sample and network calls.
mixture: the exact-conditional oracle as the reference line. binsaw: R² of linear and small-MLP
probes from the learned latent y_0 to the true shift (as (cos 4πu, sin 4πu): u and u + 1/2 give the
same law with two saws). Writes benchmarks/results/few_step/few_step_<dataset>.{json,md,png}.

    python benchmarks/few_step.py --dataset mixture --minutes 8
    python benchmarks/few_step.py --dataset kjv --minutes 10 --judge runs/bench_kjv/ar
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import add_budget_args, bench_train, logged_train_info, start  # noqa: E402

from catdiff import metrics  # noqa: E402
from catdiff.config import load_config  # noqa: E402
from catdiff.evaluate import likelihood, load_judge, load_run, step_sweep  # noqa: E402
from catdiff.metrics.report import finish, read_result, write_result  # noqa: E402
from catdiff.oracle import oracle_samples  # noqa: E402

METHODS = ("mdlm", "lddm-fuji", "lddm-seq")
STEPS = (1, 2, 4, 8, 16, 32, 64, 128)


def train_one(method: str, args) -> dict:
    run_dir = Path(args.runs) / args.dataset / method
    shutil.rmtree(run_dir, ignore_errors=True)
    info = bench_train(f"configs/{method}/{args.dataset}.yaml", run_dir, args, [f"train.lr={args.lr}"])
    return {"run": str(run_dir), **info}


def probe_r2(method, dataset, n_train: int = 2048, n_test: int = 1024, seed: int = 0) -> dict:
    """R² (held out) of probes from y_0 = E(x) to (cos 4πu, sin 4πu) of the true binsaw shift u."""
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(seed)
    x, u = dataset.sample_with_latent(n_train + n_test, g)
    with torch.no_grad():
        y = torch.cat([method.encode(x[i:i + 512].to(method.device)).flatten(1).cpu()
                       for i in range(0, len(x), 512)]).numpy()
    target = np.stack([np.cos(4 * np.pi * u.numpy()), np.sin(4 * np.pi * u.numpy())], 1)
    out = {}
    for name, model in (("linear", LinearRegression()),
                        ("mlp", make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=2000,
                                                                random_state=seed)))):
        model.fit(y[:n_train], target[:n_train])
        out[f"r2_{name}"] = float(model.score(y[n_train:], target[n_train:]))
    return out


def evaluate_one(method_name: str, info: dict, args, judge) -> dict:
    cfg, m, ds = load_run(info["run"])
    lik = likelihood(m, ds, "test", passes=args.passes, max_examples=args.max_examples, batch_size=128)
    scfg = replace(cfg.sample, batch_size=256, seed=0)
    rows = step_sweep(m, ds, STEPS, scfg, args.num_samples, judge, progress=args.progress)
    res = {"method": method_name, "train": info, "likelihood": lik, "samples": rows}
    if method_name == "lddm-seq" and args.latent_grid:
        grid = []
        for ls in args.latent_grid:
            for r in step_sweep(m, ds, (4, 8), replace(scfg, latent_steps=ls), args.num_samples, judge, False):
                grid.append({"latent_steps": ls, **r})
        res["latent_grid"] = grid
    if method_name.startswith("lddm") and ds.name == "binsaw":
        res["probe"] = probe_r2(m, ds)
    return res


def oracle_rows(args) -> list[dict]:
    from catdiff.build import build_dataset

    ds = build_dataset(load_config(f"configs/mdlm/{args.dataset}.yaml").data)
    return [{"steps": k, **metrics.sample_metrics(oracle_samples(ds, args.num_samples, k, seed=0), ds)}
            for k in STEPS]


def main_metric(rows: list[dict]) -> tuple[str, str]:
    r = rows[0]
    if "excess" in r:
        return "excess", "coherence"
    if "fd_digits" in r:
        return "fd_digits", "unigram_entropy"
    return ("gen_ppl" if "gen_ppl" in r else "unigram_entropy"), "unigram_entropy"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, second = main_metric(res["methods"][0]["samples"])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for r in res["methods"]:
        ks = [s["steps"] for s in r["samples"]]
        ax[0].plot(ks, [s[first] for s in r["samples"]], "o-", label=r["method"])
        ax[1].plot(ks, [s[second] for s in r["samples"]], "o-", label=r["method"])
    if res.get("oracle"):
        ks = [s["steps"] for s in res["oracle"]]
        ax[0].plot(ks, [s[first] for s in res["oracle"]], "k--", label="exact-conditional oracle (factorized)")
        ax[1].plot(ks, [s[second] for s in res["oracle"]], "k--", label="oracle")
    for a, name in zip(ax, (first, second), strict=True):
        a.set_xscale("log", base=2)
        a.set_xlabel("token steps")
        a.set_ylabel(name)
        a.grid(alpha=0.3)
    if first in ("gen_ppl", "fd_digits"):
        ax[0].set_yscale("log")
    ax[0].legend()
    fig.suptitle(f"few-step curve on {res['dataset']} ({res['budget']['preset']}, "
                 f"{res['budget']['minutes']:g} CPU-min per method)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(res: dict) -> str:
    lines, lrows = [], []
    for r in res["methods"]:
        lik, tr = r["likelihood"], r["train"]
        row = {"method": r["method"], "train steps": tr["steps"], "cpu_s": tr.get("cpu_s"), "wall_s": tr["wall_s"],
               "tokens/s": tr["tokens_per_s"], "bits/token": lik["bits_per_token"],
               "± (SE)": lik["bits_per_token"] * lik["nelbo_nats_se"] / lik["nelbo_nats"]}
        if "nelbo_gap" in lik:
            row["NELBO gap"] = lik["nelbo_gap"]
        for k, v in r.get("probe", {}).items():
            row[k] = v
        lrows.append(row)
    cols = list(dict.fromkeys(k for row in lrows for k in row))  # probe columns exist for LDDM rows only
    lines += ["## Training and likelihood", "", metrics.format_table(lrows, cols), ""]
    first, second = main_metric(res["methods"][0]["samples"])
    table = {k: {"steps": k} for k in STEPS}
    for r in res["methods"]:
        for s in r["samples"]:
            table[s["steps"]][f"{r['method']} {first}"] = s[first]
            table[s["steps"]][f"{r['method']} {second}"] = s[second]
            table[s["steps"]][f"{r['method']} nfe"] = s["nfe"]
            table[s["steps"]][f"{r['method']} s/sample"] = s["sec_per_sample"]
    for o in res.get("oracle") or []:
        table[o["steps"]][f"oracle {first}"] = o[first]
        table[o["steps"]][f"oracle {second}"] = o[second]
    cols = list(table[STEPS[0]])
    lines += [f"## Few-step curve ({first}, {second}; nfe = network calls per batch)", "",
              metrics.format_table(list(table.values()), cols), ""]
    for r in res["methods"]:
        if r.get("latent_grid"):
            g = [{"latent steps": x["latent_steps"], "token steps": x["steps"], "nfe": x["nfe"], first: x[first],
                  second: x[second]} for x in r["latent_grid"]]
            lines += ["## LDDM-SEQ: latent steps × token steps", "", metrics.format_table(g, list(g[0])), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mixture", "binsaw", "digits", "kjv"], default="mixture")
    p.add_argument("--methods", default=",".join(METHODS))
    add_budget_args(p, minutes=8.0, batch_size=64, num_samples=1024)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=1024)
    p.add_argument("--latent-grid", default="1,2,4,16", help="SEQ latent step counts at 4 and 8 token steps")
    p.add_argument("--judge", default=None, help="AR run directory for gen-PPL (text)")
    p.add_argument("--data", default="../shared/data/kjv.txt")
    p.add_argument("--runs", default="runs/bench_few_step")
    p.add_argument("--out", default="benchmarks/results/few_step")
    p.add_argument("--eval-only", action="store_true", help="re-evaluate the runs already trained")
    p.add_argument("--render-only", action="store_true", help="rewrite the .md and .png from the JSON")
    p.add_argument("--tag", default="", help="suffix of the output files and run folder (variants)")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every method")
    args = p.parse_args(argv)
    args.latent_grid = [int(v) for v in args.latent_grid.split(",") if v]
    judge = load_judge(args.judge) if args.judge else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag.replace(".", "")  # a dot would read as a file suffix
    stem = f"few_step_{args.dataset}{'_' + tag if tag else ''}"
    if args.tag:
        args.runs = str(Path(args.runs) / args.tag)
    env = start(args)
    res = {"dataset": args.dataset, "budget": {"preset": args.preset, "minutes": args.minutes,
                                               "batch_size": args.batch_size, "lr": args.lr}, "methods": []}
    if args.render_only:  # the page of an earlier run: its envelope and results
        env, res = read_result(out / f"{stem}.json")
    for name in [] if args.render_only else args.methods.split(","):
        print(f"[{name}] ...", flush=True)
        info = logged_train_info(Path(args.runs) / args.dataset / name) if args.eval_only else train_one(name, args)
        res["methods"].append(evaluate_one(name, info, args, judge))
        write_result(out, stem, env, res)  # partial results survive
    if args.dataset == "mixture" and not args.tag and not args.render_only:
        res["oracle"] = oracle_rows(args)
    plot(res, out / f"{stem}.png")
    b = res["budget"]
    md = (f"# Few-step generation on `{args.dataset}` ({b['preset']} preset, batch {b['batch_size']}, "
          f"{b['minutes']:g} CPU-min of training per method)\n\n" + report(res) + f"\n![few-step]({stem}.png)\n")
    write_result(out, stem, env if args.render_only else finish(env), res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
