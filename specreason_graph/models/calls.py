"""Model calls: what to send and how to read the reply, no I/O.

A call is a small object (:class:`Step`, :class:`JudgeToken`, :class:`PromptLogprobs`,
:class:`Completion`) that is a :class:`Call` of its reply type (:class:`StepReply`,
:class:`JudgeReply`, :class:`TextLogprobs`, :class:`Reply`). Nodes and judges are generators of calls
(:data:`Calls`) that receive each reply through :func:`reply_to`, typed by the call:
``reply = yield from reply_to(Step.of(...))`` makes ``reply`` a ``StepReply`` for mypy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from langchain_core.messages import AIMessage, BaseMessage

from specreason_graph.context import Context
from specreason_graph.models.errors import MalformedReply
from specreason_graph.state import Role

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


# --- replies -----------------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Answer:
    """The base model's reply to a conversation, as LangChain reads it: ``message.text`` and
    ``message.tool_calls`` (calls whose arguments are not JSON are in ``invalid_tool_calls``)."""

    message: AIMessage
    tokens: int
    prompt_tokens: int
    cached_tokens: int | None
    finish_reason: str | None
    ms: float


@dataclass(frozen=True)
class Reply:
    """A plain completion (no step delimiter)."""

    text: str
    tokens: int
    finish_reason: str | None
    ms: float


@dataclass(frozen=True)
class TextLogprobs:
    """A model's log-probabilities of a given text, read from one prefill (``prompt_logprobs``)."""

    logprobs: tuple[float, ...]
    """One per token of the text (empty if the reply held none)."""
    prompt_tokens: int
    cached_tokens: int | None
    ms: float


# --- the call interface ------------------------------------------------------------------------

class Call(ABC, Generic[R_co]):
    """One chat request to one of the two models and how to read its reply, a ``R_co``. Nodes and
    judges yield calls (through :func:`reply_to`); :class:`~specreason_graph.models.Models` sends
    them (``invoke`` or ``ainvoke``) and sends the reply back."""

    role: Role
    messages: list[BaseMessage]

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The request's keyword arguments for the chat model (sampling, ``extra_body``)."""

    @abstractmethod
    def read(self, reply: AIMessage, ms: float) -> R_co:
        """The result, from the model's reply and the call's wall time."""

    def malformed(self, exc: MalformedReply, ms: float) -> R_co:
        """The result when the reply was not a completion (most calls raise ``exc``)."""
        raise exc


Calls = Generator[Call[Any], object, T]
"""A node or judge: yields its model calls, is sent each call's result, returns its own result.
The send type is ``object``: a reply is read through :func:`reply_to`, which gives it its type."""


def reply_to(call: Call[R]) -> Generator[Call[R], R, R]:
    """Inside a node or judge, ``reply = yield from reply_to(call)``: yields ``call`` and returns
    the reply the driver sends back, typed as ``call``'s reply (``Step`` → ``StepReply``, ...)."""
    reply = yield call
    return reply


# --- the calls ---------------------------------------------------------------------------------

Tools = tuple[dict[str, Any], ...]
"""OpenAI function schemas a conversation offers. Every call of its run sends them: the served chat
template renders them into the prompt (Qwen's and Hermes-style templates: into the system turn), so
the prefix every call shares is the same bytes; only the reply may call one (``tool_choice``)."""


def _rendered(tools: Tools) -> dict[str, Any]:
    """The request fields that render ``tools`` without letting the model call one."""
    return {"tools": list(tools), "tool_choice": "none"} if tools else {}


@dataclass(frozen=True)
class Step(Call[StepReply]):
    """Generate up to the next delimiter (continuing the pre-filled assistant turn if asked)."""

    role: Role
    messages: list[BaseMessage]
    continue_final: bool
    delimiter: str
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    tools: Tools = ()

    @classmethod
    def of(cls, role: Role, ctx: Context, messages: list[BaseMessage], *,
           continue_final: bool, tools: Tools = ()) -> Step:
        """The next step from ``role`` with the run's delimiter, step length and sampling."""
        return cls(role, messages, continue_final, ctx.step_delimiter, ctx.max_step_tokens,
                   ctx.temperature, ctx.top_p, ctx.seed, tools)

    def params(self) -> dict[str, Any]:
        return {"stop": [self.delimiter], "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "logprobs": True,  # the draft's own confidence, free with it (`confidence` judge)
                **_rendered(self.tools),
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


@dataclass(frozen=True)
class Completion(Call[Reply]):
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


@dataclass(frozen=True)
class Respond(Call[Answer]):
    """The base model's reply to a conversation after its reasoning: text, or calls of the offered
    tools as ``tool_choice`` allows (vLLM's tool-call parser reads them from the reply)."""

    messages: list[BaseMessage]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None = None
    tools: Tools = ()
    tool_choice: str | dict[str, Any] | None = None
    stop: tuple[str, ...] = ()
    role: Role = "base"

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature,
                                  "top_p": self.top_p, "seed": self.seed}
        if self.tools:
            params["tools"] = list(self.tools)
            params["tool_choice"] = self.tool_choice or "auto"
        if self.stop:
            params["stop"] = list(self.stop)
        return params

    def read(self, reply: AIMessage, ms: float) -> Answer:
        prompt_tokens, tokens, cached = _usage(reply)
        return Answer(message=reply, tokens=tokens, prompt_tokens=prompt_tokens,
                      cached_tokens=cached,
                      finish_reason=reply.response_metadata.get("finish_reason"), ms=ms)


@dataclass(frozen=True)
class JudgeToken(Call[JudgeReply]):
    """One greedy token of the base model after the pre-filled score prefix, with the top
    alternatives' logprobs."""

    messages: list[BaseMessage]
    top_logprobs: int
    role: Role = "base"
    tools: Tools = ()

    def params(self) -> dict[str, Any]:
        return {"max_tokens": 1, "temperature": 0.0, "logprobs": True,
                "top_logprobs": self.top_logprobs, **_rendered(self.tools),
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


@dataclass(frozen=True)
class PromptLogprobs(Call[TextLogprobs]):
    """The model's log-probability of each token of ``text``, which ends the last (assistant)
    message: one request with vLLM's ``prompt_logprobs`` and one generated token.

    vLLM does not read the prefix cache for a request that asks for prompt logprobs (it needs the
    logits of every prompt position), so this prefills the whole prompt each time."""

    role: Role
    messages: list[BaseMessage]
    text: str
    tools: Tools = ()

    def params(self) -> dict[str, Any]:
        return {"max_tokens": 1, "temperature": 0.0, **_rendered(self.tools),
                "extra_body": {"prompt_logprobs": 0, "continue_final_message": True,
                               "add_generation_prompt": False}}

    def read(self, reply: AIMessage, ms: float) -> TextLogprobs:
        prompt_tokens, _, cached = _usage(reply)
        return TextLogprobs(_trailing(reply.response_metadata.get("prompt_logprobs"), self.text),
                            prompt_tokens, cached, ms)


# --- reading replies ---------------------------------------------------------------------------

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
