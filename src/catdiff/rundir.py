"""Guards a run folder: one training process at a time (an OS file lock, the holder's PID beside it),
and tells catdiff's entries from the user's so an earlier run can be moved aside without touching them.

It knows the names in a run folder, never what the files hold, configs or how training proceeds.
"""

from __future__ import annotations

import fnmatch
import os
import time
from contextlib import suppress
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import ConfigError, TrainingError

LOCK, PID = "train.lock", "train.pid"
REPLACED = "replaced-"  # folders of runs that --force set aside
# what catdiff writes in a run folder: training (config, dataset, log, checkpoints in today's and the
# earlier layout, TensorBoard, the folders of earlier stages) and the reports of eval/diagnose/sample
OWN = ("config.yaml", "dataset.json", "metrics.jsonl", "checkpoints", "checkpoint", "checkpoint.old", "tb",
       "stage[0-9]*", "eval.json", "eval.md", "diagnostics.json", "diagnostics.png", "samples_*.png",
       "wandb", "wandb_id.txt", "length.pt")


def contents(folder: str | Path) -> tuple[list[str], list[str]]:
    """(catdiff's entries, the user's entries) of `folder`, sorted; the lock, its PID file and the
    folders of replaced runs are neither. A missing folder is empty."""
    folder = Path(folder)
    if not folder.is_dir():
        return [], []
    own, other = [], []
    for name in sorted(os.listdir(folder)):
        if name in (LOCK, PID) or name.startswith(REPLACED):
            continue
        (own if any(fnmatch.fnmatchcase(name, pattern) for pattern in OWN) else other).append(name)
    return own, other


def set_aside(folder: str | Path, names: list[str]) -> Path:
    """Move `names` of `folder` into a new folder/replaced-<UTC time>/ by renaming: nothing is copied
    or deleted, and entries not named stay where they are."""
    folder = Path(folder)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest, n = folder / f"{REPLACED}{stamp}", 1
    while dest.exists():
        n += 1
        dest = folder / f"{REPLACED}{stamp}-{n}"
    dest.mkdir()
    for name in names:
        (folder / name).rename(dest / name)
    return dest


def check_usable(folder: str | Path) -> None:
    """ConfigError if `folder` is a regular file or lies under one (checked before anything is created)."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            if p.is_dir():
                return
            where = "is a file, not a folder" if p == folder else f"is under {p}, which is a file"
            raise ConfigError(f"train.out_dir {folder} {where}")


class RunLock:
    """Holds a run folder for one process from `acquire` to `release` (or a `with` block): an OS lock
    on folder/train.lock (released by the OS even after kill -9) and the PID in folder/train.pid. A
    second holder is refused at once, naming the first one's PID. Folders that `acquire` created are
    removed on release if nothing else was written in them."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._lock: FileLock | None = None
        self._created: list[Path] = []

    def acquire(self) -> None:
        check_usable(self.folder)
        self._created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        lock = FileLock(str(self.folder / LOCK), timeout=0)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        except Timeout:  # an OSError too: first
            raise TrainingError(f"train.out_dir {self.folder} is in use by another catdiff train "
                                f"(pid {self._holder()}); wait for it to end or choose another train.out_dir") from None
        except OSError as e:
            self._remove_created()
            raise ConfigError(f"cannot write in train.out_dir {self.folder} ({e.strerror or e})") from None
        self._lock = lock
        try:
            (self.folder / PID).write_text(f"{os.getpid()}\n")
        except OSError as e:
            self.release()
            raise ConfigError(f"cannot write in train.out_dir {self.folder} ({e.strerror or e})") from None

    def _holder(self) -> str:
        """The PID the holder wrote (it may be a moment behind its lock)."""
        for _ in range(40):
            with suppress(OSError, ValueError):
                return str(int((self.folder / PID).read_text()))
            time.sleep(0.05)
        return "unknown"

    def release(self) -> None:
        if self._lock is None:
            return
        for name in (PID, LOCK):  # removed while still held: the next holder makes new ones
            with suppress(OSError):
                (self.folder / name).unlink()
        self._lock.release()
        self._lock = None
        self._remove_created()

    def _remove_created(self) -> None:
        for p in self._created:  # deepest first; stops at the first folder something was written in
            try:
                p.rmdir()
            except OSError:
                break
        self._created = []

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
