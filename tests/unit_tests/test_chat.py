"""ChatSpecReason and the graph's conversations, with scripted models: a message list in, the kept
steps as reasoning blocks and the base model's reply (text or tool calls) out; every call of the run
starts with the same conversation and sends the same tools (the prefix vLLM's cache keeps); sync,
async, streaming and batch; tool_choice, structured output, bad input."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from pydantic import BaseModel

from specreason_graph import ChatSpecReason, Context, compile_graph, prompts
from specreason_graph.chat import NoReply, tool_choice_for
from tests.fakes import ScriptedModel, context_full_error, score, step

DELIM = "\n\n"


@tool
def get_exchange_rate(base: str, quote: str) -> float:
    """The exchange rate from one currency to another."""
    return 151.2


RATE_CALL = {"name": "get_exchange_rate", "args": {"base": "USD", "quote": "JPY"}, "id": "call_1",
             "type": "tool_call"}


def reply(text: str = "", *, calls: list[dict] | None = None, tokens: int = 7) -> AIMessage:
    return AIMessage(text, tool_calls=calls or [], id="reply-1",
                     response_metadata={"finish_reason": "tool_calls" if calls else "stop"},
                     usage_metadata={"input_tokens": 120, "output_tokens": tokens,
                                     "total_tokens": 120 + tokens,
                                     "input_token_details": {"cache_read": 96}})


def is_step(kwargs: dict) -> bool:
    return kwargs.get("stop") == [DELIM] and kwargs.get("max_tokens") != 1


def pair(steps: list[AIMessage], scores: list[AIMessage], replies: list[AIMessage],
         rewrites: list[AIMessage] | None = None) -> tuple[ScriptedModel, ScriptedModel]:
    """The small model drafts ``steps``; the base model judges with ``scores``, rewrites with
    ``rewrites`` and replies with ``replies``."""
    scores_, replies_, rewrites_ = iter(scores), iter(replies), iter(rewrites or [])

    def base(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        if kwargs.get("max_tokens") == 1:
            return next(scores_)
        return next(rewrites_) if is_step(kwargs) else next(replies_)

    return ScriptedModel(script=steps), ScriptedModel(script=base)


def chat(small: ScriptedModel, base: ScriptedModel, **fields: Any) -> ChatSpecReason:
    ctx = Context(judge="score", threshold=7, thinking_opener="", **fields.pop("context", {}))
    return ChatSpecReason(context=ctx, small=small, base=base, **fields)


CONVERSATION = [SystemMessage("You are a currency assistant."),
                HumanMessage("How many yen is one dollar?")]


def test_invoke_reasons_then_replies_with_the_steps_as_reasoning_blocks():
    small, base = pair([step("The user wants USD to JPY."), step("I know it is about 150.", end="eos")],
                       [score("9"), score("9")], [reply("About 150 yen.")])
    out = chat(small, base).invoke(CONVERSATION)
    assert isinstance(out, AIMessage)
    assert [b["type"] for b in out.content_blocks] == ["reasoning", "reasoning", "text"]
    assert [b.get("reasoning") for b in out.content_blocks[:2]] == [
        "The user wants USD to JPY.", "I know it is about 150."]
    assert out.text == "About 150 yen." and out.tool_calls == []
    usage = out.usage_metadata
    assert usage is not None
    kept = 6 + 6  # the scripted steps' word counts
    assert usage["output_token_details"]["reasoning"] == kept
    assert (usage["input_tokens"], usage["output_tokens"]) == (120, kept + 7)
    assert usage["total_tokens"] == 120 + kept + 7 and usage["input_token_details"]["cache_read"] == 96
    meta = out.response_metadata["specreason"]
    assert (meta["steps_small"], meta["steps_base"], meta["acceptance_rate"]) == (2, 0, 1.0)
    assert meta["stop_reason"] == "finished"


def test_every_call_starts_with_the_same_conversation_and_the_reply_sees_the_kept_steps():
    small, base = pair([step("Think."), step("Rewrite me.")], [score("9"), score("2")],
                       [reply("Done.")], rewrites=[step("Better.", end="eos")])
    chat(small, base).invoke(CONVERSATION)
    head = [*CONVERSATION, HumanMessage(prompts.load("chat_reason"))]
    calls = [*small.calls, *base.calls]
    for messages, _ in calls:
        assert [(type(m), m.content) for m in messages[:3]] == [(type(m), m.content) for m in head]
    reply_messages = base.calls[-1][0]
    assert reply_messages[3] == AIMessage("Think." + DELIM + "Better.")  # kept steps, not the draft
    assert reply_messages[4] == HumanMessage(prompts.load("chat_reply"))
    assert "Rewrite me." not in str(reply_messages)


def test_tools_travel_with_every_call_and_only_the_reply_may_call_one():
    small, base = pair([step("Call the rate tool.", end="eos")], [score("9")],
                       [reply(calls=[RATE_CALL])])
    model = chat(small, base).bind_tools([get_exchange_rate], tool_choice="any")
    out = model.invoke(CONVERSATION)
    assert out.tool_calls == [RATE_CALL]
    steps_and_judges = [kw for _, kw in [*small.calls, *base.calls[:-1]]]
    assert all(kw["tools"][0]["function"]["name"] == "get_exchange_rate" for kw in steps_and_judges)
    assert all(kw["tool_choice"] == "none" for kw in steps_and_judges)
    last = base.calls[-1][1]
    assert last["tool_choice"] == "required" and last["tools"] == steps_and_judges[0]["tools"]


def test_a_tool_result_and_the_earlier_reasoning_are_shown_to_the_models_as_text():
    small, base = pair([step("The tool said 151.2.", end="eos")], [score("9")], [reply("151.2 yen.")])
    earlier = AIMessage([{"type": "reasoning", "reasoning": "hidden thoughts"},
                         {"type": "text", "text": "Let me check."}], tool_calls=[RATE_CALL])
    history = [*CONVERSATION, earlier,
               ToolMessage([{"type": "text", "text": "151.2"}], tool_call_id="call_1")]
    chat(small, base).bind_tools([get_exchange_rate]).invoke(history)
    sent = small.calls[0][0]
    assert sent[2].content == "Let me check." and sent[2].tool_calls == [RATE_CALL]
    assert isinstance(sent[3], ToolMessage) and sent[3].content == "151.2"
    assert "hidden thoughts" not in str(sent)
    assert base.calls[-1][1]["tool_choice"] == "auto"  # bound without a choice


@pytest.mark.parametrize("path", ["stream", "astream"])
def test_streaming_sends_each_kept_step_then_the_reply(path):
    small, base = pair([step("One."), step("Two.", end="eos")], [score("9"), score("9")],
                       [reply(calls=[RATE_CALL])])
    model = chat(small, base).bind_tools([get_exchange_rate])
    if path == "stream":
        chunks = list(model.stream(CONVERSATION))
    else:
        async def collect() -> list:
            return [c async for c in model.astream(CONVERSATION)]
        chunks = asyncio.run(collect())
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c.content_blocks[0]["type"] for c in chunks[:2]] == ["reasoning", "reasoning"]
    assert chunks[0].content_blocks[0]["reasoning"] == "One." + DELIM
    whole = chunks[0]
    for c in chunks[1:]:
        whole += c
    assert whole.tool_calls == [RATE_CALL]
    assert [b["type"] for b in whole.content_blocks] == ["reasoning", "reasoning", "tool_call"]
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 1 + 1 + 7


def test_ainvoke_and_batch():
    small, base = pair([step("A.", end="eos"), step("B.", end="eos")], [score("9"), score("9")],
                       [reply("one"), reply("two")])
    model = chat(small, base)
    assert asyncio.run(model.ainvoke("first")).text == "one"
    assert model.batch(["second"])[0].text == "two"


def test_structured_output_goes_through_a_required_tool_call():
    class Rate(BaseModel):
        """An exchange rate."""

        base: str
        quote: str

    call = {"name": "Rate", "args": {"base": "USD", "quote": "JPY"}, "id": "c", "type": "tool_call"}
    small, base = pair([step("USD to JPY.", end="eos")], [score("9")], [reply(calls=[call])])
    out = chat(small, base).with_structured_output(Rate).invoke("Which pair?")
    assert out == Rate(base="USD", quote="JPY")
    assert base.calls[-1][1]["tool_choice"] == "required"


@pytest.mark.parametrize(("choice", "sent"), [
    ("auto", "auto"), ("none", "none"), ("required", "required"), ("any", "required"),
    (True, {"type": "function", "function": {"name": "f"}}),
    ("f", {"type": "function", "function": {"name": "f"}}), (None, None)])
def test_tool_choice_is_openais(choice, sent):
    assert tool_choice_for(choice, [{"type": "function", "function": {"name": "f"}}]) == sent


def test_a_tool_choice_naming_no_tool_is_refused():
    with pytest.raises(ValueError, match="names no bound tool"):
        ChatSpecReason().bind_tools([get_exchange_rate], tool_choice="get_weather")


def test_settings_of_the_model_reach_the_runs_context():
    model = ChatSpecReason(context=Context(), max_tokens=33, temperature=0, timeout=5, stop=["x"])
    ctx = model.run_context()
    assert (ctx.reply_tokens, ctx.temperature, ctx.request_timeout) == (33, 0.0, 5.0)
    params = model._get_ls_params()
    assert (params["ls_provider"], params["ls_max_tokens"], params["ls_temperature"]) == (
        "specreason", 33, 0.0)


def test_the_stop_sequences_reach_the_reply():
    small, base = pair([step("Go.", end="eos")], [score("9")], [reply("ok")])
    chat(small, base, stop=["END"]).invoke("hi", stop=["STOP"])
    assert base.calls[-1][1]["stop"] == ["END", "STOP"]
    assert small.calls[0][1]["stop"] == [DELIM]


@pytest.mark.parametrize(("state", "message"), [
    ({"messages": []}, "the conversation is empty"),
    ({"messages": [HumanMessage("q")], "problem": "p"}, "a problem or messages, not both"),
    ({"problem": "p", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools and stop go with messages")])
def test_bad_input_is_refused_before_any_model_call(state, message):
    small, base = ScriptedModel(script=[]), ScriptedModel(script=[])
    with pytest.raises(ValueError, match=message):
        compile_graph(small=small, base=base).invoke(state, context=Context(thinking_opener=""))
    assert small.calls == base.calls == []


def test_the_graph_takes_a_conversation_and_hands_back_the_reply():
    small, base = pair([step("Hm.", end="eos")], [score("3")], [reply("Hello!")],
                       rewrites=[step("Greet back.", end="eos")])
    out = compile_graph(small=small, base=base).invoke(
        {"messages": [{"role": "user", "content": "hi"}]}, context=Context(thinking_opener=""))
    assert out["reply"].text == "Hello!"
    assert out["steps"] == ["Greet back."] and out["trace"][0]["writer"] == "base"


def test_a_conversation_longer_than_the_context_is_refused_in_one_line():
    """Nothing fits: bad input, naming the model, its server and vLLM's token counts."""
    small = ScriptedModel(script=[context_full_error()])
    with pytest.raises(ValueError, match=r"the conversation does not fit the small model's context "
                                         r"at http://127\.0\.0\.1:8102/v1: .*10240 tokens.*10300"):
        chat(small, ScriptedModel(script=[])).invoke(CONVERSATION)


def test_a_context_that_fills_up_while_reasoning_is_a_clear_error_not_a_traceback():
    small, base = pair([step("One."), context_full_error()], [score("9")], [])
    with pytest.raises(NoReply, match=r"stopped without a reply \(context_full\) after 1 kept steps"):
        chat(small, base).invoke(CONVERSATION)


@pytest.mark.parametrize("path", ["invoke", "stream"])
def test_a_malformed_tool_call_comes_back_as_an_invalid_call_not_a_traceback(path):
    """A call whose arguments are not JSON (langchain-openai keeps it in ``invalid_tool_calls``) is
    handed to the agent as such, which can answer it with an error message and go on. (Streamed, a
    call cut short, such as '{"base": "USD"', is LangChain's to repair: chunks are parsed as partial
    JSON.)"""
    bad = AIMessage("", invalid_tool_calls=[{"name": "get_exchange_rate", "args": "base=USD, JPY",
                                             "id": "call_9", "error": "unterminated JSON",
                                             "type": "invalid_tool_call"}],
                    response_metadata={"finish_reason": "tool_calls"},
                    usage_metadata={"input_tokens": 120, "output_tokens": 9, "total_tokens": 129})
    small, base = pair([step("Call it.", end="eos")], [score("9")], [bad])
    model = chat(small, base).bind_tools([get_exchange_rate])
    if path == "invoke":
        out = model.invoke(CONVERSATION)
    else:
        out = None
        for chunk in model.stream(CONVERSATION):
            out = chunk if out is None else out + chunk
    assert out is not None and out.tool_calls == []
    assert [(c["name"], c["args"]) for c in out.invalid_tool_calls] == [
        ("get_exchange_rate", "base=USD, JPY")]
