import json
from collections import Counter

import numpy as np
import pytest
import torch

from catdiff.data.images import GREY_RAMP, Digits


@pytest.fixture(scope="module")
def digits():
    return Digits(seed=0)


def _rows(x: torch.Tensor) -> Counter:
    return Counter(tuple(r) for r in x.tolist())


def test_tokens_shapes_and_range(digits):
    assert (digits.name, digits.kind, digits.vocab_size, digits.seq_len) == (
        "digits",
        "image",
        17,
        64,
    )
    sizes = {}
    for name in ("train", "val", "test"):
        x = digits.split(name)
        assert x.dtype == torch.int64 and x.ndim == 2 and x.shape[1] == 64
        assert int(x.min()) == 0 and int(x.max()) == 16
        sizes[name] = len(x)
        assert digits.labels(name).shape == (len(x),)
    assert sizes == {"train": 1437, "val": 180, "test": 180}


def test_splits_disjoint_cover_and_labels_aligned(digits):
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = {k: digits.source_index[k].numpy() for k in ("train", "val", "test")}
    all_idx = np.concatenate(list(idx.values()))
    assert len(np.unique(all_idx)) == len(all_idx) == len(d.data)  # disjoint and covering
    for k, i in idx.items():
        assert np.array_equal(digits.split(k).numpy(), d.data[i].astype(np.int64))
        assert np.array_equal(digits.labels(k).numpy(), d.target[i])


def test_splits_deterministic_in_seed(digits):
    again, other = Digits(seed=0), Digits(seed=1)
    for k in ("train", "val", "test"):
        assert torch.equal(again.split(k), digits.split(k))
        assert torch.equal(again.labels(k), digits.labels(k))
    assert not torch.equal(other.split("test"), digits.split("test"))


def test_train_batch_deterministic(digits):
    again = Digits(seed=0)
    b = digits.train_batch(7, 32, rank=1, world=2)
    assert b.shape == (32, 64) and b.dtype == torch.int64
    assert torch.equal(b, again.train_batch(7, 32, rank=1, world=2))
    assert not torch.equal(b, digits.train_batch(8, 32, rank=1, world=2))
    assert not torch.equal(b, digits.train_batch(7, 32, rank=0, world=2))
    assert not torch.equal(b, Digits(seed=1).train_batch(7, 32, rank=1, world=2))


def test_ranks_disjoint_and_one_epoch_covers_train_once(digits):
    train = digits.split("train")  # 1437 = 3 * 479 images
    parts = [digits.train_batch(0, 479, rank=r, world=3) for r in range(3)]
    assert _rows(torch.cat(parts)) == _rows(train)  # every image exactly once across ranks


def test_batch_crossing_epoch_boundary(digits):
    train = digits.split("train")
    first = digits.train_batch(0, 1000)
    second = digits.train_batch(1, 1000)  # positions 1000..1999: epochs 0 and 1
    assert _rows(torch.cat([first, second[:437]])) == _rows(train)
    assert not torch.equal(second[437:], first[: 1000 - 437])  # epoch 1 is a new permutation


def test_bad_arguments_name_themselves(digits):
    with pytest.raises(ValueError, match="rank"):
        digits.train_batch(0, 4, rank=2, world=2)
    with pytest.raises(ValueError, match="batch_size"):
        digits.train_batch(0, 0)
    with pytest.raises(ValueError, match="step"):
        digits.train_batch(-1, 4)
    with pytest.raises(ValueError, match="val_frac"):
        Digits(val_frac=0.6, test_frac=0.5)
    with pytest.raises(ValueError, match="split"):
        digits.split("dev")


def test_decode_ascii_art(digits):
    x = torch.zeros(64, dtype=torch.int64)
    x[8 * 2 + 5] = 16  # row 2, column 5
    x[8 * 7 + 0] = 8
    lines = digits.decode(x).split("\n")
    assert len(lines) == 8 and all(len(line) == 8 for line in lines)
    assert lines[2][5] == GREY_RAMP[-1] == "@"
    assert lines[7][0] == GREY_RAMP[5]
    assert lines[0] == " " * 8
    real = digits.decode(digits.split("test")[0])
    assert len(real.split("\n")) == 8 and set(real) <= set(GREY_RAMP) | {"\n"}
    with pytest.raises(ValueError, match="0..16"):
        digits.decode(torch.full((64,), 17))


def test_to_images_row_major_unit_range(digits):
    x = digits.split("val")[:5]
    img = Digits.to_images(x)
    assert img.shape == (5, 8, 8) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert float(img[3, 2, 6]) == pytest.approx(int(x[3, 8 * 2 + 6]) / 16)
    assert Digits.to_images(x[0]).shape == (1, 8, 8)


def test_save_grid_png(digits, tmp_path):
    import matplotlib.image as mpimg

    x = torch.zeros(10, 64, dtype=torch.int64)
    x[1] = 16  # second image fully inked
    path = Digits.save_grid(x, tmp_path / "sub" / "grid.png")  # 4 per row, 3 rows
    img = mpimg.imread(path)
    assert img.shape[:2] == (3 * 33 + 1, 4 * 33 + 1)
    grey = img[..., :3].mean(-1)
    assert grey[1:33, 1:33].min() > 0.9  # blank image: white
    assert grey[1:33, 34:66].max() < 0.1  # inked image: black
    img2 = mpimg.imread(Digits.save_grid(x[:3], tmp_path / "row.png", nrow=3, scale=1))
    assert img2.shape[:2] == (10, 28)


def test_state_rebuilds(digits):
    st = json.loads(json.dumps(Digits(seed=3, val_frac=0.2, test_frac=0.05).state()))
    assert st["name"] == "digits" and st["kwargs"] == {
        "seed": 3,
        "val_frac": 0.2,
        "test_frac": 0.05,
    }
    a, b = Digits(seed=3, val_frac=0.2, test_frac=0.05), Digits.from_state(st)
    assert torch.equal(a.split("val"), b.split("val"))
    assert torch.equal(a.train_batch(2, 8), b.train_batch(2, 8))
