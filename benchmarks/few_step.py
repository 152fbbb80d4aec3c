"""Few-step generation: MDLM vs LDDM-FUJI vs LDDM-SEQ at equal training compute (issues: LDDM, 19).

Per dataset and training seed, trains each method from its shipped config with the same preset,
batch and budget of CPU time (`--minutes` of each training process's CPU time, so runs sharing the
cores still get equal compute; steps reached are reported), then measures the likelihood bound
(bits/token; LDDM's includes the latent's cost), the few-step curve of every sample metric at
{1, 2, 4, 8, 16, 32, 64, 128} token steps, wall-clock per sample and network calls. SEQ's latent
chain gets as many steps as the tokens (`--latent-grid` adds rows with other latent budgets); FUJI
is also sampled latent-first (`sample.latent_steps` = the token steps: the latent decided before any
token). Every LDDM run is also sampled given encoded test rows (`DataLatent`: its token chain given
a true latent, a diagnostic that says whether the latent generator or the token denoiser limits it;
`--no-data-latent` skips it). Rows are the mean ± SE over `--seeds`. A method spec may carry config overrides after `+`
(`lddm-fuji+method.detach_latent_input=false`: an ablation row).

mixture: the random-order exact-conditional oracle (factorized) on the same plot, over as many
sampling seeds as training seeds; coverage columns (component KL to the true weights, component
entropy), the encoder's y_0 spread (total variance, between-component share), and a row counts as
"below the oracle" only when its excess is below the oracle's and its component KL is no worse
(mean KL ≤ oracle mean + 2 SE of the difference). hmm: state KL / entropy instead. binsaw: shift-bin
KL / entropy (16 bins of the shift's phase, `BinSaw.latent_assignments`) and R² of linear and
small-MLP probes from y_0 to the true shift. Writes
benchmarks/results/few_step/few_step_<dataset>.{json,md,png}.

    python benchmarks/few_step.py --dataset mixture --minutes 10 --seeds 0,1,2
    # parallel: one training process per core, then one evaluation of them all
    OMP_NUM_THREADS=1 python benchmarks/few_step.py --train-only --seeds 0 &
    OMP_NUM_THREADS=1 python benchmarks/few_step.py --train-only --seeds 1 & wait
    python benchmarks/few_step.py --eval-only --seeds 0 & python benchmarks/few_step.py --eval-only --seeds 1 & wait
    python benchmarks/few_step.py --eval-only --seeds 0,1  # reuses both evaluations, adds the oracle
    # long runs that may be interrupted: checkpoints every 200 steps, rerun the same line to finish
    OMP_NUM_THREADS=1 python benchmarks/few_step.py --train-only --resume --ckpt-every 200 --seeds 0
    # seeds evaluated in an earlier session whose run folders are gone: take them from its page
    python benchmarks/few_step.py --eval-only --seeds 0,1,2 --reuse benchmarks/results/few_step/few_step_mixture.json
    python benchmarks/few_step.py --dataset kjv --minutes 10 --judge runs/bench_kjv/ar
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
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
from catdiff.errors import CatdiffError  # noqa: E402
from catdiff.evaluate import likelihood, load_judge, load_run, step_sweep  # noqa: E402
from catdiff.methods.lddm import latent_spread  # noqa: E402
from catdiff.metrics.report import finish, read_result, write_result  # noqa: E402
from catdiff.oracle import oracle_samples  # noqa: E402

METHODS = ("mdlm", "lddm-fuji", "lddm-seq")
STEPS = (1, 2, 4, 8, 16, 32, 64, 128)
ORACLE = "oracle (exact conditionals, factorized)"


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """'lddm-fuji+method.lead=2' → ('lddm-fuji', ['method.lead=2'])."""
    name, *over = spec.split("+")
    return name, over


def run_dir(args, seed: int, spec: str) -> Path:
    return Path(args.runs) / args.dataset / f"seed{seed}" / re.sub(r"[^A-Za-z0-9_.=-]+", "_", spec)


def finished(rd: Path) -> bool:
    """Whether a run folder holds a finished run: the trainer's closing validation record."""
    metrics = rd / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return bool(lines) and "val_bits_per_token" in json.loads(lines[-1])


def train_one(spec: str, seed: int, args) -> dict:
    """Train one run from scratch, or with --resume finish an interrupted one (newest checkpoint)
    and leave a finished one as it is."""
    name, over = parse_spec(spec)
    rd = run_dir(args, seed, spec)
    resume = args.resume and any((rd / "checkpoints").glob("step-*"))
    if resume and finished(rd):
        print(f"  {rd} is finished; kept", flush=True)
        return logged_train_info(rd)
    if not resume:
        shutil.rmtree(rd, ignore_errors=True)
    a = copy.copy(args)
    a.seed = seed  # bench_train's train.seed
    info = bench_train(f"configs/{name}/{args.dataset}.yaml", rd, a, [f"train.lr={args.lr}", *over], resume=resume)
    return {"run": str(rd), **info}


def probe_r2(method, dataset, n_train: int = 2048, n_test: int = 1024, seed: int = 0) -> dict:
    """R² (held out) of probes from y_0 = E(x) to (cos 4πu, sin 4πu) of the true binsaw shift u."""
    from sklearn.linear_model import LinearRegression
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(seed)
    x, u = dataset.sample_with_latent(n_train + n_test, g)
    y = encode(method, x).flatten(1).numpy()
    target = np.stack([np.cos(4 * np.pi * u.numpy()), np.sin(4 * np.pi * u.numpy())], 1)
    out = {}
    for name, model in (("linear", LinearRegression()),
                        ("mlp", make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(64, 64), max_iter=2000,
                                                                random_state=seed)))):
        model.fit(y[:n_train], target[:n_train])
        out[f"r2_{name}"] = float(model.score(y[n_train:], target[n_train:]))
    return out


@torch.no_grad()
def encode(method, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([method.encode(x[i:i + 512].to(method.device)).cpu() for i in range(0, len(x), 512)])


def latent_report(method, dataset, n: int = 1024) -> dict:
    """The encoder's y_0 spread over n test rows; between-class share where the data has one class."""
    x = dataset.head("test", n)
    return latent_spread(encode(method, x), dataset.latent_labels(x))


DATA_LATENT = " (data latent)"


class DataLatent:
    """An LDDM run sampled with y_0 = E(x) of held-out rows instead of a generated latent: its token
    chain given a true latent (teacher forcing, not a sampler). Set against the generated-latent
    curve it says which half limits the few-step samples, the latent generator or the token
    denoiser. Rows of `y` are used in order and reused from the top once spent."""

    def __init__(self, method, y: torch.Tensor):
        self.method, self.y, self.device, self.used = method, y, method.device, 0

    def sample(self, n, cfg, generator=None, condition=None):
        if self.used + n > len(self.y):
            self.used = 0
        y = self.y[self.used:self.used + n].to(self.device)
        self.used += n
        return self.method.sample(n, cfg, generator, condition=condition, latent=y)


def evaluate_one(spec: str, seed: int, info: dict, args, judge) -> list[dict]:
    """One record per curve of this run: the method as configured, FUJI also latent-first, and
    every LDDM run also given data latents (`DataLatent`, a diagnostic)."""
    name, _ = parse_spec(spec)
    cfg, m, ds = load_run(info["run"])
    base = {"seed": seed, "train": info,
            "likelihood": likelihood(m, ds, "test", passes=args.passes, max_examples=args.max_examples,
                                     batch_size=128)}
    if name.startswith("lddm"):
        base["latent"] = latent_report(m, ds)
        if ds.name == "binsaw":
            base["probe"] = probe_r2(m, ds)
    scfg = replace(cfg.sample, batch_size=256, seed=0)
    out = [{"method": spec, **base, "samples": step_sweep(m, ds, STEPS, scfg, args.num_samples, judge,
                                                           progress=args.progress)}]
    if name == "lddm-fuji":  # the latent decided first, then the tokens: k latent + k token calls
        rows = [step_sweep(m, ds, (k,), replace(scfg, latent_steps=k), args.num_samples, judge, False)[0]
                for k in STEPS]
        out.append({"method": f"{spec} (latent first)", **base, "samples": rows})
    if name.startswith("lddm") and args.data_latent:
        y = encode(m, ds.head("test", args.num_samples))  # (n, P, dp)
        out.append({"method": spec + DATA_LATENT, **base,
                    "samples": step_sweep(DataLatent(m, y), ds, STEPS, scfg, args.num_samples, judge, False)})
    if name == "lddm-seq" and args.latent_grid:
        out[0]["latent_grid"] = [{"latent_steps": ls, **r} for ls in args.latent_grid
                                 for r in step_sweep(m, ds, (4, 8), replace(scfg, latent_steps=ls),
                                                     args.num_samples, judge, False)]
    return out


EVAL_KEYS = ("num_samples", "passes", "max_examples", "latent_grid", "judge", "data_latent")
BUDGET_KEYS = ("dataset", "preset", "minutes", "batch_size", "lr", "overrides")


def evaluated(spec: str, seed: int, args, judge) -> list[dict]:
    """evaluate_one, trained first unless --eval-only; its records are kept in the run folder
    (few_step_eval.json, with the evaluation settings) and reused by a later --eval-only with the
    same settings, so that several processes can evaluate disjoint seeds and one merges them."""
    rd = run_dir(args, seed, spec)
    key = {k: getattr(args, k) for k in EVAL_KEYS}
    cache = rd / "few_step_eval.json"
    if args.eval_only and cache.exists():
        kept = json.loads(cache.read_text())
        if kept["settings"] == key:
            return kept["records"]
    if args.eval_only and not finished(rd):
        raise CatdiffError(f"--eval-only: no finished run of {spec} seed {seed} in {rd} (train it with --train-only, "
                         "or --reuse a page that holds it)")
    info = logged_train_info(rd) if args.eval_only else train_one(spec, seed, args)
    records = evaluate_one(spec, seed, info, args, judge)
    cache.write_text(json.dumps({"settings": key, "records": records}))
    return records


def run_pair(record: dict) -> tuple[str, int]:
    """(spec, seed) of the run a record came from: 'lddm-fuji (latent first)' → 'lddm-fuji'."""
    return record["method"].split(" (")[0], record["seed"]


def reused_records(paths: list[str], args) -> tuple[dict, list[dict]]:
    """--reuse: the records of earlier result pages by (spec, seed), and where they came from. A
    page outlives its run folders (they stay on the machine that trained them), so seeds evaluated
    in one session can be merged with seeds trained in another. A page whose training budget or
    evaluation settings differ from this command's is refused, not mixed in."""
    kept, sources = {}, []
    for path in paths:
        if not Path(path).is_file():
            raise CatdiffError(f"--reuse {path}: no such result file")
        env, res = read_result(path)
        diff = [k for k in BUDGET_KEYS + EVAL_KEYS if env["config"].get(k) != getattr(args, k)]
        if diff:
            raise CatdiffError(f"--reuse {path}: its {', '.join(diff)} differ from this command's")
        for r in res["runs"]:
            kept.setdefault(run_pair(r), []).append(r)
        sources += [{"file": str(path), "commit": env["commit"], "date": env["date"],
                     "runs": sorted({run_pair(r) for r in res["runs"]})},
                    *res.get("reused", [])]
    return kept, sources


def oracle_records(args, seeds) -> list[dict]:
    from catdiff.build import build_dataset

    ds = build_dataset(load_config(f"configs/mdlm/{args.dataset}.yaml").data)
    return [{"method": ORACLE, "seed": s, "samples": [
        {"steps": k, "nfe": k, **metrics.sample_metrics(oracle_samples(ds, args.num_samples, k, seed=s), ds)}
        for k in STEPS]} for s in seeds]


# ---- mean ± SE over seeds ---------------------------------------------------------------------
def mean_se(values) -> tuple[float, float]:
    v = [float(x) for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    return float(np.mean(v)), (float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan)


def _merge(dicts: list[dict]) -> dict:
    """Numeric keys → mean and `<key>_se` across the dicts (SE over seeds); others from the first."""
    out = {}
    for k, v in dicts[0].items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k], se = mean_se(d.get(k) for d in dicts)
            if not k.endswith("_se") and not k.endswith("_stderr"):
                out[f"{k}_se"] = se
        else:
            out[k] = v
    return out


def aggregate(records: list[dict]) -> dict:
    """One method's records across seeds → its mean ± SE rows (same keys, `_se` added)."""
    r0 = records[0]
    out = {"method": r0["method"], "seeds": [r["seed"] for r in records],
           "samples": [_merge([r["samples"][i] for r in records]) for i in range(len(r0["samples"]))]}
    for key in ("train", "likelihood", "latent", "probe"):
        if key in r0:
            out[key] = _merge([r[key] for r in records])
    if "latent_grid" in r0:
        out["latent_grid"] = [_merge([r["latent_grid"][i] for r in records]) for i in range(len(r0["latent_grid"]))]
    return out


def below_oracle(row: dict, oracle: dict, cov: str) -> bool | None:
    """Excess below the oracle's with coverage no worse: KL mean ≤ oracle's + 2 SE of the difference."""
    if "excess" not in row or cov not in row:
        return None
    se = math.sqrt(sum(x ** 2 for x in (row.get(f"{cov}_se"), oracle.get(f"{cov}_se")) if x and math.isfinite(x)))
    return bool(row["excess"] < oracle["excess"] and row[cov] <= oracle[cov] + 2 * se)


# ---- pages ------------------------------------------------------------------------------------
def coverage_kl(row: dict) -> str | None:
    """The row's coverage KL key (`<latent>_kl` of `metrics.latent_coverage`), if its dataset has one."""
    return next((k for k in row if k.endswith("_kl") and f"{k[:-3]}_entropy_true" in row), None)


def main_metric(rows: list[dict]) -> tuple[str, str]:
    r = rows[0]
    if "excess" in r:
        return "excess", coverage_kl(r) or "coherence"
    if "fd_digits" in r:
        return "fd_digits", "unigram_entropy"
    return ("gen_ppl" if "gen_ppl" in r else "unigram_entropy"), "unigram_entropy"


def curves(res: dict) -> list[dict]:
    return res["methods"] + ([res["oracle"]] if res.get("oracle") else [])


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, second = main_metric(res["methods"][0]["samples"])
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in curves(res):
        ks = [s["steps"] for s in r["samples"]]
        style = (dict(fmt="k--", capsize=2) if r["method"] == ORACLE else
                 dict(fmt="x:", capsize=2, ms=4) if r["method"].endswith(DATA_LATENT) else
                 dict(fmt="o-", capsize=2, ms=3))
        for a, key in zip(ax, (first, second), strict=True):
            se = [s.get(f"{key}_se", math.nan) for s in r["samples"]]
            a.errorbar(ks, [s[key] for s in r["samples"]], yerr=[0 if not math.isfinite(e) else e for e in se],
                       label=r["method"], **style)
    for a, name in zip(ax, (first, second), strict=True):
        a.set_xscale("log", base=2)
        a.set_xlabel("token steps")
        a.set_ylabel(metrics.report.UNITS.get(name, name))
        a.grid(alpha=0.3)
    if first in ("gen_ppl", "fd_digits"):
        ax[0].set_yscale("log")
    ax[0].legend(fontsize=8)
    b = res["budget"]
    fig.suptitle(f"few-step curve on {res['dataset']} ({b['preset']}, {b['minutes']:g} CPU-min per run, "
                 f"mean ± SE over {len(b['seeds'])} training seed(s))")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pm(mean, se) -> str | None:
    if mean is None or not math.isfinite(mean):
        return None
    return f"{mean:.3g}" if se is None or not math.isfinite(se) else f"{mean:.3g} ± {se:.2g}"


def report(res: dict) -> str:
    lines, lrows = [], []
    for r in res["methods"]:
        lik, tr = r["likelihood"], r["train"]
        row = {"method": r["method"], "seeds": len(r["seeds"]), "train steps": tr["steps"], "cpu_s": tr.get("cpu_s"),
               "tokens/s": tr["tokens_per_s"], "bits/token": _pm(lik["bits_per_token"], lik.get("bits_per_token_se"))}
        if "nelbo_gap" in lik:
            row["NELBO gap"] = lik["nelbo_gap"]
        extra = {**r.get("latent", {}), **r.get("probe", {})}
        for k, v in extra.items():
            if not k.endswith("_se"):
                row[k] = _pm(v, extra.get(f"{k}_se"))
        lrows.append(row)
    cols = list(dict.fromkeys(k for row in lrows for k in row))
    lines += ["## Training and likelihood (mean ± SE over training seeds)", "",
              metrics.format_table(lrows, cols, headers={}), ""]
    first, second = main_metric(res["methods"][0]["samples"])
    entropy = f"{second[:-3]}_entropy" if second.endswith("_kl") else ""
    keys = [first, second] + [k for k in (entropy, "coherence")
                              if k in res["methods"][0]["samples"][0] and k not in (first, second)]
    for key in keys + ["nfe", "sec_per_sample"]:
        table = {k: {"steps": k} for k in STEPS}
        for r in curves(res):
            for s in r["samples"]:
                table[s["steps"]][r["method"]] = (s.get(key) if key in ("nfe", "sec_per_sample")
                                                  else _pm(s.get(key), s.get(f"{key}_se")))
        if key.endswith("_entropy"):
            truth = res["methods"][0]["samples"][0].get(f"{key}_true")
            key_title = f"{metrics.report.UNITS.get(key, key)}; truth {truth:.3g}"
        else:
            key_title = metrics.report.UNITS.get(key, key)
        lines += [f"## {key_title}", "", metrics.format_table(list(table.values()), ["steps"] + [
            r["method"] for r in curves(res)], headers={}), ""]
    if res.get("oracle") and first == "excess":
        table = {k: {"steps": k} for k in STEPS}
        samplers = [r for r in res["methods"] if not r["method"].endswith(DATA_LATENT)]  # not a sampler
        for r in samplers:
            for s, o in zip(r["samples"], res["oracle"]["samples"], strict=True):
                flag = below_oracle(s, o, second)
                table[s["steps"]][r["method"]] = "" if flag is None else ("yes" if flag else "no")
        lines += ["## Below the factorized oracle (excess below it, coverage KL no worse)", "",
                  metrics.format_table(list(table.values()), ["steps"] + [r["method"] for r in samplers],
                                       headers={}), ""]
    for r in res["methods"]:
        if r.get("latent_grid"):
            g = [{"latent steps": x["latent_steps"], "token steps": x["steps"], "nfe": x["nfe"],
                  first: _pm(x[first], x.get(f"{first}_se")), second: _pm(x.get(second), x.get(f"{second}_se"))}
                 for x in r["latent_grid"]]
            lines += [f"## {r['method']}: latent steps × token steps", "", metrics.format_table(g, list(g[0])), ""]
    used = {run_pair(r) for r in res.get("runs", [])}
    for src in res.get("reused", []):
        runs = ", ".join(f"{spec} seed {seed}" for spec, seed in src["runs"] if (spec, seed) in used)
        if runs:
            lines.append(f"Records of {runs} reused from `{src['file']}` (commit {src['commit'][:7]}, {src['date']}).")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mixture", "hmm", "binsaw", "digits", "kjv"], default="mixture")
    p.add_argument("--methods", default=",".join(METHODS), help="method specs, comma-separated (name+override…)")
    add_budget_args(p, minutes=8.0, batch_size=64, num_samples=512)
    p.add_argument("--seeds", default=None, help="training seeds, comma-separated (default: --seed)")
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--max-examples", type=int, default=1024)
    p.add_argument("--latent-grid", default="1,2,4,16", help="SEQ latent step counts at 4 and 8 token steps")
    p.add_argument("--data-latent", action=argparse.BooleanOptionalAction, default=True,
                   help="also sample every LDDM run given encoded test rows (teacher-forced latent, a diagnostic)")
    p.add_argument("--judge", default=None, help="AR run directory for gen-PPL (text)")
    p.add_argument("--data", default="../shared/data/kjv.txt")
    p.add_argument("--runs", default="runs/bench_few_step")
    p.add_argument("--out", default="benchmarks/results/few_step")
    p.add_argument("--train-only", action="store_true", help="train the runs, evaluate nothing")
    p.add_argument("--resume", action="store_true", help="with --train-only: finish interrupted runs from their "
                   "newest checkpoint, keep finished ones (else every run starts over)")
    p.add_argument("--ckpt-every", type=int, default=None, help="checkpoint every N steps (what --resume resumes)")
    p.add_argument("--eval-only", action="store_true", help="evaluate the runs already trained")
    p.add_argument("--render-only", action="store_true", help="rewrite the .md and .png from the JSON")
    p.add_argument("--reuse", action="append", default=[], metavar="JSON",
                   help="take the records of (method, seed) pairs from an earlier few_step page of the same "
                   "budget and evaluation settings instead of evaluating them (repeatable)")
    p.add_argument("--tag", default="", help="suffix of the output files and run folder (variants)")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every method")
    args = p.parse_args(argv)
    try:
        args.latent_grid = [int(v) for v in args.latent_grid.split(",") if v]
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    except ValueError as e:
        p.error(f"--seeds and --latent-grid take comma-separated integers ({e})")
    specs = [s for s in args.methods.split(",") if s]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.tag.replace(".", "")  # a dot would read as a file suffix
    stem = f"few_step_{args.dataset}{'_' + tag if tag else ''}"
    if args.tag:
        args.runs = str(Path(args.runs) / args.tag)
    if args.train_only:
        for seed in seeds:
            for spec in specs:
                print(f"[train {spec} seed {seed}]", flush=True)
                train_one(spec, seed, args)
        return 0
    judge = load_judge(args.judge) if args.judge else None
    env = start(args)
    if args.render_only:  # the page of an earlier run: its envelope and results
        env, res = read_result(out / f"{stem}.json")
    else:
        res = {"dataset": args.dataset, "budget": {"preset": args.preset, "minutes": args.minutes, "seeds": seeds,
                                                   "batch_size": args.batch_size, "lr": args.lr}, "runs": []}
        try:
            kept, res["reused"] = reused_records(args.reuse, args)
            for spec in specs:
                for seed in seeds:
                    print(f"[{spec} seed {seed}] ...", flush=True)
                    res["runs"] += kept.get((spec, seed)) or evaluated(spec, seed, args, judge)
                    write_result(out, stem, env, res)  # partial results survive
        except CatdiffError as e:
            p.error(str(e))  # one line, exit 2
        labels = list(dict.fromkeys(r["method"] for r in res["runs"]))
        res["methods"] = [aggregate([r for r in res["runs"] if r["method"] == m]) for m in labels]
        if args.dataset in ("mixture", "hmm") and not args.tag:
            res["oracle_runs"] = oracle_records(args, seeds)
            res["oracle"] = aggregate(res["oracle_runs"])
    plot(res, out / f"{stem}.png")
    b = res["budget"]
    md = (f"# Few-step generation on `{args.dataset}` ({b['preset']} preset, batch {b['batch_size']}, "
          f"{b['minutes']:g} CPU-min of training per run, training seeds {b['seeds']})\n\n" + report(res)
          + f"\n![few-step]({stem}.png)\n")
    write_result(out, stem, env if args.render_only else finish(env), res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
