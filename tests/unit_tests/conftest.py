"""The graph-logic tests are written against the paper's judge (score, greedy, threshold 7).
``servers/cpu.toml``'s ``[graph]`` table holds the judge that calibration chose for the CPU pair and
becomes the Context's default there; these tests see the paper's defaults instead, and
``test_context_defaults.py`` checks the CPU pair's own."""

from __future__ import annotations

import pytest

from specreason_graph import context


@pytest.fixture(autouse=True)
def paper_judge_by_default(monkeypatch, request):
    if request.node.get_closest_marker("cpu_defaults"):
        return
    local = context.local_defaults()
    monkeypatch.setattr(context, "local_defaults",
                        lambda config=context.LOCAL_SERVERS: {**local, **context.PAPER_JUDGE})
