"""Checkpoints: the last few and the best are kept, every file's sha256 is recorded and checked on
each load, a checkpoint that fails falls back to the previous one in one line (never to
uninitialised weights), a full disk keeps the last one, and resume drops the rows logged after it."""

import errno
import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, folder_state
from safetensors.torch import load_file, save_file

from catdiff import checkpoint as ckpt_io
from catdiff import rundir
from catdiff.build import load_run
from catdiff.cli import main
from catdiff.config import load_config
from catdiff.trainer import Trainer

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/mdlm/mixture.yaml")
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.progress=false",
        "train.log_every=1", "train.eval_batches=1", "data.n_val=64", "data.n_test=64", "train.warmup_steps=2"]


def train(out, *extra) -> int:
    return main(["train", CONFIG, *TINY, f"train.out_dir={out}", *extra])


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def steps_of(out) -> list[int]:
    return [ckpt_io.step_of(d) for d in ckpt_io.step_dirs(out)]


def weights(out) -> dict:
    return load_run(out)[1].state_dict()


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_last_n_and_the_best_are_kept_with_the_sha256_of_every_file(tmp_path):
    out = tmp_path / "run"
    assert train(out, "train.max_steps=10", "train.ckpt_every=2", "train.eval_every=2", "train.keep_checkpoints=2") == 0
    assert steps_of(out) == [10, 8]
    vals = {r["step"]: r["val_bits_per_token"] for r in rows(out) if "val_bits_per_token" in r}
    assert sorted(vals) == [2, 4, 6, 8, 10]  # validated once per step, the end included
    best = ckpt_io.read_meta(out / "checkpoints" / "best")
    assert best["step"] == min(vals, key=vals.get) and best["val"]["val_bits_per_token"] == min(vals.values())
    for ckpt in ckpt_io.candidates(out):
        meta = ckpt_io.verify(ckpt)
        assert sorted(meta["files"]) == ["ema.safetensors", "model.safetensors", "trainer.pt"]
        for name, digest in meta["files"].items():
            assert hashlib.sha256((ckpt / name).read_bytes()).hexdigest() == digest
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]  # no temporary folders
    # the best checkpoint folder loads on its own (catdiff sample RUN/checkpoints/best)
    assert load_run(out / "checkpoints" / "best")[1] is not None


def _rewrite_without_a_key(path: Path) -> str:
    """Drop one tensor from a safetensors file and record the new file's sha256 in meta.json, so
    that only the key check can notice; returns the dropped key."""
    state = load_file(str(path))
    key = sorted(state)[0]
    del state[key]
    save_file(state, str(path))
    meta_path = path.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    return key


def pause(out, until: int, *extra, resume=False) -> None:
    """Train towards train.max_steps but stop (checkpointed) at step `until`, as an interruption would:
    the learning-rate schedule is that of the whole run, so weights compare with an uninterrupted one."""
    cfg = load_config(CONFIG, [*TINY, f"train.out_dir={out}", *extra])
    assert Trainer(cfg, resume=resume).fit(until_step=until)["status"] == "paused"


@pytest.mark.parametrize("damage", ["flipped byte", "missing EMA key", "meta.json random bytes"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one_on_resume_and_load(tmp_path, capsys, damage):
    ref = tmp_path / "ref"
    assert train(ref, "train.max_steps=8", "train.ckpt_every=2") == 0
    out = tmp_path / "run"
    pause(out, 6, "train.max_steps=8", "train.ckpt_every=2")
    newest = out / "checkpoints" / "step-00000006"
    if damage == "flipped byte":
        data = bytearray((newest / "ema.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (newest / "ema.safetensors").write_bytes(bytes(data))
        why = "ema.safetensors is corrupt (its sha256 differs from the one in meta.json)"
    elif damage == "missing EMA key":
        key = _rewrite_without_a_key(newest / "ema.safetensors")
        why = f"ema.safetensors does not match the model: missing key '{key}'"
    else:
        (newest / "meta.json").write_bytes(random.Random(0).randbytes(1024))
        why = "meta.json is not valid JSON"
    notice = f"catdiff: warning: checkpoint step 6 failed verification ({why}); using step 4"
    capsys.readouterr()
    assert main(["sample", str(out), "--num-samples", "2", "--steps", "2"]) == 0
    assert notice in capsys.readouterr().err.splitlines()
    assert train(out, "train.max_steps=8", "train.ckpt_every=2", "--resume") == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "catdiff:" in line] == [notice]
    logged = [r["step"] for r in rows(out) if "loss" in r]
    assert logged == list(range(1, 9))  # rows 5, 6 of the first run dropped, logged again
    assert_same_weights(weights(out), weights(ref))  # resumed from step 4 exactly


def test_no_checkpoint_that_verifies_is_one_line_and_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "train.max_steps=2") == 0
    for ckpt in ckpt_io.candidates(out):  # step 2 and best
        _rewrite_without_a_key(ckpt / "ema.safetensors")
    before = folder_state(out)
    capsys.readouterr()
    assert train(out, "train.max_steps=4", "--resume") == 2
    assert_one_line_error(capsys.readouterr().err, f"no checkpoint in {out} passes verification (step 2: ",
                          "; best: ", "missing key")
    assert main(["sample", str(out), "--num-samples", "2"]) == 2
    assert_one_line_error(capsys.readouterr().err, "passes verification")
    assert folder_state(out) == before


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_write = ckpt_io.write_file
    writes = []

    def full_after_one_checkpoint(path, data):
        writes.append(path)
        if len(writes) > 4:  # the 4 files of the first checkpoint went through
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(ckpt_io, "write_file", full_after_one_checkpoint)
    assert train(out, "train.max_steps=6", "train.ckpt_every=2") == 2
    kept = out / "checkpoints" / "step-00000002"
    assert_one_line_error(capsys.readouterr().err, f"cannot write checkpoint step 4 in {out} (the disk is full); "
                          f"stopped at step 4, the last checkpoint, step 2, is kept in {kept}")
    assert steps_of(out) == [2] and ckpt_io.verify(kept)["step"] == 2
    assert [p.name for p in (out / "checkpoints").iterdir()] == [kept.name]  # the torn write was cleaned up
    monkeypatch.setattr(ckpt_io, "write_file", real_write)  # space freed: the run continues from step 2
    assert train(out, "train.max_steps=6", "train.ckpt_every=2", "--resume") == 0
    assert [r["step"] for r in rows(out) if "loss" in r] == list(range(1, 7))


def test_resume_after_kill_9_between_checkpoints_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """A real process killed with SIGKILL after its checkpoint at step 20: it had logged rows past
    20, which --resume drops before logging them again; the weights equal an uninterrupted run's."""
    out, budget = tmp_path / "run", ["train.max_steps=100000", "train.ckpt_every=20"]
    proc = subprocess.Popen([sys.executable, "-m", "catdiff", "train", CONFIG, *TINY, *budget, f"train.out_dir={out}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (ckpt_io.step_dirs(out) and (out / "metrics.jsonl").is_file()
                   and len((out / "metrics.jsonl").read_text().splitlines()) >= 25):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert (out / rundir.PID).is_file()  # left behind by the killed process; its OS lock died with it
    with rundir.RunLock(out):
        pass
    saved = max(steps_of(out))
    before = [r["step"] for r in rows(out) if "loss" in r]
    assert max(before) > saved  # rows were logged after the last checkpoint
    horizon = max(before) + 3
    pause(out, horizon, *budget, resume=True)
    assert [r["step"] for r in rows(out) if "loss" in r] == list(range(1, horizon + 1))
    pause(tmp_path / "ref", horizon, *budget)
    assert_same_weights(weights(out), weights(tmp_path / "ref"))


def test_after_a_fallback_the_new_checkpoints_are_never_pruned_for_the_failed_one(tmp_path, capsys):
    """Resumed from step 4 past a failed step 6 with keep_checkpoints=1: step 5 is kept beside the
    failed step 6 (never deleted in its favour) until step 6 is written again."""
    out = tmp_path / "run"
    pause(out, 6, "train.max_steps=8", "train.ckpt_every=2")
    (out / "checkpoints" / "step-00000006" / "trainer.pt").write_bytes(b"garbage")
    more = ["train.max_steps=8", "train.ckpt_every=1", "train.keep_checkpoints=1"]
    pause(out, 5, *more, resume=True)
    assert steps_of(out) == [6, 5]
    capsys.readouterr()
    assert main(["sample", str(out), "--num-samples", "2", "--steps", "2"]) == 0
    assert "failed verification (trainer.pt is corrupt" in capsys.readouterr().err
    pause(out, 7, *more, resume=True)
    assert steps_of(out) == [7] and ckpt_io.verify(out / "checkpoints" / "step-00000007")["step"] == 7
