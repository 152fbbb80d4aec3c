"""Bring your own data: arrays of token ids (`tokens`) and images (`images`) from local files.

`tokens` reads a `.npy` array or a raw `.bin` file of token ids through a memory map, as (N, L)
rows or as one flat stream cut into length-L windows: a batch or a split reads only its rows,
so the file may be larger than memory. `images` reads an `.npy`/`.npz` array or a folder of PNGs
and quantizes every pixel (every channel of an RGB pixel) to `levels` grey levels.

It knows files, numpy arrays and pixel values. It must not know models, processes, diffusion or
training: like every dataset it only hands out (B, L) int64 token batches and held-out splits.

Shapes: B = batch, N = rows (sequences or images), L = seq_len, K = vocab_size; images are
(N, H, W) grey or (N, H, W, C) with C = 1 (grey) or 3 (RGB).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from catdiff.data.base import CategoricalDataset
from catdiff.data.images import GREY_RAMP, save_image_grid
from catdiff.data.text import (
    check_batch_args,
    check_fracs,
    check_seed,
    epoch_stream,
    split_counts,
    stream_start,
)

__all__ = ["Images", "Tokens", "quantize"]

_SPLIT_STREAM = 0x5EED  # extra SeedSequence word: the split shuffle never shares a stream
_CHUNK = 1 << 22  # values read at a time when a whole array is scanned (id range, quantization)


def _int_at_least(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _row_chunks(a: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive slices of `a` along its first axis, about _CHUNK values each; a memory map is
    read one slice at a time, whatever its memory order."""
    step = max(1, _CHUNK // max(1, int(np.prod(a.shape[1:]))))
    for i in range(0, len(a), step):
        yield a[i : i + step]


def _load_npy(path: str) -> np.ndarray:
    """The array of an .npy file as a read-only memory map (nothing read but the header)."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable .npy array ({str(e).splitlines()[0]})") from None


class _Rows(CategoricalDataset):
    """Shared plumbing: an (N, L) array of ids `rows`, its held-out splits, training batches and
    the state round trip. Subclasses name the files they read in `expects`, set `path`, `seed`,
    `val_frac`, `test_frac`, `rows` and the split index through `_init_common` and
    `_init_splits`, and define `_kwargs`."""

    def _init_common(self, path, val_frac: float, test_frac: float, seed: int) -> None:
        check_fracs(val_frac, test_frac)
        self.seed = check_seed(seed)
        self.val_frac, self.test_frac = float(val_frac), float(test_frac)
        self.path = str(Path(path).expanduser().resolve())
        if not Path(self.path).exists():
            raise FileNotFoundError(f"{self.name} data not found: {self.path!r} ({self.expects})")

    def _init_splits(self, rows: np.ndarray, shuffle: bool) -> None:
        """train | val | test row indices: a permutation of the rows seeded by (seed, 0x5EED) when
        `shuffle`, else in file order with val then test at the end; round(frac * N) rows each."""
        n = len(rows)
        n_train, n_val, _ = split_counts(n, self.val_frac, self.test_frac)
        if n_train < 1:
            raise ValueError(f"{self.path}: {n} rows leave none for training after "
                             f"val_frac={self.val_frac} and test_frac={self.test_frac}")
        if shuffle:
            order = np.random.default_rng(
                np.random.SeedSequence([self.seed, _SPLIT_STREAM])).permutation(n)
        else:
            order = np.arange(n, dtype=np.int64)
        self.rows = rows
        self._index = {"train": order[:n_train], "val": order[n_train : n_train + n_val],
                       "test": order[n_train + n_val :]}

    def _take(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.rows[idx], dtype=np.int64))

    def train_batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """(B, L) train rows: epoch-wise permutations of the train rows seeded by (seed, epoch);
        rank r takes the r-th slice of batch_size of each global batch."""
        check_batch_args(step, batch_size, rank, world)
        train = self._index["train"]
        _, j = epoch_stream(len(train), self.seed, stream_start(step, batch_size, rank, world), batch_size)
        return self._take(train[j])

    def split(self, name: str) -> torch.Tensor:
        """(N, L) int64 rows of split `name` in {"train", "val", "test"}."""
        return self.head(name, None)

    def head(self, name: str, n: int | None) -> torch.Tensor:
        """The first n rows of split `name` (all when n is None); only those are read."""
        if name not in self._index:
            raise ValueError(f"split must be one of ['test', 'train', 'val'], got {name!r}")
        return self._take(self._index[name][:n])

    def _kwargs(self) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        """Base facts + `kwargs` that rebuild this dataset + `n_rows`, checked on rebuilding."""
        return {**super().state(), "kind": self.kind, "kwargs": self._kwargs(), "n_rows": len(self.rows)}

    @classmethod
    def from_state(cls, state: Mapping):
        ds = cls(**state["kwargs"])
        if len(ds.rows) != state["n_rows"]:
            raise ValueError(f"{ds.path} now holds {len(ds.rows)} rows, "
                             f"the saved state has {state['n_rows']}")
        return ds


class Tokens(_Rows):
    """Token ids from `path`: an `.npy` array (its own dtype) or a raw `.bin` file of `dtype`.

    `layout="rows"`: an (N, L) array, each row one sequence (a `.bin` file is cut into rows of
    `seq_len`; an `.npy` row length is `seq_len`, which may be left out). The held-out splits are
    a permutation of the rows seeded by (seed, 0x5EED). `layout="stream"`: one flat 1-D stream
    cut into N = len // seq_len windows (the ragged tail dropped), like the text datasets' packed
    blocks; the held-out windows are the end of the stream (val, then test), since neighbouring
    windows continue each other. `train_batch` walks seeded epoch permutations of the train rows.

    `vocab_size`: given, or inferred as (largest id) + 1. Either way construction scans the ids
    once, a chunk at a time, and refuses negative ids and ids >= a given vocab_size. `state()`
    stores the vocab_size so a rebuilt dataset keeps it, and the absolute path.
    """

    name = "tokens"
    kind = "tokens"
    expects = "an .npy or .bin file of token ids"

    def __init__(self, path: str, layout: str = "rows", seq_len: int | None = None,
                 dtype: str = "uint16", vocab_size: int | None = None,
                 val_frac: float = 0.01, test_frac: float = 0.01, seed: int = 0):
        if layout not in ("rows", "stream"):
            raise ValueError(f"layout must be 'rows' or 'stream', got {layout!r}")
        if seq_len is not None:
            seq_len = _int_at_least("seq_len", seq_len, 1)
        if vocab_size is not None:
            vocab_size = _int_at_least("vocab_size", vocab_size, 1)
        try:
            self.dtype = str(np.dtype(dtype))
        except TypeError:
            raise ValueError(f"dtype must be a numpy integer type such as 'uint16', got {dtype!r}") from None
        self._init_common(path, val_frac, test_frac, seed)
        self.layout = layout
        rows = self._windows(self._open(seq_len), seq_len)
        self.seq_len = rows.shape[1]
        ranges = [(int(c.min()), int(c.max())) for c in _row_chunks(rows)]
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        if lo < 0:
            raise ValueError(f"{self.path}: holds a negative token id ({lo}); ids must be >= 0")
        if vocab_size is not None and hi >= vocab_size:
            raise ValueError(f"{self.path}: holds token id {hi}, out of range for vocab_size={vocab_size}")
        self.vocab_size = int(hi) + 1 if vocab_size is None else vocab_size
        self._init_splits(rows, shuffle=layout == "rows")

    def _open(self, seq_len: int | None) -> np.ndarray:
        """The file's ids as a read-only memory map: the .npy array, or the .bin file as 1-D."""
        p = Path(self.path)
        if p.suffix not in (".npy", ".bin"):
            raise ValueError(f"{self.path}: token data must be an .npy or .bin file")
        if p.suffix == ".npy":
            a = _load_npy(self.path)
        else:
            dt = np.dtype(self.dtype)
            if not np.issubdtype(dt, np.integer):
                raise ValueError(f"dtype must be a numpy integer type such as 'uint16', got {self.dtype!r}")
            size = p.stat().st_size
            if size % dt.itemsize:
                raise ValueError(f"{self.path}: {size} bytes is not a whole number of {self.dtype} ids")
            a = np.memmap(self.path, dtype=dt, mode="r") if size else np.zeros(0, dt)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{self.path}: token ids must be integers, got dtype {a.dtype}")
        if a.size == 0:
            raise ValueError(f"{self.path}: the array is empty (shape {a.shape})")
        if p.suffix == ".bin" and self.layout == "rows":
            if seq_len is None:
                raise ValueError(f"{self.path}: a .bin file in layout 'rows' needs data.seq_len")
            if len(a) % seq_len:
                raise ValueError(f"{self.path}: {len(a)} ids do not make whole rows of seq_len={seq_len}")
            a = a.reshape(-1, seq_len)
        return a

    def _windows(self, a: np.ndarray, seq_len: int | None) -> np.ndarray:
        """(N, L) view of the ids (still a memory map): the rows, or the stream's windows."""
        want = 2 if self.layout == "rows" else 1
        if a.ndim != want:
            shape = "(N, L) array" if want == 2 else "1-D array"
            raise ValueError(f"{self.path}: layout {self.layout!r} needs a {shape}, got shape {a.shape}")
        if self.layout == "rows":
            if seq_len is not None and seq_len != a.shape[1]:
                raise ValueError(f"{self.path}: rows have length {a.shape[1]}, not seq_len={seq_len}")
            return a
        if seq_len is None:
            raise ValueError(f"{self.path}: layout 'stream' needs data.seq_len (the window length)")
        n = len(a) // seq_len
        if n == 0:
            raise ValueError(f"{self.path}: {len(a)} ids are fewer than one window of seq_len={seq_len}")
        return a[: n * seq_len].reshape(n, seq_len)

    def _kwargs(self) -> dict:
        return {"path": self.path, "layout": self.layout, "seq_len": self.seq_len, "dtype": self.dtype,
                "vocab_size": self.vocab_size, "val_frac": self.val_frac, "test_frac": self.test_frac,
                "seed": self.seed}


def _check_levels(levels) -> int:
    levels = _int_at_least("levels", levels, 2)
    if levels > 256:
        raise ValueError(f"levels must be at most 256, got {levels}")
    return levels


def quantize(pixels, levels: int) -> np.ndarray:
    """uint8 grey levels 0..levels-1 of pixel values v in [0, 1] (floats; uint8 u is v = u / 255,
    bool is v = 0 or 1): level = min(floor(v * levels), levels - 1), i.e. `levels` equal-width
    bins of [0, 1]. Monotone; 0 ↦ 0 and 1 (uint8 255) ↦ levels - 1. `levels` in 2..256."""
    levels = _check_levels(levels)
    a = np.asarray(pixels)
    if a.dtype == np.uint8:
        q = a.astype(np.int32) * levels // 255  # exact: floor(u * levels / 255)
    elif a.dtype == np.bool_:
        q = a.astype(np.int32) * levels
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
            raise ValueError(f"float pixels must be finite and lie in [0, 1], got {a.min():g}..{a.max():g}")
        q = np.floor(a * levels)
    else:
        raise ValueError(f"pixels must be floats in [0, 1] or uint8 in [0, 255], got dtype {a.dtype}"
                         " (convert with .astype(np.uint8) or scale to floats)")
    return np.minimum(q, levels - 1).astype(np.uint8)


def _read_pngs(folder: Path) -> np.ndarray:
    """(N, H, W, C) uint8 pixels of the folder's *.png files, in sorted name order; grey modes
    read as C = 1, every other mode as RGB (alpha dropped). All images must share H, W and C."""
    from PIL import Image

    files = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{folder}: a folder without .png files")
    imgs = []
    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode.startswith("I") or im.mode == "F":
                    raise ValueError(f"{f}: 16-bit or float PNG (mode {im.mode}) is not read; save "
                                     "8-bit PNGs or an .npy of floats in [0, 1]")
                a = np.asarray(im.convert("L" if im.mode in ("1", "L", "LA") else "RGB"))
        except OSError as e:
            raise ValueError(f"{f}: not a readable PNG ({str(e).splitlines()[0]})") from None
        a = a[..., None] if a.ndim == 2 else a
        if imgs and a.shape != imgs[0].shape:
            raise ValueError(f"{f}: shape (H, W, C) = {a.shape} differs from {imgs[0].shape} of {files[0].name}")
        imgs.append(a)
    return np.stack(imgs)


class Images(_Rows):
    """Images from `path`, quantized to `levels` grey levels (per channel for RGB).

    `path`: an `.npy` array (memory-mapped, quantized a chunk at a time), an `.npz` archive (the
    array named `key`, or its only array), or a folder of PNGs (sorted by name; grey PNGs give
    C = 1, others RGB with alpha dropped; 8-bit only). Arrays are (N, H, W) or (N, H, W, C),
    C in {1, 3}, of floats in [0, 1] or uint8 in [0, 255] (bool as 0/1); see `quantize`. The
    quantized tokens are kept in memory, one byte a value (MNIST: 55 MB).

    Tokens: vocab_size = levels, seq_len = H·W·C, in raster order with the channels of a pixel
    last: token (i·W + j)·C + c is channel c of row i, column j. Level k shows as intensity
    k / (levels - 1). Splits: a permutation of the images seeded by (seed, 0x5EED);
    `train_batch` walks seeded epoch permutations of the train images.

    FD: for 8×8 grey images (`fd_digits_applies`) evaluation reports FD-digits (the features of
    the fixed digits classifier, metrics.fd_digits) after mapping level k to round(16k/(levels-1))
    in 0..16, the digits scale with high = ink; for any other size or for RGB, FD is not defined.
    """

    name = "images"
    kind = "image"
    expects = "an .npy or .npz array or a folder of PNGs"

    def __init__(self, path: str, levels: int = 16, key: str = "", val_frac: float = 0.1,
                 test_frac: float = 0.1, seed: int = 0):
        self._init_common(path, val_frac, test_frac, seed)
        self.levels, self.key = _check_levels(levels), str(key)
        pix = self._read()
        n, self.height, self.width, self.channels = pix.shape
        self.vocab_size, self.seq_len = self.levels, self.height * self.width * self.channels
        tokens = np.empty((n, self.seq_len), dtype=np.uint8)
        i = 0
        for chunk in _row_chunks(pix):
            try:
                tokens[i : i + len(chunk)] = quantize(chunk, self.levels).reshape(len(chunk), -1)
            except ValueError as e:
                raise ValueError(f"{self.path}: {e}") from None
            i += len(chunk)
        self._init_splits(tokens, shuffle=True)

    def _read(self) -> np.ndarray:
        """(N, H, W, C) pixels: a memory map for .npy, in memory for .npz and PNG folders."""
        p = Path(self.path)
        if p.is_dir():
            return _read_pngs(p)
        if p.suffix == ".npy":
            a = _load_npy(self.path)
        elif p.suffix == ".npz":
            a = self._read_npz()
        else:
            raise ValueError(f"{self.path}: images must be an .npy or .npz array or a folder of PNGs")
        if a.ndim == 3:
            a = a[..., None]
        if a.ndim != 4 or a.shape[-1] not in (1, 3):
            raise ValueError(f"{self.path}: images must be (N, H, W) or (N, H, W, C) with C = 1 or 3, "
                             f"got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"{self.path}: the array is empty (shape {a.shape})")
        return a

    def _read_npz(self) -> np.ndarray:
        """The array named `key` of the .npz archive, or its only array."""
        try:
            z = np.load(self.path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{self.path}: not a readable .npz archive ({str(e).splitlines()[0]})") from None
        if not hasattr(z, "files"):
            raise ValueError(f"{self.path}: an .npy array named .npz; rename it to .npy")
        names = list(z.files)
        with z:
            if self.key and self.key not in names:
                raise ValueError(f"{self.path}: no array {self.key!r} (arrays: {names})")
            if not self.key and len(names) != 1:
                raise ValueError(f"{self.path}: holds arrays {names}; name one with data.key")
            try:
                return z[self.key or names[0]]
            except ValueError as e:
                raise ValueError(f"{self.path}: cannot read array {self.key or names[0]!r} ({e})") from None

    def _kwargs(self) -> dict:
        return {"path": self.path, "levels": self.levels, "key": self.key, "val_frac": self.val_frac,
                "test_frac": self.test_frac, "seed": self.seed}

    # ---- pictures ---------------------------------------------------------------------------
    def _levels(self, x) -> np.ndarray:
        """(B, L) int64 levels from (L,) or (B, L) tokens; checks the length and the range."""
        a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"image tokens must be integers, got dtype {a.dtype}")
        a = a.astype(np.int64).reshape(-1, a.shape[-1]) if a.ndim in (1, 2) else a
        if a.ndim != 2 or a.shape[1] != self.seq_len:
            raise ValueError(f"images take (L,) or (B, L) tokens with L = {self.seq_len}, got {np.shape(x)}")
        if a.size and (a.min() < 0 or a.max() >= self.levels):
            raise ValueError(f"image tokens must lie in 0..{self.levels - 1}, got {a.min()}..{a.max()}")
        return a

    def to_images(self, x) -> torch.Tensor:
        """(B, H, W) grey or (B, H, W, 3) RGB float32 intensities level / (levels - 1) in [0, 1]."""
        v = self._levels(x).astype(np.float32) / (self.levels - 1)
        shape = (len(v), self.height, self.width) + ((3,) if self.channels == 3 else ())
        return torch.from_numpy(v.reshape(shape))

    def save_grid(self, x, path: str | Path, nrow: int | None = None, scale: int = 4) -> Path:
        """PNG grid of the images of tokens x (`nrow` per row, default ⌈√B⌉, pixels `scale`×`scale`):
        intensities as they are (grey: 0 black, levels - 1 white). Returns the path written."""
        return save_image_grid(self.to_images(x).numpy(), path, nrow, scale, cmap="gray")

    def decode(self, x) -> str:
        """ASCII art of one image: H lines of W characters from the grey ramp, ' ' for intensity 0
        up to '@' for 1 (the mean of the channels for RGB)."""
        img = self.to_images(x)
        if len(img) != 1:
            raise ValueError(f"decode takes one image of {self.seq_len} tokens, got {len(img)}")
        v = img[0].numpy().reshape(self.height, self.width, -1).mean(-1)
        chars = np.array(list(GREY_RAMP))[np.rint(v * (len(GREY_RAMP) - 1)).astype(np.int64)]
        return "\n".join("".join(row) for row in chars)

    @property
    def fd_digits_applies(self) -> bool:
        """True for 8×8 grey images, the input of the digits featurizer."""
        return (self.height, self.width, self.channels) == (8, 8, 1)

    def digit_levels(self, x) -> torch.Tensor:
        """(B, 64) int64 tokens on the digits scale 0..16: level k ↦ round(16k / (levels - 1))."""
        if not self.fd_digits_applies:
            raise ValueError(f"digit levels need 8×8 grey images, these are "
                             f"{self.height}×{self.width}×{self.channels}")
        d = self.levels - 1
        return torch.from_numpy((self._levels(x) * 32 + d) // (2 * d))  # round half up
