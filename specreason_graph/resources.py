"""Find the project's data folders (``prompts/``, ``servers/``) from a checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """``<repo>/<name>`` in a checkout (editable install); ``specreason_graph/_data/<name>`` in a wheel."""
    for candidate in (_PACKAGE.parent / name, _PACKAGE / "_data" / name):
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

