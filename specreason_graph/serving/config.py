"""Server configs: the TOML files in ``servers/`` that say which vLLM servers to run and how.

A config has ``[defaults]`` (the server environment's python, host, environment variables and vLLM
options shared by its servers) and one ``[[server]]`` table per role (``base`` and ``small``): the
model folder, the served name and the port. ``{home}`` and ``{models}`` in a value stand for
``$SPECREASON_HOME`` (default ``~/.cache/specreason-graph``) and its ``models/`` folder, ``{servers}``
for the folder of the shipped configs (``servers/``: a chat template beside them). The CPU
default's endpoints are also ``Context()``'s endpoints (``context.server_defaults``). A config's
``[graph]`` table is its pair's judge profile (the settings calibration chose for that pair), which
``Context.for_servers(name)`` and the command line's ``--servers`` apply.
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
    memory_gib: float | None = None
    """Memory it was measured to take at its peak while starting; the launcher refuses to start
    it with less available (None: unknown, not checked)."""

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
    config: str = ""
    """The name or path it was loaded by (what ``Context(servers=...)`` takes); "" for ``name``."""

    def role(self, role: str) -> ServerSpec:
        for spec in self.servers:
            if spec.role == role:
                return spec
        raise KeyError(f"{self.name}: no server with role {role!r}")

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
    if isinstance(value, str):
        for name, place in places.items():
            value = value.replace("{" + name + "}", place)
    return value


def load_config(name_or_path: str | os.PathLike[str] = "cpu") -> ServerSet:
    path = config_path(name_or_path)
    data = read_config(path)
    defaults = data.get("defaults", {})
    places = {"home": str(home()), "models": str(home() / "models"),
              "servers": str(resource_dir("servers"))}
    specs = []
    for raw in data.get("server", []):
        merged = {**defaults, **raw}
        env = {**defaults.get("env", {}), **raw.get("env", {})}
        options = {**defaults.get("options", {}), **raw.get("options", {})}
        unknown = set(merged) - {"python", "host", "health_timeout", "env", "options", "role",
                                 "model", "served-model-name", "port", "memory_gib"}
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
            options=_fill(options, places),
            health_timeout=float(merged.get("health_timeout", 900)),
            memory_gib=float(merged["memory_gib"]) if "memory_gib" in merged else None,
        ))
    roles = sorted(s.role for s in specs)
    if roles != ["base", "small"]:
        raise ValueError(f"{path}: needs one 'base' and one 'small' server, found {roles}")
    return ServerSet(name=path.stem, servers=tuple(specs), config=str(name_or_path))
