"""The run folder (train.out_dir): one training at a time, a foreign or occupied folder refused in one
line before anything is written, --force sets an earlier run aside without losing or touching a file."""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from helpers import assert_one_line_error, folder_state

from catdiff import checkpoint as ckpt_io
from catdiff import rundir
from catdiff.cli import main
from catdiff.config import load_config, save_config

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/mdlm/mixture.yaml")
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.progress=false",
        "train.log_every=1", "train.eval_batches=1", "data.n_val=64", "data.n_test=64"]


def train(out, *extra) -> int:
    return main(["train", CONFIG, *TINY, f"train.out_dir={out}", *extra])


def steps(out) -> list[int]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def test_a_second_training_into_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Two real processes: the second fails at once naming the first one's PID and writes nothing;
    the first goes on undisturbed and its log and config are its own."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "catdiff", "train", CONFIG, *TINY, "train.max_steps=100000",
                              "train.ckpt_every=100000", f"train.out_dir={out}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ((out / rundir.PID).is_file() and (out / "config.yaml").is_file()):
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.05)
        config_before = (out / "config.yaml").read_bytes()
        second = subprocess.run([sys.executable, "-m", "catdiff", "train", CONFIG, *TINY, "train.seed=2",
                                 "train.max_steps=100000", f"train.out_dir={out}"],
                                capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run ended before the second one was refused"
        assert second.returncode == 2
        assert_one_line_error(second.stderr, f"{out} is in use by another catdiff train (pid {first.pid})")
        assert (out / "config.yaml").read_bytes() == config_before
    finally:
        first.send_signal(signal.SIGINT)  # the first run checkpoints and ends as it would on Ctrl-C
        _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    logged = steps(out)
    assert logged == list(range(1, len(logged) + 1)) and len(logged) >= 1  # one run's rows, no interleaving
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 0
    assert ckpt_io.read_meta(ckpt_io.checkpoint_dir(out))["config"]["train"]["seed"] == 0
    assert not (out / rundir.LOCK).exists() and not (out / rundir.PID).exists()  # released on the way out


def test_a_folder_that_is_not_this_run_is_refused_and_force_moves_only_catdiffs_files(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n")
    (out / "config.yaml").write_text("# my own config\nlr: 3\n")
    (out / "dataset.json").write_text('{"mine": true}')
    before = folder_state(out)
    assert train(out, "train.max_steps=2") == 2
    assert_one_line_error(capsys.readouterr().err, f"train.out_dir {out} is not empty (notes.txt)", "--force")
    assert folder_state(out) == before  # not even a lock file is left

    (out / "notes.txt").unlink()  # catdiff's names only: still not a run of this config
    before = folder_state(out)
    assert train(out, "train.max_steps=2") == 2
    assert_one_line_error(capsys.readouterr().err, "holds another catdiff run", "config.yaml", "--force")
    assert folder_state(out) == before

    assert main(["train", CONFIG, f"train.out_dir={out}", "--resume", "--force"]) == 2
    assert_one_line_error(capsys.readouterr().err, "give one of them")
    assert folder_state(out) == before

    (out / "notes.txt").write_text("my notes\n")
    assert train(out, "train.max_steps=2", "--force") == 0
    err = capsys.readouterr().err
    assert "catdiff: warning: --force: moved the earlier run's files (config.yaml, dataset.json)" in err
    aside = [p for p in out.iterdir() if p.name.startswith("replaced-")]
    assert len(aside) == 1
    assert folder_state(aside[0]) == {"config.yaml": before["config.yaml"], "dataset.json": before["dataset.json"]}
    assert (out / "notes.txt").read_text() == "my notes\n"  # the user's file stays where it was
    assert ckpt_io.read_meta(ckpt_io.checkpoint_dir(out))["step"] == 2


def test_a_run_with_a_checkpoint_needs_resume_or_force(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "train.max_steps=2") == 0
    before = folder_state(out)
    assert train(out, "train.max_steps=3", "train.seed=1") == 2
    assert_one_line_error(capsys.readouterr().err, "already holds a checkpoint: pass --resume", "--force")
    assert folder_state(out) == before
    assert train(out, "train.max_steps=3", "train.seed=1", "--force") == 0
    aside = next(p for p in out.iterdir() if p.name.startswith("replaced-"))
    assert folder_state(aside) == before  # the earlier run, byte for byte
    assert ckpt_io.read_meta(ckpt_io.checkpoint_dir(out))["config"]["train"]["seed"] == 1
    assert steps(out) == [1, 2, 3]


def test_the_same_config_without_a_checkpoint_starts_again(tmp_path):
    """A run that stopped before its first checkpoint: the same command starts it over, and the
    rows it had logged are not kept beside the new ones."""
    out = tmp_path / "run"
    out.mkdir()
    save_config(load_config(CONFIG, [*TINY, f"train.out_dir={out}", "train.max_steps=3"]), out / "config.yaml")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 99.0}\n{"step": 2, "loss": 99.0}\n{"step": 3, "lo')
    assert train(out, "train.max_steps=3") == 0
    assert steps(out) == [1, 2, 3]
    assert 99.0 not in [json.loads(x).get("loss") for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_without_the_extra_fails_before_the_folder_exists(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    out = tmp_path / "run"
    assert train(out, "train.max_steps=2", "train.tensorboard=true") == 2
    assert_one_line_error(capsys.readouterr().err, "pip install 'catdiff[tb]'")
    assert not out.exists()


def test_an_out_dir_that_is_or_is_under_a_file(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("mine\n")
    assert train(f, "train.max_steps=2") == 2
    assert_one_line_error(capsys.readouterr().err, f"train.out_dir {f} is a file, not a folder")
    assert train(f / "run", "train.max_steps=2") == 2
    assert_one_line_error(capsys.readouterr().err, f"train.out_dir {f / 'run'} is under {f}, which is a file")
    assert f.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def _obey_file_modes():
    """In the child, before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding
    set (prctl PR_CAPBSET_DROP), so that root obeys file modes like any other user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_read_only_out_dir(tmp_path):
    """chmod 555 on the folder; root would write through it, so as root the command runs without
    the capability that lets it."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    out.chmod(0o555)
    before = folder_state(out)
    try:
        r = subprocess.run([sys.executable, "-m", "catdiff", "train", CONFIG, *TINY, "train.max_steps=2",
                            f"train.out_dir={out}", "--force"], capture_output=True, text=True, timeout=120,
                           preexec_fn=_obey_file_modes if os.geteuid() == 0 else None)
    finally:
        out.chmod(0o755)
    assert r.returncode == 2, r.stderr
    assert_one_line_error(r.stderr, f"cannot write in train.out_dir {out} (Permission denied)")
    assert folder_state(out) == before


def test_force_on_a_two_stage_run_moves_every_stage(tmp_path, capsys):
    """A multi-stage run is locked and checked as one folder: its stage folders go aside together."""
    out = tmp_path / "dd"
    cfg = str(ROOT / "configs/discodiff/gaussians8.yaml")
    small = ["method.width=32", "train.batch_size=64", "train.progress=false", "train.max_steps=2",
             "train.eval_batches=1", "method.prior_steps=2", f"train.out_dir={out}"]
    assert main(["train", cfg, *small]) == 0
    before = folder_state(out)
    assert main(["train", cfg, *small]) == 2
    assert_one_line_error(capsys.readouterr().err, "already holds a checkpoint")
    assert folder_state(out) == before
    assert main(["train", cfg, *small, "--force"]) == 0
    aside = next(p for p in out.iterdir() if p.name.startswith("replaced-"))
    assert folder_state(aside) == before and (aside / "stage1").is_dir()
    assert ckpt_io.checkpoint_dir(out / "stage1") and ckpt_io.checkpoint_dir(out)
