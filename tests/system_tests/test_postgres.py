"""Postgres, the checkpointer a deployment that outgrows one machine uses: a run killed mid-trace
(SIGKILL, no clean-up) in one process is resumed from PostgreSQL by another, sync
(``PostgresSaver``, ``invoke``) and async (``AsyncPostgresSaver``, ``ainvoke``), keeping every step
committed before the kill. A real PostgreSQL server (`make postgres`, tests/system_tests/conftest.py);
the model server is the benchmarks' stand-in answering each call after 0.3 s, so the kill lands
mid-trace."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from benchmarks import overhead
from specreason_graph import build_graph
from tests.processes import events_then_kill

STEPS = 12

WORKER = """
import asyncio, json, sys
from benchmarks import overhead
from specreason_graph import build_graph
from tests.processes import events_then_kill
dsn, url, path, thread = sys.argv[1:5]
ctx = overhead.context(url, STEPS)
config = {"configurable": {"thread_id": thread}}
if path == "sync":
    from langgraph.checkpoint.postgres import PostgresSaver
    with PostgresSaver.from_conn_string(dsn) as saver:
        saver.setup()
        graph = build_graph().compile(checkpointer=saver)
        for event in graph.stream({"problem": "What is 1 + 1?"}, config, context=ctx,
                                  stream_mode="custom"):
            print(json.dumps(event), flush=True)
else:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    async def main():
        async with AsyncPostgresSaver.from_conn_string(dsn) as saver:
            await saver.setup()
            graph = build_graph().compile(checkpointer=saver)
            async for event in graph.astream({"problem": "What is 1 + 1?"}, config, context=ctx,
                                             stream_mode="custom"):
                print(json.dumps(event), flush=True)
    asyncio.run(main())
""".replace("STEPS", str(STEPS))


@pytest.fixture(scope="module")
def stand_in():
    with overhead.Stub(latency=0.3) as stub:
        yield stub


def kill_after_three_steps(postgres: str, url: str, path: str, thread: str) -> list[dict]:
    worker = subprocess.Popen([sys.executable, "-c", WORKER, postgres, url, path, thread],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, cwd=overhead.RESULTS.parents[2])
    return events_then_kill(worker, 3, 120)


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_killed_run_resumes_from_postgres_in_another_process(postgres, stand_in, path):
    thread = f"killed-{path}"
    seen = kill_after_three_steps(postgres, stand_in.url, path, thread)
    config = {"configurable": {"thread_id": thread}}
    ctx = overhead.context(stand_in.url, STEPS)

    if path == "sync":
        from langgraph.checkpoint.postgres import PostgresSaver

        with PostgresSaver.from_conn_string(postgres) as saver:
            graph = build_graph().compile(checkpointer=saver)
            kept_before = graph.get_state(config).values["steps"]
            final = graph.invoke(None, config, context=ctx)
    else:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        async def resume():
            async with AsyncPostgresSaver.from_conn_string(postgres) as saver:
                graph = build_graph().compile(checkpointer=saver)
                before = (await graph.aget_state(config)).values["steps"]
                return before, await graph.ainvoke(None, config, context=ctx)

        kept_before, final = asyncio.run(resume())

    # A step's event is streamed from its commit node, before the checkpoint after that node is
    # written: when the third event arrived, the first two steps were committed (the third drafts
    # only after them), the third perhaps not yet.
    assert 2 <= len(kept_before) < STEPS
    assert kept_before == [e["text"] for e in seen[: len(kept_before)]]
    assert final["steps"][: len(kept_before)] == kept_before  # nothing committed is lost
    assert len(final["steps"]) == STEPS and final["stop_reason"] == "token_budget"
