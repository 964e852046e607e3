"""ChatSpecReason on the real CPU servers: LangChain's ``create_agent`` with SpecReason as its model
and a real tool, at temperature 0 — the tool is called (the base server's tool-call parser reads the
1.5B's call), its result flows back, and the final answer is right; and a conversation with tool
results keeps vLLM's prefix cache carrying every judge call.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage, convert_to_openai_messages
from langchain_core.utils.function_calling import convert_to_openai_tool

from graphs.agent import calculator
from specreason_graph import ChatSpecReason, prompts
from specreason_graph.context import PAPER_JUDGE
from tests.integration_tests.faultproxy import FaultProxy

QUESTION = "Use the calculator to compute 1234 * 5678, then tell me the result."
BLOCK = 32
"""servers/cpu-plain.toml caches prompts in 32-token blocks."""


@pytest.fixture
def model(local_servers):
    """SpecReason over the local default servers with the CPU pair's judge, greedy, short."""
    ctx = local_servers.context(temperature=0.0, seed=0, token_budget=48, max_step_tokens=48)
    return ChatSpecReason(context=ctx, max_tokens=64)


def test_an_agent_calls_the_tool_and_answers_with_its_result(model):
    agent = create_agent(model, [calculator])
    messages = agent.invoke({"messages": [HumanMessage(QUESTION)]})["messages"]
    calls = [c for m in messages if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls and calls[0]["name"] == "calculator"
    assert calls[0]["args"]["expression"].replace(" ", "") == "1234*5678"
    results = [m for m in messages if isinstance(m, ToolMessage)]
    assert results and results[0].text == "7006652"
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert "7006652" in final.text.replace(",", "")
    assert any(b["type"] == "reasoning" for b in final.content_blocks)  # it reasoned first


def test_tool_choice_required_gets_a_call_from_the_guided_reply(model):
    out = model.bind_tools([calculator], tool_choice="required").invoke("What is 17 * 23?")
    assert [c["name"] for c in out.tool_calls] == ["calculator"]


def test_the_base_servers_calls_of_a_conversation_read_it_from_the_cache(local_servers, model):
    """The conversation (a tool call and its result included) is rendered once by the served chat
    template, tools and all, and every call of the run starts with it: once the base server has seen
    it (the run's first judge call), each later judge call and the reply read it from vLLM's prefix
    cache, all of it but a last partial block."""
    history = [HumanMessage(QUESTION),
               AIMessage("", tool_calls=[{"name": "calculator", "id": "c1",
                                          "args": {"expression": "1234 * 5678"}}]),
               ToolMessage("7006652", tool_call_id="c1")]
    tools = [convert_to_openai_tool(calculator)]
    base = local_servers.role("base")
    head = _post(base, "/tokenize", {
        "model": base.served_model_name, "tools": tools, "add_generation_prompt": False,
        "messages": convert_to_openai_messages(prompts.conversation(history))})["count"]
    with FaultProxy(base.origin, max_requests=200) as proxy:
        # the paper's judge: a base-model call for every draft (the CPU cascade's free stages may
        # decide without one); short steps, so there are several
        ctx = dataclasses.replace(model.context, base_url=proxy.url, max_step_tokens=16,
                                  **PAPER_JUDGE)
        out = model.model_copy(update={"context": ctx}).bind_tools([calculator]).invoke(history)
    assert "7006652" in out.text.replace(",", "")
    calls = [e for e in proxy.entries() if e.kind != "other"]
    assert len([e for e in calls if e.kind == "judge"]) >= 2, "too few judged drafts to check"
    for entry in calls[1:]:  # every base-server call after the first
        usage = entry.reply["usage"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        assert cached is not None and cached >= head // BLOCK * BLOCK, (head, usage)


def _post(spec, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{spec.origin}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)
