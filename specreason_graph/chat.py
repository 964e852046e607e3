"""SpecReason as a LangChain chat model: the reasoning of any agent, over the same graph.

    from langchain.agents import create_agent
    from specreason_graph import ChatSpecReason, Context

    model = ChatSpecReason(context=Context.for_servers("cpu"))
    agent = create_agent(model, [get_exchange_rate])

Given a message list, the graph reasons about how to reply (the small model drafts each step, the
base model judges it, a rejected step is rewritten by the base model), then the base model writes the
reply: text, or tool calls when tools are bound. The returned ``AIMessage`` holds the kept steps as
standard ``reasoning`` content blocks (one per step, in order) before the reply's ``text`` block,
and the calls in ``tool_calls``. ``usage_metadata`` counts every token the models wrote that the
reply stands on: the kept steps (``output_token_details["reasoning"]``) and the reply, with the
reply request's prompt as the input (``input_token_details["cache_read"]``: what vLLM's prefix cache
served); ``response_metadata["specreason"]`` has the split by model, the drafts accepted and the
stop reason. ``stream``/``astream`` send each kept step as a reasoning chunk when it is kept, then the
reply. Settings are a :class:`~specreason_graph.context.Context`; ``max_tokens`` caps the reply
(``Context.reply_tokens``) and ``temperature`` the sampling of steps and reply alike.

Tools travel with every call of the run (the served chat template renders them into the prefix all
calls share); only the reply may call one, as ``tool_choice`` allows: "auto", "required" ("any"),
"none" or a tool's name. ``with_structured_output`` is LangChain's own, through tool calling.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from specreason_graph.context import Context
from specreason_graph.graph import build_graph
from specreason_graph.models import RETRY
from specreason_graph.runs import recursion_limit
from specreason_graph.trace import summarize

ToolChoice = str | dict[str, Any] | bool | None


def tool_choice_for(choice: ToolChoice, tools: Sequence[dict[str, Any]]) -> str | dict[str, Any] | None:
    """LangChain's ``tool_choice`` as OpenAI's (and vLLM's): "any" and True → "required" (True with
    one tool: that tool), a tool's name → that function, "auto"/"none"/"required" and dicts as
    they are."""
    if choice is None or choice is False:
        return None
    if choice is True:
        return _named(tools[0]["function"]["name"]) if len(tools) == 1 else "required"
    if isinstance(choice, dict):
        return choice
    if choice == "any":
        return "required"
    if choice in ("auto", "none", "required"):
        return choice
    names = [tool["function"]["name"] for tool in tools]
    if choice not in names:
        raise ValueError(f"tool_choice {choice!r} names no bound tool (bound: {', '.join(names)})")
    return _named(choice)


def _named(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name}}


class ChatSpecReason(BaseChatModel):
    """A LangChain chat model whose every reply is reasoned with SpecReason (module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    context: Context = Field(default_factory=Context)
    """The run settings: endpoints, judge, threshold, budgets, sampling."""
    max_tokens: int | None = None
    """Cap on the reply (``Context.reply_tokens`` when None); the reasoning has ``token_budget``."""
    temperature: float | None = None
    """Sampling of the steps and the reply (``Context.temperature`` when None)."""
    timeout: float | None = None
    """Seconds for one model call (``Context.request_timeout`` when None)."""
    max_retries: int | None = None
    """Retries of a failed model call (the graph's retry policy: 2 when None)."""
    stop: list[str] | None = None
    """Stop sequences of every reply (a call's own ``stop`` adds to them)."""
    api_key: SecretStr | None = None
    """API key of both servers (``Context.api_key`` when None)."""
    small: BaseChatModel | None = Field(default=None, exclude=True)
    """A chat model to draft with instead of ``context.small_url`` (tests, custom clients)."""
    base: BaseChatModel | None = Field(default=None, exclude=True)
    """A chat model to judge, rewrite and reply with instead of ``context.base_url``."""
    _graph: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "specreason"

    @property
    def model_name(self) -> str:
        """The base model's served name: the model that writes every reply."""
        return self.context.base_model

    @property
    def _identifying_params(self) -> dict[str, Any]:
        ctx = self.run_context()
        return {"base_model": ctx.base_model, "small_model": ctx.small_model, "judge": ctx.judge,
                "threshold": ctx.threshold}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        ctx = self.run_context()
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "specreason"
        params["ls_model_name"] = kwargs.get("model") or ctx.base_model
        params["ls_model_type"] = "chat"
        params["ls_temperature"] = ctx.temperature
        params["ls_max_tokens"] = ctx.reply_tokens
        if stop:
            params["ls_stop"] = stop
        return params

    def run_context(self, model: str | None = None) -> Context:
        """The Context of a call: ``context`` with this model's settings applied (``max_tokens``,
        ``temperature``, ``timeout``, ``api_key``), and a call's ``model`` as the base model."""
        changes: dict[str, Any] = {}
        if model is not None:
            changes["base_model"] = model
        if self.api_key is not None:
            changes["api_key"] = self.api_key.get_secret_value()
        if self.max_tokens is not None:
            changes["reply_tokens"] = self.max_tokens
        if self.temperature is not None:
            changes["temperature"] = self.temperature
        if self.timeout is not None:
            changes["request_timeout"] = self.timeout
        if not changes:
            return self.context
        return dataclasses.replace(self.context, **changes)  # a pydantic dataclass: validated again

    def graph(self) -> Any:
        """The compiled SpecReason graph this model runs (one per instance)."""
        if self._graph is None:
            retry = RETRY if self.max_retries is None else RETRY._replace(
                max_attempts=self.max_retries + 1)
            self._graph = build_graph(small=self.small, base=self.base,
                                      retry=retry).compile(name="specreason")
        return self._graph

    # --- tools ---------------------------------------------------------------------------------

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
                   *, tool_choice: ToolChoice = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """The model with ``tools`` offered to every reply (OpenAI function schemas)."""
        schemas = [convert_to_openai_tool(tool) for tool in tools]
        choice = tool_choice_for(tool_choice, schemas)
        return super().bind(tools=schemas, tool_choice=choice, **kwargs)

    # --- calls ---------------------------------------------------------------------------------

    def _input(self, messages: list[BaseMessage], stop: list[str] | None,
               kwargs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(kwargs) - {"tools", "tool_choice", "model", "ls_structured_output_format"}
        if unknown:
            raise TypeError(f"ChatSpecReason does not take {', '.join(sorted(unknown))}")
        tools = kwargs.get("tools") or None
        stops = [*(self.stop or []), *(stop or [])]
        return {"messages": messages, "tools": tools,
                "tool_choice": kwargs.get("tool_choice") if tools else None, "stop": stops or None}

    def _config(self, ctx: Context) -> RunnableConfig:
        """The graph run's config. No callbacks: a call of this model is one chat-model run for
        the caller's handlers and traces (its output carries what the run did,
        ``response_metadata["specreason"]``); the models it calls inside are not runs of theirs,
        and a LangGraph ``messages`` stream shows this model's reasoning and reply chunks, not
        every draft and judge token."""
        return {"recursion_limit": recursion_limit(ctx) + 2, "callbacks": None}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        ctx = self.run_context(kwargs.get("model"))
        final = contextvars.Context().run(  # a run of its own, not a subgraph of the caller's
            self.graph().invoke, self._input(messages, stop, kwargs), context=ctx,
            config=self._config(ctx))
        return ChatResult(generations=[ChatGeneration(message=reply_message(final, ctx))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        ctx = self.run_context(kwargs.get("model"))
        final = await asyncio.create_task(self.graph().ainvoke(
            self._input(messages, stop, kwargs), context=ctx,
            config=self._config(ctx)), context=contextvars.Context())
        return ChatResult(generations=[ChatGeneration(message=reply_message(final, ctx))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        ctx = self.run_context(kwargs.get("model"))
        final: dict[str, Any] = {}
        own = contextvars.Context()  # a run of its own, not a subgraph of the caller's
        parts = own.run(self.graph().stream, self._input(messages, stop, kwargs), context=ctx,
                        config=self._config(ctx), stream_mode=["custom", "values"])
        for mode, chunk in iter(functools.partial(own.run, next, parts, None), None):
            if mode == "values":
                final = chunk
            elif chunk.get("event") == "step":
                piece = step_chunk(chunk, ctx)
                if run_manager is not None:
                    run_manager.on_llm_new_token("", chunk=piece)
                yield piece
        piece = reply_chunk(final, ctx)
        if run_manager is not None:
            run_manager.on_llm_new_token(piece.text, chunk=piece)
        yield piece

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        ctx = self.run_context(kwargs.get("model"))
        final: dict[str, Any] = {}
        own = contextvars.Context()  # a run of its own, not a subgraph of the caller's
        parts = own.run(self.graph().astream, self._input(messages, stop, kwargs), context=ctx,
                        config=self._config(ctx), stream_mode=["custom", "values"])
        while (part := await asyncio.create_task(_next(parts), context=own)) is not None:
            mode, chunk = part
            if mode == "values":
                final = chunk
            elif chunk.get("event") == "step":
                piece = step_chunk(chunk, ctx)
                if run_manager is not None:
                    await run_manager.on_llm_new_token("", chunk=piece)
                yield piece
        piece = reply_chunk(final, ctx)
        if run_manager is not None:
            await run_manager.on_llm_new_token(piece.text, chunk=piece)
        yield piece


async def _next(parts: AsyncIterator[Any]) -> Any:
    return await anext(parts, None)


# --- the graph's output as LangChain messages ------------------------------------------------------

class NoReply(RuntimeError):
    """The run ended without a reply (the base model's context filled up while reasoning)."""


def _reply(final: dict[str, Any]) -> AIMessage:
    reply = final.get("reply")
    if not isinstance(reply, AIMessage):
        steps = len(final.get("steps") or [])
        raise NoReply(f"SpecReason stopped without a reply ({final.get('stop_reason')}) after "
                      f"{steps} kept steps: the conversation and its reasoning filled a model's "
                      "context; shorten the conversation or lower token_budget")
    return reply


def _usage(final: dict[str, Any], reply: AIMessage) -> UsageMetadata:
    """Tokens of the reply request (input, ``cache_read``) and of what the reply stands on: the kept
    steps (``reasoning``) and the reply itself (output)."""
    kept = int(final.get("kept_tokens") or 0)
    used = reply.usage_metadata
    written = used["output_tokens"] if used else 0
    read = used["input_tokens"] if used else 0
    cached = (used.get("input_token_details") or {}).get("cache_read") if used else None
    usage: UsageMetadata = {"input_tokens": read, "output_tokens": kept + written,
                            "total_tokens": read + kept + written,
                            "output_token_details": {"reasoning": kept}}
    if cached is not None:
        usage["input_token_details"] = {"cache_read": int(cached)}
    return usage


def _metadata(final: dict[str, Any], reply: AIMessage, ctx: Context) -> dict[str, Any]:
    figures = summarize(final.get("trace") or [])
    return {"model_name": ctx.base_model, "model_provider": "specreason",
            "finish_reason": reply.response_metadata.get("finish_reason"),
            "specreason": {"stop_reason": final.get("stop_reason"), "small_model": ctx.small_model,
                           **{k: figures[k] for k in (
                               "steps", "steps_small", "steps_base", "acceptance_rate",
                               "kept_tokens", "draft_tokens", "rejected_draft_tokens",
                               "base_tokens", "judge_prompt_tokens", "judge_cached_tokens")}}}


def _blocks(final: dict[str, Any], text: str) -> list[dict[str, Any]]:
    steps = list(final.get("steps") or [])
    return [*({"type": "reasoning", "reasoning": step, "index": i} for i, step in enumerate(steps)),
            *([{"type": "text", "text": text, "index": len(steps)}] if text else [])]


def reply_message(final: dict[str, Any], ctx: Context) -> AIMessage:
    """The graph's final state as the chat model's reply: the kept steps as reasoning blocks, the
    reply's text block and tool calls, usage and metadata."""
    reply = _reply(final)
    return AIMessage(content=_blocks(final, reply.text),  # type: ignore[arg-type]
                     tool_calls=reply.tool_calls, invalid_tool_calls=reply.invalid_tool_calls,
                     usage_metadata=_usage(final, reply),
                     response_metadata=_metadata(final, reply, ctx), id=reply.id)


def step_chunk(event: dict[str, Any], ctx: Context) -> ChatGenerationChunk:
    """A kept step, as it is kept, as a reasoning chunk of its own (``index``: its position)."""
    text = event["text"] if event.get("stop_reason") else event["text"] + ctx.step_delimiter
    return ChatGenerationChunk(message=AIMessageChunk(content=[  # type: ignore[list-item]
        {"type": "reasoning", "reasoning": text, "index": event["index"]}]))


def reply_chunk(final: dict[str, Any], ctx: Context) -> ChatGenerationChunk:
    """The reply, last: its text block, tool call chunks, usage and metadata."""
    reply = _reply(final)
    steps = len(final.get("steps") or [])
    content: list[Any] = [{"type": "text", "text": reply.text, "index": steps}] if reply.text else []
    calls = [{"name": c["name"], "args": _json(c["args"]), "id": c.get("id"), "index": i,
              "type": "tool_call_chunk"} for i, c in enumerate(reply.tool_calls)]
    calls += [{"name": c.get("name"), "args": c.get("args"), "id": c.get("id"),
               "index": len(calls) + i, "type": "tool_call_chunk"}
              for i, c in enumerate(reply.invalid_tool_calls)]
    return ChatGenerationChunk(message=AIMessageChunk(
        content=content, tool_call_chunks=calls,  # type: ignore[arg-type]
        usage_metadata=_usage(final, reply), response_metadata=_metadata(final, reply, ctx),
        id=reply.id, chunk_position="last"))


def _json(args: Any) -> str:
    return json.dumps(args, ensure_ascii=False)

