"""LDDM end to end from its shipped configs: train, sample (with guidance and a latent budget),
eval, and SEQ's two-stage training through train.init_from."""

import json
from pathlib import Path

import pytest

from catdiff.checkpoint import checkpoint_dir
from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "method.patch_dim=4", "method.enc_layers=1",
        "train.batch_size=16", "train.progress=false", "train.max_steps=3", "train.log_every=1"]


@pytest.mark.parametrize("name", ["lddm-fuji", "lddm-seq"])
def test_lddm_trains_samples_and_evaluates(name, tmp_path, capsys):
    run = tmp_path / name
    assert main(["train", str(ROOT / f"configs/{name}/mixture.yaml"), *TINY, f"train.out_dir={run}"]) == 0
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["step"] == 0 and "y0_var" in recs[0]  # the encoder's spread before any update
    assert {"L_x", "L_y", "prior", "y0_var", "y0_between_share"} <= set(recs[1])
    seq = ["--latent-steps", "2"] if name == "lddm-seq" else []
    assert main(["sample", str(run), "--steps", "4", "--num-samples", "3", "--guidance", "1.0", *seq]) == 0
    expect = 2 * 2 if name == "lddm-fuji" else 2 + 2 * 2  # guided: 2 evaluations of 2 calls in a budget of 4
    assert f"nfe={expect}" in capsys.readouterr().err
    if name == "lddm-fuji":  # latent first: 2 latent calls, then 4 token calls
        assert main(["sample", str(run), "--steps", "4", "--latent-steps", "2", "--num-samples", "3"]) == 0
        assert "nfe=6" in capsys.readouterr().err
    assert main(["eval", str(run), "--steps", "2,4", "--num-samples", "16", "--quiet"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["likelihood"]["bits_per_token"] > 0 and [r["steps"] for r in res["samples"]] == [2, 4]


def test_seq_two_stage_training_via_init_from(tmp_path, capsys):
    s1, s2 = tmp_path / "stage1", tmp_path / "stage2"
    cfg = str(ROOT / "configs/lddm-seq/mixture.yaml")
    two = [*TINY, "method.two_stage=true"]
    assert main(["train", cfg, *two, "method.stage=1", f"train.out_dir={s1}"]) == 0
    assert main(["train", cfg, *two, "method.stage=2", f"train.init_from={s1}", f"train.out_dir={s2}"]) == 0
    from safetensors.torch import load_file

    a = load_file(str(checkpoint_dir(s1) / "ema.safetensors"))
    b = load_file(str(checkpoint_dir(s2) / "model.safetensors"))
    enc = [k for k in a if k.startswith("encoder.")]
    assert enc and all((a[k] == b[k]).all() for k in enc)  # frozen encoder kept the stage-1 weights
    capsys.readouterr()
    assert main(["train", cfg, *TINY, f"train.init_from={tmp_path / 'nothing'}",
                 f"train.out_dir={tmp_path / 's3'}"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", cfg, *TINY, "method.stage=2", f"train.out_dir={tmp_path / 's4'}"]) == 2
    assert "declares 1 stage(s) (joint)" in capsys.readouterr().err
    mdlm = tmp_path / "mdlm"
    assert main(["train", str(ROOT / "configs/mdlm/mixture.yaml"), "model.d_model=32", "model.n_layers=1",
                 "model.n_heads=2", "train.batch_size=8", "train.max_steps=1", "train.progress=false",
                 f"train.out_dir={mdlm}"]) == 0
    capsys.readouterr()
    assert main(["train", cfg, *TINY, f"train.init_from={mdlm}", f"train.out_dir={tmp_path / 's4'}"]) == 2
    assert "'mdlm' run" in capsys.readouterr().err


def test_seq_runs_both_stages_from_one_command(tmp_path):
    """method.two_stage=true with stage 0: stage 1 into OUT/stage1, stage 2 (stage2_steps) into OUT,
    initialised from stage 1, with the encoder frozen — as DisCo-Diff's two stages run."""
    run = tmp_path / "seq2"
    assert main(["train", str(ROOT / "configs/lddm-seq/mixture.yaml"), *TINY, "method.two_stage=true",
                 "method.stage2_steps=2", f"train.out_dir={run}"]) == 0
    s1 = json.loads((checkpoint_dir(run / "stage1") / "meta.json").read_text())
    s2 = json.loads((checkpoint_dir(run) / "meta.json").read_text())
    assert s1["step"] == 3 and s2["step"] == 2 and s2["config"]["method"]["stage"] == 2


def test_standardize_with_one_sequence_per_batch_is_one_line(tmp_path, capsys):
    """BatchNorm cannot standardize a batch of one: a config error in one line, exit 2."""
    code = main(["train", str(ROOT / "configs/lddm-fuji/mixture.yaml"), *TINY, "train.batch_size=1",
                 f"train.out_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    assert code == 2 and "method.standardize needs at least 2 sequences" in err and "Traceback" not in err
