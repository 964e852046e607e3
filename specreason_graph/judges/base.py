"""The judges' one interface: a :class:`Case` in, a :class:`Verdict` out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import BaseMessage

from specreason_graph.context import Context
from specreason_graph.models import Calls, Tools


@dataclass(frozen=True)
class Case:
    """One draft to judge, with everything a judge may read."""

    user_prompt: str | Sequence[BaseMessage]
    """What every call starts with: the problem rendered into its prompt (the user turn), or a
    conversation's messages (``prompts.conversation``)."""
    steps: list[str]
    """The steps kept so far (the draft's prefix)."""
    draft: str
    """The small model's proposed next step."""
    draft_logprobs: list[float] | None = None
    """The small model's log-probability of each draft token (None: the server sent none)."""
    thinking_opener: str = ""
    """What the run pre-fills the assistant turn with (the state's, as ``setup`` found it)."""
    tools: Tools = ()
    """The tools a conversation offers: a judge's call sends them too, for the same prefix."""


@dataclass(frozen=True)
class Verdict:
    """A judge's score and what it read to give it (recorded in the step's trace record)."""

    score: float
    """Utility on the 0–9 scale; the draft is kept when it is >= the threshold."""
    token: str | None = None
    """A one-token judge's generated token."""
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    """The top logprobs at that token's position (token, logprob)."""
    prompt_tokens: int = 0
    """Tokens the judge's model read."""
    cached_tokens: int | None = None
    """Of those, the ones vLLM served from its prefix cache (None: not reported)."""
    ms: float = 0.0
    error: str | None = None
    """Why the judge could not read its signal; the score is then 0 (reject)."""
    reads: dict[str, Any] = field(default_factory=dict)
    """The judge's own readings (mean/min logprob, equations checked, stages asked ...)."""

    def record(self) -> dict[str, Any]:
        """The trace's record of this verdict (``state.JudgeRecord``)."""
        reads = dict(self.reads)
        if self.token is not None or self.alternatives:
            reads.update(token=self.token, alternatives=self.alternatives)
        return {"score": self.score, "ms": round(self.ms, 1), "prompt_tokens": self.prompt_tokens,
                "cached_tokens": self.cached_tokens, "error": self.error, "reads": reads}


def failed(why: str, ms: float = 0.0, **reads: Any) -> Verdict:
    """A judge that could not read its signal: score 0 (reject), and why."""
    return Verdict(score=0.0, ms=ms, error=why, reads=reads)


class Judge(Protocol):
    """A judge that calls a model is a generator: it yields its calls (``models.JudgeToken``,
    ``models.PromptLogprobs``, ...) through ``models.reply_to``, gets their results back, typed by
    the call, and returns its :class:`Verdict`; the
    graph sends the calls sync or async (``Models.drive``/``adrive``). One that calls no model
    returns its Verdict directly."""

    name: str

    def __call__(self, case: Case, ctx: Context) -> Verdict | Calls[Verdict]: ...


def judged(judge: Judge, case: Case, ctx: Context) -> Calls[Verdict]:
    """``judge``'s verdict on ``case`` as a generator, whether or not the judge calls a model."""
    result = judge(case, ctx)
    if isinstance(result, Verdict):
        return result
    return (yield from result)
