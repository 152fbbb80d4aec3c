"""Sequence-to-sequence on the synthetic suite (issue: conditional generation): AR, MDLM, Difformer,
CATDM, LDDM-FUJI and LDDM-SEQ trained from configs/<method>/seq2seq.yaml with the same preset,
batch and budget of CPU time per run (`--minutes`, so runs sharing the cores get equal compute),
the source + separator a clean condition. Reports, per task, the bound on -log p(target | source)
in bits per target token, and exact match / token accuracy / length accuracy / BLEU of targets
generated for held-out sources at each step count (AR: one call per target position), plus
wall-clock per sample. Writes benchmarks/results/seq2seq/seq2seq.{json,md,png}.

    python benchmarks/seq2seq.py --tasks reverse,add --minutes 4
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import add_budget_args, bench_train, logged_train_info, start  # noqa: E402

from catdiff import metrics  # noqa: E402
from catdiff.evaluate import length_predictor, likelihood, load_judge, load_run, seq2seq_report, with_steps  # noqa: E402
from catdiff.metrics.report import finish, read_result, write_result  # noqa: E402

METHODS = ("ar", "mdlm", "difformer", "catdm", "lddm-fuji", "lddm-seq")
MASKED = ("mdlm", "lddm-fuji", "lddm-seq")  # methods with a reveal order (sample.order)
STEPS = (1, 2, 4, 8, 16, 32)


ORDER_TAG = {"random": "", "confidence": " (conf.)"}


def method_rank(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def run_one(method: str, task: str, args) -> dict:
    run = Path(args.runs) / task / method
    if not args.eval_only:
        shutil.rmtree(run, ignore_errors=True)
        info = bench_train(f"configs/{method}/seq2seq.yaml", run, args, [f"data.task={task}", f"train.lr={args.lr}"])
    else:
        info = logged_train_info(run)
    cfg, m, ds = load_run(run)
    lik = likelihood(m, ds, "test", passes=1, max_examples=args.num_samples, batch_size=256)
    scfg = replace(cfg.sample, batch_size=256, seed=0, temperature=args.temperature)
    orders = args.orders.split(",") if method in MASKED else ["random"]
    def options(k, o):  # AR has no step budget, only masked methods a reveal order
        opts = with_steps(scfg, k)
        return replace(opts, order=o) if method in MASKED else opts

    rows = [{**seq2seq_report(m, ds, options(k, o), args.num_samples), "order": o}
            for o in orders for k in ((None,) if method == "ar" else STEPS)]
    res = {"method": method, "task": task, "run": str(run), "train": info, "temperature": args.temperature,
           "cpu_minutes": args.minutes,
           "bits_per_target_token": lik["bits_per_token"], "samples": rows}
    ar_run = Path(args.runs) / task / "ar"
    if method != "ar" and args.beam_steps and (ar_run / "config.yaml").is_file():
        # length beam 3 x noise beam 2, reranked by the AR run of the same task (Difformer's decoding)
        beams = {"length_model": length_predictor(run, ds, m.device), "length_beam": 3, "noise_beam": 2,
                 "rerank": load_judge(ar_run)}
        # the noise beam needs noise: its draws are at temperature 1 whatever --temperature says
        res["beam"] = seq2seq_report(m, ds, replace(scfg, steps=args.beam_steps, temperature=1.0), args.num_samples,
                                     beams=beams)
    return res


def report(res: dict) -> str:
    lines = []
    for task in res["tasks"]:
        recs = [r for r in res["runs"] if r["task"] == task]
        ar = next((r for r in recs if r["method"] == "ar"), None)
        ar_em = ar["samples"][0]["exact_match"] if ar else None
        rows = []
        for r in recs:
            for s in r["samples"]:
                rows.append({"method": r["method"] + ORDER_TAG[s.get("order", "random")],
                             "train steps": r["train"]["steps"],
                             "bits/target tok": r["bits_per_target_token"], "steps": s["steps"], "nfe": s["nfe"],
                             "exact match": s["exact_match"], "token acc": s["token_accuracy"],
                             "length acc": s["length_accuracy"], "BLEU": s["bleu"],
                             "s/sample": s["sec_per_sample"]})
        over = recs[0].get("overrides") if recs else None
        setting = {f"{r.get('cpu_minutes', 3):g} CPU-min per run" for r in recs} | \
                  {f"temperature {r.get('temperature', 1.0):g}" for r in recs}
        head = f"## Task `{task}`" + (f" ({' '.join(over)})" if over else "")
        lines += [f"{head} — {', '.join(sorted(setting))}", "",
                  metrics.format_table(rows, list(rows[0])), ""]
        beam_rows = [{"method": r["method"], "steps": r["beam"]["steps"], "nfe": r["beam"]["nfe"],
                      "exact match": r["beam"]["exact_match"], "length acc": r["beam"]["length_accuracy"],
                      "BLEU": r["beam"]["bleu"]} for r in recs if r.get("beam")]
        if beam_rows:
            lines += ["Length beam 3 × noise beam 2 at temperature 1, reranked by the AR run (6 candidates per "
                      "source; each network call denoises all 6 together: 6× the compute of one draw):", "",
                      metrics.format_table(beam_rows, list(beam_rows[0])), ""]
        if ar_em:
            best = max(((s["exact_match"], r["method"] + ORDER_TAG[s.get("order", "random")], s["steps"])
                        for r in recs if r["method"] != "ar" for s in r["samples"] if s["steps"] <= 16), default=None)
            if best:
                lines += [f"Best diffusion at ≤ 16 steps: {best[1]} at {best[2]} steps, exact match {best[0]:.3f} = "
                          f"{100 * best[0] / ar_em:.1f}% of AR's {ar_em:.3f}.", ""]
        lines += ["Examples (first held-out sources, 16 steps; AR at its full length):", ""]
        for r in recs:
            s = next((s for s in r["samples"] if s["steps"] in (16, r["samples"][-1]["steps"])), r["samples"][-1])
            lines += [f"- {r['method']}: `{s['examples'][0]}`"]
        lines.append("")
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = res["tasks"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]  # one colour per method, dashed = confidence
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in res["runs"] if r["task"] == task):
            if r["method"] == "ar":
                ax.axhline(r["samples"][0]["exact_match"], color="k", ls="--", label="ar (L calls)")
            else:
                for o in dict.fromkeys(s.get("order", "random") for s in r["samples"]):
                    rows = [s for s in r["samples"] if s.get("order", "random") == o]
                    ax.plot([s["steps"] for s in rows], [s["exact_match"] for s in rows],
                            "o-" if o == "random" else "s--", label=r["method"] + ORDER_TAG[o],
                            color=colors[method_rank(r["method"]) % len(colors)])
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sampling steps")
        ax.set_ylabel("exact match")
        ax.set_title(task)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="reverse,add")
    p.add_argument("--methods", default=",".join(METHODS))
    add_budget_args(p, minutes=4.0, batch_size=128, num_samples=512)
    p.add_argument("--runs", default="runs/bench_seq2seq")
    p.add_argument("--out", default="benchmarks/results/seq2seq")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--append", action="store_true", help="add these tasks to the existing seq2seq.json")
    p.add_argument("--render-only", action="store_true", help="rewrite seq2seq.{md,png} from seq2seq.json")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="of every draw (0 = argmax: greedy AR decoding, most probable tokens for diffusion)")
    p.add_argument("--orders", default="random,confidence",
                   help="reveal orders of the masked methods (MDLM, LDDM): random (ancestral), confidence")
    p.add_argument("--beam-steps", type=int, default=16, help="steps of the length × noise beam rows (0 = none)")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = p.parse_args(argv)
    args.dataset = "seq2seq"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = start(args)
    res = {"budget": {"preset": args.preset, "cpu_minutes": args.minutes, "batch_size": args.batch_size,
                      "lr": args.lr}, "tasks": args.tasks.split(","), "runs": []}
    todo = [] if args.render_only else [(t, m) for t in res["tasks"] for m in args.methods.split(",")]
    if args.render_only:  # the page of an earlier run: its envelope and results
        env, res = read_result(out / "seq2seq.json")
    elif args.append and (out / "seq2seq.json").is_file():  # keep the other (task, method) runs and commands
        old_env, old = read_result(out / "seq2seq.json")
        res["runs"] = [r for r in old["runs"] if (r["task"], r["method"]) not in todo]
        res["tasks"] = old["tasks"] + [t for t in res["tasks"] if t not in old["tasks"]]
        env["command"] = f"{old_env['command']}; {env['command']}"
    for task, method in todo:  # in the given order: a task's AR run first, for the beams' reranking
        print(f"[{task} / {method}] ...", flush=True)
        res["runs"].append({**run_one(method, task, args), "overrides": list(args.overrides)})
        res["runs"].sort(key=lambda r: (res["tasks"].index(r["task"]), method_rank(r["method"])))
        write_result(out, "seq2seq", env, res)  # partial results survive
    plot(res, out / "seq2seq.png")
    md = (f"# Synthetic seq2seq ({args.preset} preset, batch {args.batch_size}; training CPU time and decoding "
          f"temperature per task below)\n\n" + report(res) + "\n![exact match by steps](seq2seq.png)\n")
    write_result(out, "seq2seq", env if args.render_only else finish(env), res, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
