"""Every file the documentation points to is in the repository.

Checked in README.md, BENCHMARKS.md and docs/*.md:

- Markdown links and images ``[text](target)``, resolved from the document's folder (http(s),
  mailto and same-page ``#anchor`` links are skipped); a ``file.md#heading`` must name a heading of
  that file;
- inline code that names a repository path, such as ``servers/cpu.toml`` or
  ``specreason serve start --config servers/gpu-qwq32b-r1-1.5b.toml`` (any word whose first part is
  a top-level entry of the repository, resolved from its root; globs must match something);
- inline code naming a Python object of the package, such as ``specreason_graph.runs.run_many``.

And no file of the repository points outside it to the project's private notes.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
OUTSIDE = "../" + "shared"  # split so that this file does not contain it

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_DOTTED = re.compile(r"specreason_graph(?:\.\w+)+")


NOT_THE_REPO = {"__pycache__", "runs", "build", "dist", "models", "node_modules"}
"""Folders .gitignore keeps out of the repository (besides every hidden one: .git, .venv, caches)."""


def _repo_files() -> list[str]:
    """The repository's files, relative to its root (a walk, not git: the unit tier starts no
    process; a file that exists here but is not committed fails on CI's fresh clone)."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in NOT_THE_REPO
                         and not d.endswith(".egg-info")]
        found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files
                  if not f.endswith((".pyc", ".log"))]
    return sorted(found)


TOP_LEVEL = {name.split("/", 1)[0] for name in _repo_files()}


def _prose(path: Path) -> str:
    """The document without its fenced code blocks (commands and drawings, not references)."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", _prose(path), re.M)}


def _links(path: Path) -> list[str]:
    return [t for t in _LINK.findall(_prose(path))
            if not re.match(r"(https?|mailto):", t)]


def _code_paths(path: Path) -> list[str]:
    found = []
    for span in _CODE.findall(_prose(path)):
        for word in span.split():
            word = word.strip("'\",;:()")
            first = word.split("/", 1)[0]
            if "/" in word and first in TOP_LEVEL and "://" not in word:
                found.append(word)
    return found


def _exists(relative: str, base: Path) -> bool:
    target = (base / relative).resolve()
    if not target.is_relative_to(ROOT):
        return False
    if any(ch in relative for ch in "*?["):
        return any(base.glob(relative))
    return target.exists()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve_inside_the_repo(doc: Path):
    missing = []
    for target in _links(doc):
        if target.startswith("#"):
            if target[1:] not in _anchors(doc):
                missing.append(target)
            continue
        file, _, anchor = target.partition("#")
        names_heading = anchor and file.endswith(".md")
        if not _exists(file, doc.parent) or (
                names_heading and anchor not in _anchors((doc.parent / file).resolve())):
            missing.append(target)
    assert not missing, f"{doc.name}: links to nothing in the repository: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_paths_exist(doc: Path):
    missing = [p for p in _code_paths(doc) if not _exists(p, ROOT)]
    assert not missing, f"{doc.name}: names paths that are not in the repository: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_inline_python_names_exist(doc: Path):
    missing = []
    for span in _CODE.findall(_prose(doc)):
        for name in _DOTTED.findall(span):
            parts = name.split(".")
            for cut in range(len(parts), 0, -1):  # the longest importable module, then attributes
                try:
                    obj = importlib.import_module(".".join(parts[:cut]))
                except ImportError:
                    continue
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(name)
                break
            else:
                missing.append(name)
    assert not missing, f"{doc.name}: names Python objects that do not exist: {missing}"


def test_the_checks_find_what_they_look_for():
    readme = ROOT / "README.md"
    assert "docs/serving.md" in _links(readme) and "docs/algorithm.md" in _links(readme)
    assert "servers/cpu.toml" in _code_paths(readme)


def test_nothing_points_outside_the_repository():
    pointing = [name for name in _repo_files()
                if OUTSIDE.encode() in (ROOT / name).read_bytes()]
    assert not pointing, f"these files point outside the repository ({OUTSIDE}): {pointing}"
