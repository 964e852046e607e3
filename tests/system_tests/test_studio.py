"""The Studio path: a real ``langgraph dev`` server (offline) driven by the real ``langgraph-sdk``
client, running SpecReason against the real vLLM servers."""

from __future__ import annotations

import time

import pytest
from langgraph_sdk import get_sync_client

SMALL_RUN = {"seed": 0, "token_budget": 40, "max_step_tokens": 32}


@pytest.fixture
def studio(langgraph_dev):
    """An SDK client of the session's ``langgraph dev`` (tests/system_tests/conftest.py)."""
    url, _ = langgraph_dev
    return get_sync_client(url=url)


def stream_run(client, assistant_id: str, problem: str):
    thread = client.threads.create()
    events = []
    for part in client.runs.stream(thread["thread_id"], assistant_id, input={"problem": problem},
                                   stream_mode=["custom", "values"], context=None):
        if part.event == "custom":
            events.append(part.data)
    state = client.threads.get_state(thread["thread_id"])["values"]
    return events, state


def test_studio_lists_the_graphs_with_their_settings(studio):
    assistants = {a["graph_id"]: a for a in studio.assistants.search(limit=50)}
    assert "specreason" in assistants
    schemas = studio.assistants.get_schemas(assistants["specreason"]["assistant_id"])
    context_fields = schemas["context_schema"]["properties"]
    for name in ("threshold", "score_method", "first_n_base", "token_budget", "base_url"):
        assert name in context_fields, name
    assert "problem" in schemas["input_schema"]["properties"]


def test_studio_streams_steps_and_keeps_the_final_state(studio):
    strict = studio.assistants.create("specreason", context={**SMALL_RUN, "threshold": 10},
                                      name="strict (threshold 10)")
    fast = studio.assistants.create("specreason", context={**SMALL_RUN, "threshold": 0},
                                    name="fast (threshold 0)")
    events, state = stream_run(studio, fast["assistant_id"], "What is 3 + 4?")
    assert events and all(e["event"] == "step" for e in events)
    assert state["stop_reason"] is not None
    assert [e["text"] for e in events] == state["steps"]
    assert all(r["writer"] == "small" and r["accepted"] for r in state["trace"])

    # The assistant's setting takes effect: threshold 10 makes the base model write every step.
    events, state = stream_run(studio, strict["assistant_id"], "What is 3 + 4?")
    assert state["trace"] and all(r["writer"] == "base" and r["accepted"] is False
                                  for r in state["trace"])
    assert [e["writer"] for e in events] == ["base"] * len(events)


def test_bad_setting_from_a_client_fails_the_run_with_the_field_named(studio):
    bad = studio.assistants.create("specreason", context={"threshold": 42}, name="bad")
    thread = studio.threads.create()
    run = studio.runs.create(thread["thread_id"], bad["assistant_id"], input={"problem": "1+1?"})
    result = studio.runs.join(thread["thread_id"], run["run_id"])
    run = studio.runs.get(thread["thread_id"], run["run_id"])
    assert run["status"] == "error"
    assert "threshold" in str(result)


def test_steps_from_inside_a_subgraph_reach_the_client_with_stream_subgraphs(studio):
    """The batch graph runs SpecReason inside its ``solve`` node: its step events arrive under a
    namespaced event name (``custom|solve:<task id>``) only when the client asks for subgraphs."""
    batch = next(a for a in studio.assistants.search(limit=50) if a["graph_id"] == "batch")
    thread = studio.threads.create()
    parts = list(studio.runs.stream(
        thread["thread_id"], batch["assistant_id"], input={"questions": ["What is 3 + 4?"]},
        context={**SMALL_RUN, "threshold": 0}, stream_mode=["custom", "values"],
        stream_subgraphs=True))
    custom = [p for p in parts if p.event.startswith("custom")]
    assert custom and all("|solve:" in p.event for p in custom), [p.event for p in parts]
    assert all(p.data["event"] == "step" for p in custom)
    final = studio.threads.get_state(thread["thread_id"])["values"]
    assert len(final["results"]) == 1 and final["results"][0]["steps"] == len(custom)


def test_cancelling_a_run_through_the_sdk_aborts_its_request_on_the_server(studio, local_servers):
    """``runs.cancel`` on a run whose base model is writing a long solution: the server cancels the
    run's task, its HTTP request to vLLM closes, and vLLM aborts it within seconds."""
    from tests.integration_tests.test_cancel_real import LONG, RUNNING, wait_for

    base = local_servers.role("base")
    wait_for(base, lambda v: v == 0, 60)
    long_run = studio.assistants.create(
        "specreason", context={"one_request": "base", "token_budget": 600}, name="one long request")
    thread = studio.threads.create()
    run = studio.runs.create(thread["thread_id"], long_run["assistant_id"], input={"problem": LONG})
    wait_for(base, lambda v: v >= 1, 120)
    started = time.monotonic()
    studio.runs.cancel(thread["thread_id"], run["run_id"], wait=True)
    wait_for(base, lambda v: v == 0, 10)
    assert time.monotonic() - started < 10, f"{RUNNING} took too long to fall"
    assert studio.runs.get(thread["thread_id"], run["run_id"])["status"] in ("interrupted",
                                                                              "cancelled")


def test_the_agent_streams_its_reasoning_steps_as_they_are_kept(studio):
    """``graphs/agent.py`` (create_agent over ChatSpecReason) through the SDK: the model's reasoning
    arrives as message chunks, one per kept step, before its reply; the tool is called and its
    result answers the question."""
    agent = next(a for a in studio.assistants.search(limit=50) if a["graph_id"] == "agent")
    thread = studio.threads.create()
    chunks = []
    for part in studio.runs.stream(thread["thread_id"], agent["assistant_id"], input={
            "messages": [{"role": "user", "content": "Use the calculator to compute 1234 * 5678, "
                                                     "then tell me the result."}]},
            stream_mode="messages-tuple"):
        if part.event == "messages":
            message, _ = part.data
            chunks.append(message)
    kinds = [{b.get("type") for b in c["content"]} if isinstance(c["content"], list) else {"text"}
             for c in chunks if c.get("type") == "AIMessageChunk"]
    first_call = next(i for i, c in enumerate(chunks) if c.get("tool_call_chunks"))
    assert any("reasoning" in k for k in kinds[:first_call]), "no reasoning streamed before the call"
    messages = studio.threads.get_state(thread["thread_id"])["values"]["messages"]
    assert [m["content"] for m in messages if m["type"] == "tool"] == ["7006652"]
    final = messages[-1]
    text = "".join(b.get("text", "") for b in final["content"]) if isinstance(
        final["content"], list) else final["content"]
    assert final["type"] == "ai" and "7006652" in text.replace(",", "")
