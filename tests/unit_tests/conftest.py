"""The graph-logic tests are written against the paper's judge (score, greedy, threshold 7).
``servers/cpu.toml``'s ``[graph]`` table holds the judge that calibration chose for the CPU pair and
becomes the Context's default there; these tests see the paper's defaults instead — from import on,
since parametrized cases build Contexts while they are collected — and the tests marked
``cpu_defaults`` (``test_context_defaults.py``) check the CPU pair's own."""

from __future__ import annotations

import asyncio
import threading

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


@pytest.fixture(params=["sync", "async"])
def both_paths(request, monkeypatch):
    """Run a module's tests once as written (``invoke``/``stream``) and once with every graph call
    made through ``ainvoke``/``astream`` on an event loop: the async path, which must send every
    model call with ``ainvoke`` on the loop's own thread (no thread pool), as a test then checks
    on every scripted model it created."""
    if request.param == "sync":
        yield "sync"
        return
    from langgraph.pregel import Pregel

    from tests.fakes import ScriptedModel

    created: list[ScriptedModel] = []
    init = ScriptedModel.model_post_init

    def recording_init(self, context):
        created.append(self)
        init(self, context)

    def invoke(self, *args, **kwargs):
        return asyncio.run(self.ainvoke(*args, **kwargs))

    def stream(self, *args, **kwargs):
        async def collect():
            return [chunk async for chunk in self.astream(*args, **kwargs)]
        yield from asyncio.run(collect())

    monkeypatch.setattr(ScriptedModel, "model_post_init", recording_init)
    monkeypatch.setattr(Pregel, "invoke", invoke)
    monkeypatch.setattr(Pregel, "stream", stream)
    yield "async"
    here = threading.get_ident()
    for model in created:
        assert model.async_calls == len(model.calls), "a model call went through invoke"
        assert set(model.threads) <= {here}, "a model call ran on another thread"
