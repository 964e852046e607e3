"""The graph's state: what a caller gives, what the graph keeps, what it hands back.

``steps`` and ``trace`` grow through ``operator.add`` reducers, one entry per committed step, so a
checkpointed run holds every step committed before an interruption. ``pending`` is the step being
decided (draft → judge → maybe regenerate); it is replaced, never merged, and cleared on commit.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AIMessage, AnyMessage, BaseMessage
from typing_extensions import TypedDict

Role = Literal["small", "base"]
"""The two models: the small one drafts, the base one judges and rewrites (one definition for the
state, the Context and the model calls)."""
StopReason = Literal["answer", "repeated_step", "token_budget", "finished", "context_full"]


class JudgeRecord(TypedDict):
    """What one judge gave a draft and what it read to give it."""

    score: float
    ms: float
    prompt_tokens: int
    """Tokens the judge's model read for this draft (0 for the free judges)."""
    cached_tokens: int | None
    """Of those, the ones served from vLLM's prefix cache (None: not reported)."""
    error: str | None
    """Why the judge could not read its signal (it then scores 0: reject)."""
    reads: dict[str, Any]
    """The judge's own readings: its token and alternatives, mean/min logprob, equations..."""


class StepRecord(TypedDict):
    """One committed step: who wrote it, what was tried, what it cost. Enough to replay a run."""

    index: int
    """Position of the step in the reasoning (0-based)."""
    writer: Role
    """Model whose text was kept."""
    text: str
    """The kept text, without the step delimiter."""
    tokens: int
    """Tokens of the kept text (counts against the budget)."""
    truncated: bool
    """The writer hit max_step_tokens; the step was kept as it was."""
    ended_turn: bool
    """The writer ended its turn (end-of-sequence) instead of writing the step delimiter."""
    forced: bool
    """Written by the base model without a draft (one of the first_n_base steps)."""
    draft: str | None
    """The small model's draft (equal to ``text`` when accepted; None when not drafted)."""
    draft_tokens: int
    draft_ms: float
    draft_logprobs: list[float] | None
    """The small model's log-probability of each draft token (None: not drafted, or not sent)."""
    judge: str | None
    """The judge whose score decided (Context.judge; None when not drafted)."""
    judges: dict[str, JudgeRecord]
    """Every judge that scored the draft (the deciding one and Context.also_judge), by name; a
    one-token judge's token and the alternatives at its position (token, logprob) are in its
    ``reads`` (rescoring needs no new judge call)."""
    score: float | None
    """Judge's score for the draft (None when not drafted)."""
    judge_error: str | None
    """Why the judge's reply could not be read (malformed JSON...); the score is then 0."""
    accepted: bool | None
    """Score >= threshold (None when not drafted)."""
    decision: NotRequired[str]
    """What decided the step, in one line (``trace.explain``): the deciding judge's reading against
    the threshold (``score 6 < 7``, ``yes_no P(yes) 0.31 → 2.8 < 8``), a cascade's stages and the
    one that settled it, or ``forced: ...`` / ``unjudged: ...``. Set when the step is committed;
    absent from records of older runs (read it with ``.get``)."""
    judge_prompt_tokens: int
    judge_cached_tokens: int | None
    """Prompt tokens vLLM served from its prefix cache (None if the server does not report it)."""
    judge_ms: float
    base_tokens: int
    """Tokens the base model wrote for this step (regeneration or forced step)."""
    base_ms: float
    ms: float
    """Wall time of the whole step: draft + judge + regeneration."""


class InputState(TypedDict):
    """What a caller provides: a ``problem`` (reasoned about and answered in the steps), or a
    conversation, ``messages`` (reasoned about, then replied to by the base model: ``reply``)."""

    problem: NotRequired[str]
    """The question, as plain text (multiple-choice options included in the text)."""
    messages: NotRequired[list[AnyMessage]]
    """A chat conversation (system, human, AI with tool calls, tool results), instead of a problem:
    the models reason about how to reply to it, then the base model writes the reply."""
    tools: NotRequired[list[dict[str, Any]] | None]
    """With ``messages``: the tools the reply may call, as OpenAI function schemas. Every call of
    the run sends them, so the served chat template renders them once into the shared prefix."""
    tool_choice: NotRequired[str | dict[str, Any] | None]
    """With ``tools``: "auto" (the default), "required", "none" or one named function."""
    stop: NotRequired[list[str] | None]
    """With ``messages``: stop sequences of the reply."""
    threshold: NotRequired[float | None]
    """Per-problem override of Context.threshold (an agent retrying more strictly sets it)."""


class OutputState(TypedDict):
    """What a caller gets back."""

    problem: NotRequired[str]
    steps: list[str]
    """The kept reasoning steps, in order."""
    trace: list[StepRecord]
    """One record per kept step."""
    kept_tokens: int
    stop_reason: StopReason | None
    answer: str | None
    """Contents of the last \\boxed{} (or 'Answer:' line) of the last kept step, if any."""
    reply: NotRequired[AIMessage | None]
    """With ``messages``: the base model's reply after the reasoning (text or tool calls)."""


class State(TypedDict):
    """Everything the graph keeps while it reasons."""

    problem: NotRequired[str]
    messages: NotRequired[list[AnyMessage]]
    tools: NotRequired[list[dict[str, Any]] | None]
    tool_choice: NotRequired[str | dict[str, Any] | None]
    stop: NotRequired[list[str] | None]
    threshold: NotRequired[float | None]
    user_prompt: NotRequired[str]
    """The problem rendered into the prompt file once, so every call sends identical bytes."""
    conversation: NotRequired[list[BaseMessage] | None]
    """With ``messages``: the conversation as every call sends it (``prompts.conversation``: the
    messages as the models take them, then the turn asking to reason), built once; None for a
    problem."""
    thinking_opener: NotRequired[str]
    """What every step pre-fills the assistant turn with (``Context.thinking_opener``, else the
    served chat template's: ``<think>\n`` for reasoning models, "" for instruct ones)."""
    steps: Annotated[list[str], operator.add]
    trace: Annotated[list[StepRecord], operator.add]
    kept_tokens: NotRequired[int]
    pending: NotRequired[StepRecord | None]
    """The step under decision; None between steps."""
    stop_reason: NotRequired[StopReason | None]
    answer: NotRequired[str | None]
    reply: NotRequired[AIMessage | None]
