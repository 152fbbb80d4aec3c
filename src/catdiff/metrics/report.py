"""How results are written: Markdown tables of metric rows, and one envelope (command, commit,
machine, load, date, config) with one writer for every benchmark's JSON and Markdown page.

It must not know models, methods or datasets: it formats what it is given, naming each metric's
column with its unit (UNITS).
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["format_table", "UNITS", "COUNTS", "envelope", "finish", "write_result", "read_result"]

# the column header of each metric key, naming its unit: nats/seq = nats per sequence (the whole
# target), nats/token = per token; a fraction is in [0, 1]. A key missing here is shown as is.
UNITS: dict[str, str] = {
    # likelihood (evaluate.likelihood)
    "nelbo_nats": "NELBO (nats/seq)",
    "nelbo_nats_se": "NELBO SE (nats/seq)",
    "bits_per_token": "bits/token",
    "ppl_bound": "PPL bound (per token)",
    "entropy_nats": "entropy (nats/seq)",
    "entropy_nats_se": "entropy SE (nats/seq)",
    "nelbo_gap": "NELBO gap (ratio)",  # (NELBO - H) / H, metrics.nelbo_gap
    "loss": "held-out loss (training objective)",  # methods without a likelihood bound (EDM)
    "loss_se": "held-out loss SE (training objective)",
    # samples against exact likelihoods (metrics.sample_metrics)
    "sample_nll": "sample NLL (nats/token)",
    "excess": "excess NLL (nats/token)",
    "coherence": "coherence (fraction)",
    "component_kl": "component KL (nats)",
    "component_entropy": "component entropy (nats)",
    "component_entropy_true": "true component entropy (nats)",
    "state_kl": "state KL (nats/position)",
    "state_entropy": "state entropy (nats/position)",
    "state_entropy_true": "true state entropy (nats/position)",
    "shift_kl": "shift-bin KL (nats)",
    "shift_entropy": "shift-bin entropy (nats)",
    "shift_entropy_true": "true shift-bin entropy (nats)",
    "entropy_per_token": "entropy (nats/token)",
    # continuous data and images
    "w2": "W2 (data units)",
    "fd_digits": "FD-digits vs test (features²)",
    "fd_digits_train": "FD-digits vs train (features²)",
    # text
    "gen_ppl": "gen-PPL (per token)",
    "nll_per_token": "judge NLL (nats/token)",
    "unigram_entropy": "unigram entropy (bits)",
    "mauve": "MAUVE (0–1)",
    "distinct_1": "distinct-1 (fraction)",
    "distinct_2": "distinct-2 (fraction)",
    "distinct_3": "distinct-3 (fraction)",
    # seq2seq
    "exact_match": "exact match (fraction)",
    "token_accuracy": "token accuracy (fraction)",
    "length_accuracy": "length accuracy (fraction)",
    "bleu": "BLEU (0–100)",
    "chrf": "chrF (0–100)",
    # infilling (evaluate.infill_report)
    "fixed_frac": "fixed (fraction)",
    "infill_nll": "infill NLL (nats/seq)",
    "infill_entropy": "infill entropy (nats/seq)",
    "infill_entropy_se": "infill entropy SE (nats/seq)",
    "infill_excess": "infill excess (nats/seq)",
    # cost
    "sec_per_sample": "s/sample",
}
# unit-less counts, shown under their key
COUNTS = frozenset({"steps", "nfe", "n", "n_samples", "n_tokens", "components_covered", "components_total"})


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return _cell(v.item())
    return str(v).replace("|", "\\|").replace("\n", " ")


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str],
                 headers: Mapping[str, str] | None = None) -> str:
    """Markdown table of `rows` restricted to `columns` (in that order).

    Column headers come from `headers` (default: UNITS, each metric named with its unit; a column
    missing from it shows its key; pass {} for the bare keys). Floats are shown with 4 significant
    digits (`{:.4g}`), ints and strings as is, missing keys and None as empty cells; `|` in strings
    is escaped. Ends without a trailing newline.
    """
    names = UNITS if headers is None else headers
    lines = [
        "| " + " | ".join(_cell(names.get(c, c)) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines)


# ---- the results envelope -------------------------------------------------------------------
# the ones that change matmul throughput: AMX tiles and their bf16 ops, AVX-512 (and its bf16
# dot products), AVX2
CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
# a 1-minute load average above this (beyond the run's own threads, at its end) means other work
# shared the machine
CONTENDED = 0.3


def _git(*args: str) -> str | None:
    """git's output in the catdiff source tree (None outside a checkout or without git)."""
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    """Platform, CPU model and the CPU flags of `CPU_FLAGS` (None where /proc/cpuinfo is missing),
    core count, Python and torch versions, torch threads and BLAS."""
    cpu, flags = None, None
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and cpu is None:
            cpu = value.strip()
        elif key.strip() == "flags" and flags is None:
            flags = set(value.split())
    return {"platform": platform.platform(), "cpu": cpu or platform.processor() or None,
            "cpu_flags": {f: f in flags for f in CPU_FLAGS} if flags is not None else None,
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "blas": "mkl" if torch.backends.mkl.is_available() else "other"}


def envelope(command: list[str] | str, config: dict | None = None) -> dict[str, Any]:
    """What every result records about its run: the command, the git commit (and whether the tree
    was dirty), the machine, the load averages (1, 5, 15 min) now, the date (ISO 8601, UTC) and the
    config. A field that cannot be found is None and listed as False in `recorded`."""
    status = _git("status", "--porcelain")
    env = {"command": command if isinstance(command, str) else shlex.join(command),
           "commit": _git("rev-parse", "HEAD"), "dirty": None if status is None else bool(status),
           "machine": machine(), "load": {"start": _loadavg()},
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "config": dict(config or {})}
    missing = {k: False for k, v in env.items() if v is None}
    missing.update({f"machine.{k}": False for k, v in env["machine"].items() if v is None})
    if missing:
        env["recorded"] = missing
    return env


def finish(env: dict[str, Any], own_threads: int = 0) -> dict[str, Any]:
    """Add the load averages at the end and mark the run contended (None if neither load is known)
    when other work shared the machine: the 1-minute load average at the start exceeded
    `CONTENDED`, or the one at the end exceeded `CONTENDED + own_threads`. `own_threads` = the
    threads this run itself kept busy (e.g. torch.get_num_threads() for a compute-bound
    benchmark): its own work is still in the end average, the start one precedes it. The default
    0 counts every runnable thread as contention. Records own_threads beside the averages."""
    load = env["load"]
    load["end"] = _loadavg()
    load["own_threads"] = own_threads
    start, end = load.get("start"), load["end"]
    over = ([start[0] > CONTENDED] if start else []) + ([end[0] > CONTENDED + own_threads] if end else [])
    load["contended"] = any(over) if over else None
    return env


def header(env: dict[str, Any]) -> str:
    """The lines a results page opens with, generated from its envelope."""
    m = env.get("machine") or {}
    flags = m.get("cpu_flags")
    have = "not recorded"
    if flags is not None:
        have = ", ".join(f for f, on in flags.items() if on) or "none of " + ", ".join(flags)
    load = env.get("load") or {}

    def avg(v):
        return " / ".join(f"{x:.2f}" for x in v) if v else "not recorded"

    state = {True: " — contended", False: " — quiet"}.get(load.get("contended"), "")
    dirty = " (uncommitted changes)" if env.get("dirty") else ""
    cmd = env.get("command") or "not recorded"
    cmd = cmd if "`" in cmd or cmd == "not recorded" else f"`{cmd}`"  # a composite command quotes its parts
    return "\n".join([
        f"Command: {cmd}  ",
        f"Commit: `{env.get('commit')}`{dirty}  ",
        (f"Machine: {m.get('cpu') or 'CPU model not recorded'}, {m.get('cpu_count')} cores, {m.get('threads')} "
         f"threads, torch {m.get('torch')}, CPU flags: {have}  " if m else "Machine: not recorded  "),
        f"Load (1/5/15 min): start {avg(load.get('start'))}, end {avg(load.get('end'))}{state}  ",
        f"Date: {env.get('date') or 'not recorded'}", ""])


def write_result(study_dir: str | Path, name: str, env: dict[str, Any], results: Any,
                 markdown_body: str | None = None) -> Path:
    """Write `<study_dir>/<name>.json` = {"envelope": env, "results": results} and, given a body,
    `<name>.md`: the body's `# title` line, the header from the envelope, then the rest of the body.
    Generated pages carry no hand-written prose: readings go to NOTES.md beside them. Returns the
    JSON path."""
    study = Path(study_dir)
    study.mkdir(parents=True, exist_ok=True)
    path = study / f"{name}.json"
    path.write_text(json.dumps({"envelope": env, "results": results}, indent=1, default=str) + "\n")
    if markdown_body is not None:
        title, rest = markdown_body.split("\n", 1) if markdown_body.startswith("# ") else ("", markdown_body)
        page = (f"{title}\n\n" if title else "") + header(env) + "\n" + rest.lstrip("\n")
        (study / f"{name}.md").write_text(page)
    return path


def read_result(path: str | Path) -> tuple[dict[str, Any], Any]:
    """(envelope, results) of a file written by `write_result`."""
    d = json.loads(Path(path).read_text())
    return d["envelope"], d["results"]
