"""Judges: what the judge node asks to score a draft. Each one turns (problem, kept steps, draft)
into a utility score on the paper's 0–9 scale, so the threshold, the ``by_score`` router and the
trace are the same whichever judge runs.

A judge is a small object with a ``name`` and ``__call__(case, ctx, models) -> Verdict``; adding one
is a class and an entry in :data:`JUDGES`.
"""

from __future__ import annotations

from specreason_graph.judges.base import Case, Judge, Verdict
from specreason_graph.judges.score import ScoreJudge

JUDGES: dict[str, Judge] = {judge.name: judge for judge in (ScoreJudge(),)}
"""Every judge by name (``Context.judge``)."""


def get(name: str) -> Judge:
    try:
        return JUDGES[name]
    except KeyError:
        raise ValueError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}") from None


__all__ = ["JUDGES", "Case", "Judge", "ScoreJudge", "Verdict", "get"]
