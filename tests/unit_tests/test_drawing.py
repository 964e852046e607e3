"""The compiled graph's shape, compared with a stored Mermaid snapshot — the one drawing of the
graph; the README shows the same text.

A change to the nodes or edges shows up here as a diff. If the change is intended, regenerate the
snapshot (and paste it into the README's first mermaid block) with:

    .venv/bin/python -c "from specreason_graph import build_graph; print(build_graph().compile()\
.get_graph().draw_mermaid(with_styles=False), end='')" > tests/unit_tests/snapshots/graph.mermaid
"""

from __future__ import annotations

import re
from pathlib import Path

from specreason_graph import build_graph
from tests.fakes import ScriptedModel

SNAPSHOT = Path(__file__).parent / "snapshots" / "graph.mermaid"
README = Path(__file__).resolve().parents[2] / "README.md"


def draw(**models: ScriptedModel) -> str:
    return build_graph(**models).compile().get_graph().draw_mermaid(with_styles=False)


def test_graph_matches_mermaid_snapshot_and_the_readme_shows_it():
    assert SNAPSHOT.is_file(), f"missing snapshot {SNAPSHOT}"
    assert draw() == SNAPSHOT.read_text(encoding="utf-8")
    block = re.search(r"```mermaid\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "README lost its drawing of the graph"
    assert block.group(1).strip() == SNAPSHOT.read_text(encoding="utf-8").strip()


def test_drawing_does_not_depend_on_the_models():
    models = {"small": ScriptedModel(script=[]), "base": ScriptedModel(script=[])}
    assert draw(**models) == SNAPSHOT.read_text(encoding="utf-8")


def test_snapshot_has_the_algorithms_edges():
    """Guards the snapshot itself against being regenerated from a broken graph unnoticed."""
    edges = {line.strip().rstrip(";") for line in SNAPSHOT.read_text(encoding="utf-8").splitlines()}
    assert {
        "__start__ --> setup",
        "draft -.-> judge",
        "draft -.-> commit",
        "judge -.-> commit",
        "judge -.-> regenerate",
        "regenerate -.-> commit",
        "base_step -.-> commit",
        "draft -.-> __end__",        # context full
        "judge -.-> __end__",
        "commit -.-> draft",
        "commit -.-> base_step",
        "commit -.-> __end__",
        "setup -.-> one_request",     # the paper's one-request baselines
        "one_request --> __end__",
    } <= edges
    assert "regenerate --> judge" not in edges
