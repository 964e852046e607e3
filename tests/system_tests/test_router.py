"""Replicas behind the real vllm-router, as processes: ``launcher.start``/``stop``, ``launch()`` and
``specreason serve status`` on a config written to ``tmp_path`` whose two replicas are stand-in
vLLM servers (a fake ``vllm.entrypoints.openai.api_server`` on the child's ``PYTHONPATH``, as in
test_launcher.py, serving tests/vllm_stub.py's canned replies with the replica's port in each
answer) and whose router is vllm-router 0.1.17 from ``$SPECREASON_HOME/vllm-router``
(servers/setup-cpu.sh builds it; this test fails without it). No model, no vLLM; a few seconds each.

Pid files and logs go to a ``SPECREASON_HOME`` in ``tmp_path``; only the router's interpreter is
taken from the real one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from specreason_graph import cli
from specreason_graph.serving import config, launcher
from specreason_graph.serving.config import RouterSpec, ServerSet, ServerSpec

ROOT = Path(__file__).resolve().parents[2]
ROUTER_PYTHON = config.home() / "vllm-router" / "bin" / "python"
"""The router's environment in the real SPECREASON_HOME (read before a test moves it)."""

REPLICA = r'''
"""Stand-in for vllm.entrypoints.openai.api_server: tests/vllm_stub.py's server on --port,
answering "replica <port>"."""
import argparse
from http.server import ThreadingHTTPServer

from tests.vllm_stub import VLLMStub

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--served-model-name", default="fake")
args, _ = parser.parse_known_args()
stub = VLLMStub(model=args.served_model_name, answer=f"replica {args.port}")
handler = stub.httpd.RequestHandlerClass
stub.httpd.server_close()
print("stand-in replica on port", args.port, flush=True)
ThreadingHTTPServer((args.host, args.port), handler).serve_forever()
'''


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SPECREASON_HOME", str(home))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(*_args):
    pass


@pytest.fixture
def routed(tmp_path, isolated_home):
    """A config of two stand-in replicas behind the real router (round robin, checking its
    replicas every second, dropping one after one failed check); everything left is stopped."""
    if not ROUTER_PYTHON.exists():
        pytest.fail(f"no vllm-router environment at {ROUTER_PYTHON}: `bash servers/setup-cpu.sh` "
                    "(make servers) builds it", pytrace=False)
    package = tmp_path / "fakepath" / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (package, package.parent, package.parent.parent):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(REPLICA)
    ports = [free_port() for _ in range(4)]
    path = tmp_path / "routed.toml"
    path.write_text(textwrap.dedent(f"""
        [defaults]
        python = "{sys.executable}"
        host = "127.0.0.1"
        health_timeout = 30
        [defaults.env]
        PYTHONPATH = "{tmp_path / 'fakepath'}{os.pathsep}{ROOT}"
        [defaults.options]
        dtype = "float32"

        [[server]]
        roles = ["base", "small"]
        model = "/nowhere/model"
        served-model-name = "stand-in"
        port = {ports[0]}
        memory_gib = 0.01
        replicas = [{{ port = {ports[1]} }}, {{ port = {ports[2]} }}]
        [server.router]
        policy = "round_robin"
        python = "{ROUTER_PYTHON}"
        [server.router.options]
        prometheus-port = {ports[3]}
        worker-startup-check-interval = 1
        health-check-interval-secs = 1
        health-failure-threshold = 1
        """))
    servers = config.load_config(path)
    yield servers
    launcher.stop(servers, echo=quiet)
    for pid_file in (isolated_home / "run").glob("*.pid"):  # a failed test's leftovers, by pid
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def _parts(servers: ServerSet) -> tuple[ServerSpec, ServerSpec, RouterSpec]:
    first, second, router = servers.servers
    assert isinstance(first, ServerSpec) and isinstance(second, ServerSpec)
    assert isinstance(router, RouterSpec)
    return first, second, router


def ask(url: str, text: str = "What is 1 + 1?", request_id: str | None = None) -> str:
    """One chat request to ``url`` (…/v1); the answer's text: ``replica <port>``."""
    body = json.dumps({"model": "stand-in", "messages": [{"role": "user", "content": text}],
                       "max_tokens": 8}).encode()
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    request = urllib.request.Request(f"{url}/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["choices"][0]["message"]["content"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.1)


def test_start_brings_up_replicas_then_the_router_and_stop_leaves_nothing(routed, isolated_home):
    first, second, router = _parts(routed)
    messages: list[str] = []
    assert launcher.start(routed, echo=messages.append) == list(routed.servers)
    starting = [m for m in messages if "starting" in m]
    assert [str(first.port) in starting[0], str(second.port) in starting[1]] == [True, True]
    assert starting[2].startswith(f"base+small: starting the router at {router.url} (round_robin")
    assert all(launcher.healthy(m) for m in routed.servers)
    assert launcher.router_workers(router) == {first.origin: True, second.origin: True}
    assert launcher.served_models(router) == ["stand-in"]  # passed on to a replica
    # the router renamed itself (vllm::router); the launcher still finds it by its port
    (pid,) = launcher.server_pids(router)
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"vllm::router")
    assert (isolated_home / "run" / f"base+small-router-{router.port}.pid").read_text() == str(pid)
    assert launcher.server_pids(first) != launcher.server_pids(second)
    # round robin: both replicas answer, through the one endpoint of both roles
    assert routed.context().base_url == routed.context().small_url == router.url
    answers = [ask(router.url, f"question {i}") for i in range(4)]
    assert sorted(answers) == sorted([f"replica {first.port}", f"replica {second.port}"] * 2)
    # started again: everything is already up, nothing new
    messages.clear()
    assert launcher.start(routed, echo=messages.append) == []
    assert sum("already up" in m for m in messages) == 3
    pids = [p for m in routed.servers for p in launcher.server_pids(m)]
    messages.clear()
    assert launcher.stop(routed, echo=messages.append) == []
    assert [m.split(":")[0] for m in messages] == ["base+small"] * 3
    assert "router" in messages[0] and "server" in messages[1] and "server" in messages[2]
    assert all(not _alive(p) for p in pids)
    assert not any(launcher.healthy(m) or launcher.server_pids(m) for m in routed.servers)
    assert list((isolated_home / "run").glob("*.pid")) == []


def test_a_replica_killed_is_dropped_and_requests_still_succeed(routed, capsys):
    first, second, router = _parts(routed)
    with launcher.launch(routed, echo=quiet):
        assert cli.main(["serve", "status", "--config", routed.config]) == 0
        out = capsys.readouterr().out
        assert f"router  up  {router.url}  stand-in  2 of 2 replicas healthy" in out
        (victim,) = launcher.server_pids(second)
        os.killpg(os.getpgid(victim), signal.SIGKILL)
        _wait(lambda: not _alive(victim), 10, "the replica's end")
        # at once: a request the router sends to the dead replica is retried on the other
        assert {ask(router.url, f"right after {i}") for i in range(4)} == {f"replica {first.port}"}
        # within the health interval (1 s, one failed check) the router drops it
        _wait(lambda: launcher.router_workers(router) == {first.origin: True, second.origin: False},
              10, "the router dropping the dead replica")
        assert launcher.healthy(router)  # it serves while one replica is healthy
        assert {ask(router.url, f"later {i}") for i in range(4)} == {f"replica {first.port}"}
        assert cli.main(["serve", "status", "--config", routed.config]) == 1
        out = capsys.readouterr().out
        assert f"1 of 2 replicas healthy (down: {second.origin})" in out
        assert f"replica down  {second.url}" in out
        # the last replica gone: the router runs, but has nothing to serve with
        (last,) = launcher.server_pids(first)
        os.killpg(os.getpgid(last), signal.SIGKILL)
        _wait(lambda: launcher.router_workers(router) == {first.origin: False, second.origin: False},
              10, "the router dropping the last replica")
        assert not launcher.healthy(router)
        assert cli.main(["serve", "status", "--config", routed.config]) == 1
        out = capsys.readouterr().out
        assert f"router  up, no healthy replica left  {router.url}" in out
        row = launcher.status(routed)[2]
        assert (row["kind"], row["healthy"], row["alive"]) == ("router", False, True)
    assert not any(launcher.server_pids(m) for m in routed.servers)


def test_cache_aware_keeps_a_growing_prefix_on_one_replica(routed):
    """The reason for cache_aware: a run's calls extend one prefix and keep going where it was
    routed first. The router tokenizes each chat request by asking a replica (vLLM's
    ``/v1/chat/completions/render``, then ``/tokenize``: the stand-in has the latter) and matches
    the tokens against its tree of what it sent where; its metrics count the prefix hits."""
    first, second, router = _parts(routed)
    aware = ServerSet(routed.name, (first, second, dataclasses.replace(router, policy="cache_aware")))
    with launcher.launch(aware, echo=quiet):
        steps = ["Natalia sold clips to 48 of her friends in April, and then half as many in May. "]
        served = set()
        for i in range(6):
            served.add(ask(router.url, "".join(steps)))
            steps.append(f"Step {i}: she sold {48 // (i + 1)} clips. ")
        assert len(served) == 1, served
        with urllib.request.urlopen(router.metrics_url, timeout=10) as response:
            metrics = response.read().decode()
    hits = [line for line in metrics.splitlines()
            if line.startswith("vllm_router_prefix_routing_decisions_total")
            and 'outcome="prefix_hit"' in line]
    assert hits and float(hits[0].rsplit(" ", 1)[1]) >= 5, metrics


def test_a_router_whose_pid_file_is_gone_is_found_and_stopped(routed, isolated_home):
    _, _, router = _parts(routed)
    launcher.start(routed, echo=quiet)
    (isolated_home / "run" / f"base+small-router-{router.port}.pid").unlink()
    (pid,) = launcher.server_pids(router)
    assert launcher.stop_one(router) is True
    _wait(lambda: not _alive(pid), 10, "the router's end")
    assert launcher.healthy(routed.servers[0])  # its replicas are left to stop() / stop_one
