"""Tests of catdiff.metrics.report: the Markdown table, the results envelope and its writer."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from catdiff import metrics as M
from catdiff.metrics import report


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


def test_envelope_finish_and_write_result(tmp_path):
    env = report.envelope(["python", "bench.py", "--out", "a b"], {"steps": 3})
    assert env["command"] == "python bench.py --out 'a b'" and env["config"] == {"steps": 3}
    assert datetime.fromisoformat(env["date"]).utcoffset() == timedelta(0)
    assert set(env["machine"]) >= {"platform", "cpu", "cpu_flags", "cpu_count", "torch", "threads"}
    assert env["machine"]["cpu_flags"] is None or set(env["machine"]["cpu_flags"]) == set(report.CPU_FLAGS)
    assert "end" not in env["load"]
    report.finish(env)
    assert "end" in env["load"] and env["load"]["contended"] in (True, False, None)

    path = report.write_result(tmp_path / "study", "run", env, {"x": 1.5}, "# Title\n\n| a |\n")
    saved = json.loads(path.read_text())
    assert saved == {"envelope": json.loads(json.dumps(env)), "results": {"x": 1.5}}
    assert report.read_result(path) == (saved["envelope"], saved["results"])
    page = (tmp_path / "study" / "run.md").read_text()
    assert page.startswith("# Title\n\nCommand: `python bench.py --out 'a b'`  \nCommit: ")
    assert "Date: " in page and page.endswith("| a |\n")


def test_finish_marks_contended_by_the_one_minute_load(monkeypatch):
    def finished(start, end):
        monkeypatch.setattr(report, "_loadavg", lambda: end)
        return report.finish({"load": {"start": start}})["load"]["contended"]

    assert finished([0.1, 0.1, 0.1], [0.5, 0.1, 0.1]) is True
    assert finished([0.4, 0.0, 0.0], [0.1, 0.1, 0.1]) is True
    assert finished([0.1, 2.0, 2.0], [0.2, 2.0, 2.0]) is False  # the 5- and 15-minute averages do not count
    assert finished(None, None) is None
