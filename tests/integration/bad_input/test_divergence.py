"""Divergence: a non-finite loss or gradient norm, or a loss far above its running median, stops
training in one line naming the real step of the checkpoint kept from before it (whose loss was
sane), or saying that none had been saved; the diverged weights are never kept."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from catdiff import checkpoint as ckpt_io
from catdiff.cli import main
from catdiff.config import load_config
from catdiff.errors import TrainingError
from catdiff.trainer import Trainer

ROOT = Path(__file__).resolve().parents[3]
CONFIG = str(ROOT / "configs/mdlm/mixture.yaml")
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.progress=false",
        "train.log_every=1", "train.eval_batches=1", "data.n_val=64", "data.n_test=64"]


def losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_huge_learning_rate_stops_before_any_checkpoint_is_kept(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", CONFIG, *TINY, "train.lr=1e9", "train.ckpt_every=1", "train.max_steps=50",
                 f"train.out_dir={out}"]) == 2
    assert_one_line_error(capsys.readouterr().err, "at step 1; stopped, no checkpoint had been saved before it")
    assert ckpt_io.candidates(out) == []  # the checkpoint of step 1 held the diverged weights


def test_a_loss_spike_keeps_the_sane_checkpoint_before_it(tmp_path, capsys):
    """train.lr=30 with the config's warm-up: the loss jumps within a few steps; the run stops at
    the jump and keeps the checkpoint before it, whose loss was still that of a sane model."""
    out = tmp_path / "run"
    assert main(["train", CONFIG, *TINY, "train.lr=30", "train.ckpt_every=1", "train.max_steps=50",
                 f"train.out_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "above 100 × the running median", "stopped, the last checkpoint before it, step ")
    stop = int(err.split(" at step ")[1].split(";")[0])
    kept = int(err.split("before it, step ")[1].split(",")[0])
    assert kept == stop - 1 and f"is kept in {out / 'checkpoints' / f'step-{kept:08d}'}" in err
    assert steps_on_disk(out) and max(steps_on_disk(out)) == kept  # nothing at or after the spike
    assert ckpt_io.verify(out / "checkpoints" / f"step-{kept:08d}")["step"] == kept
    logged = losses(out)
    # the row of step kept + 1 holds the loss of the kept weights: as sane as the first steps
    assert max(logged.values()) < 3 * logged[1] and kept + 1 in logged


def steps_on_disk(out) -> list[int]:
    return [ckpt_io.step_of(d) for d in ckpt_io.step_dirs(out)]


def _trainer(tmp_path, *extra) -> Trainer:
    return Trainer(load_config(CONFIG, [*TINY, f"train.out_dir={tmp_path / 'run'}", "train.max_steps=12",
                                        "train.ckpt_every=3", *extra]))


@pytest.mark.parametrize("at, kept, left", [(7, 6, [6, 3]), (6, 3, [3])])
def test_a_spike_stops_and_the_checkpoint_of_the_spiking_weights_goes(tmp_path, monkeypatch, at, kept, left):
    """A loss 1000× the usual at step `at`. At step 6 the spiking weights are those of the
    checkpoint just written at step 6: it is removed and step 3 is named."""
    tr = _trainer(tmp_path)
    real_forward = tr.method.forward

    def spiking(x, generator=None):
        out = real_forward(x, generator)
        if tr.step == at:
            out.loss = out.loss * 1000
        return out

    monkeypatch.setattr(tr.method, "forward", spiking)
    with pytest.raises(TrainingError, match=f"above 100 × the running median .* at step {at}; stopped, "
                                            f"the last checkpoint before it, step {kept}, is kept"):
        tr.fit()
    assert steps_on_disk(tmp_path / "run") == left


def test_a_non_finite_gradient_norm_stops(tmp_path, monkeypatch):
    tr = _trainer(tmp_path)
    param = next(tr.method.parameters())
    param.register_hook(lambda g: g * math.inf if tr.step == 5 else g)
    with pytest.raises(TrainingError, match="non-finite gradient norm at step 5; stopped, the last checkpoint "
                                            "before it, step 3"):
        tr.fit()


def test_the_ratio_test_can_be_turned_off(tmp_path, monkeypatch):
    tr = _trainer(tmp_path, "train.divergence_factor=0", "train.max_steps=8")
    real_forward = tr.method.forward

    def spiking(x, generator=None):
        out = real_forward(x, generator)
        if tr.step == 5:
            out.loss = out.loss * 1000
        return out

    monkeypatch.setattr(tr.method, "forward", spiking)
    assert tr.fit()["status"] == "done"


def test_ddp_ranks_agree_to_stop(tmp_path):
    """Under torchrun both ranks stop at the same step with the same message, no rank hangs."""
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                        "-m", "catdiff", "train", CONFIG, *TINY, "train.lr=1e9", "train.ckpt_every=1",
                        "train.max_steps=50", f"train.out_dir={out}"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode != 0
    lines = [x for x in r.stderr.splitlines() if x.startswith("catdiff: error:")]
    assert len(lines) == 2 and lines[0] == lines[1], r.stderr[-2000:]
    assert "at step 1; stopped, no checkpoint had been saved before it" in lines[0]
    assert ckpt_io.candidates(out) == []


def test_a_hard_batch_of_a_learned_task_is_not_a_divergence(tmp_path):
    """A run whose loss fell to ~1e-3 (the copy task) meets a batch at 0.13: 170× the median but far
    below the untrained model's first loss, so training goes on; above the first loss it stops. The
    first loss is kept across a resume."""
    tr = _trainer(tmp_path)
    tr.fit()
    first = tr.first_loss
    assert first is not None and math.isfinite(first) and first > 0.13
    tr.recent.clear()
    tr.recent.extend([7.5e-4] * 50)
    assert tr._divergence(0.13) is None  # 173× the median, below the first loss
    assert f"above 100 × the running median 0.00075 and the first loss {first:.4g}" in tr._divergence(first * 1.01)
    tr.first_loss = None  # a checkpoint from before the first loss was kept: the ratio alone decides
    assert tr._divergence(0.13) is not None
    resumed = Trainer(load_config(CONFIG, [*TINY, f"train.out_dir={tmp_path / 'run'}", "train.max_steps=15",
                                           "train.ckpt_every=3"]), resume=True)
    assert resumed.first_loss == first


def test_a_resume_from_a_checkpoint_without_the_first_loss_keeps_the_ratio_alone(tmp_path, monkeypatch):
    """Checkpoints written before the first loss was kept resume with none: the resumed run's first
    loss is a trained model's, not the untrained level the rule means, so it is not taken."""
    _trainer(tmp_path).fit()
    real = ckpt_io.load_trainer_state
    monkeypatch.setattr(ckpt_io, "load_trainer_state", lambda ckpt: {k: v for k, v in real(ckpt).items()
                                                                     if k != "first_loss"})
    resumed = Trainer(load_config(CONFIG, [*TINY, f"train.out_dir={tmp_path / 'run'}", "train.max_steps=15",
                                           "train.ckpt_every=3"]), resume=True)
    assert resumed.first_loss is None
    resumed.fit()
    assert resumed.step == 15 and resumed.first_loss is None
