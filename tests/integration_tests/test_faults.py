"""Faults injected between the graph and the REAL vLLM servers: a proxy (``faultproxy.py``) sits in
front of one server and, for chosen requests, delays, drops the connection, answers 5xx, answers
200 with garbage, or answers a completion without logprobs.

Every case checks what the run did about it (retried and completed, failed with a message naming
the server, or recorded the bad reply) and that no committed step was lost: each run has a
checkpointer and a thread id, every checkpoint's steps are a prefix of the final steps, the custom
stream's step events are exactly the final steps, and the trace has one record per step.

Runs are kept short (tens of tokens, seed 0) and retries fast (0.1 s backoff), since the CPU
models write ~10 (0.5B) and ~3 (1.5B) tokens a second.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import openai
import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import RetryPolicy

from specreason_graph import build_graph, models
from specreason_graph.context import PAPER_JUDGE, Context
from specreason_graph.evaluation import datasets
from specreason_graph.models import ModelCallError, transient
from specreason_graph.serving import preflight
from specreason_graph.trace import judge_reads
from tests.integration_tests.faultproxy import FaultProxy, Rule, fail

PROBLEM = datasets.get("gsm8k", "0").question  # Janet's ducks: several steps before an answer
SHORT = {"seed": 0, "token_budget": 40, "max_step_tokens": 16}
EVERY_CALL_FROM_2 = range(2, 10**9)


# --- fixtures and helpers ------------------------------------------------------------------------

@pytest.fixture
def small_proxy(local_servers):
    with FaultProxy(local_servers.role("small").origin) as proxy:
        yield proxy


@pytest.fixture
def base_proxy(local_servers):
    with FaultProxy(local_servers.role("base").origin) as proxy:
        yield proxy


class Retries:
    """A fast RetryPolicy that also records every exception it was asked about."""

    def __init__(self, max_attempts: int = 3):
        self.seen: list[BaseException] = []
        self.policy = RetryPolicy(max_attempts=max_attempts, initial_interval=0.1,
                                  retry_on=self._retry_on)

    def _retry_on(self, exc: Exception) -> bool:
        self.seen.append(exc)
        return transient(exc)

    def causes(self) -> list[type]:
        return [type(e.__cause__ if isinstance(e, ModelCallError) else e) for e in self.seen]


def make_graph(retries: Retries, checkpointer=None, **models):
    return build_graph(retry=retries.policy, **models).compile(
        checkpointer=checkpointer or InMemorySaver())


def run(graph, ctx, config, problem=PROBLEM, events=None):
    """Stream one run (``problem=None`` resumes); the step events go into ``events``."""
    events = [] if events is None else events
    final = None
    inputs = None if problem is None else {"problem": problem}
    for mode, chunk in graph.stream(inputs, config, context=ctx, stream_mode=["custom", "values"]):
        if mode == "custom" and chunk.get("event") == "step":
            events.append(chunk)
        elif mode == "values":
            final = chunk
    return final, events


def context(servers, **settings) -> Context:
    """A Context for the local servers, any field (an endpoint too) overridden; the paper's judge
    (one base-model call a draft, which the judge faults hit) whatever servers/cpu.toml chooses —
    named here, not left to whether the unit tests' conftest was imported in the same session."""
    base, small = servers.role("base"), servers.role("small")
    return Context(**{"base_url": base.url, "base_model": base.served_model_name,
                      "small_url": small.url, "small_model": small.served_model_name,
                      **PAPER_JUDGE, **settings})


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


def assert_nothing_lost(graph, config, final, events):
    """The run finished, and every step it ever committed is in the final state, in order."""
    saved = graph.get_state(config)
    assert final["stop_reason"] is not None and not saved.next
    steps, trace = final["steps"], final["trace"]
    assert saved.values["steps"] == steps
    # (a judge's alternatives are tuples in a live run and lists once read back from a checkpoint)
    assert plain(saved.values["trace"]) == plain(trace)
    assert steps, "no step was kept"
    assert [e["text"] for e in events] == steps, "a streamed (committed) step is missing"
    assert [r["index"] for r in trace] == list(range(len(steps)))
    assert [r["text"] for r in trace] == steps
    assert final["kept_tokens"] == sum(r["tokens"] for r in trace)
    for snapshot in graph.get_state_history(config):
        kept = snapshot.values.get("steps") or []
        assert steps[: len(kept)] == kept, f"checkpoint {snapshot.config} holds other steps"


def plain(value):
    return json.loads(json.dumps(value))


def messages_of(entry):
    return entry.body.get("messages")


# --- 1. a 503 on the first draft is retried ------------------------------------------------------

def test_503_on_first_draft_is_retried_and_the_run_completes(local_servers, small_proxy):
    small_proxy.set(fail(503, kind="step", calls={0}))
    retries = Retries()
    graph = make_graph(retries)
    ctx = context(local_servers, small_url=small_proxy.url, threshold=0, **SHORT)
    final, events = run(graph, ctx, thread("503"))

    assert_nothing_lost(graph, thread("503"), final, events)
    first, retry, *_ = small_proxy.entries("step")
    assert (first.status, retry.status) == (503, 200)
    assert messages_of(retry) == messages_of(first)  # the same request, sent again
    assert all(e.status == 200 for e in small_proxy.entries("step")[1:])
    assert [issubclass(c, openai.InternalServerError) for c in retries.causes()] == [True]
    assert len(retries.seen) == 1 and retries.seen[0].step == 0 and retries.seen[0].node == "draft"
    assert all(r["writer"] == "small" and r["accepted"] for r in final["trace"])  # threshold 0


# --- 2. a small server that keeps failing: ModelCallError, then a resume ------------------------

def test_persistent_500_fails_naming_server_node_step_and_resumes(local_servers, small_proxy,
                                                                 tmp_path):
    small_proxy.set(fail(500, kind="step", calls=EVERY_CALL_FROM_2))
    ctx = context(local_servers, small_url=small_proxy.url, threshold=0, seed=0,
                  token_budget=60, max_step_tokens=16)
    config = thread("500")
    events: list[dict] = []
    with sqlite3.connect(tmp_path / "runs.sqlite", check_same_thread=False) as conn:
        retries = Retries()
        graph = make_graph(retries, SqliteSaver(conn))
        with pytest.raises(ModelCallError) as caught:
            run(graph, ctx, config, events=events)

        error = caught.value
        assert (error.role, error.url, error.node, error.step) == ("small", small_proxy.url,
                                                                   "draft", 2)
        assert str(error).startswith(f"the small server at {small_proxy.url} failed in draft "
                                     "of step 2: ")
        assert "500" in str(error)
        assert isinstance(error.__cause__, openai.InternalServerError)
        # Three attempts at step 2, all answered 500; the two steps before were fine.
        assert [e.status for e in small_proxy.entries("step")] == [200, 200, 500, 500, 500]
        assert len(retries.seen) == 3

        saved = graph.get_state(config)
        kept_before = saved.values["steps"]
        assert len(kept_before) == 2 and kept_before == [e["text"] for e in events]
        assert saved.values["stop_reason"] is None and saved.next == ("draft",)

        # The server is back: a fresh graph on the same database resumes the thread.
        small_proxy.set()
        resumed = make_graph(Retries(), SqliteSaver(conn))
        final, events = run(resumed, ctx, config, problem=None, events=events)

        assert final["steps"][:2] == kept_before
        assert len(final["steps"]) > 2
        assert_nothing_lost(resumed, config, final, events)
    assert all(e.status == 200 for e in small_proxy.entries("step")[5:])


# --- 3. a dropped judge connection is retried -----------------------------------------------------

def test_dropped_judge_connection_is_retried_and_the_run_completes(local_servers, base_proxy):
    base_proxy.set(Rule("drop", kind="judge", calls={0}))
    retries = Retries()
    graph = make_graph(retries)
    ctx = context(local_servers, base_url=base_proxy.url, threshold=0, **SHORT)
    final, events = run(graph, ctx, thread("drop"))

    assert_nothing_lost(graph, thread("drop"), final, events)
    judges = base_proxy.entries("judge")
    assert (judges[0].status, judges[0].note) == (None, "dropped")
    assert judges[1].status == 200 and messages_of(judges[1]) == messages_of(judges[0])
    assert len(judges) == len(final["trace"]) + 1
    assert [issubclass(c, openai.APIConnectionError) for c in retries.causes()] == [True]
    assert retries.seen[0].node == "judge"
    first = final["trace"][0]
    assert first["judge_error"] is None and isinstance(judge_reads(first)["token"], str)
    assert judge_reads(first)["alternatives"], "the retried judge call's real logprobs were recorded"


# --- 4. a garbage judge reply scores 0 and the base model rewrites the step ---------------------

GARBAGE = {
    "non-JSON body sent as JSON": Rule("garbage", kind="judge", calls={0},
                                       content_type="application/json"),
    "HTML page": Rule("garbage", kind="judge", calls={0}, content_type="text/html"),
    "JSON that is no completion": Rule("garbage", kind="judge", calls={0},
                                       body=b'{"unexpected": true}'),
}
@pytest.mark.parametrize("garbage", [
    "non-JSON body sent as JSON",
    "HTML page",
    "JSON that is no completion",
])
def test_garbage_judge_reply_scores_zero_and_base_rewrites(local_servers, base_proxy, garbage):
    base_proxy.set(GARBAGE[garbage])
    graph = make_graph(Retries())
    ctx = context(local_servers, base_url=base_proxy.url, threshold=1, seed=0, token_budget=30,
                  max_step_tokens=16)
    final, events = run(graph, ctx, thread("garbage"))

    assert_nothing_lost(graph, thread("garbage"), final, events)
    first = final["trace"][0]
    assert first["judge_error"], "the unreadable reply is recorded"
    assert first["score"] == 0.0 and first["accepted"] is False
    assert judge_reads(first).get("token") is None and judge_reads(first).get("alternatives", []) == []
    assert first["writer"] == "base" and first["base_tokens"] > 0 and first["draft"] is not None
    # The garbage was answered once (no retry: it is a reply, not a failure); then the base
    # server regenerated the step through the same proxy, from the same prefix as the draft.
    judges = base_proxy.entries("judge")
    assert judges[0].action == "garbage"
    assert all(e.status == 200 for e in judges), [(e.number, e.action, e.status, e.note)
                                                  for e in judges]
    assert len(judges) == len(final["trace"])
    regenerate = base_proxy.entries("step")[0]
    assert regenerate.status == 200
    assert "Janet" in str(messages_of(regenerate))
    assert first["draft"] not in str(messages_of(regenerate)) or not first["draft"]


def test_garbage_step_reply_fails_naming_the_server(local_servers, small_proxy):
    small_proxy.set(Rule("garbage", kind="step", content_type="application/json"))
    graph = make_graph(Retries())
    ctx = context(local_servers, small_url=small_proxy.url, threshold=0, **SHORT)
    with pytest.raises(ModelCallError, match=f"small server at {small_proxy.url}"):
        run(graph, ctx, thread("garbage-step"))


# --- 5. a judge reply without logprobs -----------------------------------------------------------

def test_judge_reply_without_logprobs_greedy_reads_the_text(local_servers, base_proxy):
    base_proxy.set(Rule("no_logprobs", kind="judge", content="7"))  # every judge call
    graph = make_graph(Retries())
    ctx = context(local_servers, base_url=base_proxy.url, threshold=7, score_method="greedy",
                  **SHORT)
    final, events = run(graph, ctx, thread("greedy"))

    assert_nothing_lost(graph, thread("greedy"), final, events)
    for record in final["trace"]:
        assert judge_reads(record)["token"] == "7" and judge_reads(record)["alternatives"] == []
        assert record["score"] == 7.0 and record["accepted"] is True
        assert record["writer"] == "small" and record["judge_error"] is None
    assert base_proxy.entries("step") == []  # nothing was rewritten
    assert len(base_proxy.entries("judge")) == len(final["trace"])


def test_judge_reply_without_logprobs_expected_scores_zero(local_servers, base_proxy):
    base_proxy.set(Rule("no_logprobs", kind="judge", calls={0}, content="7"))
    graph = make_graph(Retries())
    ctx = context(local_servers, base_url=base_proxy.url, threshold=0.5, score_method="expected",
                  seed=0, token_budget=30, max_step_tokens=16)
    final, events = run(graph, ctx, thread("expected"))

    assert_nothing_lost(graph, thread("expected"), final, events)
    first = final["trace"][0]
    assert judge_reads(first)["token"] == "7" and judge_reads(first)["alternatives"] == []
    assert first["score"] == 0.0 and first["accepted"] is False
    assert first["writer"] == "base" and first["base_tokens"] > 0
    assert base_proxy.entries("step")[0].status == 200  # the regeneration
    for record in final["trace"][1:]:  # real judge replies after the first
        assert judge_reads(record)["alternatives"]


# --- 6. a step call slower than request_timeout ---------------------------------------------------

STEP_TIMEOUT = 8.0  # s; real 8-token drafts take ~1 s alone, several when other clients load the CPU


def test_step_call_slower_than_request_timeout_is_retried(local_servers, small_proxy):
    # The proxy holds the second draft request far longer than request_timeout (it stops as soon
    # as the client hangs up, so the wait costs only the timeout).
    small_proxy.set(Rule("delay", kind="step", calls={1}, seconds=60))
    base = local_servers.role("base")
    # request_timeout governs the Context's endpoints; the judge goes to its own client with a
    # generous timeout, because a 1.5B judge call on 2 shared CPU cores can outlast STEP_TIMEOUT.
    judge_model = models.chat_model(base.url, base.served_model_name, None, 600.0)
    retries = Retries()
    graph = make_graph(retries, base=judge_model)
    ctx = context(local_servers, small_url=small_proxy.url, threshold=0,
                  request_timeout=STEP_TIMEOUT, seed=0, token_budget=24, max_step_tokens=8)
    final, events = run(graph, ctx, thread("timeout"))

    assert_nothing_lost(graph, thread("timeout"), final, events)
    steps = small_proxy.entries("step")
    slow, retry = steps[1], steps[2]
    assert (slow.status, slow.note) == (None, "client hung up during the delay")
    assert STEP_TIMEOUT - 0.5 <= slow.ended - slow.started <= STEP_TIMEOUT + 5
    assert retry.status == 200 and messages_of(retry) == messages_of(slow)
    # Each timeout is an APITimeoutError, retried; the injected one is the draft of step 1. (A real
    # call may also outlast the timeout when other clients load the CPU: it is retried the same.)
    assert retries.causes() and all(issubclass(c, openai.APITimeoutError)
                                    for c in retries.causes())
    assert ("draft", 1) in [(e.node, e.step) for e in retries.seen]
    assert len(final["steps"]) >= 2


# --- 7. the CLI against a base server that fails every model call --------------------------------

def test_cli_reports_a_failing_server_in_one_line(local_servers, base_proxy):
    # Every model call fails; the CLI's preflight (GET /v1/models, POST /tokenize) still works.
    # Greedy: a sampled run would first probe the default's speculating base server with two
    # model calls (preflight.check_speculation), and this test is about a failure inside the run.
    base_proxy.set(fail(500, kind="model"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECREASON_")}
    result = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "ask", "What is 2+2?", "--no-serve",
         "--base-url", base_proxy.url, "--small-url", local_servers.role("small").url,
         "--token-budget", "40", "--max-step-tokens", "16", "--seed", "0", "--temperature", "0",
         # the paper's judge: the base server is asked about the very first draft
         "--judge", "score", "--threshold", "7", "--score-method", "greedy"],
        capture_output=True, text=True, timeout=300, env=env)

    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the base server at {base_proxy.url} failed in judge of "
                               "step 0: "), lines[0]
    assert "500" in lines[0] and "after 0 kept steps; retries exhausted" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    preflight = base_proxy.entries("other")
    assert [(e.method, e.path) for e in preflight][:1] == [("GET", "/v1/models")]
    assert all(e.status == 200 for e in preflight)
    assert [e.status for e in base_proxy.entries("judge")] == [500, 500, 500]  # default 3 tries


def test_cli_refuses_a_sampled_run_whose_speculation_probe_fails(local_servers, base_proxy):
    """The default's base server speculates, so a sampled run first probes it (greedy and sampled
    acceptance); a server that fails the probe gets one line naming it, before any step."""
    if preflight.spec_counters(local_servers.role("base").url) is None:
        pytest.skip("SPECREASON_TEST_SERVERS names a pair whose base server does not speculate")
    base_proxy.set(fail(500, kind="model"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPECREASON_")}
    result = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "ask", "What is 2+2?", "--no-serve",
         "--base-url", base_proxy.url, "--small-url", local_servers.role("small").url,
         "--token-budget", "40", "--max-step-tokens", "16", "--temperature", "0.6"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: the base server at {base_proxy.url} speculates, and a probe request to it "
        "failed"), result.stderr
    assert "500" in lines[0] and "Traceback" not in result.stderr + result.stdout
    # one greedy probe (not retried: a preflight request), then nothing: no step, no judge call
    assert not base_proxy.entries("judge")
    assert [(e.body.get("max_tokens"), e.status) for e in base_proxy.entries("step")] == [(32, 500)]
