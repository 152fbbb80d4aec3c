"""Every committed benchmark result carries the common envelope, and every study folder keeps its
hand-written readings in NOTES.md, out of the generated pages (benchmarks/results/README.md)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from catdiff.metrics import report

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
STUDIES = sorted(p for p in RESULTS.iterdir() if p.is_dir())
TYPES = {"command": str, "commit": str, "dirty": bool, "machine": dict, "load": dict, "date": str, "config": dict}
MACHINE = {"platform": str, "cpu": str, "cpu_flags": dict, "cpu_count": int, "torch": str, "threads": int}
LOAD = {"start": list, "end": list, "contended": bool}


def check_fields(record: dict, types: dict, recorded: dict, prefix: str = "") -> None:
    """Each field present with its type, or null and marked unrecorded (False) in `recorded`."""
    for key, kind in types.items():
        assert key in record, f"{prefix}{key} missing"
        if record[key] is None:
            assert recorded.get(prefix + key) is False, f"{prefix}{key} is null but not marked unrecorded"
        else:
            assert isinstance(record[key], kind), f"{prefix}{key}: {type(record[key]).__name__}"
            assert prefix + key not in recorded, f"{prefix}{key} has a value and is marked unrecorded"


def check_envelope(env: dict) -> None:
    recorded = env.get("recorded", {})
    assert all(v is False for v in recorded.values())
    check_fields(env, TYPES, recorded)
    if env["date"] is not None:
        datetime.fromisoformat(env["date"])
    if env["machine"] is not None:
        check_fields(env["machine"], MACHINE, recorded, "machine.")
    if env["load"] is not None:
        check_fields(env["load"], LOAD, recorded, "load.")
        assert all(len(v) == 3 for v in (env["load"]["start"], env["load"]["end"]) if v is not None)


def test_results_exist():
    assert len(STUDIES) >= 9 and len(list(RESULTS.rglob("*.json"))) >= 30


@pytest.mark.parametrize("path", sorted(RESULTS.rglob("*.json")), ids=lambda p: str(p.relative_to(RESULTS)))
def test_every_result_has_the_common_envelope(path):
    result = json.loads(path.read_text())
    assert set(result) == {"envelope", "results"}
    check_envelope(result["envelope"])


def test_a_new_result_passes_the_same_checks(tmp_path):
    env = report.finish(report.envelope(["python", "bench.py"], {"steps": 1}))
    path = report.write_result(tmp_path, "bench", env, {"x": 1.0}, "# Bench\n")
    check_envelope(json.loads(path.read_text())["envelope"])


@pytest.mark.parametrize("study", STUDIES, ids=lambda p: p.name)
def test_study_folder_keeps_readings_in_notes(study):
    assert study.name in (RESULTS / "README.md").read_text(), "the results index names every study"
    assert list(study.glob("*.json")), "a study folder holds its current result"
    for page in study.rglob("*.md"):
        if page.name == "NOTES.md":
            continue
        assert page.with_suffix(".json").is_file(), f"{page.name}: a generated page sits beside its JSON"
        assert "\n## Reading" not in page.read_text(), f"{page.name}: readings belong in NOTES.md"
