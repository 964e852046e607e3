"""The unit tier: scripted models and in-process stand-ins only (tests/conftest.py).

Every unit test runs with no SPECREASON_* variable of the developer's shell, and with a guard that
makes the tier mean its name: starting a process fails the test, and a connection reaches only a
socket this test process bound itself (an in-process stand-in server, or a port bound and closed
to stand for a server that is gone); any other loopback port answers "connection refused", as if
nothing listened there (a vLLM server a developer left running is never reached), and any other
host fails the test.

The graph-logic tests are written against ``Context()``: the paper's judge (score, greedy,
threshold 7); ``test_context_defaults.py`` checks it, and the CPU pair's profile
(``Context.for_servers("cpu")``)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import platform
import socket
import subprocess
import threading

import pytest


@pytest.fixture(params=["sync", "async"])
def both_paths(request, monkeypatch):
    """Run a module's tests once as written (``invoke``/``stream``) and once with every graph call
    made through ``ainvoke``/``astream`` on an event loop: the async path, which must send every
    model call with ``ainvoke`` on the loop's own thread (no thread pool), as a test then checks
    on every scripted model it created."""
    if request.param == "sync":
        yield "sync"
        return
    from langgraph.pregel import Pregel

    from tests.fakes import ScriptedModel

    created: list[ScriptedModel] = []
    init = ScriptedModel.model_post_init

    def recording_init(self, context):
        created.append(self)
        init(self, context)

    def invoke(self, *args, **kwargs):
        return asyncio.run(self.ainvoke(*args, **kwargs))

    def stream(self, *args, **kwargs):
        async def collect():
            return [chunk async for chunk in self.astream(*args, **kwargs)]
        yield from asyncio.run(collect())

    monkeypatch.setattr(ScriptedModel, "model_post_init", recording_init)
    monkeypatch.setattr(Pregel, "invoke", invoke)
    monkeypatch.setattr(Pregel, "stream", stream)
    yield "async"
    here = threading.get_ident()
    for model in created:
        assert model.async_calls == len(model.calls), "a model call went through invoke"
        assert set(model.threads) <= {here}, "a model call ran on another thread"


@pytest.fixture(autouse=True)
def _no_specreason_env(monkeypatch):
    """A SPECREASON_* variable in the developer's shell must not change a unit test."""
    for name in list(os.environ):
        if name.startswith("SPECREASON_"):
            monkeypatch.delenv(name)


class OutsideTheTier(AssertionError):
    """A unit test reached outside its process."""


platform.platform()  # the standard library asks `uname -p` once and keeps it: before the guard

_bound: set[int] = set()
"""Loopback ports this test process bound (its stand-in servers, its 'closed' ports)."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _within_the_process(monkeypatch):
    """No subprocess, no connection out of the process (see the module's docstring)."""
    bind, connect, connect_ex = socket.socket.bind, socket.socket.connect, socket.socket.connect_ex

    def recording_bind(self, address):
        bind(self, address)
        if self.family in (socket.AF_INET, socket.AF_INET6):
            _bound.add(self.getsockname()[1])

    def check(address) -> bool:
        """True: let it through; False: refuse as an unused port would."""
        if not isinstance(address, tuple):
            return True  # a Unix socket of the process (asyncio's self-pipe and the like)
        host, port = address[0], address[1]
        if not _loopback(str(host)):
            raise OutsideTheTier(f"a unit test connected to {host}:{port}: unit tests stay in "
                                 "their process (tests/integration_tests for real servers)")
        return port in _bound

    def guarded_connect(self, address):
        if not check(address):
            raise ConnectionRefusedError(111, "Connection refused (unit tier: not a socket of "
                                              "this process)")
        return connect(self, address)

    def guarded_connect_ex(self, address):
        return connect_ex(self, address) if check(address) else 111

    def no_process(self, args, *rest, **kwargs):
        raise OutsideTheTier(f"a unit test started a process ({args!r}): tests that need one "
                             "belong in tests/system_tests or tests/serverenv_tests")

    monkeypatch.setattr(socket.socket, "bind", recording_bind)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(os, "fork", lambda: (_ for _ in ()).throw(
        OutsideTheTier("a unit test forked the process")))
