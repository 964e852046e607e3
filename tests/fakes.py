"""Scripted chat models for the graph's logic: real langchain-core chat models, no HTTP.

A ``ScriptedModel`` answers each call from a script and records what it was sent, so tests can
check both the graph's routing and exactly what each model saw.
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field


def step(text: str, *, tokens: int | None = None, end: str = "delimiter",
         logprobs: list[float] | None = None) -> AIMessage:
    """A step reply as vLLM sends it with include_stop_str_in_output: text + "\\n\\n" at the delimiter,
    bare text when the model ended its turn (end="eos") or hit max_tokens (end="length").
    ``logprobs``: one per word of ``text`` (the delimiter's token gets 0.0), as chat logprobs."""
    body = text + "\n\n" if end == "delimiter" else text
    metadata: dict[str, Any] = {"finish_reason": "length" if end == "length" else "stop"}
    if logprobs is not None:
        words = text.split(" ")
        assert len(words) == len(logprobs), "one logprob per word"
        content = [{"token": (" " if i else "") + w, "logprob": lp}
                   for i, (w, lp) in enumerate(zip(words, logprobs, strict=True))]
        if end == "delimiter":
            content.append({"token": "\n\n", "logprob": 0.0})
        metadata["logprobs"] = {"content": content}
    return AIMessage(
        body,
        response_metadata=metadata,
        usage_metadata={"input_tokens": 10, "output_tokens": tokens if tokens is not None else
                        max(1, len(text.split())), "total_tokens": 0},
    )


def score(token: str | None, alternatives: dict[str, float] | None = None,
          *, logprobs: bool = True) -> AIMessage:
    """A judge reply: ``token`` generated, with ``alternatives`` as {token: probability}."""
    alternatives = alternatives if alternatives is not None else ({token: 1.0} if token else {})
    metadata: dict[str, Any] = {"finish_reason": "length"}
    if logprobs:
        metadata["logprobs"] = {"content": [{
            "token": token, "logprob": 0.0,
            "top_logprobs": [{"token": t, "logprob": math.log(p) if p > 0 else -math.inf}
                             for t, p in alternatives.items()]}]}
    return AIMessage(token or "", response_metadata=metadata,
                     usage_metadata={"input_tokens": 80, "output_tokens": 1, "total_tokens": 81,
                                     "input_token_details": {"cache_read": 64}})


def prompt_logprobs(prefix_tokens: list[str], draft: list[tuple[str, float]] | None) -> AIMessage:
    """A reply to a ``prompt_logprobs`` request, as ``VLLMChatOpenAI`` hands it on: one entry per
    prompt token (None for the first), the draft's tokens last with their logprobs; ``draft=None``:
    the server sent no prompt logprobs."""
    metadata: dict[str, Any] = {"finish_reason": "length"}
    if draft is not None:
        entries: list[Any] = [None] + [{"1": {"logprob": -1.0, "rank": 1, "decoded_token": t}}
                                       for t in prefix_tokens[1:]]
        entries += [{"2": {"logprob": lp, "rank": 1, "decoded_token": t}} for t, lp in draft]
        metadata["prompt_logprobs"] = entries
    n = len(prefix_tokens) + len(draft or [])
    return AIMessage("x", response_metadata=metadata,
                     usage_metadata={"input_tokens": n, "output_tokens": 1, "total_tokens": n + 1,
                                     "input_token_details": {"cache_read": 0}})


class ScriptedModel(BaseChatModel):
    """Replies from ``script``: an iterable of messages, or a function of (messages, kwargs).
    ``ainvoke`` answers on the event loop's own thread (a native async model, as ``ChatOpenAI`` is),
    from ``ascript`` if given (an async function of (messages, kwargs), which may await);
    ``threads`` records the thread of every call and ``async_calls`` how many came through it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    script: Any = None
    ascript: Any = None
    calls: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)
    threads: list[int] = Field(default_factory=list)
    async_calls: int = 0

    def model_post_init(self, _: Any) -> None:
        if self.script is not None and not callable(self.script):
            self.script = iter(self.script)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return self._reply(messages, stop, **kwargs)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        self.async_calls += 1
        if self.ascript is None:
            return self._reply(messages, stop, **kwargs)
        self.calls.append((list(messages), {**kwargs, "stop": stop}))
        self.threads.append(threading.get_ident())
        reply = await self.ascript(messages, {**kwargs, "stop": stop})
        if isinstance(reply, Exception):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def _reply(self, messages: list[BaseMessage], stop: list[str] | None,
               **kwargs: Any) -> ChatResult:
        kwargs = {**kwargs, "stop": stop}
        self.calls.append((list(messages), kwargs))
        self.threads.append(threading.get_ident())
        generations = []
        for _ in range(kwargs.get("n") or 1):  # n choices in one request, as vLLM sends them
            if callable(self.script):
                reply = self.script(messages, kwargs)
            else:
                try:
                    reply = next(self.script)
                except StopIteration:
                    raise AssertionError(f"{self.__class__.__name__}: script ran out") from None
            if isinstance(reply, Exception):
                raise reply
            generations.append(ChatGeneration(message=reply))
        return ChatResult(generations=generations)

    def judge_calls(self) -> list[list[BaseMessage]]:
        return [m for m, kw in self.calls if kw.get("max_tokens") == 1]

    def step_calls(self) -> list[list[BaseMessage]]:
        return [m for m, kw in self.calls if kw.get("max_tokens") != 1]


def by_kind(steps: Iterable[AIMessage], scores: Iterable[AIMessage]) -> Callable:
    """A base-model script: step requests take the next step, judge requests the next score."""
    steps, scores = iter(steps), iter(scores)

    def respond(messages: list[BaseMessage], kwargs: dict[str, Any]) -> AIMessage:
        return next(scores) if kwargs.get("max_tokens") == 1 else next(steps)

    return respond


def context_full_error() -> openai.BadRequestError:
    """What vLLM answers a request longer than the model's context (as the openai client raises it)."""
    import httpx

    request = httpx.Request("POST", "http://127.0.0.1:8101/v1/chat/completions")
    response = httpx.Response(400, request=request)
    return openai.BadRequestError(
        "This model's maximum context length is 10240 tokens. However, your prompt contains "
        "10300 input tokens", response=response, body=None)


def server_gone() -> openai.APIConnectionError:
    """The error the openai client raises when a server refuses the connection, raised by the client
    itself against a port nobody listens on (its constructor's arguments change between releases:
    3.63 refuses ``request=None``)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="EMPTY", max_retries=0)
    try:
        client.models.list()
    except openai.APIConnectionError as exc:
        return exc
    finally:
        client.close()
    raise AssertionError(f"something answered on port {port}")
