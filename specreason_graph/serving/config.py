"""Server configs: the TOML files in ``servers/`` that say which vLLM servers to run and how.

A config has ``[defaults]`` (the server environment's python, host, environment variables and vLLM
options shared by its servers) and one ``[[server]]`` table per role (``base`` and ``small``): the
model folder, the served name and the port. ``{home}`` and ``{models}`` in a value stand for
``$SPECREASON_HOME`` (default ``~/.cache/specreason-graph``) and its ``models/`` folder, ``{servers}``
for the folder of the shipped configs (``servers/``: a chat template beside them). The CPU
default's endpoints are also ``Context()``'s endpoints (``context.server_defaults``). A config's
``[graph]`` table is its pair's judge profile (the settings calibration chose for that pair), which
``Context.for_servers(name)`` and the command line's ``--servers`` apply.

A ``[[server]]`` may be served by **replicas behind vLLM's request router** (vllm-router): with
``replicas = [{ port = 8111 }, { port = 8112 }]`` each replica is a vLLM server of its own (a
:class:`ServerSpec`, the table's settings with the replica's over them), and a :class:`RouterSpec`
(the table's ``router``, default policy ``cache_aware``) listens on the table's ``host`` and
``port``: the role's endpoint. ``roles = ["base", "small"]`` instead of ``role`` serves both roles
from one set of replicas (both endpoints are the router). docs/serving.md, "Replicas behind
vllm-router".
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specreason_graph.context import Context
from specreason_graph.resources import config_path, read_config, resource_dir

ENTRYPOINT = "vllm.entrypoints.openai.api_server"
ROUTER_ENTRYPOINT = "vllm_router.launch_router"
"""The module of vllm-router's command line (``python -m vllm_router.launch_router``)."""
ROUTER_TITLE = "vllm::router"
"""What a running router's command line becomes: it renames itself (``setproctitle``) first thing,
and its port is gone from ``/proc/<pid>/cmdline``; the launcher finds it by :data:`ROUTER_MARKER`."""
ROUTER_MARKER = "SPECREASON_ROUTER_PORT"
"""In a router's environment: its port, which ``/proc/<pid>/environ`` keeps (``SPT_NOENV=1`` stops
setproctitle from overwriting the environment with the title)."""
POLICIES = ("random", "round_robin", "cache_aware", "kv_aware", "power_of_two", "consistent_hash",
            "sticky_least_loaded")
"""vllm-router 0.1.17's ``--policy`` choices."""
METRICS_OFFSET = 10000
"""A router's Prometheus port unless its options set ``prometheus-port``: its own port + this.
vllm-router's default (29000) is the same for every router, and a second router on the machine
dies at start (``Address already in use``)."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "::", "")
"""Host names that always mean this machine (the launcher also asks the system about the others)."""


def home() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "specreason-graph"
    return Path(os.environ.get("SPECREASON_HOME", default)).expanduser()


class ServerError(RuntimeError):
    """A server could not be started, or died while starting."""


def _flags(options: dict[str, Any]) -> list[str]:
    """Options as flags: ``true`` → ``--flag``, ``false``/None → left out, a table → JSON (as
    ``--speculative-config`` takes), a list → ``--flag a b`` (as ``--request-id-headers`` takes),
    anything else → ``--flag value``; ``snake_case`` names become ``--snake-case``."""
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, dict):
            argv += [flag, json.dumps(value, separators=(",", ":"))]
        elif isinstance(value, list | tuple):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


class _Endpoint:
    """Where a member answers, for a vLLM server and a router alike."""

    role: str
    host: str
    port: int

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles it serves: ``base+small`` (a config's ``roles = ["base", "small"]``) is both."""
        return tuple(self.role.split("+"))

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL (what the graph's Context takes; a router's for a routed role)."""
        return f"{self.origin}/v1"


@dataclass(frozen=True)
class ServerSpec(_Endpoint):
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
    memory_gib: float | None = None
    """Memory it was measured to take at its peak while starting; the launcher refuses to start
    it with less available (None: unknown, not checked)."""

    def argv(self) -> list[str]:
        """The server's command line: ``python -m vllm.entrypoints.openai.api_server --model ...``.

        Options map to flags: ``true`` → ``--flag``, ``false`` → left out, a table → JSON (as
        ``--speculative-config`` takes), a list → ``--flag a b``, anything else → ``--flag value``.
        """
        return [self.python, "-m", ENTRYPOINT, "--model", self.model,
                "--served-model-name", self.served_model_name,
                "--host", self.host, "--port", str(self.port), *_flags(self.options)]

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}


@dataclass(frozen=True)
class RouterSpec(_Endpoint):
    """vLLM's request router (vllm-router) in front of the replicas of a role: the role's endpoint.

    It passes each request to one of ``worker_urls`` (the replicas' origins) by ``policy``
    (``cache_aware``: the replica whose earlier requests share the longest prefix with it, so a
    run's calls keep landing where vLLM cached their prefix), checks the replicas' ``/health`` and
    drops one that stops answering, and retries a failed request on another. It serves
    ``/v1/...``, ``/tokenize`` and ``/detokenize`` by passing them on, and only once one replica
    is healthy: it binds its port after that.
    """

    role: str
    host: str
    port: int
    worker_urls: tuple[str, ...]
    served_model_name: str
    python: str
    policy: str = "cache_aware"
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    health_timeout: float = 120.0
    memory_gib: float | None = 0.1
    """Measured ~75 MB resident."""

    def __post_init__(self) -> None:
        # How the launcher recognises the process once it has renamed itself (ROUTER_TITLE).
        object.__setattr__(self, "env", {**self.env, "SPT_NOENV": "1",
                                         ROUTER_MARKER: str(self.port)})

    @property
    def metrics_port(self) -> int:
        """Where it serves its Prometheus metrics (per worker: requests processed, policy
        decisions, health, circuit breaker): ``prometheus-port``, else its port + 10000."""
        return int(self.options.get("prometheus-port", self.port + METRICS_OFFSET))

    @property
    def metrics_url(self) -> str:
        host = self.options.get("prometheus-host", "127.0.0.1")
        return f"http://{host}:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        """``python -m vllm_router.launch_router --host H --port P --worker-urls URL... --policy
        POLICY`` and the options as :class:`ServerSpec` maps them, ``--prometheus-port`` always
        (see :data:`METRICS_OFFSET`)."""
        argv = [self.python, "-m", ROUTER_ENTRYPOINT, "--host", self.host, "--port", str(self.port),
                "--worker-urls", *self.worker_urls, "--policy", self.policy,
                *_flags(self.options)]
        if "prometheus-port" not in self.options:
            argv += ["--prometheus-port", str(self.metrics_port)]
        return argv

    def environment(self) -> dict[str, str]:
        return {**os.environ, **self.env}


Member = ServerSpec | RouterSpec
"""A process of a config: a vLLM server (a plain one or a replica) or a router."""


@dataclass(frozen=True)
class ServerSet:
    """The servers of one config file: every process, in the order they start (a role's replicas,
    then their router)."""

    name: str
    servers: tuple[Member, ...]
    config: str = ""
    """The name or path it was loaded by (what ``Context(servers=...)`` takes); "" for ``name``."""

    def role(self, role: str) -> Member:
        """The endpoint of ``role`` the graph talks to: its router when the role has replicas,
        else its server."""
        for kind in (RouterSpec, ServerSpec):
            for spec in self.servers:
                if isinstance(spec, kind) and role in spec.roles:
                    return spec
        raise KeyError(f"{self.name}: no server with role {role!r}")

    def kind(self, spec: Member) -> str:
        """``router``, ``replica`` (a router of this set passes requests to it) or ``server``."""
        if isinstance(spec, RouterSpec):
            return "router"
        routed = any(isinstance(s, RouterSpec) and spec.origin in s.worker_urls
                     for s in self.servers)
        return "replica" if routed else "server"

    def replicas(self, router: RouterSpec) -> list[ServerSpec]:
        """The members ``router`` passes requests to."""
        return [s for s in self.servers
                if isinstance(s, ServerSpec) and s.origin in router.worker_urls]

    def context(self, **settings: Any) -> Context:
        """The Context this config implies (``Context.for_servers``): its endpoints and its pair's
        judge profile (``[graph]``), under ``settings``; a set built by hand (no ``config``) gets
        its endpoints and the paper's judge."""
        base, small = self.role("base"), self.role("small")
        endpoints = {"base_url": base.url, "base_model": base.served_model_name,
                     "small_url": small.url, "small_model": small.served_model_name}
        return Context(**{"servers": self.config or None, **endpoints, **settings})


def _fill(value: Any, places: dict[str, str]) -> Any:
    """``{home}`` / ``{models}`` / ``{servers}`` filled in every string of an option, tables included (a
    ``speculative-config`` names its draft model's folder)."""
    if isinstance(value, dict):
        return {k: _fill(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, places) for v in value]
    if isinstance(value, str):
        for name, place in places.items():
            value = value.replace("{" + name + "}", place)
    return value


_SERVER_KEYS = {"python", "host", "health_timeout", "env", "options", "role", "roles", "model",
                "served-model-name", "port", "memory_gib", "replicas", "router"}
_REPLICA_KEYS = {"host", "port", "env", "options", "memory_gib", "python"}
_ROUTER_KEYS = {"policy", "options", "python", "host", "port", "env", "health_timeout"}


def _table(path: Path, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {what} is not a table")
    return value


def _members(path: Path, raw: dict[str, Any], defaults: dict[str, Any],
             places: dict[str, str]) -> list[Member]:
    """The processes of one ``[[server]]`` table: its server, or its replicas and their router."""
    merged = {**defaults, **raw}
    unknown = set(merged) - _SERVER_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} in a [[server]] table")
    if "role" in raw and "roles" in raw:
        raise ValueError(f"{path}: a [[server]] table has both 'role' and 'roles'; give one")
    roles = raw.get("roles", [raw["role"]] if "role" in raw else [])
    if not isinstance(roles, list) or not roles or len(set(roles)) != len(roles) \
            or not all(isinstance(r, str) and r and "+" not in r for r in roles):
        raise ValueError(f"{path}: 'roles' must list distinct roles, e.g. [\"base\", \"small\"]"
                         if "roles" in raw else f"{path}: a [[server]] table lacks ['role']")
    replicas = raw.get("replicas")
    router = _table(path, raw.get("router", {}), "'router'")
    if "router" in raw and not replicas:
        raise ValueError(f"{path}: the {'+'.join(roles)} server has a router but no replicas: "
                         "give it replicas = [{ port = ... }, ...] or drop the router")
    port = router.get("port", merged.get("port")) if replicas else merged.get("port")
    missing = {"model", "served-model-name"} - set(merged) | (set() if port is not None else {"port"})
    if missing:
        raise ValueError(f"{path}: a [[server]] table lacks {sorted(missing)}")
    env = {**defaults.get("env", {}), **raw.get("env", {})}
    options = {**defaults.get("options", {}), **raw.get("options", {})}
    host = merged.get("host", "127.0.0.1")
    base = {"role": "+".join(roles), "model": merged["model"].format(**places),
            "served_model_name": merged["served-model-name"],
            "health_timeout": float(merged.get("health_timeout", 900))}

    def server(over: dict[str, Any]) -> ServerSpec:
        memory = over.get("memory_gib", merged.get("memory_gib"))
        return ServerSpec(
            **base, host=over.get("host", host), port=int(over["port"]),
            python=over.get("python", merged.get("python", sys.executable)).format(**places),
            env={k: str(v) for k, v in {**env, **over.get("env", {})}.items()},
            options=_fill({**options, **over.get("options", {})}, places),
            memory_gib=float(memory) if memory is not None else None)

    if not replicas:
        return [server({"port": port})]
    if not isinstance(replicas, list):
        raise ValueError(f"{path}: 'replicas' must be a list of tables, e.g. [{{ port = 8111 }}]")
    specs: list[Member] = []
    for replica in replicas:
        replica = _table(path, replica, "a replica")
        unknown = set(replica) - _REPLICA_KEYS
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)} in a replica of the "
                             f"{base['role']} server (it takes {', '.join(sorted(_REPLICA_KEYS))})")
        if "port" not in replica:
            raise ValueError(f"{path}: a replica of the {base['role']} server lacks 'port'")
        specs.append(server(replica))
    unknown = set(router) - _ROUTER_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} in the router of the "
                         f"{base['role']} server (it takes {', '.join(sorted(_ROUTER_KEYS))})")
    policy = router.get("policy", "cache_aware")
    if policy not in POLICIES:
        raise ValueError(f"{path}: unknown router policy {policy!r} for the {base['role']} "
                         f"server; vllm-router takes {', '.join(POLICIES)}")
    python = router.get("python", "{home}/vllm-router/bin/python")
    specs.append(RouterSpec(
        role=base["role"], host=router.get("host", host),
        port=int(router["port"] if "port" in router else merged["port"]),
        worker_urls=tuple(s.origin for s in specs), served_model_name=base["served_model_name"],
        python=python.format(**places), policy=policy,
        options=_fill(dict(router.get("options", {})), places),
        env={k: str(v) for k, v in router.get("env", {}).items()},
        health_timeout=float(router.get("health_timeout", 120))))
    return specs


def _machine(host: str) -> str:
    return "this machine" if host in LOCAL_HOSTS else host.lower()


def _check_ports(path: Path, specs: list[Member]) -> None:
    """No two processes of the config on one port of one machine (a router's metrics port
    included): the second would fail to start, or be taken for the first."""
    taken: dict[tuple[str, int], str] = {}
    for spec in specs:
        what = f"the {spec.role} {'router' if isinstance(spec, RouterSpec) else 'server'}"
        ports = [(spec.port, what)]
        if isinstance(spec, RouterSpec):
            ports.append((spec.metrics_port, f"{what}'s metrics (prometheus-port)"))
        for port, name in ports:
            if not 0 < port < 65536:
                raise ValueError(f"{path}: {name} has port {port}, outside 1-65535"
                                 + (": set its router options' prometheus-port"
                                    if "metrics" in name else ""))
            key = (_machine(spec.host), port)
            if key in taken:
                raise ValueError(f"{path}: port {port} on {key[0]} is given twice: {taken[key]} "
                                 f"and {name}")
            taken[key] = name


def load_config(name_or_path: str | os.PathLike[str] = "cpu") -> ServerSet:
    path = config_path(name_or_path)
    data = read_config(path)
    defaults = data.get("defaults", {})
    places = {"home": str(home()), "models": str(home() / "models"),
              "servers": str(resource_dir("servers"))}
    specs: list[Member] = []
    roles: list[str] = []
    for raw in data.get("server", []):
        members = _members(path, raw, defaults, places)
        roles += members[-1].roles  # the table's endpoint: its server, or its replicas' router
        specs += members
    if sorted(roles) != ["base", "small"]:
        raise ValueError(f"{path}: needs one 'base' and one 'small' server, found {sorted(roles)}")
    _check_ports(path, specs)
    return ServerSet(name=path.stem, servers=tuple(specs), config=str(name_or_path))
