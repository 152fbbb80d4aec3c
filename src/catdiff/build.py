"""The one place where a validated config becomes objects: the dataset and the method.

It knows the registry's names, the config's sections and the constructors' signatures; it knows
nothing of training loops, checkpoints on disk, sampling or the command line.
"""

from __future__ import annotations

from . import registry
from .config import Config, from_mapping
from .errors import ConfigError


def build_dataset(section: dict):
    """A dataset from a validated `data:` config section."""
    section = dict(section)
    name = section.pop("name")
    cls = registry.dataset_class(name)
    try:
        return cls(**section)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"data ({name}): {str(e).splitlines()[0]}") from None


def rebuild_dataset(state: dict):
    """The identical dataset from its saved `state()` (vocabulary/tokenizer included)."""
    return registry.dataset_class(state["name"]).from_state(state)


def method_options(cfg: Config):
    """(method class, its typed Options) of the config's `method:` section."""
    section = dict(cfg.method)
    cls = registry.method_class(section.pop("name"))
    return cls, from_mapping(cls.Options, section, "method")


def build_method(cfg: Config, dataset):
    """The configured method sized for `dataset` (K = vocab_size, L = seq_len); seq2seq data
    (dataset.cond_len > 0) makes its first cond_len positions a clean condition."""
    cls, options = method_options(cfg)
    method = cls(options, cfg.model, dataset.vocab_size, dataset.seq_len)
    method.cond_len = getattr(dataset, "cond_len", 0)
    return method
