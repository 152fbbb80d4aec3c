"""`catdiff plot`: training curves of runs as one image, and its one-line errors."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error

from catdiff.cli import main
from catdiff.errors import DataError
from catdiff.plot import Run, figure, read_metrics, run_labels, short_labels, tokens_per_step

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.preset=tiny", "train.max_steps=20", "train.log_every=5", "train.eval_every=10", "train.batch_size=32",
        "train.warmup_steps=2", "train.eval_batches=1", "train.progress=false", "data.n_val=64", "data.n_test=64"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny MDLM runs of the mixture that differ in learning rate: base/a/run and base/b/run
    (the same folder name, so the legend must tell them apart)."""
    base = tmp_path_factory.mktemp("plot-runs")
    out = []
    for sub, lr in (("a", "1e-3"), ("b", "3e-3")):
        folder = base / sub / "run"
        assert main(["train", str(ROOT / "configs/mdlm/mixture.yaml"), *TINY, f"train.lr={lr}",
                     f"train.out_dir={folder}"]) == 0
        out.append(folder)
    return out


def rgb(color) -> np.ndarray:
    import matplotlib

    return np.array(matplotlib.colors.to_rgb(color))


def pixels_near(img: np.ndarray, color, tol: float = 0.03) -> int:
    return int((np.abs(img[..., :3] - rgb(color)).max(-1) < tol).sum())


def test_two_runs_make_a_png_with_one_colour_per_run(runs, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "curves.png"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(out)
    assert img.shape[0] >= 600 and img.shape[1] >= 1000, img.shape
    colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50  # lines, text and anti-aliasing: not a blank canvas
    for c in ("tab:blue", "tab:orange"):  # each run's curves are drawn in its own colour
        assert pixels_near(img, c) > 500, c


def test_tokens_axis_uses_the_recorded_tokens(runs, tmp_path):
    rows = read_metrics(runs[0])
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    seq_len = json.loads((runs[0] / "dataset.json").read_text())["seq_len"]
    assert [r["tokens"] for r in train_rows] == [r["step"] * 32 * seq_len for r in train_rows]
    out = tmp_path / "tokens.png"
    assert main(["plot", *map(str, runs), "--out", str(out), "--x", "tokens"]) == 0
    fig = figure([Run(runs[0], "a", rows)], x="tokens")
    loss_ax = fig.axes[0]
    assert loss_ax.get_xlabel() == "tokens seen"
    assert max(loss_ax.lines[0].get_xdata()) == 20 * 32 * seq_len


def test_panels_have_titles_units_and_a_legend_naming_each_run(runs):
    labels = run_labels(runs)
    assert labels == ["a/run", "b/run"]  # same folder name: the parent tells them apart
    fig = figure([Run(f, lab, read_metrics(f)) for f, lab in zip(runs, labels, strict=True)])
    titles = [ax.get_title() for ax in fig.axes]
    assert [t.split(" (")[0] for t in titles[:5]] == ["training loss", "validation bits per token", "learning rate",
                                                     "gradient norm", "throughput"]
    assert all(ax.get_xlabel() == "optimizer step" for ax in fig.axes[:5])
    assert "bits / token" in fig.axes[1].get_ylabel() and "tokens / s" in fig.axes[4].get_ylabel()
    legend = [t.get_text() for t in fig.axes[5].get_legend().get_texts()]
    assert [t.split(", val ")[0] for t in legend] == ["a/run  (20 steps", "b/run  (20 steps"]
    assert all(re.search(r"val \d\.\d{3} bits/token\)$", t) for t in legend)  # the last validation
    assert all(len(ax.lines) == 2 for ax in fig.axes[:5])  # both runs in every panel


def test_a_metric_no_run_recorded_is_an_empty_panel(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    rows = [{"step": s, "loss": 3.0 / s, "lr": 1e-3} for s in (10, 20, 40, 200)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4')  # torn line
    fig = figure([Run(run, "old", read_metrics(run))])
    by_title = {ax.get_title().split(" (")[0]: ax for ax in fig.axes}
    for title in ("gradient norm", "throughput", "validation bits per token"):
        assert [t.get_text() for t in by_title[title].texts] == ["not recorded"], title
    assert by_title["training loss"].get_yscale() == "log"  # spans a factor of 20, all positive
    assert main(["plot", str(run), "--out", str(tmp_path / "old.png")]) == 0


def test_runs_without_recorded_tokens_take_them_from_the_config(tmp_path):
    run = tmp_path / "old"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  batch_size: 8\ndata:\n  name: mixture\n")
    (run / "dataset.json").write_text(json.dumps({"seq_len": 12}))
    assert tokens_per_step(Run(run, "old", [{"step": 5, "loss": 1.0}])) == 96
    (run / "dataset.json").unlink()
    with pytest.raises(DataError, match="--x step"):
        tokens_per_step(Run(run, "old", [{"step": 5, "loss": 1.0}]))


def test_a_folder_without_metrics_fails_in_one_line(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["plot", str(runs[0]), str(empty), "--out", str(tmp_path / "x.png")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(empty), "metrics.jsonl")
    assert not (tmp_path / "x.png").exists()
    assert main(["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
    assert_one_line_error(capsys.readouterr().err, str(tmp_path / "missing"))


@pytest.mark.parametrize("where", ["under_a_file", "folder", "bad_type"])
def test_an_unwritable_out_fails_in_one_line(runs, tmp_path, capsys, where):
    (tmp_path / "file.txt").write_text("x")
    out = {"under_a_file": tmp_path / "file.txt" / "f.png", "folder": tmp_path,
           "bad_type": tmp_path / "f.xyz"}[where]
    assert main(["plot", str(runs[0]), "--out", str(out)]) == 2
    assert_one_line_error(capsys.readouterr().err, str(out))


def test_the_x_axis_and_out_are_checked(runs, capsys):
    assert main(["plot", str(runs[0]), "--out", "f.png", "--x", "time"]) == 2
    assert_one_line_error(capsys.readouterr().err, "--x")
    assert main(["plot", str(runs[0])]) == 2
    assert_one_line_error(capsys.readouterr().err, "--out")


def test_labels_tell_runs_apart():
    assert run_labels([Path("/r/x"), Path("/r/y")]) == ["x", "y"]
    assert run_labels([Path("/p/a/x"), Path("/q/a/x"), Path("/q/y")]) == ["p/a/x", "q/a/x", "y"]
    assert run_labels([Path("/r/x"), Path("/r/x")]) == ["x", "x (2)"]
    long = [f"a-rather-long-experiment-name-lr{j}e-4-with-many-details" for j in range(3)]
    short = short_labels(long)  # the legend keeps what differs, shortens what they share
    assert len(set(short)) == 3 and all(len(s) <= 40 and f"lr{j}e-4" in s for j, s in enumerate(short))
