"""The real thing: the two CPU vLLM servers with the real Qwen2.5-Coder models.

The session fixture uses servers that already answer at the launcher's addresses (``.ci/run`` and
``specreason serve start`` bring them up), and otherwise starts them itself and stops them at the
end. Both servers take ~16 of the machine's 24 GiB: run the suite in one process.
"""

from __future__ import annotations

import os
import re
import urllib.request

import pytest

from specreason_graph.context import PAPER_JUDGE
from specreason_graph.serving import config, launcher

RUNNING_BEFORE: set[str] = set()
"""The roles whose servers answered before the session fixture started any: a test that has to
stop them (test_reasoning_template.py) starts those again, and only those."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that swap a server for another (the speculating base server does not fit in memory
    beside the plain one) run last, so no other test waits for the plain server to come back;
    among them, by the marker's ``order`` (the reasoning pair, which replaces both, goes last)."""
    def key(item: pytest.Item) -> tuple[bool, int]:
        marker = item.get_closest_marker("swaps_servers")
        return marker is not None, marker.kwargs.get("order", 0) if marker else 0
    items.sort(key=key)


@pytest.fixture(scope="session")
def local_servers() -> config.ServerSet:
    servers = config.load_config(os.environ.get("SPECREASON_TEST_SERVERS", "cpu"))
    RUNNING_BEFORE.update(s.role for s in servers.servers if launcher.healthy(s))
    with launcher.launch(servers) as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> str:
    """A PostgreSQL server for the session (tests/postgres.py); its connection string."""
    from tests.postgres import PostgresServer

    with PostgresServer() as server:
        yield server.dsn


@pytest.fixture
def context_of(local_servers):
    """Context for the local servers; small budgets keep the 3-tok/s base model's share short.
    The paper's judge unless a test names another (servers/cpu.toml's [graph] may choose another
    judge for the CPU pair: the default is tested on its own)."""
    def make(**settings):
        return local_servers.context(**{"seed": 0, **PAPER_JUDGE, **settings})
    return make


def metric(spec: config.ServerSpec, name: str) -> float:
    """Sum of a Prometheus counter from the server's /metrics."""
    with urllib.request.urlopen(f"{spec.origin}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = re.compile(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+-]+)$", re.M)
    values = [float(v) for v in pattern.findall(text)]
    if not values:
        raise AssertionError(f"{name} not in {spec.origin}/metrics")
    return sum(values)
