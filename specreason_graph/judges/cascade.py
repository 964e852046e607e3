"""``cascade``: judges asked in turn, the free ones first, until one is sure. Each stage but the last
has a band (``Context.cascade``, e.g. ``check:1-10,confidence:3-8,yes_no``): a score below LOW
rejects the draft (score 0), one at HIGH or above accepts it (score 9), anything between asks the
next stage; the last stage's score meets the run's threshold. The order and the bands come from
``specreason calibrate``, which measures every judge on labelled steps, not from hand-tuning. Its
``reads``: every stage asked (its judge, its record and its ``band``, None for the last) and the
one that ``decided_by``."""

from __future__ import annotations

from collections.abc import Callable

from specreason_graph import rules
from specreason_graph.context import JUDGE_NAMES, Context
from specreason_graph.judges.base import Case, Judge, Verdict, judged
from specreason_graph.models import Calls


class CascadeJudge:
    name = "cascade"

    def __init__(self, judges: Callable[[str], Judge]):
        self._judges = judges

    def __call__(self, case: Case, ctx: Context) -> Calls[Verdict]:
        stages = rules.parse_cascade(ctx.cascade, JUDGE_NAMES)
        asked: list[dict] = []
        ms, prompt_tokens, cached = 0.0, 0, None
        verdict = None
        for i, (name, low, high) in enumerate(stages):
            verdict = yield from judged(self._judges(name), case, ctx)
            ms += verdict.ms
            prompt_tokens += verdict.prompt_tokens
            if verdict.cached_tokens is not None:
                cached = (cached or 0) + verdict.cached_tokens
            last = i == len(stages) - 1
            asked.append({"judge": name, **verdict.record(), "band": None if last else [low, high]})
            if verdict.error and not last:
                continue  # a stage that cannot read its signal decides nothing
            if last:
                score = verdict.score
            elif verdict.score < low:
                score = 0.0
            elif verdict.score >= high:
                score = rules.SCORE_MAX
            else:
                continue
            return Verdict(score=score, prompt_tokens=prompt_tokens, cached_tokens=cached, ms=ms,
                           error=verdict.error if last else None,
                           reads={"decided_by": name, "stages": asked})
        raise AssertionError("unreachable: the last stage always decides")  # pragma: no cover
