"""Name tables: method, dataset and sampler-family names → where their code lives.

It holds names and import paths only: it imports no catdiff module (so it can sit under every
other layer), validates nothing and builds nothing — `config.py` validates, `build.py` builds.
An entry is imported the first time `load` asks for it, so listing names imports nothing heavy.
"""

from __future__ import annotations

import importlib

from .errors import ConfigError

METHODS: dict[str, str] = {
    "mdlm": "catdiff.methods.mdlm:MDLM",
    "ar": "catdiff.methods.ar:AR",
    "embed-naive": "catdiff.methods.embedding:EmbedNaive",
    "diffusion-lm": "catdiff.methods.embedding:DiffusionLM",
    "cdcd": "catdiff.methods.embedding:CDCD",
    "difformer": "catdiff.methods.embedding:Difformer",
    "catdm": "catdiff.methods.embedding:CATDM",
    "lddm-fuji": "catdiff.methods.lddm:LDDMFuji",
    "lddm-seq": "catdiff.methods.lddm:LDDMSeq",
    "edm": "catdiff.methods.discodiff:EDM",
    "discodiff": "catdiff.methods.discodiff:DisCoDiff",
    "discodiff-embed": "catdiff.methods.discodiff:DisCoDiffEmbed",
}

DATASETS: dict[str, str] = {
    "mixture": "catdiff.data.synthetic:Mixture",
    "hmm": "catdiff.data.synthetic:HMM",
    "binsaw": "catdiff.data.synthetic:BinSaw",
    "gaussians8": "catdiff.data.continuous:Gaussians8",
    "digits_continuous": "catdiff.data.continuous:ContinuousDigits",
    "digits": "catdiff.data.images:Digits",
    "tokens": "catdiff.data.arrays:Tokens",
    "images": "catdiff.data.arrays:Images",
    "text": "catdiff.data.text:TextDataset",
    "hub_text": "catdiff.data.hub:HubTextDataset",
    "seq2seq": "catdiff.data.seq2seq:SyntheticSeq2Seq",
    "parallel_text": "catdiff.data.parallel:ParallelTextDataset",
}

# sampler family → its module; each module's `KINDS` names the samplers of the family and
# `Options` is the typed `sample:` section of the methods that use it
SAMPLERS: dict[str, str] = {
    "masked": "catdiff.samplers.masked",
    "gaussian": "catdiff.samplers.gaussian",
    "coupled": "catdiff.samplers.coupled",
    "edm": "catdiff.samplers.edm",
    "ar": "catdiff.samplers.ar",
}


def _register(table: dict, kind: str, name: str, target: str) -> None:
    if name in table and table[name] != target:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = target


def register_method(name: str, target: str) -> None:
    """Add a method by import path, e.g. register_method("mine", "mypkg.mine:Mine")."""
    _register(METHODS, "method", name, target)


def register_dataset(name: str, target: str) -> None:
    _register(DATASETS, "dataset", name, target)


def load(table: dict[str, str], name: str, key: str):
    """The object `table[name]` points to; an unknown name fails naming the config `key`."""
    if name not in table:
        raise ConfigError(f"unknown {key} {name!r}; choose one of {sorted(table)}")
    mod, _, attr = table[name].partition(":")
    module = importlib.import_module(mod)
    return getattr(module, attr) if attr else module


def method_class(name: str) -> type:
    return load(METHODS, name, "method.name")


def dataset_class(name: str) -> type:
    return load(DATASETS, name, "data.name")


def sampler_family(name: str):
    """The module of a sampler family (samplers/<family>.py)."""
    return load(SAMPLERS, name, "sampler family")
