"""Typed run configuration: dataclass schemas, YAML files, `key.sub=value` overrides, validation.

It knows the shape of a config and checks every value, not what methods or datasets compute:
method- and dataset-specific sections are checked against the schemas (Options dataclass,
constructor signature) of the classes the registry names. Building objects from a config is
`build.py`'s job. Every error names the key.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import registry
from .errors import ConfigError
from .models.factory import model_size


@dataclass
class ModelConfig:
    """Network size and options; `preset` (tiny/small/base) fills width/depth/heads unless set."""

    preset: str = "tiny"
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    tie_weights: bool = False
    time_cond: bool = True
    abs_pos: bool = True  # learned absolute positions on top of rotary (see TransformerConfig)
    local_mix: int = 0  # depthwise conv kernel in front of attention, bidirectional only (see TransformerConfig)
    compile: bool | str = "auto"  # true | false | auto (runtime.compile_enabled: CUDA yes, CPU/MPS no)
    checkpoint: bool = False  # activation checkpointing of every block (TransformerConfig.checkpoint)


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    # steps: the cosine runs over max_steps; budget: over the max_minutes budget (clock budget_clock),
    # so a time-limited run ends at min_lr whatever the machine's speed (max_steps stays a cap)
    lr_schedule: str = "steps"
    grad_clip: float = 1.0
    ema: float = 0.999  # 0 disables EMA
    seed: int = 0
    out_dir: str = ""  # default: runs/<method>-<dataset>
    ckpt_every: int = 500
    log_every: int = 50
    eval_every: int = 0  # 0: only at the end
    eval_batches: int = 8
    # matmul precision under torch.autocast on CPU and GPU: auto (bf16 where a start-up probe finds
    # it >= 1.5x fp32: runtime.amp_dtype) | bf16 | fp16 | off; weights, optimizer and losses stay fp32.
    # The default is off so that a config gives the same numbers on every machine; the text recipes
    # set auto.
    amp: str = "off"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    tensorboard: bool = False
    wandb: str = ""  # a Weights & Biases project: log the run there (rank 0; WANDB_MODE=offline works offline)
    progress: bool = True
    max_minutes: float = 0.0  # >0: stop (and checkpoint) after this wall time
    budget_clock: str = "wall"  # max_minutes counts wall | cpu (this process's CPU time: fair when runs share cores)
    init_from: str = ""  # run dir whose weights (EMA if saved) initialise a new run (e.g. LDDM-SEQ stage 2)
    keep_checkpoints: int = 3  # the last N step checkpoints are kept, plus checkpoints/best (lowest validation bound)
    # divergence: stop when a loss or the gradient norm is not finite, or a loss exceeds divergence_factor
    # × the median of the (up to) divergence_window losses before it and the run's first loss, from the
    # second step on (a median <= 0 is not compared); 0 disables the ratio test. Normal runs stay far
    # below 100: LDDM losses at batch size 8 spike to 25× their median, a diverging run (train.lr=30)
    # jumps 10⁴× within 3 steps; a near-zero median (a learned copy task) is why the first loss bounds it.
    divergence_factor: float = 100.0
    divergence_window: int = 50


@dataclass
class EvalConfig:
    nelbo_passes: int = 4  # Monte-Carlo passes over the held-out split (time/mask draws)
    max_examples: int = 2048
    steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    num_samples: int = 1024
    judge: str = ""  # run dir of an AR judge for gen-PPL (text)
    batch_size: int = 256  # rows per likelihood batch (OpenWebText on a GPU: 1024 × 50k logits a row)
    amp: str = "off"  # matmul precision of the likelihood passes (as train.amp); the bound is summed in float64

    def __post_init__(self):
        if any(k < 1 for k in self.steps):
            raise ConfigError(f"eval.steps must all be >= 1, got {list(self.steps)}")


@dataclass
class Config:
    method: dict = field(default_factory=lambda: {"name": "mdlm"})
    data: dict = field(default_factory=lambda: {"name": "mixture"})
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # the method's typed sampler options (its `SampleOptions`, samplers/<family>.py), built from
    # the raw mapping once the method is known
    sample: Any = field(default_factory=dict)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------------------------------
def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert `value` to annotation `tp`; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if value is False and key.endswith(".amp"):  # YAML 1.1 reads `amp: off` as false
            return "off"
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    return value


def from_mapping(cls, data: dict, prefix: str):
    """Build dataclass `cls` from a mapping, refusing unknown keys and ill-typed values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    def name(k):
        return f"{prefix}.{k}" if prefix else k

    for k in data:
        if k not in known:
            raise ConfigError(f"unknown config key '{name(k)}' (known: {', '.join(sorted(known))})")
    kwargs = {}
    for f in fields(cls):
        if f.name in data:
            sub = hints[f.name]
            if dataclasses.is_dataclass(sub):
                kwargs[f.name] = from_mapping(sub, data[f.name], name(f.name))
            else:
                kwargs[f.name] = _coerce(data[f.name], sub, name(f.name))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or 'config'}: {e}") from None


def parse_overrides(overrides: list[str]) -> dict:
    """['train.lr=3e-4', 'data.name=hmm'] -> nested dict; values parsed as YAML scalars/lists."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("+")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not a text file (a YAML config is UTF-8 text)") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read the config ({e.strerror})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    base = data.pop("defaults", None)  # `defaults: ../base.yaml` composes files, Hydra-style
    if base:
        parent = load_yaml(p.parent / base)
        data = deep_merge(parent, data)
    return data


def validate_method_section(section: dict) -> dict:
    """Fill defaults and check types of `method:` against the method's Options dataclass."""
    section = dict(section or {})
    name = section.pop("name", None)
    if not name:
        raise ConfigError("config key 'method.name' is required")
    opts = from_mapping(registry.method_class(name).Options, section, "method")
    return {"name": name, **dataclasses.asdict(opts)}


def validate_data_section(section: dict) -> dict:
    """Check `data:` keys against the dataset constructor's signature; fill its defaults."""
    section = dict(section or {})
    name = section.pop("name", None)
    if not name:
        raise ConfigError("config key 'data.name' is required")
    params = inspect.signature(registry.dataset_class(name).__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = {k: p for k, p in params.items() if k != "self" and p.kind in kinds}
    for k in section:
        if k not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"unknown config key 'data.{k}' for dataset {name!r} (known: {known})")
    out = {"name": name}
    for k, p in allowed.items():
        if k in section:
            default = p.default
            typed = default is not inspect.Parameter.empty and default is not None
            out[k] = _coerce(section[k], type(default), f"data.{k}") if typed else section[k]
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(f"config key 'data.{k}' is required for dataset {name!r}")
        else:
            out[k] = p.default
    return out


# every bounded value of the fixed sections: (key, test, what the test asks); floats are finite
# already (_coerce refuses nan and inf)
def _at_least(lo):
    return (lambda v: v is None or v >= lo), f">= {lo}"


def _in(lo, hi, closed_hi=False):
    return (lambda v: lo <= v <= hi if closed_hi else lo <= v < hi), f"in [{lo}, {hi}{']' if closed_hi else ')'}"


def _one_of(*choices):
    return (lambda v: v in choices), "one of " + " | ".join(map(str, choices))


RANGES = {
    "model.d_model": _at_least(1), "model.n_layers": _at_least(1), "model.n_heads": _at_least(1),
    "model.mlp_ratio": ((lambda v: v > 0), "> 0"), "model.dropout": _in(0.0, 1.0), "model.local_mix": _at_least(0),
    "model.compile": ((lambda v: v in (True, False, "auto")), "true | false | auto"),
    "train.max_steps": _at_least(1), "train.batch_size": _at_least(1), "train.lr": ((lambda v: v > 0), "> 0"),
    "train.weight_decay": _at_least(0.0), "train.warmup_steps": _at_least(0),
    "train.min_lr_ratio": _in(0.0, 1.0, closed_hi=True), "train.grad_clip": _at_least(0.0),
    "train.ema": _in(0.0, 1.0), "train.seed": _at_least(0), "train.ckpt_every": _at_least(1),
    "train.log_every": _at_least(1), "train.eval_every": _at_least(0), "train.eval_batches": _at_least(1),
    "train.amp": _one_of("auto", "bf16", "fp16", "off", "none"),
    "eval.amp": _one_of("auto", "bf16", "fp16", "off"), "train.max_minutes": _at_least(0.0),
    "train.budget_clock": _one_of("wall", "cpu"), "train.lr_schedule": _one_of("steps", "budget"),
    "train.keep_checkpoints": _at_least(1),
    "train.divergence_factor": _at_least(0.0), "train.divergence_window": _at_least(1),
    "train.wandb": ((lambda v: len(v) <= 128 and not set(v) & set("/\\#?%:")),
                    "a W&B project name (at most 128 characters, none of / \\ # ? % :) or empty"),
    "eval.nelbo_passes": _at_least(1), "eval.max_examples": _at_least(1), "eval.num_samples": _at_least(1),
    "eval.batch_size": _at_least(1),
}
DEVICES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_ranges(cfg: Config) -> None:
    """Every value of the model, train and eval sections within its range (RANGES), and a device
    name torch knows (whether that device exists here is checked where it is used)."""
    for key, (test, want) in RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not test(value):
            raise ConfigError(f"{key} must be {want}, got {value!r}")
    if not all(0.0 <= b < 1.0 for b in cfg.train.betas):
        raise ConfigError(f"train.betas must each be in [0, 1), got {list(cfg.train.betas)}")
    if not DEVICES.fullmatch(cfg.train.device):
        raise ConfigError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {cfg.train.device!r}")


DATA_PATH_KEYS = ("path", "local_dir", "cache_dir", "token_cache")


def resolve_data_paths(section: dict) -> dict:
    """The data section with its paths absolute (resolved once, against the working directory of
    the command that trains): a run keeps working when it is used from another folder. A tokenizer
    given as an existing file or folder is resolved too."""
    out = dict(section)
    for k in DATA_PATH_KEYS:
        if isinstance(out.get(k), str) and out[k]:
            out[k] = str(Path(out[k]).expanduser().resolve())
    tok = out.get("tokenizer")
    if isinstance(tok, str) and tok not in ("char", "bpe") and Path(tok).expanduser().exists():
        out["tokenizer"] = str(Path(tok).expanduser().resolve())
    return out


def build_config(raw: dict) -> Config:
    """Validate a nested mapping into a Config; method/data sections are checked against their classes."""
    cfg = from_mapping(Config, raw, "")
    cfg.method = validate_method_section(cfg.method)
    cfg.sample = from_mapping(registry.method_class(cfg.method["name"]).SampleOptions, cfg.sample, "sample")
    cfg.data = resolve_data_paths(validate_data_section(cfg.data))
    model_size(cfg.model)  # validates the preset name and the sizes
    check_ranges(cfg)
    if cfg.train.lr_schedule == "budget" and not cfg.train.max_minutes > 0:
        raise ConfigError("train.lr_schedule=budget decays over train.max_minutes, which is 0 (no budget): "
                          "set train.max_minutes or use lr_schedule=steps")
    if not cfg.train.out_dir:
        cfg.train.out_dir = f"runs/{cfg.method['name']}-{cfg.data['name']}"
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    raw = load_yaml(path) if path else {}
    if overrides:
        raw = deep_merge(raw, parse_overrides(overrides))
    return build_config(raw)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def override_sample_options(cfg, overrides: dict, method_name: str = ""):
    """The run's sampler options with `overrides` applied and checked: an option the method's
    sampler does not have fails in one line naming the ones it has."""
    known = {f.name for f in fields(cfg.sample)}
    for k in overrides:
        if k not in known:
            usable = ", ".join("--" + n.replace("_", "-") for n in sorted(known - {"use_ema"}))
            raise ConfigError(f"--{k.replace('_', '-')} does not apply to {method_name or 'this'} runs "
                              f"(their sampler takes {usable})")
    return from_mapping(type(cfg.sample), {**asdict(cfg.sample), **overrides}, "sample")
