"""Model I/O: every call the graphs make, over any LangChain chat model (vLLM via ``ChatOpenAI``).

``ChatOpenAI`` gives LangChain callbacks, tracing and Studio's token stream for free. vLLM's own
request fields travel in ``extra_body``: ``continue_final_message``/``add_generation_prompt`` (continue
a pre-filled assistant turn) and ``include_stop_str_in_output`` (tells a step that ended at the
delimiter from one where the model ended its turn). Logprobs come back in ``response_metadata``.
Nothing here needs the raw ``openai`` client.

One ``ChatOpenAI`` per endpoint (cached), no model-name lookup per request: the served name is a
setting. :class:`Models` is the one object nodes reach the two models through; the server errors worth
a retry and the one :data:`RETRY` policy every model-calling node uses live here too.

Sync and async from one definition: a model call is a small object that says what to send and how to
read the reply (:class:`Step`, :class:`JudgeToken`, :class:`PromptLogprobs`, :class:`Completion`), with
no I/O. Nodes and judges are generators that ``yield`` such calls and get the replies back;
:meth:`Models.drive` sends them with ``invoke`` (the graph's ``invoke``/``stream``/``batch``) and
:meth:`Models.adrive` with ``ainvoke`` (``ainvoke``/``astream``/``abatch``: the chat model's own async
client, no thread pool, and a cancelled run cancels its HTTP request).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Generic, Literal, Protocol, TypeVar

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration
from langchain_openai import ChatOpenAI
from langgraph.types import RetryPolicy

from specreason_graph.context import Context

Role = Literal["small", "base"]


@dataclass(frozen=True)
class StepReply:
    """One step written by a model."""

    text: str
    """Without the delimiter."""
    tokens: int
    truncated: bool
    """Stopped by max_tokens."""
    ended_turn: bool
    """Stopped by the model's end of sequence, not by the delimiter."""
    ms: float
    logprobs: tuple[float, ...] | None = None
    """The writer's log-probability of each token of ``text`` (None: the server sent none)."""


@dataclass(frozen=True)
class JudgeReply:
    """The judge's one token and the alternatives at that position."""

    token: str | None
    top_logprobs: list[tuple[str, float]]
    prompt_tokens: int
    cached_tokens: int | None
    ms: float
    error: str | None = None
    """Why the reply could not be read (it then scores 0)."""


class ContextFull(Exception):
    """The server refused the request: prompt (+ output) exceed the model's context length."""


class MalformedReply(Exception):
    """The server answered 200 with something that is not a chat completion (an HTML error page
    from a proxy, JSON of another shape, a truncated body)."""


def not_a_completion(exc: BaseException) -> bool:
    """``exc`` is what a chat model raises for a reply that is not a chat completion — and nothing
    else: a bug in our code or a library's must not pass for a bad reply.

    That is :class:`MalformedReply` (:class:`VLLMChatOpenAI` checks the body's shape), what openai
    raises for a body it cannot read (``APIResponseValidationError``; ``JSONDecodeError`` for a
    non-JSON body sent as JSON), and the three errors langchain-openai's ``_create_chat_result``
    raises for a body of the wrong kind, told by their messages (for a plain ``ChatOpenAI``)."""
    if isinstance(exc, MalformedReply | openai.APIResponseValidationError | json.JSONDecodeError):
        return True
    message = str(exc)
    return ((type(exc) is ValueError and message.startswith("Unexpected response type"))
            or (type(exc) is TypeError and "null value for 'choices'" in message)
            or (type(exc) is KeyError and "Response missing 'choices' key" in message))


def _malformed(exc: Exception) -> MalformedReply:
    return exc if isinstance(exc, MalformedReply) else MalformedReply(f"{type(exc).__name__}: {exc}")


@contextmanager
def _told_apart() -> Iterator[None]:
    """The two failures every call tells apart: a prompt that does not fit the context
    (:class:`ContextFull`) and a reply that is not a completion (:class:`MalformedReply`); anything
    else propagates as it is."""
    try:
        yield
    except openai.BadRequestError as exc:
        _raise_if_context_full(exc)
        raise
    except Exception as exc:
        if not_a_completion(exc):
            raise _malformed(exc) from exc
        raise


_CONTEXT_FULL = ("maximum context length", "exceeds model's maximum context length")


def _raise_if_context_full(exc: openai.BadRequestError) -> None:
    message = str(exc)
    if any(marker in message for marker in _CONTEXT_FULL):
        raise ContextFull(message) from exc


@dataclass(frozen=True)
class Reply:
    """A plain completion (no step delimiter)."""

    text: str
    tokens: int
    finish_reason: str | None
    ms: float


def _shape_error(response: Any) -> str | None:
    """Why a parsed reply body is not a chat completion langchain-openai can read (None: it is)."""
    if isinstance(response, dict):
        error, choices = response.get("error"), response.get("choices")
    elif isinstance(response, openai.BaseModel):
        error = (response.model_extra or {}).get("error")
        choices = getattr(response, "choices", None)
    else:
        return None  # not JSON at all: langchain-openai says so ("Unexpected response type")
    if error:
        return f"the reply is an error: {error}"
    if not isinstance(choices, list) or not choices:
        return f"the reply has no choices: {str(response)[:200]}"
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else getattr(choice, "message", None)
        if not isinstance(message, dict | openai.BaseModel):
            return f"a choice of the reply has no message: {str(choice)[:200]}"
    return None


class VLLMChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that checks a reply is a chat completion before reading it (else
    :class:`MalformedReply`: a proxy's error page, an error body sent with 200, no choices) and
    also keeps vLLM's ``prompt_logprobs`` (a reply field OpenAI's API does not have) in each
    message's ``response_metadata``."""

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
        if (why := _shape_error(response)) is not None:
            raise MalformedReply(why)
        result = super()._create_chat_result(response, generation_info)
        extra = (response.get("prompt_logprobs") if isinstance(response, dict)
                 else (getattr(response, "model_extra", None) or {}).get("prompt_logprobs"))
        if extra is not None:
            for generation in result.generations:
                generation.message.response_metadata["prompt_logprobs"] = extra
        return result


def _new_chat(url: str, model: str, api_key: str | None, timeout: float,
              **clients: Any) -> ChatOpenAI:
    """A client for one endpoint. Retries belong to the graph's RetryPolicy, not here."""
    return VLLMChatOpenAI(
        base_url=url,
        model=model,
        api_key=api_key or "EMPTY",  # type: ignore[arg-type]  # vLLM without --api-key takes any
        timeout=timeout,
        max_retries=0,
        stream_usage=True,
        **clients,
    )


@lru_cache(maxsize=32)
def chat_model(url: str, model: str, api_key: str | None, timeout: float) -> ChatOpenAI:
    """The shared client for one endpoint (for ``invoke``)."""
    return _new_chat(url, model, api_key, timeout)


@dataclass
class _LoopClients:
    """The chat models of one event loop, and the async generator that closes them when the loop
    shuts down (``asyncio.run`` closes every async generator of its loop before closing it)."""

    chats: dict[tuple[str, str, str | None, float], ChatOpenAI]
    closer: Any = None


_per_loop: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
_per_loop_lock = threading.Lock()


def async_chat_model(url: str, model: str, api_key: str | None, timeout: float) -> ChatOpenAI:
    """The shared client for one endpoint on the running event loop (for ``ainvoke``).

    An HTTP client's connections belong to the loop that opened them, and langchain-openai shares
    one per URL across every loop (langchain-ai/langchain#35783): after one ``asyncio.run``, the
    next would fail with "Event loop is closed". So each loop gets its own chat model with its own
    client; a closed loop's are dropped at the next lookup.

    The client is openai's aiohttp one (``DefaultAioHttpClient``): with many runs in flight it
    spends a quarter less CPU per call than the default httpx pool, which scans every pooled
    connection on each request (BENCHMARKS.md, many runs in flight). It is closed on its loop when
    the loop shuts down (:func:`close_with_loop`)."""
    loop = asyncio.get_running_loop()
    key = (url, model, api_key, timeout)
    with _per_loop_lock:
        for gone in [other for other in _per_loop if other.is_closed()]:
            del _per_loop[gone]
        clients = _per_loop.setdefault(loop, _LoopClients({}))
        if key not in clients.chats:
            clients.chats[key] = _new_chat(*key, http_async_client=openai.DefaultAioHttpClient(
                timeout=timeout))
        if clients.closer is None:
            clients.closer = _closer(clients)
            loop.create_task(_start(clients.closer))
        return clients.chats[key]


async def _start(closer: AsyncIterator[None]) -> None:
    await anext(closer)  # the loop's asyncgen hooks now track it


async def _closer(clients: _LoopClients) -> AsyncIterator[None]:
    """Suspended for the life of its loop; ``loop.shutdown_asyncgens()`` (the end of
    ``asyncio.run``) resumes it to close the loop's HTTP clients there, so no connection or aiohttp
    session outlives its loop unclosed."""
    try:
        yield
    finally:
        for chat in list(clients.chats.values()):
            if chat.http_async_client is not None:
                await chat.http_async_client.aclose()


def _usage(message: AIMessage) -> tuple[int, int, int | None]:
    usage: dict[str, Any] = dict(message.usage_metadata or {})
    cached = (usage.get("input_token_details") or {}).get("cache_read")
    return usage.get("input_tokens", 0), usage.get("output_tokens", 0), cached


def _generated_tokens(message: AIMessage) -> int:
    """How many tokens ``message`` generated: the reply's usage, else its logprobs (one entry per
    generated token); a reply with neither is refused (its steps would never reach the budget)."""
    usage = message.usage_metadata
    if usage is not None and "output_tokens" in usage:
        return int(usage["output_tokens"])
    logprobs = message.response_metadata.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if isinstance(content, list):
        return len(content)
    raise MalformedReply("the reply has no token usage (and no logprobs to count its tokens "
                         "by): the token budget could not be kept")


# --- model calls: what to send and how to read the reply, no I/O ---------------------------------

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Call(Protocol[T_co]):
    """One chat request to one of the two models and how to read its reply. Nodes and judges
    ``yield`` calls; :class:`Models` sends them (``invoke`` or ``ainvoke``) and sends the reply back."""

    @property
    def role(self) -> Role: ...

    @property
    def messages(self) -> list[BaseMessage]: ...

    def params(self) -> dict[str, Any]:
        """The request's keyword arguments for the chat model (sampling, ``extra_body``)."""
        ...

    def read(self, reply: AIMessage, ms: float) -> T_co:
        """The result, from the model's reply and the call's wall time."""
        ...

    def malformed(self, exc: MalformedReply, ms: float) -> T_co:
        """The result when the reply was not a completion (most calls raise ``exc``)."""
        ...


Calls = Generator[Call[Any], Any, T]
"""A node or judge: yields its model calls, is sent each call's result, returns its own result."""


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def send(chat: BaseChatModel, call: Call[T]) -> T:
    """``call`` through ``chat.invoke``."""
    started = time.perf_counter()
    try:
        with _told_apart():
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
        with _told_apart():
            reply = await chat.ainvoke(call.messages, **call.params())
    except MalformedReply as exc:
        return call.malformed(exc, _ms(started))
    assert isinstance(reply, AIMessage)
    return call.read(reply, _ms(started))


class _RaiseMalformed:
    def malformed(self, exc: MalformedReply, ms: float) -> Any:
        raise exc


@dataclass(frozen=True)
class Step(_RaiseMalformed):
    """Generate up to the next delimiter (continuing the pre-filled assistant turn if asked)."""

    role: Role
    messages: list[BaseMessage]
    continue_final: bool
    delimiter: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None

    @classmethod
    def of(cls, role: Role, ctx: Context, messages: list[BaseMessage], *,
           continue_final: bool) -> Step:
        """The next step from ``role`` with the run's delimiter, step length and sampling."""
        return cls(role, messages, continue_final, ctx.step_delimiter, ctx.max_step_tokens,
                   ctx.temperature, ctx.top_p, ctx.seed)

    def params(self) -> dict[str, Any]:
        return {"stop": [self.delimiter], "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "logprobs": True,  # the draft's own confidence, free with it (`confidence` judge)
                "extra_body": {"continue_final_message": self.continue_final,
                               "add_generation_prompt": not self.continue_final,
                               "include_stop_str_in_output": True}}

    def read(self, reply: AIMessage, ms: float) -> StepReply:
        text = str(reply.text)
        finish = reply.response_metadata.get("finish_reason")
        at_delimiter = text.endswith(self.delimiter)
        if at_delimiter:
            text = text[: -len(self.delimiter)]
        return StepReply(text=text, tokens=_generated_tokens(reply), truncated=finish == "length",
                         ended_turn=finish == "stop" and not at_delimiter, ms=ms,
                         logprobs=_text_logprobs(reply.response_metadata.get("logprobs"),
                                                 self.delimiter if at_delimiter else ""))


def write_step(chat: BaseChatModel, messages: list[BaseMessage], *, continue_final: bool,
               delimiter: str, max_tokens: int, temperature: float, top_p: float,
               seed: int | None = None) -> StepReply:
    """A :class:`Step` sent to ``chat`` (sync)."""
    return send(chat, Step("base", messages, continue_final, delimiter, max_tokens, temperature,
                           top_p, seed))


def _text_logprobs(logprobs: Any, delimiter: str) -> tuple[float, ...] | None:
    """Token logprobs of a step reply, without the trailing delimiter's tokens; None if absent."""
    try:
        content = [(str(t["token"]), float(t["logprob"])) for t in logprobs["content"]]
    except (TypeError, KeyError, ValueError):
        return None
    dropped = ""
    while content and delimiter and len(dropped) < len(delimiter):
        dropped = content.pop()[0] + dropped
    return tuple(lp for _, lp in content)


@dataclass(frozen=True)
class Completion(_RaiseMalformed):
    """One ordinary chat completion (for agents built around the graph: routing, direct answers;
    the one-request baselines). ``tokens_required``: a reply that does not say how many tokens it
    generated is a MalformedReply (else it counts 0)."""

    role: Role
    messages: list[BaseMessage]
    max_tokens: int
    temperature: float
    top_p: float | None = None
    seed: int | None = None
    tokens_required: bool = False

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.top_p is not None:
            params["top_p"] = self.top_p
        if self.seed is not None:
            params["seed"] = self.seed
        return params

    def read(self, reply: AIMessage, ms: float) -> Reply:
        tokens = _generated_tokens(reply) if self.tokens_required else _usage(reply)[1]
        return Reply(text=str(reply.text), tokens=tokens,
                     finish_reason=reply.response_metadata.get("finish_reason"), ms=ms)


def complete(chat: BaseChatModel, messages: list[BaseMessage], *, max_tokens: int,
             temperature: float, top_p: float | None = None, seed: int | None = None,
             tokens_required: bool = False) -> Reply:
    """A :class:`Completion` sent to ``chat`` (sync)."""
    return send(chat, Completion("base", messages, max_tokens, temperature, top_p, seed,
                                 tokens_required))


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


@dataclass(frozen=True)
class JudgeToken:
    """One greedy token of the base model after the pre-filled score prefix, with the top
    alternatives' logprobs."""

    messages: list[BaseMessage]
    top_logprobs: int
    role: Role = "base"

    def params(self) -> dict[str, Any]:
        return {"max_tokens": 1, "temperature": 0.0, "logprobs": True,
                "top_logprobs": self.top_logprobs,
                "extra_body": {"continue_final_message": True, "add_generation_prompt": False}}

    def read(self, reply: AIMessage, ms: float) -> JudgeReply:
        prompt_tokens, _, cached = _usage(reply)
        token, alternatives = _first_position(reply.response_metadata.get("logprobs"))
        if token is None:  # no logprobs: fall back to the generated text for the greedy score
            token = str(reply.text)
        return JudgeReply(token=token or None, top_logprobs=alternatives,
                          prompt_tokens=prompt_tokens, cached_tokens=cached, ms=ms)

    def malformed(self, exc: MalformedReply, ms: float) -> JudgeReply:
        """A reply that is not the JSON we asked for scores 0 (reject), recorded, never a crash."""
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        return JudgeReply(token=None, top_logprobs=[], prompt_tokens=0, cached_tokens=None, ms=ms,
                          error=f"{type(cause).__name__}: {cause}")


def judge(chat: BaseChatModel, messages: list[BaseMessage], *, top_logprobs: int) -> JudgeReply:
    """A :class:`JudgeToken` sent to ``chat`` (sync)."""
    return send(chat, JudgeToken(messages, top_logprobs))


@dataclass(frozen=True)
class TextLogprobs:
    """A model's log-probabilities of a given text, read from one prefill (``prompt_logprobs``)."""

    logprobs: tuple[float, ...]
    """One per token of the text (empty if the reply held none)."""
    prompt_tokens: int
    cached_tokens: int | None
    ms: float


@dataclass(frozen=True)
class PromptLogprobs(_RaiseMalformed):
    """The model's log-probability of each token of ``text``, which ends the last (assistant)
    message: one request with vLLM's ``prompt_logprobs`` and one generated token.

    vLLM does not read the prefix cache for a request that asks for prompt logprobs (it needs the
    logits of every prompt position), so this prefills the whole prompt each time."""

    role: Role
    messages: list[BaseMessage]
    text: str

    def params(self) -> dict[str, Any]:
        return {"max_tokens": 1, "temperature": 0.0,
                "extra_body": {"prompt_logprobs": 0, "continue_final_message": True,
                               "add_generation_prompt": False}}

    def read(self, reply: AIMessage, ms: float) -> TextLogprobs:
        prompt_tokens, _, cached = _usage(reply)
        return TextLogprobs(_trailing(reply.response_metadata.get("prompt_logprobs"), self.text),
                            prompt_tokens, cached, ms)


def text_logprobs(chat: BaseChatModel, messages: list[BaseMessage], text: str) -> TextLogprobs:
    """A :class:`PromptLogprobs` sent to ``chat`` (sync)."""
    return send(chat, PromptLogprobs("base", messages, text))


def _trailing(prompt_logprobs: Any, text: str) -> tuple[float, ...]:
    """The logprobs of the prompt's last tokens that spell ``text`` (vLLM: one entry per prompt
    token, None for the first, else {token_id: {"logprob", "rank", "decoded_token"}})."""
    if not isinstance(prompt_logprobs, list):
        return ()
    found: list[float] = []
    covered = ""
    for entry in reversed(prompt_logprobs):
        if len(covered) >= len(text.rstrip()) or not isinstance(entry, dict) or not entry:
            break
        # the prompt's own token is the entry's first (with prompt_logprobs=0 the only) item
        info = next(iter(entry.values()))
        if not isinstance(info, dict) or not isinstance(info.get("logprob"), (int, float)):
            break
        covered = str(info.get("decoded_token") or "") + covered
        found.append(float(info["logprob"]))
    return tuple(reversed(found))


def _first_position(logprobs: Any) -> tuple[str | None, list[tuple[str, float]]]:
    """Token and alternatives at the first generated position; tolerant of missing/odd payloads."""
    try:
        first = logprobs["content"][0]
    except (TypeError, KeyError, IndexError):
        return None, []
    if not isinstance(first, dict):
        return None, []
    alternatives = []
    for alt in first.get("top_logprobs") or []:
        if isinstance(alt, dict) and isinstance(alt.get("token"), str) and isinstance(
                alt.get("logprob"), (int, float)):
            alternatives.append((alt["token"], float(alt["logprob"])))
    token = first.get("token")
    return (token if isinstance(token, str) else None), alternatives


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


# --- failures and the retry policy -------------------------------------------------------------

SERVER_ERRORS = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                 openai.RateLimitError, MalformedReply)
"""Transient failures worth another try: refused/dropped connections, timeouts, 5xx, 429, and a
200 reply that is not a completion (typically a proxy's error page)."""


class ModelCallError(RuntimeError):
    """A model server failed; the message names the server, the node and the step."""

    def __init__(self, role: str, url: str, node: str, step: int, cause: Exception):
        self.role, self.url, self.node, self.step = role, url, node, step
        super().__init__(f"the {role} server at {url} failed in {node} of step {step}: "
                         f"{type(cause).__name__}: {cause}")


def transient(exc: Exception) -> bool:
    """RetryPolicy.retry_on: retry what a server may get over (see SERVER_ERRORS)."""
    cause = exc.__cause__ if isinstance(exc, ModelCallError) else exc
    return isinstance(cause, SERVER_ERRORS)


RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=transient)
"""The retry policy of every node that calls a model (SpecReason's and the example graphs')."""
