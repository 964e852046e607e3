"""Many SpecReason runs at once against one pair of servers, with a bound on how many are in flight.

``run_many`` uses ``graph.batch``: ``max_concurrency`` threads, each one run's model calls in turn
(``invoke``). ``arun_many`` uses ``graph.abatch``: every run a task on the caller's event loop, its
model calls awaited through the chat model's async client (``ainvoke``), so no thread pool bounds how
many are in flight (asyncio's default executor has ``min(32, cores + 4)`` threads, six on two
cores). vLLM batches the concurrent requests either way.

``graph.batch`` fills in LangChain's default recursion limit (25 supersteps, 8 SpecReason steps),
which LangGraph takes as the caller's; ``run_many`` sets one from the token budget instead
(:func:`recursion_limit`), so a run goes as far as ``graph.invoke`` lets it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specreason_graph.context import Context


def recursion_limit(context: Context) -> int:
    """Supersteps a run may need: setup, then per step at most draft, judge, regenerate and commit;
    a kept step holds at least one token, so a run keeps at most ``token_budget`` steps."""
    return 2 + 4 * (context.token_budget + 1)


def run_many(graph: Any, problems: Sequence[str], context: Context, *,
             concurrency: int = 8) -> list[dict[str, Any] | Exception]:
    """Run every problem with at most ``concurrency`` in flight, results in input order. A failed run
    is returned as its exception, so one bad run does not lose the others' results."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return graph.batch([{"problem": p} for p in problems],
                       config={"max_concurrency": concurrency,
                               "recursion_limit": recursion_limit(context)},
                       context=context, return_exceptions=True)


async def arun_many(graph: Any, problems: Sequence[str], context: Context, *,
                    concurrency: int = 8) -> list[dict[str, Any] | Exception]:
    """``run_many`` on the caller's event loop (native async model calls). Cancelling it cancels
    every run in flight and their model requests."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return await graph.abatch([{"problem": p} for p in problems],  # type: ignore[no-any-return]
                              config={"max_concurrency": concurrency,
                                      "recursion_limit": recursion_limit(context)},
                              context=context, return_exceptions=True)
