"""The five embedding-diffusion variants end to end from their shipped configs: train, sample,
eval and diagnose through the command line, on mixture and on a small text file."""

import json
from pathlib import Path

import pytest

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["embed-naive", "diffusion-lm", "cdcd", "difformer", "catdm"]
TINY = ["model.preset=tiny", "model.d_model=32", "model.n_layers=1", "model.n_heads=2", "method.embed_dim=8",
        "train.batch_size=16", "train.progress=false", "train.max_steps=3", "train.log_every=1"]


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_trains_samples_evaluates_and_diagnoses(name, tmp_path, capsys):
    run = tmp_path / name
    assert main(["train", str(ROOT / f"configs/{name}/mixture.yaml"), *TINY, f"train.out_dir={run}"]) == 0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"emb_pairwise", "emb_norm", "emb_rank", "emb_decodable"} <= set(recs[0])  # logged while training
    # a budget of 9 network calls: 5 Heun points (2·5 - 1 calls); a flag of another family fails
    assert main(["sample", str(run), "--steps", "9", "--num-samples", "3", "--sampler", "heun"]) == 0
    assert "nfe=9" in capsys.readouterr().err
    assert main(["sample", str(run), "--steps", "9", "--order", "confidence"]) == 2
    assert "--order does not apply to" in capsys.readouterr().err
    assert main(["eval", str(run), "--steps", "2,4", "--num-samples", "16", "--quiet"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["likelihood"]["bits_per_token"] > 0 and [r["steps"] for r in res["samples"]] == [2, 4]
    assert main(["diagnose", str(run), "--points", "5", "--max-examples", "32"]) == 0
    d = json.loads((run / "diagnostics.json").read_text())
    assert len(d["ce"]) == 5 and (run / "diagnostics.png").stat().st_size > 1000


def test_text_config_and_diagnose_refuses_other_methods(tmp_path, capsys):
    (tmp_path / "c.txt").write_text("in the beginning was the word and the word was with god\n" * 80)
    run = tmp_path / "difformer_text"
    assert main(["train", str(ROOT / "configs/difformer/kjv.yaml"), *TINY, "model.local_mix=3",
                 f"data.path={tmp_path / 'c.txt'}", "data.seq_len=32", f"train.out_dir={run}"]) == 0
    assert main(["sample", str(run), "--num-samples", "2", "--steps", "4", "--early-stop", "1"]) == 0
    err = capsys.readouterr().err
    assert "nfe=3" in err
    mdlm = tmp_path / "mdlm"
    assert main(["train", str(ROOT / "configs/mdlm/mixture.yaml"), "model.d_model=32", "model.n_layers=1",
                 "model.n_heads=2", "train.batch_size=8", "train.max_steps=1", "train.progress=false",
                 f"train.out_dir={mdlm}"]) == 0
    capsys.readouterr()
    assert main(["diagnose", str(mdlm)]) == 2
    assert "embedding-diffusion and EDM" in capsys.readouterr().err


def test_tied_weights_are_refused_with_a_clear_error(tmp_path, capsys):
    assert main(["train", str(ROOT / "configs/catdm/mixture.yaml"), *TINY, "model.tie_weights=true",
                 f"train.out_dir={tmp_path / 'r'}"]) == 2
    assert "tie_weights" in capsys.readouterr().err
