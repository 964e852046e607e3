"""The vLLM server launcher's process handling (``start_one``/``stop_one``/``start``/``launch``,
``specreason_graph.serving.launcher``) against a stand-in server: a fake
``vllm.entrypoints.openai.api_server`` module written into ``tmp_path`` and put first on the child's
``PYTHONPATH``, so ``python -m vllm.entrypoints.openai.api_server --port N`` runs it. It answers
``/health`` on 127.0.0.1 at a free port. Real processes, process groups and signals, no vLLM: the
system tier. The configs themselves are tests/unit_tests/test_server_configs.py.

Every test here runs with ``SPECREASON_HOME`` pointing into ``tmp_path``: pid files and logs of the
servers that may be running on this machine (ports 8101/8102) are never read or touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from specreason_graph.serving import launcher
from specreason_graph.serving.config import ENTRYPOINT, ServerError, ServerSet, ServerSpec
from specreason_graph.serving.launcher import launch, start, start_one, stop, stop_one


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own SPECREASON_HOME: never the real pid files of running servers."""
    home = tmp_path / "home"
    monkeypatch.setenv("SPECREASON_HOME", str(home))
    return home


def _write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- processes with a stand-in server ----------------------------------------------------------

FAKE_SERVER = r'''
"""Stand-in for vllm.entrypoints.openai.api_server: /health answers 503, then 200 after a delay."""
import argparse, json, os, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--host", default="127.0.0.1")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--served-model-name", default="fake")
args, rest = parser.parse_known_args()
print("fake vllm argv:", json.dumps(sys.argv[1:]), flush=True)

mode = os.environ.get("FAKE_MODE", "ok")
delay = float(os.environ.get("FAKE_DELAY", "0.3"))
if mode == "crash":
    time.sleep(delay)
    print("RuntimeError: fake engine failed to start (no memory)", flush=True)
    sys.exit(3)

# a worker in the server's process group (as vLLM's engine core is): stop_one must end it too
# (named as vLLM's own are, VLLM::…, so a stop finds it even after the server itself died)
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "VLLM::Worker"])
if os.environ.get("FAKE_WORKER_PID_FILE"):
    with open(os.environ["FAKE_WORKER_PID_FILE"], "w") as f:
        f.write(str(worker.pid))
ready_at = time.monotonic() + delay

if mode == "die":  # up for FAKE_LIFE seconds, then the whole server is gone (a kill for memory)
    import threading
    def _die():
        time.sleep(delay + float(os.environ.get("FAKE_LIFE", "1")))
        worker.kill()
        os._exit(9)
    threading.Thread(target=_die, daemon=True).start()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            ok = mode != "never" and time.monotonic() >= ready_at
            self.send_response(200 if ok else 503)
            self.end_headers()
        elif self.path == "/v1/models":
            body = json.dumps({"data": [{"id": args.served_model_name}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()
    def log_message(self, *a):
        pass

ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running (a zombie child of ours counts as gone)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


class Fakes:
    """Builds ServerSpecs that run the stand-in server; ends whatever was left running."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.home = home
        pkg = root / "fakepath" / "vllm" / "entrypoints" / "openai"
        pkg.mkdir(parents=True)
        for d in (pkg, pkg.parent, pkg.parent.parent):
            (d / "__init__.py").write_text("")
        (pkg / "api_server.py").write_text(FAKE_SERVER)
        self.pythonpath = str(root / "fakepath")
        self.worker_files: list[Path] = []

    def spec(self, role: str = "base", *, mode: str = "ok", delay: float = 0.3,
             health_timeout: float = 30.0, port: int | None = None, life: float = 1.0,
             memory_gib: float | None = None) -> ServerSpec:
        port = port or free_port()
        worker_file = self.root / f"worker-{role}-{port}.pid"
        self.worker_files.append(worker_file)
        return ServerSpec(
            role=role, model="/nowhere/model", served_model_name=f"fake-{role}",
            host="127.0.0.1", port=port, python=sys.executable,
            env={"PYTHONPATH": self.pythonpath, "FAKE_MODE": mode, "FAKE_DELAY": str(delay),
                 "FAKE_WORKER_PID_FILE": str(worker_file), "FAKE_LIFE": str(life)},
            options={"dtype": "float32", "enforce-eager": True},
            health_timeout=health_timeout, memory_gib=memory_gib,
        )

    def worker_pid(self, spec: ServerSpec) -> int:
        path = self.root / f"worker-{spec.role}-{spec.port}.pid"
        deadline = time.monotonic() + 10
        while not path.exists() or not path.read_text():
            assert time.monotonic() < deadline, "the stand-in never wrote its worker's pid"
            time.sleep(0.05)
        return int(path.read_text())

    def cleanup(self) -> None:
        """Kill, by pid, the stand-ins this test started and that are still running."""
        pids = []
        run = self.home / "run"
        if run.is_dir():
            for f in run.glob("*.pid"):
                with contextlib.suppress(ValueError):
                    pids.append(int(f.read_text()))
        for f in self.worker_files:
            if f.exists() and f.read_text():
                pids.append(int(f.read_text()))
        for pid in pids:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5)


@pytest.fixture
def fakes(tmp_path, isolated_home):
    f = Fakes(tmp_path, isolated_home)
    yield f
    f.cleanup()


def quiet(*_args):
    pass


def test_fake_module_is_found_through_spec_env(fakes):
    spec = fakes.spec()
    assert spec.argv()[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert spec.environment()["PYTHONPATH"] == fakes.pythonpath


def test_start_one_waits_for_health_writes_pid_and_log(fakes, isolated_home):
    spec = fakes.spec(delay=0.5)
    messages: list[str] = []
    assert not launcher.healthy(spec)
    pid = start_one(spec, echo=messages.append)
    try:
        assert isinstance(pid, int)
        assert launcher.healthy(spec)  # it returned only once /health said 200
        pid_file = isolated_home / "run" / f"base-{spec.port}.pid"
        assert pid_file.read_text() == str(pid)
        log = isolated_home / "logs" / f"base-{spec.port}.log"
        assert launcher.log_path(spec) == log
        text = log.read_text()
        assert "fake vllm argv:" in text
        logged = json.loads(text.split("fake vllm argv:", 1)[1].splitlines()[0])
        assert logged == spec.argv()[3:]
        assert os.getpgid(pid) == pid  # its own process group, its own session
        assert os.getsid(pid) == pid
        assert any("starting fake-base" in m for m in messages)
        assert any("ready" in m for m in messages)
        assert launcher.served_models(spec) == ["fake-base"]
        row = launcher.status(ServerSet("t", (spec,)))[0]
        assert row["healthy"] and row["served"] == ["fake-base"] and row["log"] == str(log)
    finally:
        stop_one(spec)


def test_second_start_one_on_a_healthy_server_returns_none(fakes, isolated_home):
    spec = fakes.spec()
    pid = start_one(spec, echo=quiet)
    try:
        messages: list[str] = []
        assert start_one(spec, echo=messages.append) is None
        assert any("already up" in m for m in messages)
        # the pid file still names the first process, which still runs
        assert (isolated_home / "run" / f"base-{spec.port}.pid").read_text() == str(pid)
        assert _alive(pid)
    finally:
        stop_one(spec)


def test_stop_one_ends_the_process_group_and_removes_the_pid_file(fakes, isolated_home):
    spec = fakes.spec()
    pid = start_one(spec, echo=quiet)
    worker = fakes.worker_pid(spec)
    assert os.getpgid(worker) == pid and _alive(worker)
    messages: list[str] = []
    assert stop_one(spec, echo=messages.append) is True
    assert not _alive(pid)
    assert _wait_gone(worker), "the server's worker survived stop_one"
    assert not (isolated_home / "run" / f"base-{spec.port}.pid").exists()
    assert not launcher.healthy(spec)
    assert any(f"pid {pid}" in m for m in messages)
    # nothing left to stop
    assert stop_one(spec) is False


def test_stop_one_without_pid_file_or_with_a_stale_one(fakes, isolated_home):
    spec = fakes.spec()
    assert stop_one(spec) is False
    pid_file = isolated_home / "run" / f"base-{spec.port}.pid"
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text("garbage")
    assert stop_one(spec) is False
    # a pid file whose process is gone: cleaned up, nothing signalled (no pid reaches pid_max),
    # and nothing was stopped
    gone = int(Path("/proc/sys/kernel/pid_max").read_text())
    pid_file.write_text(str(gone))
    assert stop_one(spec) is False
    assert not pid_file.exists()


def test_stop_one_kills_a_server_that_ignores_sigterm(fakes, isolated_home):
    spec = fakes.spec()
    # Its command line names the entrypoint and port, as a real server's does (stop_one checks).
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
         " print('ready', flush=True); time.sleep(600)", ENTRYPOINT, str(spec.port)],
        start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout.readline().strip() == "ready"  # the handler is in place
        pid_file = isolated_home / "run" / f"base-{spec.port}.pid"
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(stubborn.pid))
        started = time.monotonic()
        assert stop_one(spec, timeout=0.5) is True
        assert 0.5 <= time.monotonic() - started < 5  # gave SIGTERM its time, then SIGKILL
        assert _wait_gone(stubborn.pid, 5)  # (stop_one may have reaped it: Popen cannot tell)
        assert not pid_file.exists()
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
            stubborn.wait()


def test_a_server_that_exits_while_starting_raises_with_the_log_tail(fakes, isolated_home):
    spec = fakes.spec(mode="crash", delay=0.2)
    with pytest.raises(ServerError) as info:
        start_one(spec, echo=quiet)
    message = str(info.value)
    assert "base server exited with code 3 while starting" in message
    assert "fake engine failed to start (no memory)" in message  # the log's tail
    assert str(isolated_home / "logs" / f"base-{spec.port}.log") in message
    assert not (isolated_home / "run" / f"base-{spec.port}.pid").exists()


def test_a_server_never_healthy_is_stopped_after_its_health_timeout(fakes, isolated_home):
    spec = fakes.spec(mode="never", health_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(ServerError, match="not healthy after 2 s") as info:
        start_one(spec, echo=quiet)
    assert time.monotonic() - started < 15
    assert str(launcher.log_path(spec)) in str(info.value)
    assert not (isolated_home / "run" / f"base-{spec.port}.pid").exists()
    assert _wait_gone(fakes.worker_pid(spec)), "the timed-out server's worker survived"
    assert not launcher.healthy(spec)


def test_missing_server_environment_is_reported_before_starting(fakes, tmp_path):
    spec = ServerSpec(role="small", model="m", served_model_name="n", host="127.0.0.1",
                      port=free_port(), python=str(tmp_path / "no-venv" / "bin" / "python"))
    with pytest.raises(ServerError, match="no server environment at .*no-venv"):
        start_one(spec, echo=quiet)
    assert not launcher.log_path(spec).exists()


def test_logs_append_across_starts(fakes):
    spec = fakes.spec()
    start_one(spec, echo=quiet)
    stop_one(spec)
    start_one(spec, echo=quiet)
    stop_one(spec)
    assert launcher.log_path(spec).read_text().count("fake vllm argv:") == 2


def test_start_stops_the_ones_it_started_when_a_later_one_fails(fakes, isolated_home):
    base = fakes.spec("base")
    small = fakes.spec("small", mode="crash")
    with pytest.raises(ServerError, match="small server exited"):
        start(ServerSet("t", (base, small)), echo=quiet)
    assert not launcher.healthy(base)
    assert _wait_gone(fakes.worker_pid(base))
    assert list((isolated_home / "run").glob("*.pid")) == []


def test_start_names_a_server_that_died_after_it_came_up(fakes, isolated_home):
    """The base server is up, then killed while the small one loads (as the kernel did for
    memory): start() must not report both up."""
    base = fakes.spec("base", mode="die", life=1.5)  # health is polled once a second
    small = fakes.spec("small", delay=3.0)
    with pytest.raises(ServerError) as info:
        start(ServerSet("t", (base, small)), echo=quiet)
    message = str(info.value)
    assert f"the base server at {base.url} was up and no longer answers" in message
    assert "its processes are gone" in message
    assert not launcher.healthy(small)  # the ones it started are stopped again
    assert list((isolated_home / "run").glob("*.pid")) == []


def test_a_server_that_does_not_fit_in_memory_is_not_started(fakes, monkeypatch):
    spec = fakes.spec("base", memory_gib=16)
    monkeypatch.setattr(launcher, "available_gib", lambda: 3.5)
    with pytest.raises(ServerError, match=r"3.5 GiB of memory available, and this server takes "
                                          r"about 16 GiB while it starts: not started"):
        start(ServerSet("t", (spec,)), echo=quiet)
    assert launcher.server_pids(spec) == []
    monkeypatch.setattr(launcher, "available_gib", lambda: 20.0)
    assert start(ServerSet("t", (spec,)), echo=quiet) == [spec]
    stop_one(spec)


def test_stop_one_finds_a_server_whose_pid_file_is_gone(fakes, isolated_home):
    spec = fakes.spec()
    pid = start_one(spec, echo=quiet)
    (isolated_home / "run" / f"base-{spec.port}.pid").unlink()  # a failed start removed it
    assert launcher.server_pids(spec) == [pid]
    assert stop_one(spec) is True
    assert _wait_gone(pid) and _wait_gone(fakes.worker_pid(spec))


def test_stop_one_ends_the_orphans_of_a_server_that_died(fakes, isolated_home):
    spec = fakes.spec()
    pid = start_one(spec, echo=quiet)
    worker = fakes.worker_pid(spec)
    os.kill(pid, signal.SIGKILL)  # the API server is gone; its engine worker lives on
    assert _wait_gone(pid) and _alive(worker)
    assert stop_one(spec) is True
    assert _wait_gone(worker), "the orphaned worker of a dead server survived stop_one"


def test_start_one_waits_for_a_server_another_command_is_starting(fakes, isolated_home):
    spec = fakes.spec(delay=1.5)
    first = subprocess.Popen(spec.argv(), env=spec.environment(), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not launcher.server_pids(spec):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        messages: list[str] = []
        assert start_one(spec, echo=messages.append) is None  # waited, did not start a second
        assert launcher.healthy(spec) and launcher.server_pids(spec) == [first.pid]
        assert "already starting" in messages[0]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def test_stop_returns_what_still_answers(fakes):
    """serve stop's exit status: a server on the port that the launcher cannot find (not started
    with the entrypoint's command line) is left up and returned."""
    other = _Healthy()
    try:
        spec = fakes.spec(port=other.port)
        assert stop(ServerSet("t", (spec,)), echo=quiet) == [spec]
    finally:
        other.close()


class _Healthy:
    """An in-process server that is 'already up' (not started by the launcher), serving ``models``
    (None: no /v1/models, not an OpenAI server; a number: that status to /v1/models)."""

    def __init__(self, models: tuple[str, ...] | list[str] | int | None = ("fake-base",)):
        class H(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/v1/models" and models is not None:
                    code = models if isinstance(models, int) else 200
                    body = json.dumps({"data": [{"id": m} for m in models]}
                                      if code == 200 else {"error": "no"}).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_response(200 if self.path == "/health" else 404)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_launch_stops_what_it_started(fakes, isolated_home):
    s = ServerSet("t", (fakes.spec("base"), fakes.spec("small")))
    with launch(s, echo=quiet) as up:
        assert up is s
        assert all(launcher.healthy(x) for x in s.servers)
        pids = [int((isolated_home / "run" / f"{x.role}-{x.port}.pid").read_text())
                for x in s.servers]
    assert all(not _alive(p) for p in pids)
    assert not any(launcher.healthy(x) for x in s.servers)
    assert list((isolated_home / "run").glob("*.pid")) == []


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()],
                         ids=["error", "ctrl-c"])
def test_launch_stops_what_it_started_when_the_body_raises(fakes, isolated_home, exc):
    s = ServerSet("t", (fakes.spec("base"), fakes.spec("small")))
    with pytest.raises(type(exc)), launch(s, echo=quiet):
        workers = [fakes.worker_pid(x) for x in s.servers]
        raise exc
    assert not any(launcher.healthy(x) for x in s.servers)
    assert all(_wait_gone(w) for w in workers)
    assert list((isolated_home / "run").glob("*.pid")) == []


def test_launch_leaves_servers_that_were_already_up(fakes, isolated_home):
    already = _Healthy()
    try:
        base = fakes.spec("base", port=already.port)
        small = fakes.spec("small")
        with pytest.raises(RuntimeError), launch(ServerSet("t", (base, small)), echo=quiet):
            raise RuntimeError("boom")
        assert launcher.healthy(base)  # not ours: left running
        assert not launcher.healthy(small)
        assert not (isolated_home / "run" / f"base-{base.port}.pid").exists()
    finally:
        already.close()


def test_launch_by_config_path(fakes, tmp_path, isolated_home):
    """launch() also takes a TOML path; the file's env reaches the stand-in."""
    ports = free_port(), free_port()
    path = _write(tmp_path, f"""
        [defaults]
        python = "{sys.executable}"
        host = "127.0.0.1"
        health_timeout = 30
        [defaults.env]
        PYTHONPATH = "{fakes.pythonpath}"
        FAKE_DELAY = "0.1"
        [defaults.options]
        dtype = "float32"
        [[server]]
        role = "base"
        model = "{{models}}/b"
        served-model-name = "b"
        port = {ports[0]}
        [[server]]
        role = "small"
        model = "{{models}}/s"
        served-model-name = "s"
        port = {ports[1]}
        """, "fake.toml")
    with launch(path, echo=quiet) as s:
        assert s.name == "fake"
        assert [launcher.served_models(x) for x in s.servers] == [["b"], ["s"]]
        ctx = s.context()
        assert ctx.base_url == f"http://127.0.0.1:{ports[0]}/v1" and ctx.small_model == "s"
        log = launcher.log_path(s.role("base")).read_text()
        assert f"{isolated_home}/models/b" in log
    assert not any(launcher.healthy(x) for x in s.servers)


@pytest.mark.parametrize(("models", "message"), [
    (["qwq-32b"], r"the server at http://127.0.0.1:\d+/v1 serves 'qwq-32b', not 'fake-base': "
                  r"another server holds port \d+"),
    ([], r"serves no model, not 'fake-base'"),
    (None, r"answered 404 to /v1/models: it is not a vLLM OpenAI server"),
])
def test_start_one_refuses_a_server_that_serves_another_model(fakes, models, message):
    """Something else answering /health on the port is not taken for this server."""
    other = _Healthy(models)
    try:
        spec = fakes.spec("base", port=other.port)
        with pytest.raises(ServerError, match=message):
            start_one(spec, echo=quiet)
        assert launcher.healthy(spec)  # not ours: left alone
    finally:
        other.close()


def test_start_one_takes_a_server_with_an_api_key_on_trust(fakes):
    other = _Healthy(401)
    try:
        messages: list[str] = []
        assert start_one(fakes.spec("base", port=other.port), echo=messages.append) is None
        assert any("already up" in m for m in messages)
    finally:
        other.close()


def test_ctrl_c_while_waiting_for_health_stops_the_server_being_started(fakes, isolated_home,
                                                                         monkeypatch):
    spec = fakes.spec(mode="never")

    real_sleep, calls = time.sleep, []

    def interrupted(seconds):  # Ctrl-C during the first wait for /health; later sleeps are real
        calls.append(seconds)
        if len(calls) == 1:
            fakes.worker_pid(spec)  # the stand-in is fully up (its worker running) when Ctrl-C lands
            raise KeyboardInterrupt
        real_sleep(seconds)

    with monkeypatch.context() as m:
        m.setattr(launcher, "time", SimpleNamespace(monotonic=time.monotonic, sleep=interrupted))
        with pytest.raises(KeyboardInterrupt), launch(ServerSet("t", (spec,)), echo=quiet):
            pytest.fail("the body must not run")
    worker = fakes.worker_pid(spec)
    assert _wait_gone(worker, 3), "the server being started was left running"
    assert not (isolated_home / "run" / f"base-{spec.port}.pid").exists()


def test_stop_one_leaves_a_recycled_pid_alone(fakes, isolated_home):
    """A pid file left by a killed session may name a pid that now runs something else."""
    spec = fakes.spec()
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                 start_new_session=True)
    try:
        pid_file = isolated_home / "run" / f"base-{spec.port}.pid"
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(str(bystander.pid))
        stop_one(spec, timeout=0.5)
        assert bystander.poll() is None, "stop_one signalled a process that is not our server"
        assert not pid_file.exists()
    finally:
        bystander.kill()
        bystander.wait()
