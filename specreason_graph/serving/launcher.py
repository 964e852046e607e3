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

import contextlib
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

from specreason_graph.resources import resource_dir
from specreason_graph.serving.config import (
    ENTRYPOINT,
    ServerError,
    ServerSet,
    ServerSpec,
    home,
    load_config,
)

__all__ = ["ServerError", "ServerSet", "ServerSpec", "available_gib", "check_all", "healthy", "launch",
           "load_config", "log_path", "served_models", "server_pids", "start", "start_one", "status",
           "stop", "stop_one"]


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
    """Running: a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def server_pids(spec: ServerSpec) -> list[int]:
    """Every process whose command line is a vLLM server on ``spec``'s port (whatever the pid file
    says: it may have been overwritten or removed by a start that failed)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if ENTRYPOINT in argv and "--port" in argv[:-1] \
                and argv[argv.index("--port") + 1] == str(spec.port):
            found.append(int(entry.name))
    return sorted(found)


def _group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are vLLM's (its engine core and worker rename
    themselves ``VLLM::…``; the server's own command line names the entrypoint)."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if "VLLM::" in argv or ENTRYPOINT in argv or "multiprocessing" in argv:
            members.append(int(entry.name))
    return members


def available_gib() -> float | None:
    """The kernel's estimate of memory available for new work (``MemAvailable``), in GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since boot."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _oom_lines() -> list[str]:
    """The kernel log's out-of-memory kills, when it can be read."""
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if "Killed process" in line]


def _check_memory(spec: ServerSpec, running: list[ServerSpec]) -> None:
    """Refuse to start ``spec`` when the machine has less memory available than it was measured
    to take while starting (``memory_gib`` in its config): a start that cannot fit gets itself or
    another server killed by the kernel halfway through."""
    have = available_gib()
    if spec.memory_gib is None or have is None or have >= spec.memory_gib:
        return
    up = ", ".join(f"{s.role} at {s.url}" for s in running) or "none of this config's"
    raise ServerError(f"{spec.role}: {have:.1f} GiB of memory available, and this server takes "
                      f"about {spec.memory_gib:g} GiB while it starts: not started (running here: "
                      f"{up}). Stop what it would share the machine with first, e.g. `specreason "
                      "serve stop --config cpu-plain` before starting cpu (the default), whose "
                      "speculating base server replaces the plain one")


def start_one(spec: ServerSpec, *, echo=print) -> int | None:
    """Start ``spec`` unless it already answers; wait for ``/health``. Returns the new pid or None.

    A server of ours still starting (its pid file names a live server on this port, started by
    another command) is waited for, not started twice; a port held by something else is refused."""
    if healthy(spec):
        _check_serves(spec)
        echo(f"{spec.role}: already up at {spec.url}")
        return None
    if not Path(spec.python).exists() and os.sep in spec.python:
        setup = "setup-gpu.sh" if "vllm-gpu" in spec.python else "setup-cpu.sh"
        raise ServerError(f"{spec.role}: no server environment at {spec.python}; "
                          f"run `bash {resource_dir('servers') / setup}` first")
    starting = server_pids(spec)
    if starting:
        echo(f"{spec.role}: a server is already starting on port {spec.port} (pid "
             f"{', '.join(map(str, starting))}); waiting for it")
        _wait_healthy(spec, None, log_path(spec), time.monotonic())
        _check_serves(spec)
        return None
    log = log_path(spec)
    echo(f"{spec.role}: starting {spec.served_model_name} at {spec.url} (log: {log})")
    with open(log, "ab") as sink:
        process = subprocess.Popen(spec.argv(), env=spec.environment(), stdout=sink,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    _pid_path(spec).write_text(str(process.pid))
    started = time.monotonic()
    try:
        _wait_healthy(spec, process, log, started)
        _check_serves(spec)  # ours, not another process that took the port meanwhile
    except BaseException:  # also Ctrl-C: the server is in its own session and would outlive us
        stop_one(spec)
        raise
    echo(f"{spec.role}: ready in {time.monotonic() - started:.0f} s")
    return process.pid


def _wait_healthy(spec: ServerSpec, process: subprocess.Popen | None, log: Path,
                  started: float) -> None:
    """Until ``/health`` answers; a ServerError when the process exits (``process``: ours) or the
    servers on the port are gone (another command's), or after ``health_timeout``."""
    kills = oom_kills()
    while not healthy(spec):
        gone = process.poll() is not None if process is not None else not server_pids(spec)
        if gone:
            if process is not None:
                _pid_path(spec).unlink(missing_ok=True)
            raise ServerError(f"{spec.role} server {_why_gone(process, kills)} while starting; "
                              f"last lines of {log}:\n{_tail(log)}")
        if time.monotonic() - started > spec.health_timeout:
            raise ServerError(f"{spec.role} server not healthy after "
                              f"{spec.health_timeout:.0f} s; see {log}")
        time.sleep(1.0)


def _why_gone(process: subprocess.Popen | None, kills_before: int | None) -> str:
    """How a server ended: its exit status, and the kernel's out-of-memory kills since."""
    code = process.returncode if process is not None else None
    how = ("exited" if code is None else f"was killed by signal {-code}" if code < 0
           else f"exited with code {code}")
    kills = oom_kills()
    if kills is not None and kills_before is not None and kills > kills_before:
        lines = _oom_lines()[-(kills - kills_before):]
        how += (f"; the kernel's out-of-memory killer killed {kills - kills_before} process(es) "
                f"meanwhile ({available_gib() or 0:.1f} GiB available now)"
                + (": " + "; ".join(lines) if lines else ""))
    return how


def stop_one(spec: ServerSpec, *, timeout: float = 30.0, echo=lambda *_: None) -> bool:
    """Stop the server on ``spec``'s port (SIGTERM to its process group, then SIGKILL). True if
    one was stopped.

    Found by its pid file and by its command line (a start that failed may have overwritten or
    removed the pid file); a pid file whose server died leaves its orphaned engine and worker
    processes (``VLLM::…``) in the group: they are stopped too. A recycled pid is left alone."""
    pid_file = _pid_path(spec)
    try:
        recorded: int | None = int(pid_file.read_text())
    except (OSError, ValueError):
        recorded = None
    groups = set()
    for pid in server_pids(spec):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    if recorded is not None:
        if _alive(recorded) and _ours(recorded, spec):
            groups.add(recorded)
        elif not _alive(recorded) and _group_members(recorded):
            groups.add(recorded)  # the server died; its engine and worker did not
    pid_file.unlink(missing_ok=True)
    if not groups:
        return False
    for group in sorted(groups):
        echo(f"{spec.role}: stopping (pid {group} and its process group)")
        _end_group(group, timeout)
    return True


def _end_group(group: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)  # the server's own group: its engine workers go too
    deadline = time.monotonic() + timeout
    while (_alive(group) or _group_members(group)) and time.monotonic() < deadline:
        _reap(group)
        time.sleep(0.2)
    if _alive(group) or _group_members(group):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    _reap(group)


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
    kills = oom_kills()
    try:
        for spec in servers.servers:
            if not healthy(spec):
                _check_memory(spec, [s for s in servers.servers if healthy(s)])
            if start_one(spec, echo=echo) is not None:
                started.append(spec)
        check_all(servers, kills)
    except BaseException:
        for spec in reversed(started):
            stop_one(spec, echo=echo)
        raise
    return started


def check_all(servers: ServerSet, kills_before: int | None = None) -> None:
    """Every server answers ``/health`` now: one that came up and died since (a worker killed by
    the kernel for memory while the next model loaded) is named, with why, instead of being
    reported up."""
    dead = [spec for spec in servers.servers if not healthy(spec, timeout=10)]
    if dead:
        why = _why_gone(None, kills_before).removeprefix("exited")
        raise ServerError("; ".join(
            f"the {spec.role} server at {spec.url} was up and no longer answers"
            + (" (its processes are gone)" if not server_pids(spec) else "") for spec in dead)
            + f"{why}; last lines of {log_path(dead[0])}:\n{_tail(log_path(dead[0]))}")


def stop(servers: ServerSet | list[ServerSpec], *, echo=print) -> list[ServerSpec]:
    """Stop every server of ``servers`` found running; returns those that still answer afterwards
    (something this launcher cannot stop holds their port)."""
    specs = list(servers.servers if isinstance(servers, ServerSet) else servers)
    for spec in reversed(specs):
        stop_one(spec, echo=echo)
    return [spec for spec in specs if healthy(spec)]


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
