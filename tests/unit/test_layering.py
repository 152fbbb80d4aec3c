"""The house has no circles and no upward imports (DESIGN.md §2): data flows one way, a process
never calls a network, a network never imports a process, schedules and samplers know no networks
or methods, and the registry knows only names. Checked on every import statement, at module level
or inside functions."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "src" / "catdiff"
FORBIDDEN = {  # module (relative to the package) → packages it must not import
    "schedules.py": {"models", "processes", "methods", "trainer", "samplers"},
    "processes": {"models", "methods", "trainer", "samplers", "data"},
    "models": {"processes", "methods", "schedules", "samplers", "trainer", "data"},
    "samplers": {"models", "methods", "trainer", "data", "config"},
    "parameterizations.py": {"models", "methods", "trainer"},
    "metrics.py": {"methods", "trainer", "models"},
    "data": {"models", "methods", "processes", "trainer", "samplers"},
}
# layers from the bottom up: a module may import its own layer and the ones below, never above
LAYERS = [
    {"__init__", "errors", "structs", "runtime", "registry"},
    {"schedules", "conditioning", "parameterizations"},
    {"processes", "models"},
    {"samplers", "data", "metrics", "losses", "oracle", "length", "judges"},
    {"methods", "ode_diagnostics"},
    {"config"},
    {"build", "checkpoint", "rundir", "export"},
    {"trainer", "evaluate"},
    {"diagnose", "demo", "pipeline", "plot"},
    {"cli", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_module(name: str) -> bool:
    p = PKG.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the catdiff modules `path` imports, wherever the import statement sits."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("catdiff"):
                continue
            for a in node.names:  # `from . import x` may name a submodule
                out.add(f"{mod}.{a.name}" if _is_module(f"{mod}.{a.name}") else mod)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("catdiff"))
    return {m for m in out if m != me}


def _files():
    return sorted(PKG.rglob("*.py"))


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.mark.parametrize("target", sorted(FORBIDDEN))
def test_layer_does_not_import_forbidden_layers(target):
    path = PKG / target
    files = [path] if path.is_file() else sorted(PKG.joinpath(target.removesuffix(".py")).rglob("*.py"))
    assert files
    for f in files:
        bad = {_top(m) for m in _imported_modules(f)} & FORBIDDEN[target]
        assert not bad, f"{f.relative_to(PKG)} imports {sorted(bad)}"


def test_every_module_has_a_layer_and_no_import_goes_up():
    for f in _files():
        mine = _top(_module_name(f))
        assert mine in RANK, f"{f.relative_to(PKG)}: add `{mine}` to a layer in LAYERS"
        up = sorted(m for m in _imported_modules(f) if RANK[_top(m)] > RANK[mine])
        assert not up, f"{f.relative_to(PKG)} (layer {RANK[mine]}) imports higher layers: {up}"


def test_there_is_no_import_circle():
    graph = {_module_name(f): _imported_modules(f) for f in _files()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    """The check above can fail: a two-module circle planted in a copy of the layout is reported."""
    pkg = tmp_path / "catdiff"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from . import registry\n")
    (pkg / "registry.py").write_text("from .errors import X\n")
    monkeypatch.setattr(__import__(__name__), "PKG", pkg)
    with pytest.raises(AssertionError, match="import circle: catdiff.errors -> catdiff.registry -> catdiff.errors"):
        test_there_is_no_import_circle()
