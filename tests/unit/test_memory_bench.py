"""benchmarks/memory.py: the peak RSS of a child that allocates a known amount, the result files,
and a failing command's status passed through with nothing written."""

from __future__ import annotations

import json
import sys

from helpers import load_benchmark


def load():
    return load_benchmark("memory")


def test_peak_rss_of_a_child_that_touches_300_mb(tmp_path):
    mem = load()
    child = [sys.executable, "-c", "b = bytearray(300_000_000); b[::4096] = b'x' * len(b[::4096])"]
    assert mem.main(["--out", str(tmp_path), "--tag", "t", "--", *child]) == 0
    res = json.loads((tmp_path / "memory_t.json").read_text())["results"]
    assert 0.3 <= res["run"]["peak_rss_gb"] < 0.5 and res["run"]["exit_status"] == 0
    assert "peak RSS (GB)" in (tmp_path / "memory_t.md").read_text()


def test_a_failing_command_writes_nothing(tmp_path):
    mem = load()
    assert mem.main(["--out", str(tmp_path), sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert not list(tmp_path.iterdir())


def test_a_command_that_cannot_start_is_one_line_and_exit_2(tmp_path, capfd):
    import pytest

    mem = load()
    with pytest.raises(SystemExit) as e:
        mem.main(["--out", str(tmp_path), "--", "no-such-program-here"])
    assert e.value.code == 2 and not list(tmp_path.iterdir())
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot run 'no-such-program-here'" in err and "Traceback" not in err
