"""DisCo-Diff and EDM from their shipped configs: both stages from one command, resume, eval."""

import json
from pathlib import Path

from catdiff.checkpoint import checkpoint_dir
from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["method.width=32", "train.batch_size=64", "train.progress=false", "train.log_every=5"]


def test_two_stage_training_resumes_and_evaluates(tmp_path, capsys):
    run = tmp_path / "dd"
    cfg = str(ROOT / "configs/discodiff/gaussians8.yaml")
    assert main(["train", cfg, *SMALL, "train.max_steps=10", "method.prior_steps=5", f"train.out_dir={run}"]) == 0
    assert checkpoint_dir(run / "stage1") and checkpoint_dir(run)
    # resume with larger budgets continues both stages
    assert main(["train", cfg, *SMALL, "train.max_steps=15", "method.prior_steps=8", f"train.out_dir={run}",
                 "--resume"]) == 0
    assert json.loads((checkpoint_dir(run) / "meta.json").read_text())["step"] == 8
    assert json.loads((checkpoint_dir(run / "stage1") / "meta.json").read_text())["step"] == 15
    assert main(["sample", str(run), "--steps", "8", "--num-samples", "3"]) == 0
    assert "nfe=7" in capsys.readouterr().err  # a budget of 8 calls: 4 Heun steps, 7 calls
    assert main(["eval", str(run), "--steps", "4", "--num-samples", "64", "--quiet"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["samples"][0]["w2"] > 0 and "loss" in res["likelihood"]
    assert main(["diagnose", str(run)]) == 0
    d = json.loads((run / "diagnostics.json").read_text())
    assert len(d["curvature"]) > 10 and all(j >= 0 for _, j in d["jacobian"]) and (run / "diagnostics.png").is_file()
    edm_run = tmp_path / "edm"
    assert main(["train", str(ROOT / "configs/edm/gaussians8.yaml"), *SMALL, "train.max_steps=5",
                 f"train.out_dir={edm_run}"]) == 0


def test_discodiff_embed_from_its_config(tmp_path, capsys):
    run = tmp_path / "dde"
    assert main(["train", str(ROOT / "configs/discodiff-embed/mixture.yaml"), "model.d_model=32", "model.n_layers=1",
                 "model.n_heads=2", "method.embed_dim=8", "method.enc_layers=1", "train.batch_size=16",
                 "train.progress=false", "train.max_steps=3", "method.prior_steps=2", f"train.out_dir={run}"]) == 0
    assert main(["sample", str(run), "--steps", "4", "--num-samples", "2"]) == 0
    assert main(["eval", str(run), "--steps", "4", "--num-samples", "16", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text())["likelihood"]["bits_per_token"] > 0


def test_digits_with_the_vit_denoiser_and_cross_attended_latents(tmp_path, capsys):
    """configs/discodiff/digits.yaml with the patch-transformer denoiser: trains both stages,
    samples images and reports FD-digits; the ViT settings survive in the run's config."""
    run = tmp_path / "ddv"
    assert main(["train", str(ROOT / "configs/discodiff/digits.yaml"), "method.denoiser=vit", "method.width=32",
                 "method.layers=1", "method.enc_width=32", "method.enc_layers=1", "train.batch_size=16",
                 "train.progress=false", "train.max_steps=3", "method.prior_steps=2", f"train.out_dir={run}"]) == 0
    assert "latent_cond: cross" in (run / "config.yaml").read_text()
    assert main(["eval", str(run), "--steps", "3", "--num-samples", "32", "--quiet"]) == 0
    assert json.loads((run / "eval.json").read_text())["samples"][0]["fd_digits"] > 0
