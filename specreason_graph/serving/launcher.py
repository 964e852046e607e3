"""Launch the vLLM OpenAI-compatible servers described by a TOML file in ``servers/``.

The graph never depends on this module: any two OpenAI-compatible endpoints work. It exists so that
one command brings up the CPU default pair here, and so a GPU host can be driven from a ready file.

- Servers start **one after the other** (the second sees the memory the first took) and each is
  waited for on ``/health``; a process that dies while starting is reported with its log's tail.
- Every command line is a list handed to ``subprocess`` (no shell); options come from the file.
- Logs and pid files live under ``$SPECREASON_HOME`` (default ``~/.cache/specreason-graph``), never
  in the repository.

From Python::

    with launch("cpu") as servers:           # starts what is not already up, stops it on exit
        graph.invoke({"problem": ...}, context=servers.context())

From the shell: ``specreason serve start|stop|status [--config cpu]``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from specreason_graph.serving.config import (
    ENTRYPOINT,
    ServerError,
    ServerSet,
    ServerSpec,
    home,
    load_config,
)

__all__ = ["ServerError", "ServerSet", "ServerSpec", "healthy", "launch", "load_config", "log_path",
           "served_models", "start", "start_one", "status", "stop", "stop_one"]


# --- processes ---------------------------------------------------------------------------------

def healthy(spec: ServerSpec, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{spec.origin}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def served_models(spec: ServerSpec, timeout: float = 5.0) -> list[str]:
    with urllib.request.urlopen(f"{spec.url}/models", timeout=timeout) as response:
        return [m["id"] for m in json.load(response)["data"]]


def _check_serves(spec: ServerSpec) -> None:
    """The server answering at ``spec``'s port serves ``spec``'s model, else a ServerError naming
    both: another process (another config's server, another model) holds the port."""
    try:
        served = served_models(spec)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # started with --api-key: it will not say without the key
            return
        raise ServerError(f"{spec.role}: something answers /health at {spec.origin} but answered "
                          f"{exc.code} to /v1/models: it is not a vLLM OpenAI server; stop it or "
                          "give this server another port") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ServerError(f"{spec.role}: something answers /health at {spec.origin} but not "
                          f"/v1/models ({exc}): it is not a vLLM OpenAI server; stop it or give "
                          "this server another port") from None
    if spec.served_model_name not in served:
        raise ServerError(f"{spec.role}: the server at {spec.url} serves "
                          f"{', '.join(map(repr, served)) or 'no model'}, not "
                          f"{spec.served_model_name!r}: another server holds port {spec.port} "
                          "(`specreason serve stop --config ...` for the config that started it)")


def _run_dir() -> Path:
    path = home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(spec: ServerSpec) -> Path:
    path = home() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{spec.role}-{spec.port}.log"


def _pid_path(spec: ServerSpec) -> Path:
    return _run_dir() / f"{spec.role}-{spec.port}.pid"


def _ours(pid: int, spec: ServerSpec) -> bool:
    """The pid still runs this spec's server (not a recycled pid after a reboot or a kill -9)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc: trust the pid file
    return ENTRYPOINT.encode() in cmdline and str(spec.port).encode() in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_one(spec: ServerSpec, *, echo=print) -> int | None:
    """Start ``spec`` unless it already answers; wait for ``/health``. Returns the new pid or None."""
    if healthy(spec):
        _check_serves(spec)
        echo(f"{spec.role}: already up at {spec.url}")
        return None
    if not Path(spec.python).exists() and os.sep in spec.python:
        raise ServerError(f"{spec.role}: no server environment at {spec.python}; "
                          "run `bash servers/setup-cpu.sh` first")
    log = log_path(spec)
    echo(f"{spec.role}: starting {spec.served_model_name} at {spec.url} (log: {log})")
    with open(log, "ab") as sink:
        process = subprocess.Popen(spec.argv(), env=spec.environment(), stdout=sink,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    _pid_path(spec).write_text(str(process.pid))
    started = time.monotonic()
    try:
        while not healthy(spec):
            if process.poll() is not None:
                _pid_path(spec).unlink(missing_ok=True)
                raise ServerError(f"{spec.role} server exited with code {process.returncode} "
                                  f"while starting; last lines of {log}:\n{_tail(log)}")
            if time.monotonic() - started > spec.health_timeout:
                raise ServerError(f"{spec.role} server not healthy after "
                                  f"{spec.health_timeout:.0f} s; see {log}")
            time.sleep(1.0)
        _check_serves(spec)  # ours, not another process that took the port meanwhile
    except BaseException:  # also Ctrl-C: the server is in its own session and would outlive us
        stop_one(spec)
        raise
    echo(f"{spec.role}: ready in {time.monotonic() - started:.0f} s")
    return process.pid


def stop_one(spec: ServerSpec, *, timeout: float = 30.0, echo=lambda *_: None) -> bool:
    """Stop the server this launcher started for ``spec`` (SIGTERM, then SIGKILL). True if one was."""
    pid_file = _pid_path(spec)
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return False
    if _alive(pid) and _ours(pid, spec):
        echo(f"{spec.role}: stopping (pid {pid})")
        try:
            os.killpg(pid, signal.SIGTERM)  # the server's own group: its engine workers go too
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _reap(pid)
    pid_file.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def start(servers: ServerSet, *, echo=print) -> list[ServerSpec]:
    """Start every server not already up, one after the other. Returns those this call started.

    If one fails, the ones this call started are stopped again before the error propagates.
    """
    started: list[ServerSpec] = []
    try:
        for spec in servers.servers:
            if start_one(spec, echo=echo) is not None:
                started.append(spec)
    except BaseException:
        for spec in reversed(started):
            stop_one(spec, echo=echo)
        raise
    return started


def stop(servers: ServerSet | list[ServerSpec], *, echo=print) -> None:
    specs = servers.servers if isinstance(servers, ServerSet) else servers
    for spec in reversed(list(specs)):
        stop_one(spec, echo=echo)


def status(servers: ServerSet) -> list[dict[str, Any]]:
    rows = []
    for spec in servers.servers:
        up = healthy(spec)
        rows.append({"role": spec.role, "url": spec.url, "model": spec.served_model_name,
                     "healthy": up, "served": served_models(spec) if up else [],
                     "log": str(log_path(spec))})
    return rows


@contextmanager
def launch(config: str | os.PathLike[str] | ServerSet = "cpu", *, echo=print) -> Iterator[ServerSet]:
    """Servers up for the ``with`` block; the ones started here are stopped after it (also on
    Ctrl-C or an error). Servers that were already up are used and left running."""
    servers = config if isinstance(config, ServerSet) else load_config(config)
    started = start(servers, echo=echo)
    try:
        yield servers
    finally:
        stop(started, echo=echo)
