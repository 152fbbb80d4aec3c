"""Conditional generation end to end: a copy task learned to 100% exact match in a short run, and
`catdiff sample --prompt / --infill` on seq2seq, token and text runs."""

import json
from pathlib import Path

import pytest

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.d_model=64", "model.n_layers=2", "model.n_heads=2", "train.progress=false", "train.log_every=50",
        "train.eval_batches=1"]
SPLITS = ["data.n_val=64", "data.n_test=256"]


def test_copy_task_reaches_full_exact_match_and_samples_from_a_prompt(tmp_path, capsys):
    run = tmp_path / "copy"
    assert main(["train", str(ROOT / "configs/mdlm/seq2seq.yaml"), "--max-steps", "150", "--out-dir", str(run),
                 "data.task=copy", "data.max_len=5", "train.lr=3e-3", "train.warmup_steps=10", *TINY, *SPLITS]) == 0
    assert main(["eval", str(run), "--steps", "2,8", "--num-samples", "256", "--quiet"]) == 0
    rows = json.loads((run / "eval.json").read_text())["samples"]
    assert [r["exact_match"] for r in rows] == [1.0, 1.0] and rows[0]["bleu"] == pytest.approx(100.0)
    assert main(["eval", str(run), "--steps", "2", "--num-samples", "64", "--quiet", "--order", "confidence"]) == 0
    assert json.loads((run / "eval.json").read_text())["samples"][0]["exact_match"] == 1.0
    capsys.readouterr()
    assert main(["sample", str(run), "--prompt", "3 1 4 1", "--num-samples", "2", "--steps", "4"]) == 0
    assert capsys.readouterr().out.splitlines() == ["3 1 4 1 → 3 1 4 1"] * 2
    assert main(["sample", str(run), "--prompt", "3 1 4 1", "--num-samples", "2", "--steps", "4",
                 "--order", "confidence"]) == 0
    assert capsys.readouterr().out.splitlines() == ["3 1 4 1 → 3 1 4 1"] * 2
    # length × noise beams reranked by a (barely trained) AR run on the same task
    ar = tmp_path / "ar"
    assert main(["train", str(ROOT / "configs/ar/seq2seq.yaml"), "--max-steps", "20", "--out-dir", str(ar),
                 "data.task=copy", "data.max_len=5", *TINY, *SPLITS]) == 0
    assert main(["eval", str(run), "--steps", "4", "--num-samples", "64", "--quiet", "--length-beam", "2",
                 "--noise-beam", "2"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["beams"]["length_beam"] == 2 and (run / "length.pt").is_file()
    assert res["samples"][0]["exact_match"] == 1.0  # copy's length predictor is exact: the top length wins
    assert main(["eval", str(run), "--steps", "4", "--num-samples", "64", "--quiet", "--length-beam", "2",
                 "--noise-beam", "2", "--rerank", str(ar)]) == 0
    assert json.loads((run / "eval.json").read_text())["beams"]["rerank"] == str(ar)
    assert main(["eval", str(ar), "--quiet", "--length-beam", "2"]) == 0  # AR takes beams too (any method)
    capsys.readouterr()
    assert main(["sample", str(run), "--infill", "3 _ 4"]) == 2  # seq2seq runs take a source
    assert main(["sample", str(run), "--prompt", "3 1 4 1 5 9 2"]) == 2  # longer than the source
    assert "at most 5 symbols" in capsys.readouterr().err


def test_prompt_and_infill_on_token_and_text_runs(tmp_path, capsys):
    corpus = tmp_path / "t.txt"
    corpus.write_text("in the beginning was a small test corpus of plain words.\n" * 200)
    runs = {}
    for name, cfg, extra in (("tok", "configs/mdlm/mixture.yaml", ["data.seq_len=8", *SPLITS]),
                             ("txt", "configs/ar/kjv.yaml", [f"data.path={corpus}", "data.seq_len=32"])):
        runs[name] = tmp_path / name
        assert main(["train", str(ROOT / cfg), "--max-steps", "3", "--out-dir", str(runs[name]), *TINY, *extra]) == 0
    capsys.readouterr()
    assert main(["sample", str(runs["tok"]), "--infill", "1 _ _ 2", "--num-samples", "3", "--steps", "4"]) == 0
    for line in capsys.readouterr().out.splitlines():
        v = line.split()
        assert len(v) == 8 and v[0] == "1" and v[3] == "2"
    assert main(["sample", str(runs["txt"]), "--prompt", "in the be", "--num-samples", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2 and all(s.startswith("in the be") for s in lines[:1])
    assert main(["sample", str(runs["txt"]), "--infill", "in _he", "--num-samples", "1"]) == 0
    assert capsys.readouterr().out.startswith("in ")
    assert main(["eval", str(runs["tok"]), "--steps", "2,8", "--num-samples", "64", "--quiet",
                 "--infill-frac", "0.5"]) == 0
    rows = json.loads((runs["tok"] / "eval.json").read_text())["infill"]
    assert [r["steps"] for r in rows] == [2, 8] and all(r["infill_nll"] > 0 for r in rows)
    assert main(["eval", str(runs["txt"]), "--quiet", "--infill-frac", "0.5"]) == 2  # no exact conditionals
    capsys.readouterr()
    assert main(["sample", str(runs["tok"]), "--prompt", "1 x"]) == 2
    assert "cannot read the condition" in capsys.readouterr().err
