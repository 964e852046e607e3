"""SpecReason composed into other graphs and agents: the solver (subgraph node), the batch (Send fan-out)
and the LangChain tool, all with scripted models (no network)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import create_react_agent
from pydantic.dataclasses import dataclass

from graphs.batch import build_batch
from graphs.solver import RETRY_THRESHOLD, ROUTE_MAX_TOKENS, build_solver, parse_route, parseable
from specreason_graph import Context, compile_graph
from specreason_graph.tools import specreason_tool
from tests.fakes import ScriptedModel, by_kind, score, step

PROBLEM = "What is 1 + 2?"



def small_script(route: str, steps: Sequence[AIMessage] = (), direct: AIMessage | None = None):
    """The small model of the solver: route calls (max_tokens=2) get ``route``, the direct call (no
    stop string) gets ``direct``, SpecReason's step calls (stop at the delimiter) the next step."""
    steps_left = iter(steps)

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if kwargs.get("max_tokens") == ROUTE_MAX_TOKENS:
            return AIMessage(route)
        if kwargs.get("stop") is None:
            assert direct is not None, "unexpected direct call"
            return direct
        return next(steps_left)

    return respond


def solve(small: ScriptedModel, base: ScriptedModel, question: str = PROBLEM, **ctx: Any) -> dict:
    return build_solver(small=small, base=base).compile().invoke({"question": question},
                                                                 context=Context(**ctx))


def calls_of(model: ScriptedModel, kind: str) -> list[tuple[list[BaseMessage], dict[str, Any]]]:
    def kind_of(kwargs: dict[str, Any]) -> str:
        if kwargs.get("max_tokens") == 1:
            return "judge"
        if kwargs.get("max_tokens") == ROUTE_MAX_TOKENS:
            return "route"
        return "direct" if kwargs.get("stop") is None else "step"
    return [(m, kw) for m, kw in model.calls if kind_of(kw) == kind]


# --- solver: routing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "route"), [
    ("easy", "easy"), ("Easy.", "easy"), (" **EASY**", "easy"), ("hard", "hard"),
    ("Hard", "hard"), ("not easy", "hard"), ("", "hard"), ("medium", "hard"), ("e", "hard"),
])
def test_route_reply_parsing_defaults_to_hard(reply, route):
    assert parse_route(reply) == route


def test_easy_route_answers_directly_without_the_base_model():
    small = ScriptedModel(script=small_script(
        "Easy", direct=step(r"1 + 2 = 3, so the answer is \boxed{3}.", end="eos")))
    base = ScriptedModel(script=[])
    out = solve(small, base)
    assert base.calls == []                                  # no judge, no regeneration
    assert len(calls_of(small, "route")) == 1 and len(calls_of(small, "direct")) == 1
    assert calls_of(small, "step") == []
    assert out["route"] == "easy"
    assert out["final_answer"] == "3" and out["verified"] is True
    assert out["steps"] == [r"1 + 2 = 3, so the answer is \boxed{3}."]
    assert out["trace"] == []
    assert out["attempts"] == [{"mode": "direct", "threshold": None, "answer": "3",
                                "stop_reason": "answer", "steps": 1, "verified": True}]


def test_route_call_is_short_greedy_and_reads_the_route_prompt():
    small = ScriptedModel(script=small_script("easy", direct=step(r"\boxed{3}", end="eos")))
    solve(small, ScriptedModel(script=[]))
    (messages, kwargs), = calls_of(small, "route")
    assert kwargs["max_tokens"] == 2 and kwargs["temperature"] == 0.0
    assert len(messages) == 1 and messages[0].type == "human"
    assert PROBLEM in messages[0].content and "easy or hard" in messages[0].content
    # the direct call is the SpecReason problem prompt, answered in one go up to the budget
    (messages, kwargs), = calls_of(small, "direct")
    assert "\\boxed{}" in messages[0].content and PROBLEM in messages[0].content
    assert kwargs["max_tokens"] == 8192


def test_hard_route_runs_specreason_and_keeps_its_steps_once():
    small = ScriptedModel(script=small_script("hard", steps=[step("a = 1"), step(r"so \boxed{3}")]))
    base = ScriptedModel(script=by_kind([], [score("9"), score("8")]))
    out = solve(small, base)
    assert out["route"] == "hard"
    assert calls_of(small, "direct") == []
    assert len(calls_of(base, "judge")) == 2
    assert out["steps"] == ["a = 1", r"so \boxed{3}"]          # once, not appended twice
    assert [r["index"] for r in out["trace"]] == [0, 1]
    assert out["stop_reason"] == "answer"
    assert out["final_answer"] == "3" and out["verified"] is True
    assert out["attempts"] == [{"mode": "specreason", "threshold": 7.0, "answer": "3",
                                "stop_reason": "answer", "steps": 2, "verified": True}]


# --- solver: check and retry -------------------------------------------------------------------

def test_budget_stop_retries_with_threshold_9_and_replaces_the_steps():
    small = ScriptedModel(script=small_script("hard", steps=[
        # attempt 1: three accepted steps, no answer, budget 10 reached
        step("a", tokens=4), step("b", tokens=4), step("c", tokens=4),
        # attempt 2 (threshold 9): the 9 is kept, the 8 is rewritten by the base model
        step("x = 1", tokens=2), step(r"small: \boxed{4}", tokens=2)]))
    base = ScriptedModel(script=by_kind(
        [step(r"base: \boxed{3}", tokens=2)],
        [score("9"), score("9"), score("9"), score("9"), score("8")]))
    out = solve(small, base, token_budget=10)
    assert [a["threshold"] for a in out["attempts"]] == [7.0, RETRY_THRESHOLD]
    assert [(a["mode"], a["stop_reason"], a["steps"], a["verified"]) for a in out["attempts"]] == [
        ("specreason", "token_budget", 3, False), ("specreason", "answer", 2, True)]
    # the retry's steps replace the first attempt's: no a, b, c left, nothing doubled
    assert out["steps"] == ["x = 1", r"base: \boxed{3}"]
    assert len(out["steps"]) == out["attempts"][1]["steps"] == 2
    assert [r["index"] for r in out["trace"]] == [0, 1]
    # the override reached the subgraph: a score of 8 passes at 7 but not at 9
    assert [(r["score"], r["accepted"]) for r in out["trace"]] == [(9.0, True), (8.0, False)]
    assert out["final_answer"] == "3" and out["verified"] is True
    assert out["kept_tokens"] == 4


def test_two_failed_attempts_finish_unverified():
    small = ScriptedModel(script=small_script(
        "easy", direct=step("It is three.", end="eos"),
        steps=[step(r"\boxed{???}")]))
    base = ScriptedModel(script=by_kind([], [score("9")]))
    out = solve(small, base)
    assert [(a["mode"], a["threshold"], a["answer"], a["verified"]) for a in out["attempts"]] == [
        ("direct", None, None, False), ("specreason", RETRY_THRESHOLD, "???", False)]
    assert out["attempts"][0]["stop_reason"] == "finished"
    assert out["verified"] is False and out["final_answer"] == "???"
    assert len(calls_of(small, "step")) == 1                   # no third attempt


@pytest.mark.parametrize(("answer", "ok"), [
    ("3", True), (r"\frac{6}{2}", True), ("B", True), ("(1, 2)", True),
    (None, False), ("", False), ("???", False), ("}{", False),
])
def test_check_needs_an_answer_math_verify_parses(answer, ok):
    assert parseable(answer) is ok


def test_reused_thread_starts_with_the_context_threshold_again():
    small = ScriptedModel(script=small_script("hard", steps=[
        step("no answer", end="eos"), step(r"\boxed{3}"),     # run 1: fails, retry at 9 passes
        step(r"\boxed{5}")]))                                  # run 2: first attempt passes
    base = ScriptedModel(script=by_kind([], [score("9"), score("9"), score("8")]))
    graph = build_solver(small=small, base=base).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    first = graph.invoke({"question": "first?"}, config, context=Context())
    second = graph.invoke({"question": "second?"}, config, context=Context())
    assert [a["threshold"] for a in first["attempts"]] == [7.0, 9]
    assert [a["threshold"] for a in second["attempts"]] == [7.0]
    assert second["trace"][0]["accepted"] is True             # scored 8 at threshold 7, not 9
    assert second["steps"] == [r"\boxed{5}"] and second["final_answer"] == "5"


# --- solver: drawing and streaming -------------------------------------------------------------

def test_xray_drawing_shows_specreason_nodes_inside_the_solver():
    drawing = build_solver().compile().get_graph(xray=1).draw_mermaid(with_styles=False)
    edges = {line.strip().rstrip(";") for line in drawing.splitlines()}
    assert "subgraph specreason" in edges
    assert {
        "__start__ --> prepare", "prepare --> route",
        "route -.-> direct", r"route -.-> specreason\3asetup", "direct --> check",
        r"specreason\3adraft -.-> specreason\3ajudge",
        r"specreason\3ajudge -.-> specreason\3acommit",
        r"specreason\3ajudge -.-> specreason\3aregenerate",
        r"specreason\3aregenerate -.-> specreason\3acommit",
        r"specreason\3a__end__ --> check",
        r"check -.-> specreason\3asetup", "check -.-> __end__",
    } <= edges
    # without xray the subgraph is one node
    plain = build_solver().compile().get_graph().draw_mermaid(with_styles=False)
    assert "specreason --> check" in plain and "draft" not in plain


def test_custom_step_events_reach_the_parent_stream_with_subgraphs():
    def models():
        return (ScriptedModel(script=small_script("hard", steps=[step("a = 1"), step(r"\boxed{3}")])),
                ScriptedModel(script=by_kind([step("A = 1")], [score("2"), score("9")])))

    small, base = models()
    chunks = list(build_solver(small=small, base=base).compile().stream(
        {"question": PROBLEM}, context=Context(), stream_mode="custom", subgraphs=True))
    assert [(e["index"], e["writer"], e["text"]) for _, e in chunks] == [
        (0, "base", "A = 1"), (1, "small", r"\boxed{3}")]
    for namespace, _ in chunks:
        assert len(namespace) == 1 and namespace[0].startswith("specreason:")


def test_stream_updates_with_subgraphs_names_each_level():
    small = ScriptedModel(script=small_script("hard", steps=[step(r"\boxed{3}")]))
    base = ScriptedModel(script=by_kind([], [score("9")]))
    chunks = list(build_solver(small=small, base=base).compile().stream(
        {"question": PROBLEM}, context=Context(), stream_mode="updates", subgraphs=True))
    parent = [next(iter(update)) for ns, update in chunks if ns == ()]
    inner = [next(iter(update)) for ns, update in chunks if ns != ()]
    assert parent == ["prepare", "route", "specreason", "check"]
    assert inner == ["setup", "draft", "judge", "commit"]


# --- batch -------------------------------------------------------------------------------------

def answer_by_question(delay_first: float = 0.0):
    """Small model of the batch: one step boxing the sum asked ('What is 2 + 2?' -> 4); the question
    with 1 + 1 sleeps first, so it finishes last."""
    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", messages[0].content).groups())
        if a == 1:
            time.sleep(delay_first)
        return step(rf"\boxed{{{a + b}}}")
    return respond


def test_batch_returns_one_result_per_question_in_input_order():
    small = ScriptedModel(script=answer_by_question(delay_first=0.3))
    base = ScriptedModel(script=lambda messages, kwargs: score("9"))
    questions = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]
    out = build_batch(small=small, base=base).compile().invoke({"questions": questions},
                                                               context=Context())
    results = out["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["question"] for r in results] == questions
    assert [r["answer"] for r in results] == ["2", "4", "6"]
    assert [(r["stop_reason"], r["steps"]) for r in results] == [("answer", 1)] * 3
    assert all(r["summary"]["steps_small"] == 1 and r["summary"]["acceptance_rate"] == 1.0
               for r in results)
    assert len(small.calls) == 3 and len(base.calls) == 3


def test_batch_passes_the_context_to_every_question():
    small = ScriptedModel(script=answer_by_question())
    base = ScriptedModel(script=by_kind([step(r"\boxed{0}")] * 2, [score("8")] * 2))
    out = build_batch(small=small, base=base).compile().invoke(
        {"questions": ["What is 2 + 2?", "What is 3 + 3?"]}, context=Context(threshold=9))
    assert [r["answer"] for r in out["results"]] == ["0", "0"]   # every 8 rejected at 9
    assert all(r["summary"]["steps_base"] == 1 for r in out["results"])


def test_batch_step_events_map_to_questions_through_the_task_ids():
    small = ScriptedModel(script=answer_by_question())
    base = ScriptedModel(script=lambda messages, kwargs: score("9"))
    index_of, texts = {}, {}
    for namespace, mode, chunk in build_batch(small=small, base=base).compile().stream(
            {"questions": ["What is 1 + 1?", "What is 2 + 2?"]}, context=Context(),
            stream_mode=["custom", "tasks"], subgraphs=True):
        if mode == "tasks" and namespace == () and chunk["name"] == "solve" and "input" in chunk:
            index_of[chunk["id"]] = chunk["input"]["index"]
        elif mode == "custom":
            texts[index_of[namespace[0].removeprefix("solve:")]] = chunk["text"]
    assert texts == {0: r"\boxed{2}", 1: r"\boxed{4}"}


def test_batch_refuses_an_empty_question_before_any_call_and_allows_none():
    small, base = ScriptedModel(script=[]), ScriptedModel(script=[])
    graph = build_batch(small=small, base=base).compile()
    with pytest.raises(ValueError, match="question 1 is empty"):
        graph.invoke({"questions": ["What is 1 + 1?", "  "]}, context=Context())
    assert small.calls == [] and base.calls == []
    assert graph.invoke({"questions": []}, context=Context()) == {"results": []}


def test_batch_on_a_reused_thread_holds_only_the_last_run():
    small = ScriptedModel(script=answer_by_question())
    base = ScriptedModel(script=lambda messages, kwargs: score("9"))
    graph = build_batch(small=small, base=base).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"questions": ["What is 1 + 1?", "What is 2 + 2?"]}, config, context=Context())
    out = graph.invoke({"questions": ["What is 3 + 3?"]}, config, context=Context())
    assert [(r["index"], r["answer"]) for r in out["results"]] == [(0, "6")]


# --- tool --------------------------------------------------------------------------------------

def spec_models():
    """One accepted draft, then a rejected one the base model rewrites with the answer."""
    return (ScriptedModel(script=[step("a = 1"), step(r"\boxed{4}")]),
            ScriptedModel(script=by_kind([step(r"\boxed{3}")], [score("9"), score("1")])))


def test_tool_standalone_returns_a_one_line_result():
    small, base = spec_models()
    tool = specreason_tool(compile_graph(small=small, base=base))
    assert tool.name == "specreason"
    assert set(tool.args) == {"problem"}
    assert tool.invoke({"problem": PROBLEM}) == "answer: 3 (stop: answer, 2 steps, 1 by the small model)"
    assert PROBLEM in small.calls[0][0][0].content


def test_tool_async_and_context_pass_through():
    small, base = spec_models()
    tool = specreason_tool(compile_graph(small=small, base=base), context=Context(threshold=0),
                           name="reason", description="d")
    result = asyncio.run(tool.ainvoke({"problem": PROBLEM}))
    assert tool.name == "reason" and tool.description == "d"
    # threshold 0 keeps the rejected-at-7 draft: the small model's answer stands
    assert result == "answer: 4 (stop: answer, 2 steps, 2 by the small model)"


def test_tool_reports_a_run_without_an_answer():
    small = ScriptedModel(script=[step("a", tokens=5), step("b", tokens=5)])
    base = ScriptedModel(script=by_kind([], [score("9"), score("9")]))
    tool = specreason_tool(compile_graph(small=small, base=base), context=Context(token_budget=8))
    assert tool.invoke({"problem": PROBLEM}) == (
        "answer: none found (stop: token_budget, 2 steps, 2 by the small model)")


class ToolCallingModel(ScriptedModel):
    """A scripted chat model an agent can bind tools to (it ignores them and follows its script)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingModel:
        return self


@dataclass
class AgentContext:
    """An agent's own context, unrelated to SpecReason's."""

    user: str


def agent_run(**invoke: Any) -> tuple[dict, ToolCallingModel]:
    small, base = spec_models()
    agent_model = ToolCallingModel(script=[
        AIMessage("", tool_calls=[{"name": "specreason", "args": {"problem": PROBLEM}, "id": "1"}]),
        AIMessage("1 + 2 = 3."),
    ])
    agent = create_react_agent(agent_model, [specreason_tool(compile_graph(small=small, base=base))],
                               context_schema=AgentContext if "context" in invoke else None)
    return agent.invoke({"messages": [("user", "Please work out 1 + 2.")]}, **invoke), agent_model


CREATE_REACT_AGENT_MOVED = "ignore:create_react_agent has been moved"


@pytest.mark.filterwarnings(CREATE_REACT_AGENT_MOVED)
def test_tool_inside_a_react_agent():
    out, agent_model = agent_run()
    tool_messages = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert len(tool_messages) == 1
    assert tool_messages[0].tool_call_id == "1" and tool_messages[0].name == "specreason"
    assert "answer: 3" in tool_messages[0].content
    assert out["messages"][-1].content == "1 + 2 = 3."
    # the agent's second call read the tool's result
    assert any(isinstance(m, ToolMessage) and "answer: 3" in m.content for m in agent_model.calls[1][0])


@pytest.mark.filterwarnings(CREATE_REACT_AGENT_MOVED)
def test_agent_context_does_not_leak_into_specreason():
    out, _ = agent_run(context=AgentContext(user="u"))
    tool_message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "success"
    assert tool_message.content == "answer: 3 (stop: answer, 2 steps, 1 by the small model)"
