"""Scikit-learn's 8×8 digits as 64-token sequences over 17 grey levels, with ASCII and PNG views.

Ships with scikit-learn (no download); it knows nothing of models or diffusion. `save_image_grid`
writes the PNG grid of samples for every image dataset.

Shapes: B = batch, L = 64 pixels in row-major order, K = 17 grey levels (0 = blank, 16 = ink).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from catdiff.data.base import CategoricalDataset
from catdiff.data.text import (
    check_batch_args,
    check_fracs,
    check_seed,
    epoch_stream,
    split_counts,
    stream_start,
)

__all__ = ["Digits", "GREY_RAMP", "save_image_grid"]

GREY_RAMP = " .:-=+*#%@"  # light → dark; level v ↦ GREY_RAMP[round(v * 9 / 16)]
_SPLIT_STREAM = 0x5EED  # extra SeedSequence word: the split shuffle never shares a stream


class Digits(CategoricalDataset):
    """The 1797 digits of `sklearn.datasets.load_digits`, shuffled by `seed` into train/val/test.

    Splits: a permutation seeded by (seed, 0x5EED) puts round(test_frac * N) images in test,
    round(val_frac * N) in val, the rest in train. `train_batch` walks epoch-wise permutations of
    the train images seeded by (seed, epoch); ranks take disjoint slices of each global batch.
    """

    name = "digits"
    kind = "image"
    vocab_size = 17
    seq_len = 64
    side = 8

    def __init__(self, seed: int = 0, val_frac: float = 0.1, test_frac: float = 0.1):
        from sklearn.datasets import load_digits

        self.seed = check_seed(seed)
        check_fracs(val_frac, test_frac)
        self.val_frac, self.test_frac = float(val_frac), float(test_frac)
        d = load_digits()
        x = d.data.astype(np.uint8)  # (1797, 64) values 0..16
        y = d.target.astype(np.int64)  # (1797,)
        n = len(x)
        perm = np.random.default_rng(
            np.random.SeedSequence([self.seed, _SPLIT_STREAM])
        ).permutation(n)
        n_train, n_val, _ = split_counts(n, self.val_frac, self.test_frac)
        idx = {
            "train": perm[:n_train],
            "val": perm[n_train : n_train + n_val],
            "test": perm[n_train + n_val :],
        }
        self._x = {k: torch.from_numpy(x[v]) for k, v in idx.items()}  # (N, 64) uint8
        self._y = {k: torch.from_numpy(y[v]) for k, v in idx.items()}  # (N,) int64
        self.source_index = {k: torch.from_numpy(v.astype(np.int64)) for k, v in idx.items()}

    # ---- contract -------------------------------------------------------------------------
    def train_batch(
        self, step: int, batch_size: int, rank: int = 0, world: int = 1
    ) -> torch.Tensor:
        check_batch_args(step, batch_size, rank, world)
        start = stream_start(step, batch_size, rank, world)
        _, j = epoch_stream(len(self._x["train"]), self.seed, start, batch_size)
        return self._x["train"][torch.from_numpy(j)].long()  # (B, 64)

    def split(self, name: str) -> torch.Tensor:
        """(N, 64) int64 images of split `name` in {"train", "val", "test"}."""
        return self._x[self._check_split(name)].long()

    def labels(self, name: str) -> torch.Tensor:
        """(N,) int64 digit classes 0..9 aligned with `split(name)`."""
        return self._y[self._check_split(name)].clone()

    def _check_split(self, name: str) -> str:
        if name not in self._x:
            raise ValueError(f"split must be one of ['test', 'train', 'val'], got {name!r}")
        return name

    def decode(self, x) -> str:
        """ASCII art: 8 lines of 8 characters from the grey ramp (blank → ' ', full ink → '@')."""
        img = _levels(x)
        if img.shape[0] != 1:
            raise ValueError(f"decode takes one image of 64 tokens, got {img.shape[0]}")
        ramp = np.array(list(GREY_RAMP))
        chars = ramp[(img[0] * (len(GREY_RAMP) - 1) + 8) // 16]  # (8, 8) rounded
        return "\n".join("".join(row) for row in chars)

    def state(self) -> dict:
        """Base facts + `kwargs` such that `Digits(**state["kwargs"])` rebuilds this dataset."""
        kwargs = {"seed": self.seed, "val_frac": self.val_frac, "test_frac": self.test_frac}
        return {**super().state(), "kind": self.kind, "kwargs": kwargs}

    @classmethod
    def from_state(cls, state: Mapping) -> Digits:
        return cls(**state["kwargs"])

    # ---- pictures -------------------------------------------------------------------------
    @staticmethod
    def to_images(x) -> torch.Tensor:
        """(B, 8, 8) float32 in [0, 1] (level / 16) from (64,), (B, 64) or (B, 8, 8) tokens."""
        return torch.from_numpy(_levels(x).astype(np.float32) / 16.0)

    @staticmethod
    def save_grid(x, path: str | Path, nrow: int | None = None, scale: int = 4) -> Path:
        """Write a PNG grid of images (`nrow` per row, default ⌈√B⌉), each pixel `scale`×`scale`.

        Ink is dark on white; 1-pixel grey gutters separate the images (`save_image_grid`).
        """
        return save_image_grid(Digits.to_images(x).numpy(), path, nrow, scale, cmap="gray_r")


def save_image_grid(imgs, path: str | Path, nrow: int | None = None, scale: int = 4,
                    cmap: str = "gray") -> Path:
    """Write (B, H, W) grey or (B, H, W, 3) RGB images of values in [0, 1] as one PNG grid.

    `nrow` images per row (default ⌈√B⌉), each pixel `scale`×`scale`, 1-pixel mid-grey gutters;
    grey images through `cmap` (0 ↦ its low end, 1 ↦ its high end), RGB as they are. Uses
    matplotlib's image writer (no figure, no display). Returns the path written.
    """
    from matplotlib import image as mpl_image

    imgs = np.asarray(imgs, dtype=np.float32)
    if imgs.ndim != 3 and not (imgs.ndim == 4 and imgs.shape[3] == 3):
        raise ValueError(f"images must be (B, H, W) or (B, H, W, 3), got shape {imgs.shape}")
    b, h, w = imgs.shape[:3]
    if nrow is None:
        nrow = int(np.ceil(np.sqrt(b)))
    if isinstance(nrow, bool) or int(nrow) != nrow or nrow < 1:
        raise ValueError(f"nrow must be an integer >= 1, got {nrow!r}")
    if isinstance(scale, bool) or int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    nrow, scale = int(nrow), int(scale)
    n_rows = -(-b // nrow)  # rows of the grid
    ch, cw = h * scale + 1, w * scale + 1  # a cell: the image and its gutter
    grid = np.full((n_rows * ch + 1, nrow * cw + 1, *imgs.shape[3:]), 0.5, dtype=np.float32)
    big = imgs.repeat(scale, axis=1).repeat(scale, axis=2)  # (B, H·s, W·s[, 3])
    for i in range(b):  # one paste per image (a grid holds tens of images, not a dataset)
        r, c = divmod(i, nrow)
        grid[r * ch + 1 : (r + 1) * ch, c * cw + 1 : (c + 1) * cw] = big[i]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grid.ndim == 2:
        mpl_image.imsave(path, grid, cmap=cmap, vmin=0.0, vmax=1.0, format="png")
    else:
        mpl_image.imsave(path, grid, format="png")
    return path


def _levels(x) -> np.ndarray:
    """(B, 8, 8) int64 grey levels from (64,), (B, 64), (8, 8) or (B, 8, 8); checks 0..16."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(a == np.round(a)):
            raise ValueError("digit tokens must be integers 0..16")
    a = a.astype(np.int64)
    if a.shape == (64,) or a.shape == (8, 8):
        a = a.reshape(1, 8, 8)
    elif a.ndim == 2 and a.shape[1] == 64:
        a = a.reshape(-1, 8, 8)
    elif not (a.ndim == 3 and a.shape[1:] == (8, 8)):
        raise ValueError(f"digits must have shape (64,), (B, 64) or (B, 8, 8), got {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 16):
        raise ValueError(f"digit tokens must lie in 0..16, got {a.min()}..{a.max()}")
    return a
