"""Judges: what the judge node asks to score a draft. Each one turns (problem, kept steps, draft)
into a utility score on the paper's 0–9 scale, so the threshold, the ``by_score`` router and the
trace are the same whichever judge runs; what it read goes into the step's trace record.

- ``score`` (the paper's): the base model's 0–9 digit, greedy or expected over the top logprobs;
  one prefill of the new tokens (prefix cache).
- ``yes_no``: the base model's P(Yes) that the last step is correct; the same cost.
- ``confidence``: the small model's own token logprobs of the draft; free.
- ``likelihood``: the base model's token logprobs of the draft (``prompt_logprobs``); a full prefill.
- ``check``: the draft's arithmetic, evaluated with sympy; free.
- ``cascade``: the above in turn, each with a reject/accept band, until one decides.

A judge is a small object with a ``name`` and ``__call__(case, ctx)``: a generator that yields its model
calls and returns a ``Verdict`` (or just the Verdict, for a judge that calls no model); adding one
(a process reward model behind an OpenAI-compatible endpoint, say) is a class and an entry in
:data:`JUDGES`.
"""

from __future__ import annotations

import openai

from specreason_graph.context import Context
from specreason_graph.judges.base import Case, Judge, Verdict, failed, judged
from specreason_graph.judges.cascade import CascadeJudge
from specreason_graph.judges.check import CheckJudge
from specreason_graph.judges.confidence import ConfidenceJudge
from specreason_graph.judges.likelihood import LikelihoodJudge
from specreason_graph.judges.score import ScoreJudge
from specreason_graph.judges.yes_no import YesNoJudge
from specreason_graph.models import Calls, ContextFull, MalformedReply


def ask(name: str, case: Case, ctx: Context, *, aside: bool = False) -> Calls[Verdict]:
    """Judge ``name``'s verdict on ``case``, as a generator of its model calls (see ``Judge``). A
    reply that is not a completion is a failed verdict (score 0, recorded), never a crash; server
    errors propagate to the node's retry policy, except for a judge asked ``aside``
    (``Context.also_judge``), whose failure is only recorded."""
    try:
        return (yield from judged(get(name), case, ctx))
    except MalformedReply as exc:
        return failed(f"MalformedReply: {exc}")
    except (openai.APIError, ContextFull) as exc:
        if not aside:
            raise
        return failed(f"{type(exc).__name__}: {exc}")


def get(name: str) -> Judge:
    try:
        return JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}") from None


JUDGES: dict[str, Judge] = {judge.name: judge for judge in (
    ScoreJudge(), YesNoJudge(), ConfidenceJudge(), LikelihoodJudge(), CheckJudge(),
    CascadeJudge(get))}
"""Every judge by name (``Context.judge``)."""

__all__ = ["JUDGES", "Case", "Judge", "Verdict", "ask", "failed", "get", "judged"]
