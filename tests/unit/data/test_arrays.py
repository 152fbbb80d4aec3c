"""Bring-your-own-data datasets: token-id arrays (rows, stream) and quantized images."""

import json

import numpy as np
import pytest
import torch

from catdiff.data.arrays import Images, Tokens, quantize


def _numbered_rows(n=200, length=8, vocab=300, seed=0):
    """(n, length) int32 ids whose first column is the row number: rows are told apart by it."""
    x = np.random.default_rng(seed).integers(0, vocab, (n, length)).astype(np.int32)
    x[:, 0] = np.arange(n)
    return x


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, _numbered_rows())
    return path


@pytest.fixture
def stream_file(tmp_path):
    path = tmp_path / "ids.bin"
    np.random.default_rng(1).integers(0, 1000, 1005).astype(np.uint16).tofile(path)
    return path


def _ids(x: torch.Tensor) -> set:
    return set(x[:, 0].tolist())


# ---- tokens: splits ---------------------------------------------------------------------------
def test_rows_splits_disjoint_covering_and_deterministic(rows_file):
    ds = Tokens(rows_file, val_frac=0.1, test_frac=0.05, seed=3)
    parts = {k: ds.split(k) for k in ("train", "val", "test")}
    assert {k: len(v) for k, v in parts.items()} == {"train": 170, "val": 20, "test": 10}
    ids = [_ids(v) for v in parts.values()]
    assert set.union(*ids) == set(range(200)) and sum(map(len, ids)) == 200  # disjoint, covering
    assert np.array_equal(parts["test"].numpy(), np.load(rows_file)[ds._index["test"]])
    again, other = Tokens(rows_file, val_frac=0.1, test_frac=0.05, seed=3), Tokens(rows_file, seed=4)
    assert all(torch.equal(again.split(k), parts[k]) for k in parts)
    assert not torch.equal(other.split("test"), Tokens(rows_file, seed=3).split("test"))
    assert parts["train"].dtype == torch.int64 and (ds.seq_len, ds.layout) == (8, "rows")


def test_stream_windows_and_held_out_tail(stream_file):
    stream = np.fromfile(stream_file, dtype=np.uint16).astype(np.int64)
    ds = Tokens(stream_file, layout="stream", seq_len=16, val_frac=0.1, test_frac=0.1)
    windows = stream[: 62 * 16].reshape(62, 16)  # 1005 ids: 62 windows, a ragged tail of 13 dropped
    assert ds.seq_len == 16 and len(ds.rows) == 62
    assert np.array_equal(ds.split("train").numpy(), windows[:50])
    assert np.array_equal(ds.split("val").numpy(), windows[50:56])
    assert np.array_equal(ds.split("test").numpy(), windows[56:])  # the end of the stream
    batch = ds.train_batch(5, 7).numpy()
    assert all(any(np.array_equal(b, w) for w in windows[:50]) for b in batch)  # train windows only


def test_rows_of_a_bin_file_and_an_npy_stream(tmp_path):
    x = _numbered_rows(n=40, length=6).astype(np.uint32)
    x.tofile(tmp_path / "rows.bin")
    ds = Tokens(tmp_path / "rows.bin", layout="rows", seq_len=6, dtype="uint32", val_frac=0, test_frac=0)
    assert np.array_equal(np.sort(ds.split("train").numpy(), axis=0), np.sort(x.astype(np.int64), axis=0))
    np.save(tmp_path / "flat.npy", x.reshape(-1))
    flat = Tokens(tmp_path / "flat.npy", layout="stream", seq_len=6, val_frac=0, test_frac=0)
    assert np.array_equal(flat.split("train").numpy(), x)


# ---- tokens: batches --------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["rows", "stream"])
def test_batches_pure_in_seed_step_rank_and_ranks_disjoint(rows_file, tmp_path, layout):
    if layout == "stream":
        np.save(tmp_path / "s.npy", _numbered_rows().reshape(-1))
        make = lambda seed: Tokens(tmp_path / "s.npy", layout="stream", seq_len=8, seed=seed)
    else:
        make = lambda seed: Tokens(rows_file, seed=seed)
    a, b = make(0), make(0)
    assert torch.equal(a.train_batch(9, 16, rank=1, world=2), b.train_batch(9, 16, rank=1, world=2))
    assert not torch.equal(a.train_batch(9, 16), a.train_batch(10, 16))
    assert not torch.equal(a.train_batch(9, 16), make(1).train_batch(9, 16))
    r0, r1 = a.train_batch(4, 16, rank=0, world=2), a.train_batch(4, 16, rank=1, world=2)
    assert not _ids(r0) & _ids(r1)  # the ranks see different rows
    assert torch.equal(torch.cat([r0, r1]), a.train_batch(4, 32))  # slices of one global batch
    n_train = len(a.split("train"))
    epoch = torch.cat([a.train_batch(s, 2) for s in range(n_train // 2)])  # one epoch, step by step
    assert _ids(epoch) == _ids(a.split("train")) and len(epoch) == n_train


def test_files_are_memory_mapped_not_read(rows_file, stream_file):
    for ds in (Tokens(rows_file), Tokens(stream_file, layout="stream", seq_len=16)):
        assert isinstance(ds.rows, np.memmap) and ds.rows.filename == str(ds.path)
        assert torch.equal(ds.head("test", 1), ds.split("test")[:1]) and len(ds.head("val", 1)) == 1


# ---- tokens: vocabulary and state -------------------------------------------------------------
def test_vocab_inferred_or_given_and_kept_by_state(rows_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inferred = Tokens("rows.npy")
    assert inferred.vocab_size == int(np.load(rows_file).max()) + 1
    given = Tokens("rows.npy", vocab_size=512)
    st = json.loads(json.dumps(given.state()))
    assert st["vocab_size"] == st["kwargs"]["vocab_size"] == 512 and st["n_rows"] == 200
    assert st["kwargs"]["path"] == str(rows_file.resolve())  # absolute
    monkeypatch.chdir("/")
    rebuilt = Tokens.from_state(st)
    assert rebuilt.vocab_size == 512
    assert torch.equal(rebuilt.split("test"), given.split("test"))
    assert torch.equal(rebuilt.train_batch(3, 8, 1, 2), given.train_batch(3, 8, 1, 2))
    assert Tokens.from_state(inferred.state()).vocab_size == inferred.vocab_size
    np.save(rows_file, _numbered_rows(n=150))
    with pytest.raises(ValueError, match="now holds 150 rows"):
        Tokens.from_state(st)


# ---- bad input: one-line errors naming the path ---------------------------------------------
def _write(tmp_path, name, array=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    elif name.endswith(".npy"):
        np.save(path, array)
    else:
        np.asarray(array).tofile(path)
    return path


TOKEN_ERRORS = [
    ("a.npy", np.arange(80).reshape(10, 8), {"vocab_size": 50}, "token id 79, out of range for vocab_size=50"),
    ("a.npy", -np.arange(80).reshape(10, 8), {}, "negative token id"),
    ("a.npy", np.arange(80), {}, "layout 'rows' needs a (N, L) array"),
    ("a.npy", np.arange(80).reshape(2, 5, 8), {}, "got shape (2, 5, 8)"),
    ("a.npy", np.arange(80).reshape(10, 8), {"layout": "stream", "seq_len": 8}, "needs a 1-D array"),
    ("a.npy", np.ones((10, 8)), {}, "must be integers, got dtype float64"),
    ("a.npy", np.zeros((0, 8), np.int64), {}, "the array is empty"),
    ("a.bin", np.zeros(0, np.uint16), {"layout": "stream", "seq_len": 4}, "the array is empty"),
    ("a.bin", None, {"layout": "stream", "seq_len": 4}, "not a whole number of uint16 ids"),
    ("a.bin", np.arange(10, dtype=np.uint16), {"seq_len": 4}, "do not make whole rows of seq_len=4"),
    ("a.bin", np.arange(10, dtype=np.uint16), {"layout": "stream"}, "needs data.seq_len"),
    ("a.bin", np.arange(10, dtype=np.uint16), {"layout": "stream", "seq_len": 16}, "fewer than one window"),
    ("a.npy", np.arange(80).reshape(10, 8), {"seq_len": 6}, "rows have length 8, not seq_len=6"),
    ("a.npy", np.arange(16).reshape(2, 8), {}, "2 rows leave none for training"),
    ("a.txt", np.arange(10), {}, "must be an .npy or .bin file"),
    ("a.npy", None, {}, "not a readable .npy array"),
]


@pytest.mark.parametrize("name,array,kwargs,needle", TOKEN_ERRORS)
def test_bad_token_data_one_line_error_naming_the_path(tmp_path, name, array, kwargs, needle):
    raw = b"not an array" if array is None and name.endswith(".npy") else b"\x01\x02\x03" if array is None else None
    path = _write(tmp_path, name, array, raw)
    kwargs = {"val_frac": 0.1, "test_frac": 0.1, **kwargs}
    with pytest.raises(ValueError) as e:
        Tokens(path, **kwargs)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_missing_files_and_bad_arguments(tmp_path):
    for cls in (Tokens, Images):
        with pytest.raises(FileNotFoundError, match=f"data not found: '{tmp_path}/nope.npy'"):
            cls(tmp_path / "nope.npy")
    path = _write(tmp_path, "a.npy", np.arange(80).reshape(10, 8))
    for kwargs, needle in [({"layout": "grid"}, "layout must be"), ({"seq_len": 0}, "seq_len must be"),
                           ({"vocab_size": "many"}, "vocab_size must be"), ({"dtype": "int77"}, "dtype must be"),
                           ({"val_frac": 1.5}, "val_frac must be")]:
        with pytest.raises(ValueError, match=needle):
            Tokens(path, **kwargs)
    with pytest.raises(ValueError, match="dtype must be a numpy integer type"):
        Tokens(_write(tmp_path, "f.bin", np.zeros(8, np.float32)), layout="stream", seq_len=2, dtype="float32")


# ---- images: quantization -------------------------------------------------------------------
@pytest.mark.parametrize("levels", [2, 4, 7, 16, 256])
def test_quantize_ends_and_monotone(levels):
    u = np.arange(256, dtype=np.uint8)
    v = np.linspace(0.0, 1.0, 1001)
    for q in (quantize(u, levels), quantize(v, levels), quantize(v.astype(np.float32), levels)):
        assert q.dtype == np.uint8 and q[0] == 0 and q[-1] == levels - 1
        assert np.all(np.diff(q.astype(int)) >= 0) and set(np.unique(q)) == set(range(levels))
    assert np.array_equal(quantize(np.array([False, True]), levels), [0, levels - 1])
    assert np.array_equal(quantize(v, levels), np.minimum(np.floor(v * levels), levels - 1))  # equal-width bins


def test_quantize_identity_at_256_and_refusals():
    u = np.arange(256, dtype=np.uint8)
    assert np.array_equal(quantize(u, 256), u)
    assert np.array_equal(quantize(u, 2), (u >= 128).astype(np.uint8))  # threshold at the middle
    for bad, needle in [(np.array([0.5, 1.5]), r"\[0, 1\]"), (np.array([np.nan]), "finite"),
                        (np.arange(3), "uint8"), (np.arange(3, dtype=np.int8), "uint8")]:
        with pytest.raises(ValueError, match=needle):
            quantize(bad, 4)
    for levels in (1, 257, 2.5):
        with pytest.raises(ValueError, match="levels"):
            quantize(u, levels)


# ---- images: reading --------------------------------------------------------------------------
def _images(n=20, h=5, w=6, c=None, seed=0):
    shape = (n, h, w) if c is None else (n, h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_raster_order_channels_last_and_to_images(tmp_path):
    x = _images(c=3)
    np.save(tmp_path / "rgb.npy", x)
    ds = Images(tmp_path / "rgb.npy", levels=256, val_frac=0, test_frac=0)
    assert (ds.vocab_size, ds.seq_len, ds.kind) == (256, 5 * 6 * 3, "image")
    got = ds.split("train").numpy()
    want = x.reshape(20, -1)[ds._index["train"]]  # token (i·W + j)·C + c = channel c of pixel (i, j)
    assert np.array_equal(got, want)
    assert got[0, (2 * 6 + 4) * 3 + 1] == x[ds._index["train"][0], 2, 4, 1]
    img = ds.to_images(ds.split("train")[:2])
    assert img.shape == (2, 5, 6, 3)
    assert torch.allclose(img * 255, torch.from_numpy(want[:2].reshape(2, 5, 6, 3)).float())


def test_png_folder_equals_the_npy_array(tmp_path):
    from PIL import Image

    for c in (None, 3):
        x = _images(c=c, seed=1)
        folder = tmp_path / f"png{c}"
        folder.mkdir()
        for i, im in enumerate(x):
            Image.fromarray(im).save(folder / f"{i:03d}.png")
        np.save(tmp_path / f"a{c}.npy", x)
        a, b = Images(folder, levels=5), Images(tmp_path / f"a{c}.npy", levels=5)
        assert a.seq_len == b.seq_len == 5 * 6 * (c or 1)
        for k in ("train", "val", "test"):
            assert torch.equal(a.split(k), b.split(k))


def test_float_npz_images_and_state(tmp_path):
    x = np.random.default_rng(2).random((30, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "m.npz", x_train=x, y_train=np.arange(30))
    ds = Images(tmp_path / "m.npz", levels=3, key="x_train")
    assert np.array_equal(np.sort(ds.split("train").numpy().ravel()),
                          np.sort(quantize(x[ds._index["train"]], 3).ravel().astype(np.int64)))
    st = json.loads(json.dumps(ds.state()))
    assert st["kwargs"] == {"path": str(tmp_path / "m.npz"), "levels": 3, "key": "x_train", "val_frac": 0.1,
                            "test_frac": 0.1, "seed": 0}
    again = Images.from_state(st)
    assert torch.equal(again.split("test"), ds.split("test"))
    assert torch.equal(again.train_batch(2, 4, 1, 2), ds.train_batch(2, 4, 1, 2))


def test_npy_images_are_memory_mapped_while_quantized(tmp_path, monkeypatch):
    import catdiff.data.arrays as arrays

    np.save(tmp_path / "big.npy", _images(n=50, h=8, w=8))
    monkeypatch.setattr(arrays, "_CHUNK", 64 * 8)  # 8 images a chunk
    seen = []
    real = arrays.quantize
    monkeypatch.setattr(arrays, "quantize", lambda p, levels: seen.append((type(p), len(p))) or real(p, levels))
    Images(tmp_path / "big.npy", levels=4)
    assert all(t is np.memmap and n <= 8 for t, n in seen) and sum(n for _, n in seen) == 50


IMAGE_ERRORS = [
    ("a.npy", np.zeros((4, 4)), {}, "images must be (N, H, W) or (N, H, W, C)"),
    ("a.npy", np.zeros((4, 4, 4, 2)), {}, "C = 1 or 3, got shape (4, 4, 4, 2)"),
    ("a.npy", np.zeros((0, 4, 4)), {}, "the array is empty"),
    ("a.npy", np.full((10, 4, 4), 2.0), {}, "must be finite and lie in [0, 1]"),
    ("a.npy", np.zeros((10, 4, 4), np.int64), {}, "uint8 in [0, 255], got dtype int64"),
    ("a.npz", None, {}, "holds arrays ['a', 'b']; name one with data.key"),
    ("a.npz", None, {"key": "c"}, "no array 'c'"),
    ("a.png", np.zeros((4, 4)), {}, "must be an .npy or .npz array or a folder of PNGs"),
]


@pytest.mark.parametrize("name,array,kwargs,needle", IMAGE_ERRORS)
def test_bad_images_one_line_error_naming_the_path(tmp_path, name, array, kwargs, needle):
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, a=np.zeros((4, 4, 4)), b=np.zeros(4))
    elif name.endswith(".npy"):
        np.save(path, array)
    else:
        path.write_bytes(b"x")
    with pytest.raises(ValueError) as e:
        Images(path, **kwargs)
    msg = str(e.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_bad_png_folders(tmp_path):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="without .png files"):
        Images(tmp_path / "empty")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(mixed / "b.png")
    with pytest.raises(ValueError, match=r"b.png: shape .* differs from .* of a.png"):
        Images(mixed)
    (mixed / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="b.png: not a readable PNG"):
        Images(mixed)
    (mixed / "b.png").unlink()
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(mixed / "c.png")
    with pytest.raises(ValueError, match="c.png: 16-bit or float PNG"):
        Images(mixed)


# ---- images: pictures and FD ----------------------------------------------------------------
def test_save_grid_and_decode(tmp_path):
    import matplotlib.image as mpimg

    x = np.zeros((10, 5, 6), np.uint8)
    x[1] = 255  # second image white
    np.save(tmp_path / "g.npy", x)
    ds = Images(tmp_path / "g.npy", levels=4)
    tokens = torch.from_numpy(quantize(x, 4).reshape(10, -1)).long()
    img = mpimg.imread(ds.save_grid(tokens, tmp_path / "sub" / "grid.png"))  # 4 a row, 3 rows
    assert img.shape[:2] == (3 * 21 + 1, 4 * 25 + 1)
    grey = img[..., :3].mean(-1)
    assert grey[1:21, 1:25].max() < 0.1 and grey[1:21, 26:50].min() > 0.9  # 0 black, levels-1 white
    text = ds.decode(tokens[1])
    assert text.split("\n") == ["@" * 6] * 5 and ds.decode(tokens[0]) == "\n".join([" " * 6] * 5)
    with pytest.raises(ValueError, match="0..3"):
        ds.decode(torch.full((30,), 4))
    with pytest.raises(ValueError, match="L = 30"):
        ds.save_grid(torch.zeros(2, 29, dtype=torch.long), tmp_path / "x.png")
    np.save(tmp_path / "rgb.npy", _images(n=10, c=3))
    rgb = Images(tmp_path / "rgb.npy", levels=4)
    path = rgb.save_grid(rgb.split("train")[:3], tmp_path / "rgb.png", nrow=3, scale=1)
    assert mpimg.imread(path).shape[:2] == (7, 22)


def test_fd_digits_on_8x8_grey_images_only(tmp_path):
    from catdiff.evaluate import sample_report

    np.save(tmp_path / "d.npy", _images(n=60, h=8, w=8))
    ds = Images(tmp_path / "d.npy", levels=4)
    assert ds.fd_digits_applies
    assert ds.digit_levels(torch.tensor([[0, 1, 2, 3] * 16])).tolist() == [[0, 5, 11, 16] * 16]
    report = sample_report(ds.split("train")[:20], ds)
    assert report["fd_digits"] > 0 and np.isfinite(report["fd_digits"])
    np.save(tmp_path / "e.npy", _images(n=60, h=8, w=8, c=3))
    rgb = Images(tmp_path / "e.npy", levels=4)
    assert not rgb.fd_digits_applies and "fd_digits" not in sample_report(rgb.split("train")[:20], rgb)
    with pytest.raises(ValueError, match="8×8 grey"):
        rgb.digit_levels(rgb.split("test"))
