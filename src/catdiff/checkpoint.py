"""Run directories and checkpoints: safetensors weights, JSON metadata, atomic writes, loading.

It knows file layouts and state dicts, not what the weights compute or how training proceeds.

Layout of a run directory:
    config.yaml          resolved config of the run
    dataset.json         dataset state (constructor kwargs, tokenizer) to rebuild it identically
    metrics.jsonl        training/eval log, one JSON object per line
    checkpoint/          the last good checkpoint, replaced atomically:
        model.safetensors    method weights       ema.safetensors   EMA weights (if any)
        trainer.pt           optimizer + RNG states (torch.save, loaded with weights_only=True)
        meta.json            step, config, dataset state, catdiff version
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .errors import CheckpointError

CKPT = "checkpoint"


def _state_for_save(module: torch.nn.Module) -> dict:
    """Contiguous, de-aliased copy of a state dict (tied weights saved once per name)."""
    out, seen = {}, {}
    for k, v in module.state_dict().items():
        key = (v.data_ptr(), v.shape, v.stride()) if v.numel() else None
        out[k] = v.detach().clone().contiguous() if key in seen else v.detach().contiguous()
        if key is not None:
            seen[key] = k
    return out


def save_checkpoint(run_dir: str | Path, *, step: int, method: torch.nn.Module,
                    ema: dict | None, trainer_state: dict, meta: dict) -> Path:
    """Write run_dir/checkpoint atomically: a crash mid-write leaves the previous one intact."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".ckpt-", dir=run_dir))
    try:
        save_file(_state_for_save(method), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file({k: v.contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
        torch.save(trainer_state, tmp / "trainer.pt")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step, "version": __version__}, indent=1))
        for f in tmp.iterdir():  # flush file contents before the rename makes them visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final, old = run_dir / CKPT, run_dir / (CKPT + ".old")
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def checkpoint_dir(run_dir: str | Path) -> Path | None:
    """The checkpoint folder of a run, falling back to the previous one after a torn swap."""
    run_dir = Path(run_dir)
    for name in (CKPT, CKPT + ".old"):
        p = run_dir / name
        if (p / "meta.json").is_file():
            return p
    return None


def read_meta(ckpt: Path) -> dict:
    try:
        return json.loads((ckpt / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {ckpt}/meta.json is unreadable or corrupt ({e})") from None


def load_weights(module: torch.nn.Module, path: Path, device="cpu") -> None:
    """Load safetensors weights into `module`; corrupt files and shape/key mismatches raise
    CheckpointError naming the file and the first offending key."""
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt or unreadable ({str(e).splitlines()[0]})") from None
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        key = (missing or unexpected)[0]
        what = "missing" if missing else "unexpected"
        raise CheckpointError(f"checkpoint {path} does not match the model: {what} key '{key}'")
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"checkpoint {path} does not match the model: '{k}' has shape "
                                  f"{tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    module.load_state_dict(state)


def load_trainer_state(ckpt: Path) -> dict:
    try:
        return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated/corrupt pickles
        raise CheckpointError(
            f"checkpoint file {ckpt}/trainer.pt is corrupt or unreadable ({type(e).__name__})") from None
