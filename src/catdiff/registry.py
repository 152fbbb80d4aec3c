"""Name → method / dataset / sampler / preset lookup; refuses duplicates and unknown names.

It knows names and schemas, not what the entries compute. Method modules register themselves
with `register_method`; datasets are listed as import paths so listing them imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect

from .errors import ConfigError

METHODS: dict[str, type] = {}
_METHOD_MODULES = ("catdiff.methods.mdlm", "catdiff.methods.ar", "catdiff.methods.embedding", "catdiff.methods.lddm",
                   "catdiff.methods.discodiff")

DATASETS: dict[str, str] = {
    "mixture": "catdiff.data.synthetic:Mixture",
    "hmm": "catdiff.data.synthetic:HMM",
    "binsaw": "catdiff.data.synthetic:BinSaw",
    "gaussians8": "catdiff.data.continuous:Gaussians8",
    "digits_continuous": "catdiff.data.continuous:ContinuousDigits",
    "digits": "catdiff.data.images:Digits",
    "text": "catdiff.data.text:TextDataset",
    "hub_text": "catdiff.data.hub:HubTextDataset",
    "seq2seq": "catdiff.data.seq2seq:SyntheticSeq2Seq",
    "parallel_text": "catdiff.data.parallel:ParallelTextDataset",
}

SAMPLERS: dict[str, str] = {
    "masked-ancestral": "MDLM ancestral sampler, any step count, cached variant (samplers.sample_masked)",
    "masked-confidence": "masked sampler revealing the most confident draws first (sample.order=confidence)",
    "ar-kv": "autoregressive ancestral sampling with a KV cache (methods.ar.AR.sample)",
}


def register_method(cls):
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method {cls.name!r} is already registered")
    METHODS[cls.name] = cls
    return cls


def register_dataset(name: str, target: str) -> None:
    if name in DATASETS and DATASETS[name] != target:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = target


def methods() -> dict[str, type]:
    for mod in _METHOD_MODULES:
        importlib.import_module(mod)
    return METHODS


def method_class(name: str) -> type:
    table = methods()
    if name not in table:
        raise ConfigError(f"unknown method.name {name!r}; choose one of {sorted(table)}")
    return table[name]


def dataset_class(name: str) -> type:
    if name not in DATASETS:
        raise ConfigError(f"unknown data.name {name!r}; choose one of {sorted(DATASETS)}")
    mod, attr = DATASETS[name].split(":")
    return getattr(importlib.import_module(mod), attr)


# ---- config sections ---------------------------------------------------------------------
def validate_method_section(section: dict) -> dict:
    """Fill defaults and check types of `method:` against the method's Options dataclass."""
    from .config import from_mapping

    section = dict(section or {})
    name = section.pop("name", None)
    if not name:
        raise ConfigError("config key 'method.name' is required")
    cls = method_class(name)
    opts = from_mapping(cls.Options, section, "method")
    return {"name": name, **dataclasses.asdict(opts)}


def method_options(section: dict):
    from .config import from_mapping

    section = dict(section)
    cls = method_class(section.pop("name"))
    return cls, from_mapping(cls.Options, section, "method")


def validate_data_section(section: dict) -> dict:
    """Check `data:` keys against the dataset constructor's signature; fill its defaults."""
    section = dict(section or {})
    name = section.pop("name", None)
    if not name:
        raise ConfigError("config key 'data.name' is required")
    cls = dataset_class(name)
    params = inspect.signature(cls.__init__).parameters
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    allowed = {k: p for k, p in params.items() if k != "self" and p.kind in kinds}
    for k in section:
        if k not in allowed:
            known = ", ".join(sorted(allowed))
            raise ConfigError(f"unknown config key 'data.{k}' for dataset {name!r} (known: {known})")
    from .config import _coerce

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


def build_dataset(section: dict):
    """A dataset from a validated `data:` config section."""
    section = dict(section)
    name = section.pop("name")
    cls = dataset_class(name)
    try:
        return cls(**section)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data ({name}): {str(e).splitlines()[0]}") from None


def rebuild_dataset(state: dict):
    """The identical dataset from its saved `state()` (vocabulary/tokenizer included)."""
    return dataset_class(state["name"]).from_state(state)


# ---- networks ----------------------------------------------------------------------------
def model_preset(model_cfg) -> dict:
    from .models.transformer import PRESETS

    if model_cfg.preset not in PRESETS:
        raise ConfigError(f"unknown model.preset {model_cfg.preset!r}; choose one of {sorted(PRESETS)}")
    size = dict(PRESETS[model_cfg.preset])
    for k in ("d_model", "n_layers", "n_heads"):
        v = getattr(model_cfg, k)
        if v is not None:
            size[k] = v
    if size["d_model"] % size["n_heads"]:
        raise ConfigError(f"model.d_model ({size['d_model']}) must be divisible by model.n_heads ({size['n_heads']})")
    return size


def build_network(model_cfg, *, vocab_in: int, vocab_out: int, seq_len: int, causal: bool,
                  time_cond: bool | None = None, cond_dim: int = 0, context_dim: int = 0):
    """The shared transformer sized by the model config (methods call this, never the class)."""
    from .models.transformer import Transformer, TransformerConfig

    tcfg = TransformerConfig(
        vocab_size=vocab_in, out_size=vocab_out, seq_len=seq_len, mlp_ratio=model_cfg.mlp_ratio,
        dropout=model_cfg.dropout, causal=causal,
        time_cond=model_cfg.time_cond if time_cond is None else time_cond,
        tie_weights=model_cfg.tie_weights, abs_pos=model_cfg.abs_pos, cond_dim=cond_dim, context_dim=context_dim,
        local_mix=0 if causal else model_cfg.local_mix,  # a causal model sees its own token: no need
        **model_preset(model_cfg),
    )
    return Transformer(tcfg)


def build_joint_network(model_cfg, *, vocab_in: int, vocab_out: int, seq_len: int, n_slots: int, slot_dim: int):
    """The joint token + latent-slot transformer (models.joint, MM-DiT style) sized by the model config."""
    from .models.joint import JointConfig, JointTransformer

    return JointTransformer(JointConfig(
        vocab_size=vocab_in, out_size=vocab_out, seq_len=seq_len, n_slots=n_slots, slot_dim=slot_dim,
        mlp_ratio=model_cfg.mlp_ratio, abs_pos=model_cfg.abs_pos, local_mix=model_cfg.local_mix,
        **model_preset(model_cfg)))


def build_method(cfg, vocab_size: int, seq_len: int, cond_len: int = 0):
    """The configured method for data of K = vocab_size, L = seq_len; cond_len > 0 (seq2seq data)
    makes the first cond_len positions a clean condition (methods.base.Method.cond_len)."""
    cls, opts = method_options(cfg.method)
    method = cls(opts, cfg.model, vocab_size, seq_len)
    method.cond_len = cond_len
    return method
