"""Checkpoints: safetensors weights, JSON metadata, atomic writes, verified loading with fallback.

It knows file layouts and state dicts, not what the weights compute or how training proceeds.

Layout of a run directory (rundir.py guards the folder itself):
    config.yaml          resolved config of the run
    dataset.json         dataset state (constructor kwargs, tokenizer) to rebuild it identically
    metrics.jsonl        training/eval log, one JSON object per line
    checkpoints/
        step-00001000/   one of the last train.keep_checkpoints checkpoints, each written atomically:
            model.safetensors    method weights       ema.safetensors   EMA weights (if any)
            trainer.pt           optimizer + RNG states (torch.save, loaded with weights_only=True)
            meta.json            step, config, dataset state, catdiff version, sha256 of each file above
        best/            the checkpoint with the lowest validation bound so far (its meta.json: "val")

Every load verifies meta.json, the recorded sha256 of each file and (given the model) the keys and
shapes of the model and EMA weights. A checkpoint that fails is named in a one-line notice on
stderr and the next older one is used (`load_newest`); uninitialised weights are never loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from . import __version__
from .errors import CheckpointError

CKPTS, BEST = "checkpoints", "best"
MODEL, EMA, TRAINER, META = "model.safetensors", "ema.safetensors", "trainer.pt", "meta.json"
_STEP = re.compile(r"step-(\d+)")
_OLD = ".old-"  # the previous folder of a name during its swap (best/, or a step written again)
T = TypeVar("T")


class Corrupt(CheckpointError):
    """A checkpoint that fails verification (the message is the reason); loading falls back."""


def warn(message: str) -> None:
    """A one-line notice on stderr in the command line's format."""
    print(f"catdiff: warning: {message}", file=sys.stderr)


# ---- where checkpoints are ----------------------------------------------------------------
def step_dirs(run_dir: str | Path) -> list[Path]:
    """The step checkpoints of a run, newest first (folders only; their contents are not read)."""
    root = Path(run_dir) / CKPTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def best_dir(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / CKPTS
    for name in (BEST, _OLD + BEST):  # .old-best: a crash between the two renames of a swap
        if (root / name).is_dir():
            return root / name
    return None


def candidates(run_dir: str | Path) -> list[Path]:
    """Checkpoints in the order a load tries them: steps newest first, then best. A checkpoint
    folder itself (RUN/checkpoints/best) is its own only candidate."""
    if (Path(run_dir) / META).is_file():
        return [Path(run_dir)]
    best = best_dir(run_dir)
    return step_dirs(run_dir) + ([best] if best else [])


def checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The newest checkpoint folder of a run (not verified), or None."""
    found = candidates(run_dir)
    return found[0] if found else None


def step_of(ckpt: Path) -> int | None:
    m = _STEP.fullmatch(ckpt.name)
    return int(m.group(1)) if m else None


def label(ckpt: Path) -> str:
    """'step 300' or 'best', as messages name a checkpoint."""
    step = step_of(ckpt)
    return ckpt.name.removeprefix(_OLD) if step is None else f"step {step}"


# ---- writing ------------------------------------------------------------------------------
def _state_for_save(module: torch.nn.Module) -> dict:
    """Contiguous, de-aliased copy of a state dict (tied weights saved once per name)."""
    out, seen = {}, {}
    for k, v in module.state_dict().items():
        key = (v.data_ptr(), v.shape, v.stride()) if v.numel() else None
        out[k] = v.detach().clone().contiguous() if key in seen else v.detach().contiguous()
        if key is not None:
            seen[key] = k
    return out


def write_file(path: Path, data: bytes) -> str:
    """Write and flush `data`; return its sha256. Any failure (a full disk) raises OSError."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(run_dir: str | Path, *, step: int, method: torch.nn.Module, ema: dict | None,
                    trainer_state: dict, meta: dict, name: str | None = None, keep: int | None = None) -> Path:
    """Write run_dir/checkpoints/<name> (default step-<step>) atomically: the files go to a
    temporary folder renamed into place, so a crash or a full disk leaves the earlier checkpoints
    intact. Then only the `keep` newest step checkpoints up to this step stay."""
    root = Path(run_dir) / CKPTS
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    final = root / (name or f"step-{step:08d}")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        blobs = {MODEL: safetensors_bytes(_state_for_save(method))}
        if ema is not None:
            blobs[EMA] = safetensors_bytes({k: v.contiguous() for k, v in ema.items()})
        buf = io.BytesIO()
        torch.save(trainer_state, buf)
        blobs[TRAINER] = buf.getvalue()
        files = {fname: write_file(tmp / fname, data) for fname, data in blobs.items()}
        record = {**meta, "step": step, "version": __version__, "files": files}
        write_file(tmp / META, json.dumps(record, indent=1).encode())
        old = root / (_OLD + final.name)
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():  # best/, or a step written again after a fallback: swap
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:  # steps above this one (left by a resume that fell back past them) stay
        for p in [d for d in step_dirs(run_dir) if step_of(d) <= step][keep:]:
            shutil.rmtree(p)
    return final


# ---- verifying and reading ----------------------------------------------------------------
def read_meta(ckpt: Path) -> dict:
    """meta.json of a checkpoint, checked for the fields a load needs; Corrupt if it is not."""
    try:
        meta = json.loads((ckpt / META).read_bytes())
    except FileNotFoundError:
        raise Corrupt(f"{META} is missing") from None
    except OSError as e:
        raise Corrupt(f"{META} is unreadable ({e.strerror or e})") from None
    except ValueError:  # not UTF-8, not JSON
        raise Corrupt(f"{META} is not valid JSON") from None
    need = ("step", "config", "dataset", "method", "files")
    if not isinstance(meta, dict) or any(k not in meta for k in need) or not isinstance(meta["files"], dict):
        raise Corrupt(f"{META} lacks the fields {', '.join(need)}")
    if MODEL not in meta["files"] or TRAINER not in meta["files"]:
        raise Corrupt(f"{META} records no {MODEL} or {TRAINER}")
    return meta


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def check_tensors(path: Path, expected: dict[str, torch.Tensor]) -> None:
    """The keys and shapes in a safetensors file's header equal those of `expected`; Corrupt if not."""
    try:
        with safe_open(str(path), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise Corrupt(f"{path.name} is corrupt or unreadable ({_first_line(e)})") from None
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        what, key = ("missing", missing[0]) if missing else ("unexpected", unexpected[0])
        raise Corrupt(f"{path.name} does not match the model: {what} key '{key}'")
    for k, v in expected.items():
        if shapes[k] != tuple(v.shape):
            raise Corrupt(f"{path.name} does not match the model: '{k}' has shape {shapes[k]}, "
                          f"model expects {tuple(v.shape)}")


def verify(ckpt: Path) -> dict:
    """meta.json of `ckpt` once it parses and every file it records has its sha256; Corrupt otherwise.
    Keys and shapes need the model: `check_tensors`, `read_weights`."""
    meta = read_meta(ckpt)
    for fname, digest in meta["files"].items():
        path = ckpt / fname
        if not path.is_file():
            raise Corrupt(f"{fname} is missing")
        if sha256_file(path) != digest:
            raise Corrupt(f"{fname} is corrupt (its sha256 differs from the one in {META})")
    return meta


def read_weights(path: Path, expected: dict[str, torch.Tensor], device="cpu") -> dict:
    """A safetensors state dict with the keys and shapes of `expected`; Corrupt if not."""
    check_tensors(path, expected)
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise Corrupt(f"{path.name} is corrupt or unreadable ({_first_line(e)})") from None


def load_weights(module: torch.nn.Module, path: Path, device="cpu") -> None:
    """Load safetensors weights into `module`; a corrupt file or a key/shape mismatch raises
    CheckpointError naming the file and the first offending key."""
    try:
        module.load_state_dict(read_weights(path, module.state_dict(), device))
    except Corrupt as e:
        raise CheckpointError(f"checkpoint file {path}: {e}") from None


def load_trainer_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / TRAINER, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt pickles
        raise Corrupt(f"{TRAINER} is corrupt or unreadable ({type(e).__name__})") from None


def load_newest(run_dir: str | Path, read: Callable[[Path, dict], T]) -> tuple[Path, T, list[Path]]:
    """(checkpoint, read(checkpoint, meta), the newer ones that failed) for the newest checkpoint
    of `run_dir` that verifies: meta.json and the hashes here, what needs the model in `read` (which
    raises Corrupt). Each failed one is named on stderr; if none verifies, CheckpointError."""
    failed: list[tuple[Path, str]] = []
    for ckpt in candidates(run_dir):
        try:
            result = read(ckpt, verify(ckpt))
        except Corrupt as e:
            failed.append((ckpt, str(e)))
            continue
        for bad, why in failed:
            warn(f"checkpoint {label(bad)} failed verification ({why}); using {label(ckpt)}")
        return ckpt, result, [bad for bad, _ in failed]
    if failed:
        why = "; ".join(f"{label(bad)}: {reason}" for bad, reason in failed)
        raise CheckpointError(f"no checkpoint in {run_dir} passes verification ({why})")
    raise CheckpointError(f"{run_dir} holds no checkpoint (expected {Path(run_dir) / CKPTS}/step-*/{META})")
