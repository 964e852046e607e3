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
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specreason_graph.resources import resource_dir

ENTRYPOINT = "vllm.entrypoints.openai.api_server"


def home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "specreason-graph"
    return Path(os.environ.get("SPECREASON_HOME", default)).expanduser()


class ServerError(RuntimeError):
    """A server could not be started, or died while starting."""


@dataclass(frozen=True)
class ServerSpec:
    """One vLLM server: what to run and where it answers."""

    role: str
    model: str
    served_model_name: str
    host: str
    port: int
    python: str
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    health_timeout: float = 900.0

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (what the graph's Context takes)."""
        return f"{self.origin}/v1"

    def argv(self) -> list[str]:
        """The server's command line: ``python -m vllm.entrypoints.openai.api_server --model ...``.

        Options map to flags: ``true`` → ``--flag``, ``false`` → left out, a table → JSON (as
        ``--speculative-config`` takes), anything else → ``--flag value``.
        """
        argv = [self.python, "-m", ENTRYPOINT, "--model", self.model,
                "--served-model-name", self.served_model_name,
                "--host", self.host, "--port", str(self.port)]
        for name, value in self.options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value is False or value is None:
                continue
            elif isinstance(value, dict):
                argv += [flag, json.dumps(value, separators=(",", ":"))]
            else:
                argv += [flag, str(value)]
        return argv

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}


@dataclass(frozen=True)
class ServerSet:
    """The servers of one config file."""

    name: str
    servers: tuple[ServerSpec, ...]

    def role(self, role: str) -> ServerSpec:
        for spec in self.servers:
            if spec.role == role:
                return spec
        raise KeyError(f"{self.name}: no server with role {role!r}")

    def context(self, **settings: Any):  # -> Context (imported lazily: this module stays light)
        """A graph Context pointing at these servers."""
        from specreason_graph.context import Context

        base, small = self.role("base"), self.role("small")
        return Context(**{"base_url": base.url, "base_model": base.served_model_name,
                          "small_url": small.url, "small_model": small.served_model_name,
                          **settings})


def config_path(name_or_path: str | os.PathLike[str]) -> Path:
    """``cpu`` → ``servers/cpu.toml``; a path is taken as it is."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    candidate = resource_dir("servers") / f"{name_or_path}.toml"
    if not candidate.exists():
        known = sorted(p.stem for p in resource_dir("servers").glob("*.toml"))
        raise FileNotFoundError(f"no server config {name_or_path!r}; known: {', '.join(known)}")
    return candidate


def load_config(name_or_path: str | os.PathLike[str] = "cpu") -> ServerSet:
    path = config_path(name_or_path)
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if set(data) - {"defaults", "server"}:
        raise ValueError(f"{path}: unknown tables {sorted(set(data) - {'defaults', 'server'})}; "
                         "a config has [defaults] and [[server]] tables only")
    defaults = data.get("defaults", {})
    places = {"home": str(home()), "models": str(home() / "models")}
    specs = []
    for raw in data.get("server", []):
        merged = {**defaults, **raw}
        env = {**defaults.get("env", {}), **raw.get("env", {})}
        options = {**defaults.get("options", {}), **raw.get("options", {})}
        unknown = set(merged) - {"python", "host", "health_timeout", "env", "options", "role",
                                 "model", "served-model-name", "port"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} in a [[server]] table")
        missing = {"role", "model", "served-model-name", "port"} - set(merged)
        if missing:
            raise ValueError(f"{path}: a [[server]] table lacks {sorted(missing)}")
        specs.append(ServerSpec(
            role=merged["role"],
            model=merged["model"].format(**places),
            served_model_name=merged["served-model-name"],
            host=merged.get("host", "127.0.0.1"),
            port=int(merged["port"]),
            python=merged.get("python", sys.executable).format(**places),
            env={k: str(v) for k, v in env.items()},
            options=options,
            health_timeout=float(merged.get("health_timeout", 900)),
        ))
    roles = sorted(s.role for s in specs)
    if roles != ["base", "small"]:
        raise ValueError(f"{path}: needs one 'base' and one 'small' server, found {roles}")
    return ServerSet(name=path.stem, servers=tuple(specs))


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
