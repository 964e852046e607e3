"""Prompts, read once from the files in ``prompts/`` (every prompt lives there as text).

The message builders here are the only place that decides what a model sees, so the byte-for-byte
agreement that vLLM's prefix cache depends on is in one spot: a step request is the head (the problem
turn, or a conversation and the turn asking to reason about it) plus the assistant turn pre-filled
with the kept steps; the judge request is that same prefix, the candidate step, a user turn asking
for the score, and the assistant turn pre-filled up to the digit; a conversation's reply request is
the prefix with the kept steps as a finished assistant turn and a user turn asking for the reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    convert_to_messages,
)

from specreason_graph.resources import prompt_set_dir, resource_dir
from specreason_graph.rules import THINK_CLOSE


@cache
def load(name: str, prompt_set: str = "") -> str:
    """Text of ``<name>.txt`` in the prompt set's folder, else in ``prompts/`` (a set replaces
    only the files it has). Turn templates are stripped; pre-fills are kept exact."""
    path = prompt_set_dir(prompt_set) / f"{name}.txt"
    if not path.is_file():
        path = resource_dir("prompts") / f"{name}.txt"
    text = path.read_text(encoding="utf-8")
    return text if name.endswith("_prefill") else text.strip()


def render_problem(prompt: str, problem: str, prompt_set: str = "") -> str:
    """The user turn: the problem placed into the named prompt file."""
    return load(prompt, prompt_set).replace("{problem}", problem.strip())


def thinking(opener: str, steps: list[str], delimiter: str) -> str:
    """The assistant turn so far: opener, kept steps joined by the delimiter, trailing delimiter."""
    return opener + "".join(step + delimiter for step in steps)


Head = str | Sequence[BaseMessage]
"""What every call of a run starts with: the problem rendered into its prompt (one user turn), or a
conversation's messages (:func:`conversation`)."""


def _head(head: Head) -> list[BaseMessage]:
    return [HumanMessage(head)] if isinstance(head, str) else list(head)


def _text(content: Any) -> str:
    """A message's text: its string content, or its text blocks joined (reasoning blocks and
    anything else a model cannot read back are left out)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


def conversation(messages: Sequence[Any], prompt_set: str = "") -> list[BaseMessage]:
    """A chat conversation as every call of a run sends it: each message as the models take it back
    (text only: an AI message's reasoning blocks are dropped, as reasoning models' templates drop
    their thinking; its tool calls kept; a tool result's blocks joined), then a user turn asking to
    think before replying (``chat_reason``). ValueError for an empty one."""
    found = convert_to_messages(list(messages))
    if not found:
        raise ValueError("the conversation is empty: give at least one message")
    shown: list[BaseMessage] = []
    for message in found:
        text = _text(message.content)
        if isinstance(message, AIMessage):
            shown.append(AIMessage(text, tool_calls=message.tool_calls))
        elif isinstance(message, ToolMessage):
            shown.append(ToolMessage(text, tool_call_id=message.tool_call_id))
        else:
            shown.append(message.model_copy(update={"content": text}))
    return [*shown, HumanMessage(load("chat_reason", prompt_set))]


def reply_messages(head: Sequence[BaseMessage], steps: list[str], opener: str, delimiter: str,
                   prompt_set: str = "") -> list[BaseMessage]:
    """The reply request of a conversation: its head, the kept steps as the assistant's finished
    turn of thinking, and a user turn asking for the reply (``chat_reply``)."""
    thought = thinking(opener, steps, delimiter).rstrip()
    return [*head, *([AIMessage(thought)] if thought else []),
            HumanMessage(load("chat_reply", prompt_set))]


def step_messages(user_prompt: Head, steps: list[str], opener: str, delimiter: str
                  ) -> tuple[list[BaseMessage], bool]:
    """Messages for writing the next step, and whether the server must continue the last one.

    With nothing to pre-fill (instruct model, first step) the server adds the assistant
    generation prompt itself; otherwise the assistant turn is continued, which renders the same
    bytes plus the pre-fill.
    """
    prefill = thinking(opener, steps, delimiter)
    if not prefill:
        return _head(user_prompt), False
    return [*_head(user_prompt), AIMessage(prefill)], True


def judge_messages(user_prompt: Head, steps: list[str], candidate: str, opener: str,
                   delimiter: str, question: str = "judge", prompt_set: str = ""
                   ) -> list[BaseMessage]:
    """Messages for judging ``candidate`` as the step after ``steps``: the ``question`` prompt
    (``judge``: a 0-9 score; ``judge_yes_no``: Yes or No), continued right before the answer token
    (its ``<question>_prefill`` file).

    A '</think>' in the candidate is left out: reasoning models' chat templates drop everything
    before it from an assistant turn in the history, so the judge would not see the reasoning.
    """
    return [*draft_messages(user_prompt, steps, candidate, opener, delimiter),
            HumanMessage(load(question, prompt_set)),
            AIMessage(load(f"{question}_prefill", prompt_set))]


def draft_messages(user_prompt: Head, steps: list[str], candidate: str, opener: str,
                   delimiter: str) -> list[BaseMessage]:
    """The step request's messages with ``candidate`` written after the kept steps: the prompt whose
    last tokens are the draft, for reading a model's likelihood of it."""
    return [*_head(user_prompt),
            AIMessage(thinking(opener, steps, delimiter) + candidate.replace(THINK_CLOSE, ""))]
