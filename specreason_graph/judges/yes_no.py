"""``yes_no``: the base model answers "is the last step correct?" with one token; the score is
9 × P(Yes), P(Yes) renormalised over the Yes/No tokens among the top logprobs. The same single cheap
call as the paper's judge (prefix cache: only the new step and the question are prefilled); small
models are often better calibrated on a binary question than on a 0–9 scale."""

from __future__ import annotations

from specreason_graph import prompts, rules
from specreason_graph.context import Context
from specreason_graph.judges.base import Case, Verdict
from specreason_graph.models import Calls, JudgeToken, reply_to


class YesNoJudge:
    name = "yes_no"

    def __call__(self, case: Case, ctx: Context) -> Calls[Verdict]:
        reply = yield from reply_to(JudgeToken(prompts.judge_messages(
            case.user_prompt, case.steps, case.draft, case.thinking_opener, ctx.step_delimiter,
            question="judge_yes_no", prompt_set=ctx.prompt_set), ctx.judge_top_logprobs, tools=case.tools))
        p_yes = rules.yes_probability(reply.top_logprobs, reply.token)
        error = reply.error or (None if p_yes is not None else
                                f"neither Yes nor No among the judge's tokens ({reply.token!r})")
        return Verdict(score=0.0 if error else rules.SCORE_MAX * p_yes,  # type: ignore[operator]
                       token=reply.token, alternatives=reply.top_logprobs,
                       prompt_tokens=reply.prompt_tokens, cached_tokens=reply.cached_tokens,
                       ms=reply.ms, error=error, reads={"p_yes": p_yes})
