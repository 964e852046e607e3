"""Shared by every test: the tiers, the order a whole run takes, and the servers the tiers above
unit share.

Tiers (a test's folder gives it its marker; ``make unit``/``serverenv``/``integration``/``system``
run one, ``make test`` all of them in one process, so the vLLM servers start once):

- ``unit`` (tests/unit_tests): scripted models and in-process stand-ins only. No subprocess, no
  server environment, nothing outside the test process (a stand-in HTTP server on 127.0.0.1 in a
  thread of the test process is fine); tests/unit_tests/conftest.py refuses anything else.
- ``serverenv`` (tests/serverenv_tests): runs code in vLLM's own environment (the plugin's kernels,
  vLLM's argument parser), no model, no server.
- ``integration`` (tests/integration_tests): the real vLLM servers with the real models.
- ``system`` (tests/system_tests): real processes around the graph: ``langgraph dev`` driven by the
  SDK, PostgreSQL (``make postgres``), the CLI and the launcher as processes.

The vLLM servers: a session-wide :class:`ServerPool` serves one configuration at a time
(servers/*.toml). A test names the one it needs with ``@pytest.mark.servers("cpu-plain")`` (default:
``cpu``, the CPU default); the whole run is ordered so each configuration is started once: unit,
serverenv, then the tests on ``cpu``, ``cpu-plain``, ``cpu-reasoning``, ``cpu-replicas``, in that
order.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest

VERSIONED = ("openai", "langchain-openai", "langchain-core", "langgraph", "langgraph-api",
             "langgraph-checkpoint-postgres", "httpx")

TIERS = {"unit_tests": "unit", "serverenv_tests": "serverenv", "integration_tests": "integration",
         "system_tests": "system"}
"""Folder → marker."""
ORDER = ("unit", "serverenv", "integration", "system")
PHASES = ("cpu", "cpu-plain", "cpu-reasoning", "cpu-replicas")
"""The server configurations the tests use, in the order a run takes them: the default first (most
tests), then the ones that replace part (the plain base server) or all of it (the reasoning pair,
the replicas behind a router: last, as their module kills a replica). None fits in memory beside
the default's speculating base server."""
DEFAULT_SERVERS = os.environ.get("SPECREASON_TEST_SERVERS", "cpu")


def in_ci() -> bool:
    """Under CI a missing service is a failure, never a skip (CI sets CI=true)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_report_header() -> str:
    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return "libraries: " + ", ".join(found)


def tier(item: pytest.Item) -> str:
    for part in Path(str(item.path)).parts:
        if part in TIERS:
            return TIERS[part]
    raise pytest.UsageError(f"{item.nodeid}: a test lives in one of the tiers' folders "
                            f"({', '.join(TIERS)})")


def phase(item: pytest.Item) -> str:
    """The server configuration ``item`` runs on (its ``servers`` marker, else the default)."""
    marker = item.get_closest_marker("servers")
    return marker.args[0] if marker else DEFAULT_SERVERS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets its tier's marker; the run goes tier by tier, and above serverenv
    configuration by configuration (stable: a module's tests keep their order)."""
    for item in items:
        item.add_marker(tier(item))
        name = phase(item)
        if name not in PHASES and name != DEFAULT_SERVERS:
            raise pytest.UsageError(f"{item.nodeid}: unknown servers({name!r}); add it to PHASES")

    def key(item: pytest.Item) -> tuple[int, int]:
        rank = ORDER.index(tier(item))
        if rank < ORDER.index("integration"):
            return rank, 0
        name = phase(item)
        return ORDER.index("integration"), PHASES.index(name) if name in PHASES else 0
    items.sort(key=key)


@pytest.fixture(scope="session")
def server_pool():
    """The vLLM servers of the session (tests/servers.py): started on first use, stopped at the
    end; servers that already answered when the session began are used and left as they were."""
    from tests.servers import ServerPool

    with ServerPool() as pool:
        yield pool


@pytest.fixture
def local_servers(server_pool, request):
    """The running servers of the configuration the test asked for (``servers`` marker, default
    ``cpu``), switched to if another one is up."""
    return server_pool.use(phase(request.node))


@pytest.fixture
def context_of(local_servers):
    """Context for the local servers; small budgets keep the 3-tok/s base model's share short.
    The paper's judge unless a test names another (servers/cpu.toml's [graph] may choose another
    judge for the CPU pair: the default is tested on its own)."""
    from specreason_graph.context import PAPER_JUDGE

    def make(**settings):
        return local_servers.context(**{"seed": 0, **PAPER_JUDGE, **settings})
    return make


_spent: dict[str, list[float]] = {}
"""Per tier: [seconds in setup, call and teardown, tests]."""


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    name = next((t for t in ORDER if t in report.keywords), None)
    if name is None:
        return
    spent = _spent.setdefault(name, [0.0, 0])
    spent[0] += report.duration
    if report.when == "call":
        spent[1] += 1


def pytest_terminal_summary(terminalreporter) -> None:
    """Each tier's cost, in every log (server starts count in the tier whose test waited for them)."""
    if _spent:
        terminalreporter.write_line("time per tier: " + ", ".join(
            f"{name} {_spent[name][0]:.0f} s ({_spent[name][1]} tests)"
            for name in ORDER if name in _spent))
