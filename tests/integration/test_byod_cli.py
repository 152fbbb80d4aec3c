"""Bring your own data from the command line: `tokens` (rows and stream) and `images` (a PNG
folder and an RGB .npz) train, sample and evaluate; a bad path is one `catdiff: error:` line."""

import json
from pathlib import Path

import numpy as np
import pytest

from catdiff.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOKENS, IMAGES = str(ROOT / "configs/mdlm/tokens.yaml"), str(ROOT / "configs/mdlm/images.yaml")
TINY = ["model.d_model=32", "model.n_layers=1", "model.n_heads=2", "train.batch_size=8", "train.max_steps=3",
        "train.progress=false"]
EVAL = ["--steps", "2", "--num-samples", "8", "--quiet"]


def _train_and_eval(config: str, run: Path, *overrides: str) -> dict:
    assert main(["train", config, *TINY, *overrides, f"train.out_dir={run}"]) == 0
    assert main(["eval", str(run), *EVAL]) == 0
    return json.loads((run / "eval.json").read_text())


def _markov_ids(n: int, vocab: int = 20, seed: int = 0) -> np.ndarray:
    """A stream of ids in [0, vocab) that mostly steps by +1 (something to learn)."""
    rng = np.random.default_rng(seed)
    steps = np.where(rng.random(n) < 0.8, 1, rng.integers(0, vocab, n))
    return np.cumsum(steps) % vocab


@pytest.mark.parametrize("layout", ["rows", "stream"])
def test_tokens_train_sample_eval(tmp_path, capsys, monkeypatch, layout):
    monkeypatch.chdir(tmp_path)
    if layout == "rows":
        np.save("ids.npy", _markov_ids(64 * 12).reshape(64, 12).astype(np.int32))
        data = ["data.path=ids.npy", "data.layout=rows", "data.seq_len=null"]  # relative: stored absolute
    else:
        _markov_ids(2000).astype(np.uint16).tofile("ids.bin")
        data = ["data.path=ids.bin", "data.layout=stream", "data.seq_len=12", "data.val_frac=0.05",
                "data.test_frac=0.05"]
    res = _train_and_eval(TOKENS, tmp_path / "run", *data)
    assert res["dataset"] == "tokens" and np.isfinite(res["likelihood"]["bits_per_token"])
    assert res["samples"][0]["n_samples"] == 8
    monkeypatch.chdir(ROOT)  # the run no longer depends on where it was trained from
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--steps", "4", "--num-samples", "3"]) == 0
    rows = [[int(v) for v in line.split()] for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 3 and all(len(r) == 12 and all(0 <= v < 20 for v in r) for r in rows)


def test_images_from_a_png_folder_train_sample_eval_with_fd(tmp_path, capsys):
    from matplotlib.image import imread
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(64):  # MNIST-like 8×8 stand-ins: a bright bar on a dark ground, a little noise
        im = rng.integers(0, 40, (8, 8))
        im[:, rng.integers(1, 7)] = 255 - rng.integers(0, 40)
        Image.fromarray(im.astype(np.uint8)).save(folder / f"{i:02d}.png")
    run = tmp_path / "run"
    res = _train_and_eval(IMAGES, run, f"data.path={folder}", "data.levels=4")
    row = res["samples"][0]
    assert res["dataset"] == "images" and np.isfinite(row["fd_digits"]) and row["fd_digits"] >= 0
    out = tmp_path / "grid.png"
    assert main(["sample", str(run), "--steps", "4", "--num-samples", "6", "--out", str(out)]) == 0
    assert imread(out).shape[:2] == (2 * 33 + 1, 3 * 33 + 1)  # 3 a row, 8×8 pixels at scale 4
    assert "wrote 6 samples" in capsys.readouterr().out


def test_rgb_images_from_an_npz_train_sample_eval_without_fd(tmp_path):
    from matplotlib.image import imread

    x = np.random.default_rng(1).random((64, 12, 12, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", x_train=x, y_train=np.zeros(64))
    run = tmp_path / "run"
    res = _train_and_eval(IMAGES, run, f"data.path={tmp_path / 'rgb.npz'}", "data.key=x_train", "data.levels=4")
    assert "fd_digits" not in res["samples"][0]  # FD is defined for 8×8 grey images only
    assert main(["sample", str(run), "--steps", "2", "--num-samples", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert imread(tmp_path / "g.png").shape == (12 * 4 + 2, 2 * (12 * 4 + 1) + 1, 4)  # RGBA PNG, 2 a row


@pytest.mark.parametrize("config,bad,needle", [
    (TOKENS, "data.path=nowhere/ids.bin", "tokens data not found"),
    (IMAGES, "data.path=nowhere/mnist.npy", "images data not found"),
    (TOKENS, "data.vocab_size=5", "out of range for vocab_size=5"),
])
def test_bad_data_is_one_error_line(tmp_path, capsys, monkeypatch, config, bad, needle):
    monkeypatch.chdir(tmp_path)
    (np.arange(100) % 9).astype(np.uint16).tofile("ids.bin")
    code = main(["train", config, *TINY, "data.path=ids.bin", "data.seq_len=10", bad, f"train.out_dir={tmp_path / 'r'}"]
                if config == TOKENS else ["train", config, *TINY, bad, f"train.out_dir={tmp_path / 'r'}"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("catdiff: error: ") and needle in lines[0], err
    if "not found" in needle:
        assert str(tmp_path / bad.split("=")[1]) in lines[0]  # the path, made absolute
