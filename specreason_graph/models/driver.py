"""Sending calls: one call through a chat model (:func:`send` with ``invoke``, :func:`asend` with
``ainvoke``), and :class:`Models`, the one object nodes reach the two models through, which runs a
node's or judge's generator of calls to its result (:meth:`Models.drive`, :meth:`Models.adrive`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Generic, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration
from langchain_openai import ChatOpenAI

from specreason_graph.context import Context, origin
from specreason_graph.models import templates
from specreason_graph.models.calls import Call, Calls
from specreason_graph.models.clients import async_chat_model, chat_model
from specreason_graph.models.errors import MalformedReply, told_apart
from specreason_graph.state import Role

T = TypeVar("T")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def send(chat: BaseChatModel, call: Call[T]) -> T:
    """``call`` through ``chat.invoke``."""
    started = time.perf_counter()
    try:
        with told_apart():
            reply = chat.invoke(call.messages, **call.params())
    except MalformedReply as exc:
        return call.malformed(exc, _ms(started))
    assert isinstance(reply, AIMessage)
    return call.read(reply, _ms(started))


async def asend(chat: BaseChatModel, call: Call[T]) -> T:
    """``call`` through ``chat.ainvoke``: the chat model's async client, no thread pool; cancelling
    the awaiting task closes the HTTP request (and vLLM aborts the request it was serving)."""
    started = time.perf_counter()
    try:
        with told_apart():
            reply = await chat.ainvoke(call.messages, **call.params())
    except MalformedReply as exc:
        return call.malformed(exc, _ms(started))
    assert isinstance(reply, AIMessage)
    return call.read(reply, _ms(started))


def finish(chat: BaseChatModel, messages: list[BaseMessage], *, n: int, continue_final: bool,
           max_tokens: int, temperature: float, top_p: float) -> list[str]:
    """The texts of ``n`` independent completions of the whole rest of a solution in one request
    (vLLM batches them): rollouts from a prefix of kept steps, for labelling steps. Only texts: the
    reply's usage counts the ``n`` completions together, so no per-completion token count exists."""
    result = chat.generate([messages], n=n, max_tokens=max_tokens, temperature=temperature,
                           top_p=top_p, extra_body={"continue_final_message": continue_final,
                                                    "add_generation_prompt": not continue_final})
    texts = []
    for generation in result.generations[0]:
        assert isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage)
        texts.append(str(generation.message.text))
    return texts


class Models:
    """The two chat models of a graph: given ones (tests, custom clients), else one ``ChatOpenAI``
    per endpoint named in the run's Context. Sends the calls nodes and judges yield, sync or async."""

    def __init__(self, small: BaseChatModel | None = None, base: BaseChatModel | None = None):
        self._given: dict[Role, BaseChatModel | None] = {"small": small, "base": base}

    def chat(self, role: Role, ctx: Context, *, running_loop: bool = False) -> BaseChatModel:
        """``role``'s chat model: the given one, else the endpoint's shared client — for
        ``ainvoke`` (``running_loop``) the one of the running event loop (:func:`async_chat_model`)."""
        given = self._given[role]
        if given is not None:
            return given
        url, model = ctx.endpoint(role)
        shared = async_chat_model if running_loop else chat_model
        return shared(url, model, ctx.api_key, ctx.request_timeout)

    def _template_endpoints(self, ctx: Context) -> list[tuple[str, str]]:
        """(server root, model) whose chat template decides the thinking opener: the base model's,
        then the small model's (when the base server cannot say); a given chat model counts when it
        is an OpenAI client with a base URL (else nothing can be read from it)."""
        found = []
        for role in ("base", "small"):
            given = self._given[role]
            if given is None:
                url, model = ctx.endpoint(role)
            elif isinstance(given, ChatOpenAI) and given.openai_api_base:
                url, model = given.openai_api_base, given.model_name
            else:
                continue
            found.append((origin(url), model))
        return found

    def thinking_opener(self, ctx: Context) -> str:
        """``ctx.thinking_opener`` when set, else what the served chat template opens the
        assistant turn with (:func:`~specreason_graph.models.templates.served_opener`, once per
        endpoint); "" when no server can say."""
        if ctx.thinking_opener is not None:
            return ctx.thinking_opener
        for root, model in self._template_endpoints(ctx):
            try:
                found = templates.served_opener(root, model, ctx.api_key)
            except templates.Unreachable:
                continue  # the run's first call will say so, with the retry policy's patience
            if found is not None:
                return found
        return ""

    async def athinking_opener(self, ctx: Context) -> str:
        """:meth:`thinking_opener` off the event loop: the first read of an endpoint is a few
        blocking HTTP requests, made on a worker thread; later ones are a dictionary lookup."""
        if ctx.thinking_opener is not None or all(
                templates.remembered(root, model) for root, model in self._template_endpoints(ctx)):
            return self.thinking_opener(ctx)
        return await asyncio.to_thread(self.thinking_opener, ctx)

    def run(self, call: Call[T], ctx: Context) -> T:
        """``call`` sent to its model with ``invoke``."""
        return send(self.chat(call.role, ctx), call)

    async def arun(self, call: Call[T], ctx: Context) -> T:
        """``call`` sent to its model with ``ainvoke``."""
        return await asend(self.chat(call.role, ctx, running_loop=True), call)

    def drive(self, calls: Calls[T], ctx: Context) -> T:
        """Run a node's or judge's generator to its result: each call it yields is sent, the reply
        sent back in; a failed call is raised inside the generator (which may handle it)."""
        turn = _Turn(calls)
        while (call := turn.next()) is not None:
            try:
                turn.reply = self.run(call, ctx)
            except Exception as exc:  # raised inside the generator on the next turn
                turn.error = exc
        return turn.result

    async def adrive(self, calls: Calls[T], ctx: Context) -> T:
        """:meth:`drive` with every call awaited (``ainvoke``). Cancellation is not caught: it
        leaves through the awaiting call, whose request it closes."""
        turn = _Turn(calls)
        while (call := turn.next()) is not None:
            try:
                turn.reply = await self.arun(call, ctx)
            except Exception as exc:
                turn.error = exc
        return turn.result


class _Turn(Generic[T]):
    """Where :meth:`Models.drive` and :meth:`~Models.adrive` stand in a generator of calls: the
    last call's reply or error goes in, the next call (None at the end, with ``result``) comes out."""

    def __init__(self, calls: Calls[T]):
        self.calls = calls
        self.reply: Any = None
        self.error: Exception | None = None
        self.result: T

    def next(self) -> Call[Any] | None:
        reply, error, self.reply, self.error = self.reply, self.error, None, None
        try:
            return self.calls.send(reply) if error is None else self.calls.throw(error)
        except StopIteration as done:
            self.result = done.value
            return None
