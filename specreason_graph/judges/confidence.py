"""``confidence``: the small model's own token log-probabilities of its draft, sent with the draft
(``logprobs=True`` on the step request): no call at all. The score is 9 × the draft's geometric-mean
token probability, exp(mean logprob); the minimum is recorded beside it."""

from __future__ import annotations

import statistics
import time

from specreason_graph import rules
from specreason_graph.context import Context
from specreason_graph.judges.base import Case, Verdict, failed


class ConfidenceJudge:
    name = "confidence"

    def __call__(self, case: Case, ctx: Context) -> Verdict:
        started = time.perf_counter()
        if not case.draft_logprobs:
            return failed("the small model's reply carried no token logprobs")
        lps = case.draft_logprobs
        return Verdict(score=rules.probability_score(lps), ms=(time.perf_counter() - started) * 1000,
                       reads={"mean_logprob": statistics.fmean(lps), "min_logprob": min(lps),
                              "tokens": len(lps)})
