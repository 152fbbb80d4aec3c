"""What training says: the run folder and the config's changes at the start, plain log lines
when stderr is not a terminal, and optional Weights & Biases logging (offline here)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from catdiff.cli import main
from catdiff.config import load_config
from catdiff.errors import ConfigError, MissingExtra
from catdiff.trainer import Trainer, train

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/mdlm/mixture.yaml")
TINY = ["model.preset=tiny", "train.log_every=5", "train.eval_every=10", "train.batch_size=32",
        "train.warmup_steps=2", "train.eval_batches=1", "data.n_val=64", "data.n_test=64"]
STEP_LINE = re.compile(r"^step (\d+)/(\d+)  loss \S+  bits/token \S+  lr \S+  grad \S+  \S+ tok/s  \d+s$")
VAL_LINE = re.compile(r"^step (\d+)/(\d+)  val bits/token \S+( {2}\(best\))?$")


def run_cli(args, env=None, timeout=120):
    """`python -m catdiff ARGS` with stdout and stderr captured (so not a terminal)."""
    return subprocess.run([sys.executable, "-m", "catdiff", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})})


def test_a_log_that_is_no_terminal_gets_plain_lines(tmp_path):
    out = tmp_path / "run"
    r = run_cli(["train", CONFIG, *TINY, "train.max_steps=20", f"train.out_dir={out}"])
    assert r.returncode == 0, r.stderr[-2000:]
    err = r.stderr
    assert "\r" not in err  # no progress bar redrawn in the file
    lines = err.splitlines()
    assert lines[0] == f"catdiff: training mdlm on mixture into {out}"
    n = next(i for i in range(2, len(lines)) if not lines[i].startswith("  "))  # the config's lines, wrapped
    start = " ".join(line.strip() for line in lines[1:n])
    assert n <= 5  # compact
    assert start.startswith("catdiff: config (differs from defaults): ")
    for given in ("train.max_steps=20", "train.log_every=5", "train.eval_every=10", "train.batch_size=32",
                  "train.warmup_steps=2", "train.eval_batches=1", "data.n_val=64"):
        assert given in start, given
    assert "model.preset" not in start  # tiny is the default
    steps = [int(m.group(1)) for m in map(STEP_LINE.match, lines) if m]
    assert steps == [5, 10, 15, 20], err
    assert [int(m.group(1)) for m in map(VAL_LINE.match, lines) if m] == [10, 20], err
    assert all(m.group(2) == "20" for m in map(STEP_LINE.match, lines) if m)
    # the records carry the tokens seen so far (every rank)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    seq_len = json.loads((out / "dataset.json").read_text())["seq_len"]
    assert [r["tokens"] for r in recs if "loss" in r] == [s * 32 * seq_len for s in (5, 10, 15, 20)]


def test_progress_false_stays_silent(tmp_path, capfd):
    cfg = load_config(CONFIG, [*TINY, "train.max_steps=5", "train.progress=false", f"train.out_dir={tmp_path / 'r'}"])
    train(cfg)
    assert capfd.readouterr().err == ""


def test_a_resumed_run_says_so_and_keeps_counting_tokens(tmp_path, capfd):
    over = [*TINY, "train.max_steps=20", f"train.out_dir={tmp_path / 'r'}"]
    assert Trainer(load_config(CONFIG, over)).fit(until_step=10)["status"] == "paused"
    capfd.readouterr()
    train(load_config(CONFIG, over), resume=True)
    err = capfd.readouterr().err
    assert err.splitlines()[0] == f"catdiff: training mdlm on mixture into {tmp_path / 'r'} (resumed at step 10)"
    assert [int(m.group(1)) for m in map(STEP_LINE.match, err.splitlines()) if m] == [15, 20]
    recs = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    tokens = [r["tokens"] for r in recs if "loss" in r]
    assert tokens == [tokens[0] * k for k in (1, 2, 3, 4)]


# ---- Weights & Biases -------------------------------------------------------------------
def wandb_env(tmp_path) -> dict:
    """Offline W&B whose every file (settings, cache, logs) stays under tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"WANDB_MODE": "offline", "HOME": str(home), "WANDB_DIR": str(tmp_path / "wandb-dir"),
            "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
            "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "WANDB_ARTIFACT_DIR": str(tmp_path / "wandb-artifacts"),
            "XDG_CACHE_HOME": str(tmp_path / "xdg-cache"), "XDG_CONFIG_HOME": str(tmp_path / "xdg-config"),
            "WANDB_SILENT": "true"}


def test_wandb_logs_offline_and_resume_continues_the_same_run(tmp_path):
    out, env = tmp_path / "run", wandb_env(tmp_path)
    args = ["train", CONFIG, *TINY, "train.wandb=catdiff-test", f"train.out_dir={out}"]
    r = run_cli([*args, "train.max_steps=10"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    run_id = (out / "wandb_id.txt").read_text().strip()
    assert re.fullmatch(r"[a-z0-9]{8}", run_id)
    first = list((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(first) == 1
    data = first[0].read_bytes()  # the history rows hold their keys as text
    for key in (b"loss", b"grad_norm", b"tokens_per_s", b"val_bits_per_token", b"catdiff-test"):
        assert key in data, key

    r = run_cli([*args, "train.max_steps=15", "--resume"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "wandb_id.txt").read_text().strip() == run_id
    both = sorted((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(both) == 2 and b"val_bits_per_token" in both[1].read_bytes()  # `wandb sync`: one W&B run
    assert sorted((out / "wandb").glob("offline-run-*")) == [f.parent for f in both]  # no other W&B run
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())


def test_wandb_missing_fails_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    cfg = load_config(CONFIG, [*TINY, "train.max_steps=5", "train.wandb=p", f"train.out_dir={tmp_path / 'r'}"])
    with pytest.raises(MissingExtra, match=r"pip install 'catdiff\[wandb\]'"):
        train(cfg)
    assert not (tmp_path / "r").exists()
    assert main(["train", CONFIG, *TINY, "train.wandb=p", f"train.out_dir={tmp_path / 'r'}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "train.wandb", "catdiff[wandb]")


def test_a_wandb_project_name_is_checked():
    with pytest.raises(ConfigError, match="train.wandb"):
        load_config(CONFIG, ["train.wandb=team/project"])
