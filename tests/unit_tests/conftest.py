"""The graph-logic tests are written against the paper's judge (score, greedy, threshold 7).
``servers/cpu.toml``'s ``[graph]`` table holds the judge that calibration chose for the CPU pair and
becomes the Context's default there; these tests see the paper's defaults instead — from import on,
since parametrized cases build Contexts while they are collected — and the tests marked
``cpu_defaults`` (``test_context_defaults.py``) check the CPU pair's own."""

from __future__ import annotations

import pytest

from specreason_graph import context

_cpu_defaults = context.local_defaults


def _paper_defaults(config: str = context.LOCAL_SERVERS) -> dict:
    return {**_cpu_defaults(config), **context.PAPER_JUDGE}


context.local_defaults = _paper_defaults  # type: ignore[assignment]


@pytest.fixture(autouse=True)
def cpu_defaults_where_marked(monkeypatch, request):
    if request.node.get_closest_marker("cpu_defaults"):
        monkeypatch.setattr(context, "local_defaults", _cpu_defaults)
