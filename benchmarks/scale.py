"""Corpora of any size (issue 16): a ~1 GB text corpus generated from shuffled KJV verses (never
committed), prepared with the character tokenizer and with a GPT-2 style byte-level BPE, then the
small preset trained 20 steps on it and on the 4 MB KJV file. Every figure is one process timed
and measured by GNU `time -v` (wall time, peak resident set size).

    python benchmarks/scale.py                         # 1000 MB, work files in /tmp/catdiff_scale
    python benchmarks/scale.py --size-mb 50 --out /tmp/scale_try

Acceptance: peak RSS of the 1 GB training run within 300 MB of the KJV run.
Writes <out>/scale.json and <out>/scale.md.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from common import start  # noqa: E402

from catdiff.metrics.report import finish, format_table, write_result  # noqa: E402

KJV = ROOT.parent / "shared" / "data" / "kjv.txt"
CONFIG = str(ROOT / "configs" / "mdlm" / "kjv.yaml")


def make_corpus(path: Path, size_mb: float, seed: int = 0) -> None:
    """Shuffled KJV verses, reshuffled each pass, until the file holds size_mb megabytes."""
    verses = KJV.read_text(encoding="utf-8").splitlines(keepends=True)
    rng, written, target = random.Random(seed), 0, int(size_mb * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            rng.shuffle(verses)
            block = "".join(verses)[: target - written]
            f.write(block)
            written += len(block.encode("utf-8"))


def make_gpt2_style(folder: Path, vocab: int = 8192) -> Path:
    """A byte-level BPE with GPT-2's <|endoftext|>, trained on KJV by the `tokenizers` library."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    lines = KJV.read_text(encoding="utf-8").splitlines(keepends=True)
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def timed(argv: list[str]) -> tuple[dict, str]:
    """Run `catdiff argv` under GNU time -v: ({wall_s, peak_rss_mb}, stdout)."""
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "catdiff", *argv], capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"catdiff {' '.join(argv)} failed:\n{r.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", r.stderr).group(1)
    seconds = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall.split(":"))))
    return {"wall_s": round(seconds, 2), "peak_rss_mb": round(rss / 1024, 1)}, r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=float, default=1000.0)
    p.add_argument("--work", default="/tmp/catdiff_scale", help="generated corpus, tokenizer, cache and runs")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale"))
    args = p.parse_args()
    env = start(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    big = work / f"corpus_{int(args.size_mb)}mb.txt"
    if not big.is_file() or big.stat().st_size < args.size_mb * 1e6 * 0.99:
        make_corpus(big, args.size_mb)
    bpe = make_gpt2_style(work / "gpt2style")
    cache = f"data.token_cache={work / 'cache'}"
    res = {"corpus_mb": round(big.stat().st_size / 1e6, 1), "prepare": [], "train": []}
    for name, tok in (("char", "char"), ("gpt2-style BPE (8192)", str(bpe))):
        cost, out = timed(["prepare", CONFIG, f"data.path={big}", f"data.tokenizer={tok}", cache, "--quiet"])
        m = json.loads(out)
        res["prepare"].append({"tokenizer": name, **cost, "tokens": m["n_tokens"], "mb_per_s": m["mb_per_s"],
                               "tokens_per_s": m["tokens_per_s"]})
        print(res["prepare"][-1], flush=True)
    for name, path in (("KJV 4 MB", KJV), (f"generated {res['corpus_mb']} MB", big)):
        timed(["prepare", CONFIG, f"data.path={path}", cache, "--quiet"])  # cache first: train reads it
        run = work / ("run_" + ("kjv" if path == KJV else "big"))
        subprocess.run(["rm", "-rf", str(run)], check=True)
        cost, _ = timed(["train", CONFIG, f"data.path={path}", cache, "model.preset=small",
                         f"train.max_steps={args.steps}", "train.max_minutes=0", "train.progress=false",
                         f"train.out_dir={run}", "train.ckpt_every=100000"])
        res["train"].append({"corpus": name, **cost, "steps": args.steps})
        print(res["train"][-1], flush=True)
    kjv, big_run = res["train"]
    res["rss_gap_mb"] = round(big_run["peak_rss_mb"] - kjv["peak_rss_mb"], 1)
    res["within_300_mb"] = res["rss_gap_mb"] <= 300
    env = finish(env)
    md = "\n".join([
        f"# Corpora of any size: {res['corpus_mb']} MB generated from KJV verses", "",
        "Preparing (`catdiff prepare`, one process each):", "",
        format_table(res["prepare"], ["tokenizer", "tokens", "wall_s", "mb_per_s", "tokens_per_s", "peak_rss_mb"]),
        "", f"Training the small preset {args.steps} steps (`catdiff train configs/mdlm/kjv.yaml`, cache prepared):",
        "", format_table(res["train"], ["corpus", "steps", "wall_s", "peak_rss_mb"]), "",
        f"Peak RSS of the large-corpus run minus the KJV run: {res['rss_gap_mb']} MB "
        f"({'within' if res['within_300_mb'] else 'NOT within'} 300 MB).", ""])
    write_result(args.out, "scale", env, res, md)
    print(md)


if __name__ == "__main__":
    main()
