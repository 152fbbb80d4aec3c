"""Data flows one way (DESIGN.md §2): a process never calls a network, a network never imports a
process, schedules and samplers know no networks or methods. Checked on the import statements."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "catdiff"
FORBIDDEN = {  # module (relative to the package) → packages it must not import
    "schedules.py": {"models", "processes", "methods", "train", "samplers"},
    "processes": {"models", "methods", "train", "samplers", "data"},
    "models": {"processes", "methods", "schedules", "samplers", "train", "data"},
    "samplers.py": {"models", "methods", "train", "data"},
    "parameterizations.py": {"models", "methods", "train"},
    "metrics": {"methods", "train", "models"},
    "data": {"models", "methods", "processes", "train", "samplers"},
}


def _imports(path: Path) -> set[str]:
    """Top-level catdiff subpackages/modules imported by `path` (relative or absolute imports)."""
    rel_parts = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(rel_parts[:-1])[: len(rel_parts) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # "from . import x" at the package root
                    out.update(a.name for a in node.names)
                else:
                    out.add(parts[0])
                    if not node.module and len(parts) == 1:
                        out.update(f"{parts[0]}.{a.name}" for a in node.names)
            elif node.module and node.module.startswith("catdiff."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("catdiff."))
    return {m.removesuffix(".py") for m in out}


@pytest.mark.parametrize("target", sorted(FORBIDDEN))
def test_layer_does_not_import_forbidden_layers(target):
    files = [PKG / target] if target.endswith(".py") else sorted((PKG / target).rglob("*.py"))
    assert files
    for f in files:
        bad = {m.split(".")[0] for m in _imports(f)} & FORBIDDEN[target]
        assert not bad, f"{f.relative_to(PKG)} imports {sorted(bad)}"
