"""Killing a worker process mid-run, as a crash would: for the tests that resume a run from its
checkpoints (SQLite on the real servers, Postgres on the stand-in)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any


def events_then_kill(worker: subprocess.Popen[str], count: int, seconds: float) -> list[Any]:
    """Read ``count`` JSON lines (the run's custom stream events) from ``worker``'s stdout, then
    SIGKILL its whole process group: no clean-up, as when a process is killed."""
    seen: list[Any] = []
    deadline = time.monotonic() + seconds
    try:
        while len(seen) < count:
            line = worker.stdout.readline() if worker.stdout else ""
            if not line:
                errors = worker.stderr.read()[-2000:] if worker.stderr else ""
                raise AssertionError(f"the worker ended after {len(seen)} of {count} events "
                                     f"(exit {worker.poll()}) {errors}")
            seen.append(json.loads(line))
            assert time.monotonic() < deadline, f"{count} events took over {seconds} s"
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    return seen
