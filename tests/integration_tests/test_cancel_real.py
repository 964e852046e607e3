"""Cancelling an async run stops its model requests on the real vLLM server: the task is cancelled
while the base model writes a long solution, the HTTP request closes, and vLLM aborts the request —
it leaves the server's running queue within seconds instead of generating on for nobody. (Through
the LangGraph SDK: test_studio.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from specreason_graph import compile_graph
from tests.integration_tests.conftest import metric

RUNNING = "vllm:num_requests_running"
LONG = "Write out, one by one with a sentence each, the numbers from 1 to 300."


def wait_for(spec, test, seconds: float) -> float:
    """Poll the server's running-requests gauge until ``test`` holds; the value it held at."""
    deadline = time.monotonic() + seconds
    while True:
        value = metric(spec, RUNNING)
        if test(value):
            return value
        assert time.monotonic() < deadline, f"{RUNNING} stayed at {value} for {seconds} s"
        time.sleep(0.2)


def test_cancelling_an_ainvoke_run_aborts_its_request_on_the_server(local_servers):
    base = local_servers.role("base")
    wait_for(base, lambda v: v == 0, 60)  # nothing else on the server
    # the base model writes the whole solution in one request: ~3 tokens/s, minutes for 600 tokens
    ctx = local_servers.context(one_request="base", token_budget=600, seed=None)
    graph = compile_graph()

    async def cancel_mid_request() -> tuple[float, float]:
        task = asyncio.create_task(graph.ainvoke({"problem": LONG}, context=ctx))
        await asyncio.to_thread(wait_for, base, lambda v: v >= 1, 60)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled = time.monotonic() - started
        await asyncio.to_thread(wait_for, base, lambda v: v == 0, 10)
        return cancelled, time.monotonic() - started

    cancelled, gone = asyncio.run(cancel_mid_request())
    assert cancelled < 2 and gone < 10  # the request left vLLM's running queue within seconds
