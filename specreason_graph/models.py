"""Model I/O: every call the graphs make, over any LangChain chat model (vLLM via ``ChatOpenAI``).

``ChatOpenAI`` gives LangChain callbacks, tracing and Studio's token stream for free. vLLM's own
request fields travel in ``extra_body``: ``continue_final_message``/``add_generation_prompt`` (continue
a pre-filled assistant turn) and ``include_stop_str_in_output`` (tells a step that ended at the
delimiter from one where the model ended its turn). Logprobs come back in ``response_metadata``.
Nothing here needs the raw ``openai`` client.

One ``ChatOpenAI`` per endpoint (cached), no model-name lookup per request: the served name is a
setting. :class:`Models` is the one object nodes reach the two models through; the server errors worth
a retry and the one :data:`RETRY` policy every model-calling node uses live here too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

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


def _call(chat: BaseChatModel, messages: list[BaseMessage], **params: Any) -> AIMessage:
    """``chat.invoke`` with the two failures every call tells apart: a prompt that does not fit the
    context (:class:`ContextFull`) and a reply that is not a completion (:class:`MalformedReply`);
    anything else propagates as it is."""
    try:
        return chat.invoke(messages, **params)  # type: ignore[return-value]
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


@lru_cache(maxsize=32)
def chat_model(url: str, model: str, api_key: str | None, timeout: float) -> ChatOpenAI:
    """The shared client for one endpoint. Retries belong to the graph's RetryPolicy, not here."""
    return VLLMChatOpenAI(
        base_url=url,
        model=model,
        api_key=api_key or "EMPTY",  # type: ignore[arg-type]  # vLLM without --api-key takes any
        timeout=timeout,
        max_retries=0,
        stream_usage=True,
    )


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


def write_step(chat: BaseChatModel, messages: list[BaseMessage], *, continue_final: bool,
               delimiter: str, max_tokens: int, temperature: float, top_p: float,
               seed: int | None = None) -> StepReply:
    """Generate up to the next delimiter (continuing the pre-filled assistant turn if asked)."""
    started = time.perf_counter()
    reply = _call(
        chat, messages, stop=[delimiter], max_tokens=max_tokens, temperature=temperature,
        top_p=top_p, seed=seed,
        logprobs=True,  # the draft's own confidence, free with the draft (the `confidence` judge)
        extra_body={"continue_final_message": continue_final,
                    "add_generation_prompt": not continue_final,
                    "include_stop_str_in_output": True})
    ms = (time.perf_counter() - started) * 1000
    text = str(reply.text)
    finish = reply.response_metadata.get("finish_reason")
    at_delimiter = text.endswith(delimiter)
    if at_delimiter:
        text = text[: -len(delimiter)]
    return StepReply(text=text, tokens=_generated_tokens(reply), truncated=finish == "length",
                     ended_turn=finish == "stop" and not at_delimiter, ms=ms,
                     logprobs=_text_logprobs(reply.response_metadata.get("logprobs"),
                                             delimiter if at_delimiter else ""))


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


def complete(chat: BaseChatModel, messages: list[BaseMessage], *, max_tokens: int,
             temperature: float, top_p: float | None = None, seed: int | None = None,
             tokens_required: bool = False) -> Reply:
    """One ordinary chat completion (for agents built around the graph: routing, direct answers;
    the one-request baselines). ``tokens_required``: a reply that does not say how many tokens it
    generated is a MalformedReply (else it counts 0)."""
    started = time.perf_counter()
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if top_p is not None:
        params["top_p"] = top_p
    if seed is not None:
        params["seed"] = seed
    reply = _call(chat, messages, **params)
    tokens = _generated_tokens(reply) if tokens_required else _usage(reply)[1]
    return Reply(text=str(reply.text), tokens=tokens,
                 finish_reason=reply.response_metadata.get("finish_reason"),
                 ms=(time.perf_counter() - started) * 1000)


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


def judge(chat: BaseChatModel, messages: list[BaseMessage], *, top_logprobs: int) -> JudgeReply:
    """One greedy token after the pre-filled score prefix, with the top alternatives' logprobs."""
    started = time.perf_counter()
    try:
        reply = _call(chat, messages, max_tokens=1, temperature=0.0, logprobs=True,
                      top_logprobs=top_logprobs,
                      extra_body={"continue_final_message": True, "add_generation_prompt": False})
    except MalformedReply as exc:
        # A reply that is not the JSON we asked for scores 0 (reject), recorded, never a crash.
        cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        return JudgeReply(token=None, top_logprobs=[], prompt_tokens=0, cached_tokens=None,
                          ms=(time.perf_counter() - started) * 1000,
                          error=f"{type(cause).__name__}: {cause}")
    ms = (time.perf_counter() - started) * 1000
    prompt_tokens, _, cached = _usage(reply)
    token, alternatives = _first_position(reply.response_metadata.get("logprobs"))
    if token is None:  # no logprobs: fall back to the generated text for the greedy score
        token = str(reply.text)
    return JudgeReply(token=token or None, top_logprobs=alternatives, prompt_tokens=prompt_tokens,
                      cached_tokens=cached, ms=ms)


@dataclass(frozen=True)
class TextLogprobs:
    """A model's log-probabilities of a given text, read from one prefill (``prompt_logprobs``)."""

    logprobs: tuple[float, ...]
    """One per token of the text (empty if the reply held none)."""
    prompt_tokens: int
    cached_tokens: int | None
    ms: float


def text_logprobs(chat: BaseChatModel, messages: list[BaseMessage], text: str) -> TextLogprobs:
    """The model's log-probability of each token of ``text``, which ends the last (assistant)
    message: one request with vLLM's ``prompt_logprobs`` and one generated token.

    vLLM does not read the prefix cache for a request that asks for prompt logprobs (it needs the
    logits of every prompt position), so this prefills the whole prompt each time."""
    started = time.perf_counter()
    reply = _call(chat, messages, max_tokens=1, temperature=0.0,
                  extra_body={"prompt_logprobs": 0, "continue_final_message": True,
                              "add_generation_prompt": False})
    prompt_tokens, _, cached = _usage(reply)
    return TextLogprobs(_trailing(reply.response_metadata.get("prompt_logprobs"), text),
                        prompt_tokens, cached, (time.perf_counter() - started) * 1000)


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
    per endpoint named in the run's Context."""

    def __init__(self, small: BaseChatModel | None = None, base: BaseChatModel | None = None):
        self._given: dict[Role, BaseChatModel | None] = {"small": small, "base": base}

    def chat(self, role: Role, ctx: Context) -> BaseChatModel:
        given = self._given[role]
        if given is not None:
            return given
        url, model = ctx.endpoint(role)
        return chat_model(url, model, ctx.api_key, ctx.request_timeout)

    def write_step(self, role: Role, ctx: Context, messages: list[BaseMessage], *,
                   continue_final: bool) -> StepReply:
        """The next step from ``role`` with the run's sampling settings."""
        return write_step(self.chat(role, ctx), messages, continue_final=continue_final,
                          delimiter=ctx.step_delimiter, max_tokens=ctx.max_step_tokens,
                          temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed)

    def judge_token(self, ctx: Context, messages: list[BaseMessage]) -> JudgeReply:
        """The base model's one greedy token (and its top alternatives) after ``messages``."""
        return judge(self.chat("base", ctx), messages, top_logprobs=ctx.judge_top_logprobs)

    def text_logprobs(self, role: Role, ctx: Context, messages: list[BaseMessage],
                      text: str) -> TextLogprobs:
        """``role``'s log-probability of each token of ``text``, the end of ``messages``."""
        return text_logprobs(self.chat(role, ctx), messages, text)


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
