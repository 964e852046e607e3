"""``check``: the draft's arithmetic, verified without any model call. Every equation of numbers
the step states (plain or LaTeX: ``a × b = c``, ``\\frac{a}{b} = c``, ``\\times``, ``\\cdot``, units
in ``\\text{…}``) is evaluated with sympy (:mod:`.arithmetic`); one false equation scores 0 (reject),
otherwise the step scores 9 — including a step that states no equation, which this judge cannot
refute (in a cascade, ``check:1-10`` rejects false arithmetic and passes everything else on)."""

from __future__ import annotations

import time

from specreason_graph import rules
from specreason_graph.context import Context
from specreason_graph.judges.arithmetic import check_step
from specreason_graph.judges.base import Case, Verdict


class CheckJudge:
    name = "check"

    def __call__(self, case: Case, ctx: Context) -> Verdict:
        started = time.perf_counter()
        found = check_step(case.draft)
        return Verdict(score=0.0 if found.verdict is False else rules.SCORE_MAX,
                       ms=(time.perf_counter() - started) * 1000,
                       reads={"equations": len(found.equations),
                              "false": [e.text for e in found.false]})
