"""Find the project's data folders (``prompts/``, ``servers/``) from a checkout or an installed wheel,
and read a server config's tables (``extends`` resolved: the launcher and the Context's defaults
read the same)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """``specreason_graph/_data/<name>`` in a wheel; ``<repo>/<name>`` in a checkout (editable
    install). The wheel's own copy first: in an installed wheel ``_PACKAGE.parent`` is site-packages,
    where another distribution may have put a top-level ``data/`` (or ``prompts/``) folder."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find the {name}/ folder next to {_PACKAGE}")


PROMPT_SETS = ("", "paper")
"""The shipped prompt sets: ours (``prompts/`` itself) and ``paper`` (``prompts/paper/``)."""


def prompt_set_dir(prompt_set: str = "") -> Path:
    """The folder of a prompt set: "" → ``prompts/``, ``paper`` → ``prompts/paper/``, else the
    path given (a folder of ``<name>.txt`` files); ValueError for anything else."""
    if prompt_set in PROMPT_SETS:
        return resource_dir("prompts") / prompt_set
    path = Path(prompt_set).expanduser()
    if not path.is_dir():
        raise ValueError(f"prompt set {prompt_set!r} is neither "
                         f"{' nor '.join(map(repr, PROMPT_SETS))} nor a folder of prompt files")
    return path


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


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``: tables merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        old = merged.get(key)
        merged[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return merged


def _roles(server: dict[str, Any]) -> tuple[str, ...]:
    """What a ``[[server]]`` table serves: its ``role``, or its ``roles`` (replicas serving both)."""
    return (server["role"],) if "role" in server else tuple(server.get("roles", ()))


def read_config(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's tables, with ``extends = "cpu"`` resolved: the parent's tables, this file's
    laid over them (tables key by key; a ``[[server]]`` over the parent's server of the same
    ``role`` or ``roles``, or added; a list such as ``replicas`` is replaced whole), so a variant
    states only what it changes."""
    if path.resolve() in _seen:
        raise ValueError(f"{path}: 'extends' goes round in a circle")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    parent_name = data.pop("extends", None)
    tables = {"defaults", "server", "graph"}
    if set(data) - tables:
        raise ValueError(f"{path}: unknown tables {sorted(set(data) - tables)}; a config has "
                         "[defaults], [[server]] and [graph] (the judge settings) tables, and "
                         "optionally extends = \"<config>\"")
    if parent_name is None:
        return data
    parent_path = config_path(parent_name)
    if not parent_path.is_absolute() and not parent_path.exists():
        parent_path = path.parent / parent_path
    parent = read_config(parent_path, (*_seen, path.resolve()))
    servers = [dict(s) for s in parent.get("server", [])]
    for raw in data.get("server", []):
        same = [i for i, s in enumerate(servers) if _roles(s) == _roles(raw)]
        if same:
            servers[same[0]] = _merge(servers[same[0]], raw)
        else:
            servers.append(raw)
    merged = _merge({k: v for k, v in parent.items() if k != "server"},
                    {k: v for k, v in data.items() if k != "server"})
    return {**merged, "server": servers}
