"""The project uses LangGraph's and LangChain's public APIs only: no import of a private module (a
dotted path with a component starting with ``_``, such as ``langgraph._internal``), no private name
imported from one of their modules, and no private attribute reached through an imported one. A
private API may change in any release without notice; the public ones are what upgrades keep.

Scanned with ``ast``: every ``.py`` file under the package, graphs/, benchmarks/, servers/ and
tests/, and every code cell of notebooks/*.ipynb."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("specreason_graph", "graphs", "benchmarks", "servers", "tests")
FAMILY = ("langgraph", "langchain", "langsmith")
"""The packages checked: these and every ``langgraph_*`` / ``langchain_*`` (langchain_core,
langchain_openai, langgraph_sdk, langgraph_api, ...). No exceptions: where a library keeps what a
test needs private (``langgraph dev``'s blocking-call set-up), the test uses the public API under it
(tests/blocking.py)."""


def in_family(module: str) -> bool:
    top = module.split(".")[0]
    return top in FAMILY or top.startswith(tuple(f"{name}_" for name in FAMILY))


def private(name: str) -> bool:
    """``_x`` and ``__x`` are private; ``__x__`` (a dunder such as ``__version__``) is not."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> Iterator[tuple[int, str]]:
    """(line, what) for each use of a private API of the family in ``source``."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the family's dotted path it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not in_family(alias.name):
                    continue
                if any(private(part) for part in alias.name.split(".")):
                    yield node.lineno, f"import {alias.name}"
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not in_family(node.module):
                continue
            if any(private(part) for part in node.module.split(".")):
                yield node.lineno, f"from {node.module} import ..."
            for alias in node.names:
                if private(alias.name):
                    yield node.lineno, f"{node.module}.{alias.name}"
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                yield node.lineno, ".".join([bound[value.id], *chain])


def python_sources() -> Iterator[tuple[str, str]]:
    """(where, source) of every file scanned: a path relative to the checkout, a notebook's cell."""
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for number, cell in enumerate(cells):
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                # IPython magics and shell escapes are not Python: blank them, keeping line numbers
                code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in lines)
                yield f"{path.relative_to(ROOT)} cell {number}", code


def test_only_public_langgraph_and_langchain_apis_are_used():
    refused = [f"{where}, line {line}: {what}" for where, source in python_sources()
               for line, what in private_uses(source)]
    assert not refused, "private LangGraph/LangChain APIs in use:\n" + "\n".join(refused)


def test_the_scan_covers_every_folder_and_the_notebooks():
    scanned = {where.split("/")[0] for where, _ in python_sources()}
    assert scanned == {*FOLDERS, "notebooks"}


@pytest.mark.parametrize(("source", "flagged"), [
    ("from langgraph._internal._runnable import RunnableCallable",
     ["from langgraph._internal._runnable import ..."]),
    ("import langgraph._internal._runnable as r", ["import langgraph._internal._runnable"]),
    ("from langchain_core.runnables.base import _private", ["langchain_core.runnables.base._private"]),
    ("from langgraph_sdk import _http", ["langgraph_sdk._http"]),
    ("import langgraph\nlanggraph._internal.x", ["langgraph._internal"]),
    ("from langgraph.pregel import Pregel\nPregel._defaults", ["langgraph.pregel.Pregel._defaults"]),
    ("import langchain_openai as lo\nlo.chat_models._x", ["langchain_openai.chat_models._x"]),
    ("from langgraph.runtime import get_runtime\nfrom langchain_core.runnables import RunnableLambda", []),
    ("import langgraph\nlanggraph.__version__", []),
    ("from mypackage._internal import thing\nimport os\nos._exit", []),
    ("from .models import _per_loop", []),
])
def test_what_counts_as_a_private_use(source, flagged):
    assert [what for _, what in private_uses(source)] == flagged
