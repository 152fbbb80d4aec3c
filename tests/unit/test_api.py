"""The package's public surface: `import catdiff` is light (no torch), `catdiff.__all__` resolves
lazily to the library's functions, `__version__` is pyproject's, the `catdiff --version` flag, and
the packaging files (LICENSE declared in pyproject, the py.typed marker)."""

import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import catdiff

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_catdiff_does_not_import_torch():
    code = "import sys, catdiff; catdiff.__version__; dir(catdiff); print(sorted(m for m in sys.modules " \
           "if m.split('.')[0] in ('torch', 'numpy') or m.startswith('catdiff.')))"
    assert _run(code) == "[]"


def test_every_public_name_resolves():
    expected = {"load_config": ("catdiff.config", "load_config"), "Condition": ("catdiff.conditioning", "Condition"),
                "load": ("catdiff.pipeline", "load"), "train": ("catdiff.trainer", "train")}
    assert sorted(catdiff.__all__) == sorted([*expected, "__version__"])
    assert set(catdiff.__all__) <= set(dir(catdiff))
    for name, (module, attr) in expected.items():
        assert getattr(catdiff, name) is getattr(importlib.import_module(module), attr), name
    assert callable(catdiff.train) and catdiff.train.__name__ == "train"  # the function, whatever was imported
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        catdiff.nope  # noqa: B018


def test_version_is_pyproject_version(capsys):
    version = _pyproject()["project"]["version"]
    assert catdiff.__version__ == version
    assert catdiff._pyproject_version() == version  # the fallback when catdiff is not installed
    from catdiff.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"catdiff {version}"


def test_license_and_type_marker_are_packaged():
    project = _pyproject()["project"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Copyright (c) 2026 the catdiff authors" in text
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"])  # SPDX string instead
    assert resources.files("catdiff").joinpath("py.typed").is_file()
    assert "py.typed" in _pyproject()["tool"]["setuptools"]["package-data"]["catdiff"]
