"""The integration tier: the real CPU vLLM servers with the real Qwen2.5-Coder models.

The servers come from the session's pool (tests/servers.py, the ``local_servers`` fixture of
tests/conftest.py): servers that already answer at the launcher's addresses are used (``specreason
serve start``), otherwise the session starts them and stops them at the end. Both servers take ~19
of the machine's 24 GiB: run the suite in one process.
"""

from __future__ import annotations

import re
import urllib.request

from specreason_graph.serving import config


def metric(spec: config.ServerSpec, name: str) -> float:
    """Sum of a Prometheus counter from the server's /metrics."""
    with urllib.request.urlopen(f"{spec.origin}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.M)
    values = [float(v) for v in pattern.findall(text)]
    if not values:
        raise AssertionError(f"{name} not in {spec.origin}/metrics")
    return sum(values)
