"""benchmarks/studio_load.py at a small size, in the session's ``langgraph dev``: runs created at
once (SDK client) against the latency stand-in all succeed with every step, with the server's
blocking-call detector on and nothing logged by it (timings are the benchmark's, not asserted)."""

from __future__ import annotations

import pytest

from benchmarks import studio_load
from tests.system_tests.conftest import STUDIO_JOBS


def test_runs_at_once_inside_langgraph_dev_succeed_with_no_blocking_call(langgraph_dev):
    url, log = langgraph_dev
    row = studio_load.measure(runs=4, steps=3, latency=0.1, jobs=STUDIO_JOBS, log=log, server=url)
    assert row["statuses"] == ["success"] * 4
    assert row["steps"] == [3] * 4
    assert row["blocking_calls_logged"] == []
    assert row["jobs_per_worker"] == 4 and row["ideal_s"] == pytest.approx(0.6)
