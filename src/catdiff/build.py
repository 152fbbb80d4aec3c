"""The one place where a config becomes objects: the dataset and the method, from a config or
from a trained run's checkpoint.

It knows the registry's names, the config's sections, the constructors' signatures and the
checkpoint and export layouts; it knows nothing of training loops, sampling, metrics or the command line.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from . import checkpoint as ckpt_io
from . import export, registry
from .config import Config, build_config, from_mapping
from .errors import CheckpointError, ConfigError, DataError
from .runtime import resolve_device


def build_dataset(section: dict):
    """A dataset from a validated `data:` config section."""
    section = dict(section)
    name = section.pop("name")
    cls = registry.dataset_class(name)
    try:
        return cls(**section)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data ({name}): {str(e).splitlines()[0]}") from None


def rebuild_dataset(state: dict, allow_changed: bool = False):
    """The identical dataset from its saved `state()` (vocabulary/tokenizer included); data that no
    longer fits the saved state (a corpus edited since training) fails in one line, unless
    `allow_changed` asks a corpus-backed dataset to use its data as it is now."""
    if allow_changed and "allow_changed" in inspect.signature(registry.dataset_class(state["name"])).parameters:
        state = {**state, "kwargs": {**state["kwargs"], "allow_changed": True}}
    try:
        return registry.dataset_class(state["name"]).from_state(state)
    except (ValueError, TypeError, KeyError) as e:
        raise DataError(f"cannot rebuild the run's {state.get('name')!r} data as it was trained: "
                        f"{str(e).splitlines()[0]} (has the data changed since training?)") from None


def method_options(cfg: Config):
    """(method class, its typed Options) of the config's `method:` section."""
    section = dict(cfg.method)
    cls = registry.method_class(section.pop("name"))
    return cls, from_mapping(cls.Options, section, "method")


def build_method(cfg: Config, dataset):
    """The configured method sized for `dataset` (K = vocab_size, L = seq_len)."""
    cls, options = method_options(cfg)
    return cls(options, cfg.model, dataset.vocab_size, dataset.seq_len)


def load_run(run_dir: str | Path, device: str = "auto", use_ema: bool = True, allow_changed_data: bool = False,
             with_meta: bool = False):
    """(config, method in eval mode, dataset) of a trained run, from its newest checkpoint that
    verifies (`checkpoint.load_newest`: hashes, keys and shapes of model and EMA weights; a failed one
    is named on stderr and the previous one is used). `run_dir` may also be one checkpoint folder,
    e.g. RUN/checkpoints/best, an exported folder (export.py; its weights as exported) or a hub
    model `hf://owner/name`. EMA weights by default. `with_meta` adds a fourth item: the
    checkpoint's or export's meta (step, config, dataset state, ...) with "weights" ("ema" or
    "model") and "folder" (the checkpoint or export folder read)."""
    run_dir = export.resolve(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    dev = resolve_device(device)
    if export.is_export(run_dir):
        meta = export.read(run_dir)
        if not use_ema and meta.get("weights") == "ema":
            raise ConfigError(f"{run_dir} was exported with its EMA weights only; the raw weights are in the run")
        try:
            cfg, method, dataset = _restore(run_dir / export.WEIGHTS, meta, allow_changed_data)
        except ckpt_io.Corrupt as e:
            raise CheckpointError(f"{run_dir}: {e}") from None
        out = cfg, method.to(dev).eval(), dataset
        return (*out, {**meta, "folder": run_dir}) if with_meta else out

    def read(ckpt: Path, meta: dict):
        weights = ckpt_io.EMA if use_ema and ckpt_io.EMA in meta["files"] else ckpt_io.MODEL
        others = [ckpt / name for name in (ckpt_io.MODEL, ckpt_io.EMA) if name in meta["files"] and name != weights]
        cfg, method, dataset = _restore(ckpt / weights, meta, allow_changed_data, others)
        out = cfg, method.to(dev).eval(), dataset
        return (*out, {**meta, "weights": "ema" if weights == ckpt_io.EMA else "model", "folder": ckpt}) \
            if with_meta else out

    return ckpt_io.load_newest(run_dir, read)[1]


def _restore(weights: Path, meta: dict, allow_changed_data: bool, also_check: list[Path] = ()):
    """(config, method with `weights` loaded, dataset) from a checkpoint's or an export's meta
    (config, dataset state, K, L); the weights' keys and shapes are checked (Corrupt if not)."""
    cfg = build_config(meta["config"])
    cfg.model.compile = False
    dataset = rebuild_dataset(meta["dataset"], allow_changed_data)
    if (dataset.vocab_size, dataset.seq_len) != (meta.get("vocab_size"), meta.get("seq_len")):
        raise CheckpointError(f"vocabulary mismatch: dataset gives K={dataset.vocab_size}, L={dataset.seq_len}, "
                              f"checkpoint expects K={meta.get('vocab_size')}, L={meta.get('seq_len')}")
    method = build_method(cfg, dataset)
    expected = method.state_dict()
    for path in also_check:
        ckpt_io.check_tensors(path, expected)
    method.load_state_dict(ckpt_io.read_weights(weights, expected))
    return cfg, method, dataset
