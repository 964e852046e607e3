"""The async path over real HTTP: ``ainvoke``/``astream`` with the real ``ChatOpenAI`` against the
stand-in vLLM server (tests/vllm_stub.py), under the blocking-call detector ``langgraph dev`` runs
its graphs with (tests/blocking.py), across event loops, and cancelled mid-request. (The
scripted-model tests of test_graph.py and test_judges.py run every case on both paths.)"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from specreason_graph import Context, build_graph
from specreason_graph.models import clients
from tests.blocking import langgraph_dev_detector
from tests.vllm_stub import VLLMStub


def stub_context(stub: VLLMStub, **settings) -> Context:
    return Context(base_url=stub.url, small_url=stub.url, base_model="m", small_model="m",
                   judge="score", threshold=7, score_method="greedy", **settings)


def test_astream_over_http_makes_no_blocking_call_langgraph_dev_would_refuse():
    """``langgraph dev`` raises on a blocking call in a run (its BlockBuster policy, tests/blocking.py):
    the async path may not read a socket or sleep synchronously, build a client's SSL context
    on the loop, or hand a call to a thread that then blocks the loop."""
    with VLLMStub() as stub:
        graph = build_graph().compile()
        ctx = stub_context(stub)

        async def run() -> tuple[list, dict]:
            detector = langgraph_dev_detector()
            try:
                events = [part async for part in graph.astream(
                    {"problem": "What is 1 + 1?"}, context=ctx, stream_mode="custom")]
                final = await graph.ainvoke({"problem": "What is 1 + 1?"}, context=ctx)
            finally:
                detector.deactivate()
            return events, final

        clients._per_loop.clear()  # the clients are made inside the detected run too
        events, final = asyncio.run(run())
    assert [e["event"] for e in events] == ["step"]
    assert final["answer"] == "2" and final["trace"][0]["score"] == 9.0
    # draft and judge, twice: the async path sent every request
    assert len(stub.chat_requests()) == 4


def test_runs_on_one_event_loop_after_another_each_get_their_own_client():
    """httpx connections belong to the loop that opened them; langgraph-openai shares one async
    client per URL across loops (langchain-ai/langchain#35783). A second ``asyncio.run`` must not
    reuse the first one's connections ("Event loop is closed")."""
    with VLLMStub() as stub:
        graph = build_graph().compile()
        ctx = stub_context(stub)
        answers = [asyncio.run(graph.ainvoke({"problem": "1 + 1?"}, context=ctx))["answer"]
                   for _ in range(3)]
        again = graph.invoke({"problem": "1 + 1?"}, context=ctx)["answer"]
    assert answers == ["2", "2", "2"] and again == "2"
    assert len(clients._per_loop) <= 1  # closed loops' clients are dropped


def test_a_loops_http_clients_are_closed_when_asyncio_run_ends(caplog):
    """The aiohttp clients of a loop are closed on that loop at its shutdown: nothing is left for
    the garbage collector to report as an unclosed session or connector."""
    import gc
    import logging

    with VLLMStub() as stub:
        graph = build_graph().compile()
        ctx = stub_context(stub)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            for _ in range(2):
                asyncio.run(graph.ainvoke({"problem": "1 + 1?"}, context=ctx))
                [loop_clients] = clients._per_loop.values()
                sessions = [chat.http_async_client for chat in loop_clients.chats.values()]
                assert sessions and all(s.is_closed for s in sessions)
            gc.collect()
    assert not [r for r in caplog.records if "nclosed" in r.getMessage()]


def test_cancelling_an_async_run_stops_waiting_for_its_model_at_once():
    """A run waiting on a slow server is cancelled mid-request: the task ends within a second (its
    HTTP request is closed), not when the server answers 30 s later; nothing runs on after it."""
    with VLLMStub(delay=30) as stub:
        graph = build_graph().compile()
        ctx = stub_context(stub)

        async def cancel_mid_request() -> float:
            task = asyncio.create_task(graph.ainvoke({"problem": "1 + 1?"}, context=ctx))
            while not stub.chat_requests():
                await asyncio.sleep(0.05)
            started = time.perf_counter()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return time.perf_counter() - started

        waited = asyncio.run(cancel_mid_request())
        assert waited < 5
        assert len(stub.chat_requests()) == 1  # the draft; no judge call after the cancel
    assert threading.active_count() < 50


def test_the_detector_refuses_a_blocking_call_on_the_loop():
    """The detector above is on: a synchronous sleep on the event loop raises."""
    from blockbuster import BlockingError

    async def blocks() -> None:
        detector = langgraph_dev_detector()
        try:
            time.sleep(0.01)
        finally:
            detector.deactivate()

    with pytest.raises(BlockingError):
        asyncio.run(blocks())
