"""Launch the vLLM OpenAI-compatible servers described by a TOML file in ``servers/``.

The graph never depends on this module: any two OpenAI-compatible endpoints work. It exists so that
one command brings up the CPU default pair here, and so a GPU host can be driven from a ready file.

- Servers start **one after the other** (the second sees the memory the first took) and each is
  waited for on ``/health``; a process that dies while starting is reported with its log's tail.
- Every command line is a list handed to ``subprocess`` (no shell); options come from the file.
- Logs and pid files live under ``$SPECREASON_HOME`` (default ``~/.cache/specreason-graph``), never
  in the repository.
- A role served by replicas behind vllm-router (config.RouterSpec): the replicas start one after the
  other, then the router; stopping goes the other way. A member on another host is not started
  here: it must answer when something started here needs it (a router's replicas, or every member
  when none runs here), and ``specreason serve start`` on its host starts it.

From Python::

    with launch("cpu") as servers:           # starts what is not already up, stops it on exit
        graph.invoke({"problem": ...}, context=servers.context())

From the shell: ``specreason serve start|stop|status [--config cpu]``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
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
    LOCAL_HOSTS,
    ROUTER_ENTRYPOINT,
    ROUTER_MARKER,
    ROUTER_TITLE,
    Member,
    RouterSpec,
    ServerError,
    ServerSet,
    ServerSpec,
    home,
    load_config,
)

__all__ = ["Member", "RouterSpec", "ServerError", "ServerSet", "ServerSpec", "available_gib",
           "check_all", "healthy", "launch", "load_config", "log_path", "router_workers",
           "runs_here", "served_models", "server_pids", "start", "start_one", "status", "stop",
           "stop_one"]


# --- processes ---------------------------------------------------------------------------------

@functools.cache
def runs_here(host: str) -> bool:
    """``host`` is this machine: a loopback or any-address name, this machine's name, or a name or
    address that resolves to an address of one of its interfaces (a socket can be bound to it).
    Asked once per host and process (a name may take a DNS look-up)."""
    if host in LOCAL_HOSTS or host.lower() in (socket.gethostname().lower(), socket.getfqdn().lower()):
        return True
    try:
        found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    for family, kind, _, _, address in found:
        with socket.socket(family, kind) as probe:
            try:
                probe.bind((address[0], 0))
            except OSError:
                continue
            return True
    return False


def _what(spec: Member) -> str:
    return f"{spec.role} {'router' if isinstance(spec, RouterSpec) else 'server'}"


def healthy(spec: Member, timeout: float = 2.0) -> bool:
    """A vLLM server answers ``/health``; a router, ``/readiness``: it serves while one replica
    is healthy, where its ``/health`` answers 503 as soon as one replica is not (``status``
    names those)."""
    path = "/readiness" if isinstance(spec, RouterSpec) else "/health"
    try:
        with urllib.request.urlopen(f"{spec.origin}{path}", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def router_workers(spec: RouterSpec, timeout: float = 2.0) -> dict[str, bool] | None:
    """Each replica's origin → whether the router takes it for healthy now (its ``/workers``);
    None when the router does not answer."""
    try:
        with urllib.request.urlopen(f"{spec.origin}/workers", timeout=timeout) as response:
            return {w["url"]: bool(w["is_healthy"]) for w in json.load(response)["workers"]}
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None


def served_models(spec: Member, timeout: float = 5.0) -> list[str]:
    """What ``/v1/models`` lists (a router passes the question to one of its replicas)."""
    with urllib.request.urlopen(f"{spec.url}/models", timeout=timeout) as response:
        return [m["id"] for m in json.load(response)["data"]]


def _check_serves(spec: Member) -> None:
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


def _stem(spec: Member) -> str:
    return f"{spec.role}-{'router-' if isinstance(spec, RouterSpec) else ''}{spec.port}"


def log_path(spec: Member) -> Path:
    path = home() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path / f"{_stem(spec)}.log"


def _pid_path(spec: Member) -> Path:
    return _run_dir() / f"{_stem(spec)}.pid"


def _argv(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")


def _renamed_router(pid: int | str, argv: list[str], spec: RouterSpec) -> bool:
    """A router that renamed itself (``vllm::router``) and whose environment names ``spec``'s port."""
    if not argv or not argv[0].startswith(ROUTER_TITLE):
        return False
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{ROUTER_MARKER}={spec.port}".encode() in environ


def _ours(pid: int, spec: Member) -> bool:
    """The pid still runs this spec's server (not a recycled pid after a reboot or a kill -9)."""
    try:
        argv = _argv(pid)
    except OSError:
        return _alive(pid)  # no /proc: trust the pid file
    entrypoint = ROUTER_ENTRYPOINT if isinstance(spec, RouterSpec) else ENTRYPOINT
    if isinstance(spec, RouterSpec) and _renamed_router(pid, argv, spec):
        return True
    return entrypoint in argv and str(spec.port) in argv


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


def server_pids(spec: Member) -> list[int]:
    """Every process whose command line is a vLLM server on ``spec``'s port (whatever the pid file
    says: it may have been overwritten or removed by a start that failed); for a router, one
    started with ``spec``'s port, or renamed ``vllm::router`` with that port in its environment.
    None for a member on another host: the processes on its port here are not it."""
    if not runs_here(spec.host):
        return []
    entrypoint = ROUTER_ENTRYPOINT if isinstance(spec, RouterSpec) else ENTRYPOINT
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = _argv(entry.name)
        except OSError:
            continue
        if entrypoint in argv and "--port" in argv[:-1] \
                and argv[argv.index("--port") + 1] == str(spec.port) \
                or isinstance(spec, RouterSpec) and _renamed_router(entry.name, argv, spec):
            found.append(int(entry.name))
    return sorted(found)


def _group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are vLLM's (its engine core and worker rename
    themselves ``VLLM::…``; the server's own command line names the entrypoint) or a router's."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if os.getpgid(int(entry.name)) != pgid:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if any(mark in argv for mark in ("VLLM::", ENTRYPOINT, "multiprocessing", ROUTER_TITLE,
                                         ROUTER_ENTRYPOINT)):
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


def _check_memory(spec: Member, running: list[Member]) -> None:
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


def _elsewhere(spec: Member, config: str, echo=print) -> None:
    """``spec`` runs on another host: not started here; it must answer (and serve its model)."""
    if not healthy(spec, timeout=5):
        raise ServerError(f"{_what(spec)} at {spec.url} runs on {spec.host}, not on this machine, "
                          f"and does not answer: run `specreason serve start --config {config}` "
                          f"on {spec.host} first")
    _check_serves(spec)
    echo(f"{spec.role}: up at {spec.url} (on {spec.host})")


def _needed(servers: ServerSet) -> list[Member]:
    """The members this machine needs up: its own, the replicas on other hosts of its routers,
    and, when none of the config runs here, every member (the graph on this machine uses them)."""
    here = [s for s in servers.servers if runs_here(s.host)]
    if not here:
        return list(servers.servers)
    fed = [r for s in here if isinstance(s, RouterSpec) for r in servers.replicas(s)]
    return [s for s in servers.servers if s in here or s in fed]


def start_one(spec: Member, *, echo=print) -> int | None:
    """Start ``spec`` unless it already answers; wait for ``/health``. Returns the new pid or None.

    A server of ours still starting (its pid file names a live server on this port, started by
    another command) is waited for, not started twice; a port held by something else is refused.
    A member on another host is never started here: it must answer."""
    if not runs_here(spec.host):
        _elsewhere(spec, "<its config>", echo)
        return None
    if healthy(spec):
        _check_serves(spec)
        echo(f"{spec.role}: already up at {spec.url}")
        return None
    if not Path(spec.python).exists() and os.sep in spec.python:
        if isinstance(spec, RouterSpec):
            raise ServerError(f"{spec.role}: no request router environment (vllm-router) at "
                              f"{spec.python}; run `bash {resource_dir('servers') / 'setup-cpu.sh'}`"
                              " (or setup-router.sh beside it, the router alone) first")
        setup = "setup-gpu.sh" if "vllm-gpu" in spec.python else "setup-cpu.sh"
        raise ServerError(f"{spec.role}: no server environment at {spec.python}; "
                          f"run `bash {resource_dir('servers') / setup}` first")
    starting = server_pids(spec)
    if starting:
        echo(f"{spec.role}: a {_what(spec).split()[1]} is already starting on port {spec.port} "
             f"(pid {', '.join(map(str, starting))}); waiting for it")
        _wait_healthy(spec, None, log_path(spec), time.monotonic())
        _check_serves(spec)
        return None
    log = log_path(spec)
    if isinstance(spec, RouterSpec):
        echo(f"{spec.role}: starting the router at {spec.url} ({spec.policy} over "
             f"{', '.join(spec.worker_urls)}; log: {log})")
    else:
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


def _wait_healthy(spec: Member, process: subprocess.Popen | None, log: Path,
                  started: float) -> None:
    """Until ``/health`` answers; a ServerError when the process exits (``process``: ours) or the
    servers on the port are gone (another command's), or after ``health_timeout``."""
    kills = oom_kills()
    while not healthy(spec):
        gone = process.poll() is not None if process is not None else not server_pids(spec)
        if gone:
            if process is not None:
                _pid_path(spec).unlink(missing_ok=True)
            raise ServerError(f"{_what(spec)} {_why_gone(process, kills)} while starting; "
                              f"last lines of {log}:\n{_tail(log)}")
        if time.monotonic() - started > spec.health_timeout:
            raise ServerError(f"{_what(spec)} not healthy after "
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


def stop_one(spec: Member, *, timeout: float = 30.0, echo=lambda *_: None) -> bool:
    """Stop the server on ``spec``'s port (SIGTERM to its process group, then SIGKILL). True if
    one was stopped.

    Found by its pid file and by its command line (a start that failed may have overwritten or
    removed the pid file); a pid file whose server died leaves its orphaned engine and worker
    processes (``VLLM::…``) in the group: they are stopped too. A recycled pid is left alone, and
    so is a member on another host (whatever holds its port here is not it)."""
    if not runs_here(spec.host):
        return False
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
        echo(f"{spec.role}: stopping the {_what(spec).split()[1]} on port {spec.port} "
             f"(pid {group} and its process group)")
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


def start(servers: ServerSet, *, echo=print) -> list[Member]:
    """Start every server not already up, one after the other (a role's replicas, then their
    router). Returns those this call started.

    A member on another host is not started: one this machine needs (``_needed``) must answer,
    else a ServerError says to start it there; the others are named. If one fails, the ones this
    call started are stopped again before the error propagates.
    """
    started: list[Member] = []
    kills = oom_kills()
    needed = _needed(servers)
    config = servers.config or servers.name
    try:
        for spec in servers.servers:
            if not runs_here(spec.host):
                if spec in needed:
                    _elsewhere(spec, config, echo)
                else:
                    echo(f"{spec.role}: the {servers.kind(spec)} at {spec.url} runs on "
                         f"{spec.host}: `specreason serve start --config {config}` there starts it")
                continue
            if not healthy(spec):
                _check_memory(spec, [s for s in servers.servers
                                     if runs_here(s.host) and healthy(s)])
            if start_one(spec, echo=echo) is not None:
                started.append(spec)
        check_all(servers, kills)
    except BaseException:
        for spec in reversed(started):
            stop_one(spec, echo=echo)
        raise
    return started


def check_all(servers: ServerSet, kills_before: int | None = None) -> None:
    """Every server this machine needs answers ``/health`` now: one that came up and died since
    (a worker killed by the kernel for memory while the next model loaded) is named, with why,
    instead of being reported up."""
    dead = [spec for spec in _needed(servers) if not healthy(spec, timeout=10)]
    if dead:
        why = _why_gone(None, kills_before).removeprefix("exited")
        raise ServerError("; ".join(
            f"the {_what(spec)} at {spec.url} was up and no longer answers"
            + (" (its processes are gone)" if runs_here(spec.host) and not server_pids(spec)
               else "") for spec in dead)
            + f"{why}; last lines of {log_path(dead[0])}:\n{_tail(log_path(dead[0]))}")


def stop(servers: ServerSet | list[Member], *, echo=print) -> list[Member]:
    """Stop every server of ``servers`` found running on this machine, last started first (a
    router before its replicas); returns those here that still answer afterwards (something this
    launcher cannot stop holds their port). Members on other hosts are left alone."""
    specs = list(servers.servers if isinstance(servers, ServerSet) else servers)
    for spec in reversed(specs):
        stop_one(spec, echo=echo)
    return [spec for spec in specs if runs_here(spec.host) and healthy(spec)]


def status(servers: ServerSet) -> list[dict[str, Any]]:
    """One row per member: its role, kind (``server``, ``replica``, ``router``), host, whether it
    runs on this machine, URL, model, whether it is healthy, the models it serves and its log (on
    this machine). A router's row also has ``workers`` (each replica's origin → healthy, as the
    router sees it; None when it does not answer) and ``alive``: it runs but has no healthy
    replica left (``alive`` and not ``healthy``)."""
    rows = []
    for spec in servers.servers:
        up = healthy(spec)
        here = runs_here(spec.host)
        row: dict[str, Any] = {
            "role": spec.role, "kind": servers.kind(spec), "host": spec.host, "here": here,
            "url": spec.url, "model": spec.served_model_name, "healthy": up,
            "served": served_models(spec) if up else [],
            "log": str(log_path(spec)) if here else None}
        if isinstance(spec, RouterSpec):
            row["workers"] = router_workers(spec)
            row["alive"] = row["workers"] is not None
            row["metrics"] = spec.metrics_url
        rows.append(row)
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
