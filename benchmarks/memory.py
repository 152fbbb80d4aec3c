"""Peak resident memory of a catdiff command, as GNU `time -v` reports it ("Maximum resident set
size"), read from the kernel's accounting of the finished child (`os.wait4` → ru_maxrss, taken
by a bare launcher process so that this script's own memory does not count), with the command's
own exit status. Issue 18's acceptance: `catdiff train configs/mdlm/kjv.yaml` ≤ 2.4 GB.

    python benchmarks/memory.py                                   # the KJV training run (10 minutes)
    python benchmarks/memory.py --tag batch32 -- catdiff train configs/mdlm/kjv.yaml train.batch_size=32
    python benchmarks/memory.py --out /tmp/mem -- python -c "pass"  # smoke test

Peak RSS does not depend on the machine's load (a loaded machine only takes fewer steps in the same
minutes), so this may run beside other work; the envelope still records the load. The training run
writes its folder where its config says (runs/mdlm-text for the KJV config; replaced: --force).
Writes <out>/memory[_<tag>].{json,md} (default out: benchmarks/results/memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import start  # noqa: E402

from catdiff.metrics.report import finish, write_result  # noqa: E402

DEFAULT = [sys.executable, "-m", "catdiff", "train", "configs/mdlm/kjv.yaml", "--force"]
ACCEPT_GB = 2.4


# Linux carries a process's peak RSS across fork and exec: a child forked from a large process
# reports at least its parent's peak. So the command is started by a bare interpreter (this
# launcher, ~10 MB), which waits for it and writes its rusage to the file named first.
LAUNCHER = """import json, os, subprocess, sys
try:
    p = subprocess.Popen(sys.argv[2:])
except OSError as e:
    sys.exit(f"memory.py: cannot run {sys.argv[2]!r}: {e.strerror}")
_, status, ru = os.wait4(p.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"status": os.waitstatus_to_exitcode(status), "maxrss_kib": ru.ru_maxrss,
               "user_s": ru.ru_utime, "system_s": ru.ru_stime}, f)
"""


def peak_rss(command: list[str]) -> dict:
    """Run `command` to its end; its exit status, wall seconds and peak RSS (bytes; Linux reports
    ru_maxrss in KiB) — of the largest process in its tree that was waited for, as `time -v`."""
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "rusage.json"
        subprocess.run([sys.executable, "-S", "-c", LAUNCHER, str(report), *command], check=False)
        if not report.is_file():  # the launcher said why on stderr
            raise SystemExit(2)
        r = json.loads(report.read_text())
    kib = r["maxrss_kib"]
    return {"exit_status": r["status"], "wall_s": time.time() - t0, "peak_rss_bytes": kib * 1024,
            "peak_rss_gb": kib * 1024 / 1e9, "user_s": r["user_s"], "system_s": r["system_s"]}


def markdown(res: dict) -> str:
    r = res["run"]
    verdict = "met" if r["peak_rss_gb"] <= ACCEPT_GB else "missed"
    return "\n".join([
        "# Peak resident memory", "",
        f"Measured command: `{res['measured']}`", "",
        "| exit status | wall s | CPU s (user + system) | peak RSS (GB) | bar (issue 18) |",
        "|---:|---:|---:|---:|---|",
        f"| {r['exit_status']} | {r['wall_s']:.0f} | {r['user_s'] + r['system_s']:.0f} | {r['peak_rss_gb']:.2f} | "
        f"≤ {ACCEPT_GB} GB: {verdict} |", "",
        "Peak RSS = ru_maxrss of the finished child (what GNU `time -v` prints as Maximum resident set size); "
        "1 GB = 10⁹ bytes.", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="benchmarks/results/memory")
    p.add_argument("--tag", default="", help="suffix of the result files")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command to measure, after -- (default: "
                   "catdiff train configs/mdlm/kjv.yaml --force)")
    args = p.parse_args(argv)
    command = [c for i, c in enumerate(args.command) if i or c != "--"] or DEFAULT
    env = start(args)
    run = peak_rss(command)
    if run["exit_status"] != 0:
        print(f"memory.py: the measured command exited with status {run['exit_status']}; nothing written",
              file=sys.stderr)
        return run["exit_status"]
    res = {"measured": " ".join(command), "run": run, "accept_gb": ACCEPT_GB,
           "self_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    env = finish(env)
    path = write_result(args.out, "memory" + (f"_{args.tag}" if args.tag else ""), env, res, markdown(res))
    print(json.dumps(run), f"\nwrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
