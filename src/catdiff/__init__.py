"""catdiff: diffusion models on categorical data.

Masked (MDLM), autoregressive, embedding (Diffusion-LM, CDCD, Difformer, CATDM), latent-coupled
(LDDM) and latent-conditioned (DisCo-Diff) models behind one API, with exact-likelihood benchmarks.

    import catdiff
    cfg = catdiff.load_config("configs/mdlm/mixture.yaml", ["train.max_steps=200"])
    catdiff.train(cfg)                      # trains into cfg.train.out_dir
    pipe = catdiff.load(cfg.train.out_dir)  # a trained model, ready to sample and score

The names below are imported on first use (PEP 562), so `import catdiff` does not import torch.
"""

from __future__ import annotations

from importlib import import_module

# type checkers and IDEs read the public names' types from __init__.pyi (no import here: the
# package root sits below every module it re-exports, tests/unit/test_layering.py)
__all__ = ["Condition", "__version__", "load", "load_config", "train"]

# public name -> "module:attribute", imported on first access
_LAZY = {
    "load": "catdiff.pipeline:load",
    "train": "catdiff.trainer:train",
    "load_config": "catdiff.config:load_config",
    "Condition": "catdiff.conditioning:Condition",
}


def _pyproject_version() -> str:
    """The `version` of [project] in the source tree's pyproject.toml (catdiff not installed)."""
    import re
    from pathlib import Path

    try:
        text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return "0+unknown"
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    found = project and re.search(r"""^version\s*=\s*["']([^"']+)["']""", project.group(1), re.M)
    return found.group(1) if found else "0+unknown"


def _version() -> str:
    """The installed distribution's version (pyproject.toml's `version`: its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("catdiff")
    except PackageNotFoundError:
        return _pyproject_version()


def __getattr__(name: str):
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        module, attr = _LAZY[name].split(":")
        value = getattr(import_module(module), attr)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
