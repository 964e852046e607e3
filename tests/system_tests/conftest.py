"""The system tier: real processes around the graph.

- ``langgraph_dev``: one ``langgraph dev`` for the session (offline, blocking-call detector on, four
  runs at once), pointed at the local vLLM servers by environment; the Studio tests and the
  many-runs check share it, and the session fails if its log shows a blocking call.
- ``postgres``: a database of its own on the PostgreSQL server ``make postgres`` installs and starts
  (tests/postgres.sh), or the one ``SPECREASON_TEST_POSTGRES`` names. Without a server the tests
  are skipped with the command that starts one, except under CI, where a missing server fails them.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from benchmarks import studio_load
from tests.conftest import in_ci

STUDIO_PORT = int(os.environ.get("SPECREASON_TEST_STUDIO_PORT", "8123"))
STUDIO_JOBS = 4
"""Runs ``langgraph dev`` takes at once (its default is one): the many-runs check sends four."""
POSTGRES = os.environ.get("SPECREASON_TEST_POSTGRES",
                          "postgresql://postgres@127.0.0.1:8132/postgres?sslmode=disable")


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="session")
def langgraph_dev(server_pool, tmp_path_factory):
    """(URL, log path) of the session's ``langgraph dev``, its graphs pointed at the ``cpu`` servers."""
    assert _free(STUDIO_PORT), f"port {STUDIO_PORT} is taken; set SPECREASON_TEST_STUDIO_PORT"
    ctx = server_pool.use("cpu").context()
    env = {"SPECREASON_BASE_URL": ctx.base_url, "SPECREASON_BASE_MODEL": ctx.base_model,
           "SPECREASON_SMALL_URL": ctx.small_url, "SPECREASON_SMALL_MODEL": ctx.small_model}
    log = tmp_path_factory.mktemp("studio") / "langgraph-dev.log"
    with studio_load.langgraph_dev(STUDIO_JOBS, log, env, port=STUDIO_PORT) as url:
        yield url, log
    # the server's blocking-call detector was on: no run made a call it refuses
    blocking = [line for line in log.read_text(errors="replace").splitlines()
                if any(marker in line for marker in studio_load.BLOCKING)]
    assert not blocking, blocking[:3]


@pytest.fixture(scope="session")
def postgres():
    """A fresh database on the test PostgreSQL server, dropped at the end; its connection string."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        admin, why = None, (f"no PostgreSQL server at {POSTGRES.split('?')[0]}: `make postgres` "
                            f"installs and starts one ({str(exc).splitlines()[0]})")
    if admin is None:
        if in_ci():
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    name = f"specreason_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield psycopg.conninfo.make_conninfo(POSTGRES, dbname=name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
