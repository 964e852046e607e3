"""Scripted chat models for the graph's logic: real langchain-core chat models, no HTTP.

A ``ScriptedModel`` answers each call from a script and records what it was sent, so tests can
check both the graph's routing and exactly what each model saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field


def step(text: str, *, tokens: int | None = None, end: str = "delimiter") -> AIMessage:
    """A step reply as vLLM sends it with include_stop_str_in_output: text + "\\n\\n" at the delimiter,
    bare text when the model ended its turn (end="eos") or hit max_tokens (end="length")."""
    body = text + "\n\n" if end == "delimiter" else text
    return AIMessage(
        body,
        response_metadata={"finish_reason": "length" if end == "length" else "stop"},
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


class ScriptedModel(BaseChatModel):
    """Replies from ``script``: an iterable of messages, or a function of (messages, kwargs)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    script: Any
    calls: list[tuple[list[BaseMessage], dict[str, Any]]] = Field(default_factory=list)

    def model_post_init(self, _: Any) -> None:
        if not callable(self.script):
            self.script = iter(self.script)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        kwargs = {**kwargs, "stop": stop}
        self.calls.append((list(messages), kwargs))
        if callable(self.script):
            reply = self.script(messages, kwargs)
        else:
            try:
                reply = next(self.script)
            except StopIteration:
                raise AssertionError(f"{self.__class__.__name__}: script ran out") from None
        if isinstance(reply, Exception):
            raise reply
        return ChatResult(generations=[ChatGeneration(message=reply)])

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
