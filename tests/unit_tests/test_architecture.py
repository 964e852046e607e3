"""The README's layer diagram is the one the import graph gives (import-linter's contract in
``pyproject.toml`` is checked by ``make lint``, which CI runs).

After an import between the package's parts changes, regenerate the diagram with

    .venv/bin/python -m tests.unit_tests.test_architecture

and paste what it prints over the mermaid block after the ``<!-- architecture -->`` line of README.md
(``--write`` puts it there itself).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "specreason_graph"
MARKER = "<!-- architecture -->"


def _part(module: str) -> str | None:
    """The part of the package a module belongs to: a top-level module (``graph``) or sub-package
    (``evaluation``); None for the package's own ``__init__`` (it only re-exports)."""
    names = module.split(".")[1:]
    return names[0] if names else None


def _node(part: str) -> str:
    """A mermaid node: an id that is no mermaid keyword (``graph`` is one) and the file's name."""
    if (ROOT / PACKAGE / part).is_dir():
        return f'{part}["{part}/"]'
    return f'{part}_py["{part}.py"]'


def _id(part: str) -> str:
    return _node(part).split("[", 1)[0]


def layer_diagram() -> str:
    """The mermaid block of the package's parts (``cli``, ``evaluation/``, ``serving/`` and each
    module of the core), with an edge ``A --> B`` wherever a module of A imports one of B."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    parts: set[str] = set()
    edges: set[tuple[str, str]] = set()
    for importer in graph.modules:
        source = _part(importer)
        if source is None:
            continue
        parts.add(source)
        for imported in graph.find_modules_directly_imported_by(importer):
            target = _part(imported)
            if target is not None and target != source:
                edges.add((source, target))
    lines = ["```mermaid", "flowchart TD"]
    lines += [f"    {_node(part)}" for part in sorted(parts)]
    lines += [f"    {_id(a)} --> {_id(b)}" for a, b in sorted(edges)]
    lines.append("```")
    return "\n".join(lines)


_BLOCK = re.compile(re.escape(MARKER) + r"\n(```mermaid\n.*?\n```)", re.S)


def readme_diagram() -> str | None:
    found = _BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    return found.group(1) if found else None


def write_readme_diagram() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert _BLOCK.search(text), f"README.md has no mermaid block after {MARKER}"
    readme.write_text(_BLOCK.sub(lambda _: f"{MARKER}\n{layer_diagram()}", text, count=1),
                      encoding="utf-8")


def test_readme_layer_diagram_is_the_import_graphs():
    documented = readme_diagram()
    assert documented is not None, f"README.md lost the mermaid block after {MARKER}"
    assert documented == layer_diagram(), (
        "README.md's layer diagram is stale: `python -m tests.unit_tests.test_architecture --write` "
        "updates it")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write_readme_diagram()
    else:
        print(layer_diagram())
