"""Character-level MDLM and AR on the King James Bible (../shared/data/kjv.txt, never copied here).

Trains each for a wall-clock budget at the 6x384 / seq 256 setting of configs/{mdlm,ar}/kjv.yaml,
reports test bits/char of both, and gen-PPL (AR judge) + unigram entropy of MDLM samples at
16/64/256 steps. Writes benchmarks/results/kjv/kjv.{json,md}.

    python benchmarks/kjv.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import start  # noqa: E402

from catdiff import metrics  # noqa: E402
from catdiff.config import load_config  # noqa: E402
from catdiff.evaluate import draw_samples, likelihood, load_judge, load_run  # noqa: E402
from catdiff.metrics.report import finish, write_result  # noqa: E402
from catdiff.trainer import train  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--data", default="../shared/data/kjv.txt")
    p.add_argument("--steps", default="16,64,256")
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--runs", default="runs/bench_kjv")
    p.add_argument("--out", default="benchmarks/results/kjv")
    p.add_argument("--train", default="ar,mdlm", help="which models to (re)train; others are read from --runs")
    args = p.parse_args(argv)
    env, res = start(args), {"minutes": args.minutes}
    for name in ("ar", "mdlm"):
        run_dir = Path(args.runs) / name
        if name in args.train.split(","):
            shutil.rmtree(run_dir, ignore_errors=True)  # retrain from scratch
            cfg = load_config(f"configs/{name}/kjv.yaml", [f"data.path={args.data}", f"train.out_dir={run_dir}",
                                                           f"train.max_minutes={args.minutes}"])
            t0 = time.time()
            s = train(cfg)
            res[name] = {"train": {**s, "wall_s": time.time() - t0}}
        else:  # trained earlier: its summary is the last training record of metrics.jsonl
            recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            last = [r for r in recs if "tokens_per_s" in r][-1]
            res[name] = {"train": {"step": max(r["step"] for r in recs), "tokens_per_s": last["tokens_per_s"],
                                   "elapsed_s": last["elapsed_s"]}}
        _, method, ds = load_run(run_dir)
        lik = likelihood(method, ds, "test", passes=2, max_examples=512, batch_size=32)
        res[name]["test"] = lik
        print(f"{name}: {lik['bits_per_token']:.4f} bits/char on {lik['n']} test blocks", flush=True)
    judge = load_judge(Path(args.runs) / "ar")
    cfg, mdlm, ds = load_run(Path(args.runs) / "mdlm")
    rows = []
    for k in [int(s) for s in args.steps.split(",")]:
        out, sec = draw_samples(mdlm, args.num_samples, replace(cfg.sample, steps=k, batch_size=32, seed=0))
        gp = metrics.generative_perplexity(out.samples, judge)
        rows.append({"steps": k, "nfe": out.nfe, "gen_ppl": gp["gen_ppl"], "unigram_entropy": gp["unigram_entropy"],
                     "distinct_2": metrics.distinct_n(out.samples, 2), "sec_per_sample": sec,
                     "example": ds.decode(out.samples[0])[:160]})
        print(rows[-1], flush=True)
    real = ds.split("test")[: args.num_samples]
    ref = metrics.generative_perplexity(real, judge)
    res["mdlm_samples"] = rows
    res["reference_test_text"] = {"gen_ppl": ref["gen_ppl"], "unigram_entropy": ref["unigram_entropy"]}
    md = [f"# Character-level MDLM and AR on KJV ({args.minutes:g} min each, 6x384, seq 256, configs/*/kjv.yaml)", "",
          metrics.format_table([{"model": n, "bits_per_char": res[n]["test"]["bits_per_token"],
                                 "stderr_bits": res[n]["test"]["nelbo_nats_se"] / 256 / 0.6931471805599453,
                                 "train_steps": res[n].get("train", {}).get("step"),
                                 "train_tokens_per_s": res[n].get("train", {}).get("tokens_per_s")}
                                for n in ("mdlm", "ar")],
                               ["model", "bits_per_char", "stderr_bits", "train_steps", "train_tokens_per_s"]),
          "", "MDLM samples, gen-PPL under the AR judge (test text itself scores "
          f"{ref['gen_ppl']:.3f}, unigram entropy {ref['unigram_entropy']:.3f} bits):", "",
          metrics.format_table(rows, ["steps", "nfe", "gen_ppl", "unigram_entropy", "distinct_2", "sec_per_sample"]),
          "", "Example (256 steps): `" + rows[-1]["example"].replace("\n", " / ") + "`", ""]
    write_result(args.out, "kjv", finish(env, own_threads=torch.get_num_threads()), res, "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
