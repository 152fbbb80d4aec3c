"""Eval tables name their units: every column `evaluate.render` can show has a header with its
unit in metrics.report.UNITS (or is a unit-less count), and format_table uses those headers."""

import ast
from pathlib import Path

from catdiff import metrics as M
from catdiff.metrics.report import COUNTS, UNITS

EVALUATE = Path(__file__).resolve().parents[3] / "src" / "catdiff" / "evaluate.py"


def render_columns() -> set[str]:
    """The metric keys evaluate.render names: the identifier-like strings in its list and tuple
    literals (its column lists), read from the source."""
    tree = ast.parse(EVALUATE.read_text(encoding="utf-8"))
    render = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "render")
    return {c.value for node in ast.walk(render) if isinstance(node, (ast.List, ast.Tuple))
            for c in node.elts if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.isidentifier()}


def test_every_column_render_shows_has_a_unit():
    cols = render_columns()
    assert {"nelbo_nats", "bits_per_token", "steps", "sec_per_sample", "infill_nll"} <= cols  # the parse works
    missing = sorted(c for c in cols if c not in UNITS and c not in COUNTS)
    assert not missing, f"add these evaluate.render columns to metrics.report.UNITS: {missing}"


def test_units_name_what_the_metrics_measure():
    assert UNITS["nelbo_nats"] == "NELBO (nats/seq)" and UNITS["bits_per_token"] == "bits/token"
    assert UNITS["nelbo_gap"] == "NELBO gap (ratio)"  # (NELBO - H) / H, not a difference
    assert M.nelbo_gap(3.0, 2.0) == 0.5
    assert UNITS["sec_per_sample"] == "s/sample" and UNITS["gen_ppl"].startswith("gen-PPL")
    assert UNITS["unigram_entropy"] == "unigram entropy (bits)" and UNITS["bleu"] == "BLEU (0–100)"
    assert UNITS["infill_nll"] == "infill NLL (nats/seq)" and UNITS["sample_nll"] == "sample NLL (nats/token)"
    assert not set(UNITS) & COUNTS


def test_format_table_headers_carry_units():
    rows = [{"steps": 4, "nelbo_nats": 12.3456, "sec_per_sample": 0.01, "other": 1}]
    assert M.format_table(rows, ["steps", "nelbo_nats", "sec_per_sample", "other"]).splitlines()[0] == \
        "| steps | NELBO (nats/seq) | s/sample | other |"
    assert M.format_table(rows, ["nelbo_nats"], headers={}).splitlines()[0] == "| nelbo_nats |"
    assert M.format_table(rows, ["nelbo_nats"], headers={"nelbo_nats": "bound"}).splitlines()[0] == "| bound |"
