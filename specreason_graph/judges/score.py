"""``score``: the paper's judge. The base model rates the last step 0–9 with one generated token;
the score is that digit (``greedy``, the paper's) or the expected digit over the top logprobs
(``expected``), as ``Context.score_method`` says (recorded in its ``reads`` as ``method``)."""

from __future__ import annotations

from specreason_graph import prompts, rules
from specreason_graph.context import Context
from specreason_graph.judges.base import Case, Verdict
from specreason_graph.models import Calls, JudgeToken, reply_to


class ScoreJudge:
    name = "score"

    def __call__(self, case: Case, ctx: Context) -> Calls[Verdict]:
        reply = yield from reply_to(JudgeToken(prompts.judge_messages(
            case.user_prompt, case.steps, case.draft, case.thinking_opener, ctx.step_delimiter,
            prompt_set=ctx.prompt_set), ctx.judge_top_logprobs, tools=case.tools))
        score = (rules.greedy_score(reply.token) if ctx.score_method == "greedy"
                 else rules.expected_score(reply.top_logprobs))
        return Verdict(score=score, token=reply.token, alternatives=reply.top_logprobs,
                       prompt_tokens=reply.prompt_tokens, cached_tokens=reply.cached_tokens,
                       ms=reply.ms, error=reply.error, reads={"method": ctx.score_method})
