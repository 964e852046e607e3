"""The graph finds the thinking opener itself: a library user who builds ``Context(base_url=...)``
for a reasoning server (whose chat template opens ``<think>\\n``) gets every step pre-filled with
it, the first included, without setting ``thinking_opener``; it is read once per endpoint (vLLM's
``/tokenize`` and ``/detokenize``) and kept in the run's state. Against the stand-in vLLM server,
sync and async."""

from __future__ import annotations

import asyncio

import pytest

from specreason_graph import Context
from specreason_graph.graph import build_graph, compile_graph
from specreason_graph.models import Models
from tests.fakes import ScriptedModel
from tests.vllm_stub import THINK, VLLMStub


def stub_context(stub: VLLMStub, **settings) -> Context:
    return Context(base_url=stub.url, small_url=stub.url, base_model=stub.model,
                   small_model=stub.model, judge="score", threshold=7, seed=0, **settings)


def run(stub: VLLMStub, ctx: Context, path: str) -> dict:
    graph = compile_graph()
    if path == "async":
        return asyncio.run(graph.ainvoke({"problem": "What is 1 + 1?"}, context=ctx))
    return graph.invoke({"problem": "What is 1 + 1?"}, context=ctx)


def template_reads(stub: VLLMStub) -> int:
    return sum(1 for path, _ in stub.requests if path in ("/tokenize", "/detokenize"))


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_reasoning_template_opens_every_step_with_no_opener_given(path):
    with VLLMStub(think=True) as stub:
        final = run(stub, stub_context(stub), path)
    assert final["answer"] == "2"
    draft, judge = stub.chat_requests()
    assert draft["continue_final_message"] is True and draft["add_generation_prompt"] is False
    assert draft["messages"][-1] == {"role": "assistant", "content": THINK}
    assert judge["messages"][1]["content"].startswith(THINK)  # the judge reads the same prefix
    assert template_reads(stub) == 3  # /tokenize with and without the prompt, /detokenize


@pytest.mark.parametrize("path", ["sync", "async"])
def test_an_instruct_template_pre_fills_nothing(path):
    with VLLMStub(think=False) as stub:
        run(stub, stub_context(stub), path)
    draft = stub.chat_requests()[0]
    assert draft["add_generation_prompt"] is True and draft["continue_final_message"] is False
    assert [m["role"] for m in draft["messages"]] == ["user"]


def test_it_is_read_once_per_endpoint_and_kept_in_the_state():
    with VLLMStub(think=True) as stub:
        graph = compile_graph()
        ctx = stub_context(stub)
        graph.invoke({"problem": "What is 1 + 1?"}, context=ctx)
        reads = template_reads(stub)
        state = graph.invoke({"problem": "What is 2 + 0?"}, context=ctx)
    assert reads == 3 and template_reads(stub) == 3  # the second run asked nothing
    assert "thinking_opener" not in state  # not an output field ...
    builder = build_graph()
    from langgraph.checkpoint.memory import InMemorySaver

    with VLLMStub(think=True) as stub:
        saved = builder.compile(checkpointer=InMemorySaver())
        config = {"configurable": {"thread_id": "t"}}
        saved.invoke({"problem": "What is 1 + 1?"}, config, context=stub_context(stub))
        assert saved.get_state(config).values["thinking_opener"] == THINK  # ... but in the state


@pytest.mark.parametrize("opener", ["", THINK])
def test_a_set_opener_is_used_and_no_template_is_read(opener):
    with VLLMStub(think=True) as stub:
        run(stub, stub_context(stub, thinking_opener=opener), "sync")
    assert template_reads(stub) == 0
    draft = stub.chat_requests()[0]
    assert draft["add_generation_prompt"] is (opener == "")


def test_a_server_that_cannot_say_means_no_opener():
    """Not vLLM (no /tokenize): nothing to read, "" (the run goes on as for an instruct model)."""
    with VLLMStub(think=True, tokenize=False) as stub:
        final = run(stub, stub_context(stub), "sync")
    assert final["answer"] == "2"
    assert stub.chat_requests()[0]["add_generation_prompt"] is True


def test_given_chat_models_that_are_not_openai_clients_have_no_template():
    small = ScriptedModel(script=[])
    assert Models(small, ScriptedModel(script=[])).thinking_opener(Context()) == ""
    assert Models(small, ScriptedModel(script=[])).thinking_opener(Context(thinking_opener=THINK)) \
        == THINK
