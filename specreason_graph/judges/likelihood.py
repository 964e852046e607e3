"""``likelihood``: the base model's token log-probabilities of the draft given the prefix, read
with vLLM's ``prompt_logprobs`` from one request that generates a single token. The score is
9 × exp(mean logprob); the minimum is recorded beside it.

Its price: vLLM does not read the prefix cache for a request that asks for prompt logprobs, so every
call prefills the whole prompt (problem, kept steps, draft) — on the CPU pair that is seconds per
step, growing with the trace. The trace records ``prompt_tokens`` and ``cached_tokens`` of each call.
"""

from __future__ import annotations

import statistics

from specreason_graph import prompts, rules
from specreason_graph.context import Context
from specreason_graph.judges.base import Case, Verdict
from specreason_graph.models import Calls, PromptLogprobs, reply_to


class LikelihoodJudge:
    name = "likelihood"

    def __call__(self, case: Case, ctx: Context) -> Calls[Verdict]:
        read = yield from reply_to(PromptLogprobs("base", prompts.draft_messages(
            case.user_prompt, case.steps, case.draft, case.thinking_opener, ctx.step_delimiter),
            case.draft, case.tools))
        lps = read.logprobs
        return Verdict(
            score=rules.probability_score(lps), prompt_tokens=read.prompt_tokens,
            cached_tokens=read.cached_tokens, ms=read.ms,
            error=None if lps else "the base server sent no prompt logprobs for the draft",
            reads={"mean_logprob": statistics.fmean(lps), "min_logprob": min(lps),
                   "tokens": len(lps)} if lps else {})
