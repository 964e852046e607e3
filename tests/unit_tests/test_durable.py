"""Durable runs with a caller's checkpointer: a run that fails mid-way resumes from the last committed
step and loses none; the async API and batching with a concurrency limit work on the same graph."""

from __future__ import annotations

import asyncio
import sqlite3
import threading

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import RetryPolicy

from specreason_graph import Context, build_graph
from specreason_graph.models import ModelCallError, transient
from tests.fakes import ScriptedModel, by_kind, score, server_gone, step

FAST_RETRY = RetryPolicy(max_attempts=2, initial_interval=0.01, jitter=False, retry_on=transient)


def test_a_run_that_loses_its_server_resumes_from_the_last_committed_step(tmp_path):
    drafts = [step("a = 1"), step("b = 2"), step("c = 3"), step(r"so \boxed{3}")]
    down = threading.Event()

    def small_script(messages, kwargs):
        kept = messages[-1].content.count("\n\n") if len(messages) > 1 else 0
        if kept == 2 and not down.is_set() and not hasattr(small_script, "died"):
            small_script.died = True  # the small server dies while the third step is drafted
            down.set()
        if down.is_set():
            raise server_gone()
        return drafts[kept]

    small = ScriptedModel(script=small_script)
    base = ScriptedModel(script=by_kind([], [score("9")] * 10))
    config = {"configurable": {"thread_id": "long-run"}}
    with sqlite3.connect(tmp_path / "runs.sqlite", check_same_thread=False) as conn:
        graph = build_graph(small=small, base=base, retry=FAST_RETRY).compile(
            checkpointer=SqliteSaver(conn))
        with pytest.raises(ModelCallError, match=r"the small server at \S+ failed in draft of step 2: "
                                                 r"APIConnectionError"):
            graph.invoke({"problem": "q"}, config, context=Context())
        saved = graph.get_state(config).values
        assert saved["steps"] == ["a = 1", "b = 2"]          # both committed steps are kept
        assert [r["index"] for r in saved["trace"]] == [0, 1]

        down.clear()  # the server is back: resume the same thread with no new input
        final = graph.invoke(None, config, context=Context())

    assert final["steps"] == ["a = 1", "b = 2", "c = 3", r"so \boxed{3}"]
    assert [r["index"] for r in final["trace"]] == [0, 1, 2, 3]
    assert final["stop_reason"] == "answer" and final["answer"] == "3"


def test_retry_policy_rides_out_a_transient_failure():
    replies = iter([server_gone(), step(r"\boxed{1}")])
    small = ScriptedModel(script=lambda m, kw: next(replies))
    base = ScriptedModel(script=by_kind([], [score("9")]))
    out = build_graph(small=small, base=base, retry=FAST_RETRY).compile().invoke(
        {"problem": "q"}, context=Context())
    assert out["answer"] == "1" and len(small.calls) == 2


def test_async_api_and_batch_with_a_concurrency_limit():
    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def small_script(messages, kwargs):
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
        threading.Event().wait(0.05)
        with lock:
            in_flight["now"] -= 1
        return step(r"\boxed{" + messages[0].content.split()[0] + "}")

    small = ScriptedModel(script=small_script)
    base = ScriptedModel(script=lambda m, kw: score("9"))
    graph = build_graph(small=small, base=base).compile()
    questions = [f"{i} is the answer" for i in range(6)]

    async def main():
        single = await graph.ainvoke({"problem": questions[0]}, context=Context())
        events = [c async for c in graph.astream({"problem": questions[1]}, context=Context(),
                                                  stream_mode="custom")]
        many = await graph.abatch([{"problem": q} for q in questions],
                                  config={"max_concurrency": 2}, context=Context())
        return single, events, many

    single, events, many = asyncio.run(main())
    assert single["answer"] == "0"
    assert [e["index"] for e in events] == [0]
    assert [r["answer"] for r in many] == [str(i) for i in range(6)]
    assert in_flight["max"] <= 2

    in_flight["max"] = 0
    sync_many = graph.batch([{"problem": q} for q in questions], config={"max_concurrency": 3},
                            context=Context())
    assert [r["answer"] for r in sync_many] == [str(i) for i in range(6)]
    assert 1 <= in_flight["max"] <= 3


def test_arun_many_keeps_32_runs_in_flight_on_one_thread_and_returns_failures_in_place():
    """Native async: 32 runs' model calls awaited at once on the event loop's thread."""
    from specreason_graph.runs import arun_many

    in_flight = {"now": 0, "max": 0}

    async def small_script(messages, kwargs):
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        for _ in range(500):  # hold every call until 32 are in flight at once (or 5 s pass)
            if in_flight["max"] >= 32:
                break
            await asyncio.sleep(0.01)
        in_flight["now"] -= 1
        if messages[0].content.startswith("fail"):
            return RuntimeError("a scripted failure")
        return step(r"\boxed{" + messages[0].content.split()[0] + "}")

    small = ScriptedModel(ascript=small_script)
    base = ScriptedModel(script=lambda m, kw: score("9"))
    graph = build_graph(small=small, base=base).compile()
    problems = [f"{i} is it" for i in range(31)] + ["fail now"]
    results = asyncio.run(arun_many(graph, problems, Context(), concurrency=32))
    assert in_flight["max"] == 32
    assert [r["answer"] for r in results[:31]] == [str(i) for i in range(31)]
    assert isinstance(results[31], RuntimeError)
    assert len(set(small.threads + base.threads)) == 1  # no thread pool in between
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        asyncio.run(arun_many(graph, problems, Context(), concurrency=0))


def test_run_many_keeps_its_runs_in_flight_on_threads_and_returns_failures_in_place():
    from specreason_graph.runs import run_many

    in_flight = {"now": 0, "max": 0}
    lock = threading.Lock()
    release = threading.Event()

    def small_script(messages, kwargs):
        with lock:
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            if in_flight["max"] >= 8:
                release.set()
        release.wait(5)  # hold every call until 8 are in flight at once (or time out)
        with lock:
            in_flight["now"] -= 1
        if messages[0].content.startswith("fail"):
            raise RuntimeError("a scripted failure")
        return step(r"\boxed{" + messages[0].content.split()[0] + "}")

    small = ScriptedModel(script=small_script)
    base = ScriptedModel(script=lambda m, kw: score("9"))
    graph = build_graph(small=small, base=base).compile()
    problems = [f"{i} is it" for i in range(7)] + ["fail now"]
    results = run_many(graph, problems, Context(), concurrency=8)
    assert in_flight["max"] == 8
    assert [r["answer"] for r in results[:7]] == [str(i) for i in range(7)]
    assert isinstance(results[7], RuntimeError)
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        run_many(graph, problems, Context(), concurrency=0)


def test_run_many_runs_as_many_steps_as_a_single_invoke():
    """graph.batch fills in LangChain's recursion limit of 25 supersteps (8 SpecReason steps),
    which LangGraph then takes as given: run_many must let a run go as far as invoke does."""
    import asyncio

    from specreason_graph.runs import arun_many, run_many

    def small_script(messages, kwargs):
        kept = str(messages[-1].content).count("\n\n") if len(messages) > 1 else 0
        return step(f"step {kept}", tokens=10)

    graph = build_graph(small=ScriptedModel(script=small_script),
                        base=ScriptedModel(script=lambda m, kw: score("9"))).compile()
    ctx = Context(token_budget=200)  # 20 steps of 10 tokens: 61 supersteps
    single = graph.invoke({"problem": "q"}, context=ctx)
    assert len(single["steps"]) == 20 and single["stop_reason"] == "token_budget"
    for results in (run_many(graph, ["q", "r"], ctx, concurrency=2),
                    asyncio.run(arun_many(graph, ["q"], ctx, concurrency=1))):
        assert [len(r["steps"]) for r in results] == [20] * len(results), results
