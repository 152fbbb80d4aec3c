"""Tests of catdiff.metrics.report: the Markdown table."""

from __future__ import annotations

from catdiff import metrics as M


# ---- table -----------------------------------------------------------------------------------
def test_format_table():
    rows = [
        {"method": "mdlm", "steps": 8, "nll": 1.234567, "extra": "x"},
        {"method": "a|b", "steps": 16, "nll": 12345.678},
        {"method": "ar", "nll": float("nan")},
    ]
    expected = (
        "| method | steps | nll |\n"
        "|---|---|---|\n"
        "| mdlm | 8 | 1.235 |\n"
        "| a\\|b | 16 | 1.235e+04 |\n"
        "| ar |  | nan |"
    )
    assert M.format_table(rows, ["method", "steps", "nll"]) == expected
