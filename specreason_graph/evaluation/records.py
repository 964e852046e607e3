"""The records format of a benchmark's results folder, and the one module that reads and writes it.

    OUT/runs.jsonl   one JSON object per finished (or failed) run, appended as it finishes; the
                     last line of a (mode, problem, sample) key wins, a torn last line is skipped
    OUT/meta.json    the settings the runs were made with, the machine, and one segment per
                     invocation (when, at what concurrency, the servers' counters before/after)
    OUT/.lock        held (``flock``) by the one process writing to the folder; see :func:`locked`

The runner writes through :class:`RunsFile` and :func:`write_meta`; the report and calibration read
through :func:`load_records` and :func:`read_meta`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

RUNS_FILE = "runs.jsonl"
META_FILE = "meta.json"
LOCK_FILE = ".lock"

Record = dict[str, Any]


def key(mode: str, problem_id: str, sample: int) -> str:
    return f"{mode}|{problem_id}|{sample}"


def load_records(out: Path) -> dict[str, Record]:
    """The last record of every (mode, problem, sample) in ``out/runs.jsonl``; a torn last line
    (the process was killed while writing) is skipped."""
    path = Path(out) / RUNS_FILE
    records: dict[str, Record] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "key" in record:
            records[record["key"]] = record
    return records


def read_meta(out: Path) -> dict[str, Any]:
    """``out/meta.json``, or {} when the folder has none yet."""
    path = Path(out) / META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_meta(out: Path, meta: dict[str, Any]) -> None:
    """Replace ``out/meta.json`` atomically (a reader never sees half a file)."""
    path = Path(out) / META_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


class RunsFile:
    """``out/runs.jsonl`` (or another JSONL file of the folder) opened for appending, one flushed
    line per record. A torn last line left by a killed writer is ended first, so the next record
    starts on a line of its own."""

    def __init__(self, out: Path, name: str = RUNS_FILE):
        self.path = Path(out) / name

    def __enter__(self) -> RunsFile:
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as tail:
                tail.seek(-1, 2)
                torn = tail.read(1) != b"\n"
        self._file = self.path.open("a", encoding="utf-8")
        if torn:
            self._file.write("\n")
        return self

    def append(self, record: Record) -> None:
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._file.close()


class FolderBusy(ValueError):
    """Another process is writing to this results folder."""


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``out/.lock`` while writing to ``out``; raise :class:`FolderBusy` (naming the process
    that holds it) instead of waiting. The kernel drops the lock when its process dies, so a
    killed benchmark never leaves the folder locked."""
    path = Path(out) / LOCK_FILE
    with path.open("a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise FolderBusy(f"{out} is being written by {holder}; wait for it to finish, or give "
                             "another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {platform.node()} since {now()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def machine() -> dict[str, Any]:
    """What the runs were measured on."""
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "memory_gib": memory,
            "platform": platform.platform(), "python": platform.python_version()}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
