"""Every judge through the real graph, with scripted chat models: what each one asks, what it scores,
what it records, and that a judge that cannot read its signal rejects the draft instead of crashing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from specreason_graph import Context, build_graph, rules
from specreason_graph.judges import JUDGES
from tests.fakes import ScriptedModel, prompt_logprobs, score, server_gone, step

pytestmark = pytest.mark.usefixtures("both_paths")

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
PAPER = {"judge": "score", "threshold": 7.0, "score_method": "greedy"}



def run(small_script, base_script, **ctx: Any):
    small, base = ScriptedModel(script=small_script), ScriptedModel(script=base_script)
    graph = build_graph(small=small, base=base).compile()
    out = graph.invoke({"problem": "What is 1 + 2?"}, context=Context(**{**PAPER, **ctx}))
    return out, small, base


def likelihood_call(kwargs: dict[str, Any]) -> bool:
    return (kwargs.get("extra_body") or {}).get("prompt_logprobs") is not None


def base_script(steps=(), judge_replies=(), likelihood=()):
    """Base model: step requests, one-token judge requests and prompt-logprob requests, each from
    its own list."""
    steps, judge_replies, likelihood = iter(steps), iter(judge_replies), iter(likelihood)

    def respond(messages, kwargs):
        if likelihood_call(kwargs):
            return next(likelihood)
        return next(judge_replies) if kwargs.get("max_tokens") == 1 else next(steps)

    return respond


# --- yes_no --------------------------------------------------------------------------------------

def test_yes_no_scores_nine_times_p_yes_and_asks_the_yes_no_question():
    out, _, base = run([step(r"So \boxed{3}")],
                       base_script(judge_replies=[score("Yes", {"Yes": 0.8, "No": 0.2})]),
                       judge="yes_no", threshold=7)
    record = out["trace"][0]
    assert record["judge"] == "yes_no"
    assert record["score"] == pytest.approx(7.2)
    assert record["accepted"] is True and record["writer"] == "small"
    assert record["judges"]["yes_no"]["reads"]["p_yes"] == pytest.approx(0.8)
    asked = base.calls[0][0]
    assert asked[-2].content == (PROMPTS / "judge_yes_no.txt").read_text().strip()
    assert asked[-1].content == (PROMPTS / "judge_yes_no_prefill.txt").read_text()


def test_yes_no_reads_spaced_and_lowercase_answers_together():
    p = rules.yes_probability([(" Yes", math.log(0.3)), ("yes", math.log(0.3)), ("No", math.log(0.2)),
                               ("Maybe", math.log(0.2))], "Yes")
    assert p == pytest.approx(0.6 / 0.8)


@pytest.mark.parametrize(("token", "accepted", "error"), [("Yes", True, False), ("No", False, False),
                                                          ("Maybe", False, True)])
def test_yes_no_without_logprobs_reads_the_generated_token(token, accepted, error):
    out, _, _ = run([step(r"So \boxed{3}")], base_script(steps=[step(r"\boxed{3}")],
                                                   judge_replies=[score(token, logprobs=False)]),
                    judge="yes_no")
    record = out["trace"][0]
    assert record["accepted"] is accepted
    assert (record["judge_error"] is not None) is error
    assert record["writer"] == ("small" if accepted else "base")


# --- confidence ----------------------------------------------------------------------------------

def test_confidence_scores_the_drafts_own_logprobs_without_any_judge_call():
    lps = [-0.1, -0.2, -0.3]
    out, small, base = run([step(r"So \boxed{3} ok", logprobs=lps)], base_script(),
                           judge="confidence", threshold=7)
    record = out["trace"][0]
    assert record["score"] == pytest.approx(9 * math.exp(-0.2))
    assert record["accepted"] is True
    assert record["draft_logprobs"] == pytest.approx(lps)  # the delimiter's token left out
    assert record["judges"]["confidence"]["reads"]["min_logprob"] == pytest.approx(-0.3)
    assert base.calls == []  # no judge call at all
    assert small.calls[0][1]["logprobs"] is True


def test_confidence_rejects_a_draft_sent_without_logprobs_and_says_why():
    out, _, base = run([step(r"So \boxed{3}")], base_script(steps=[step(r"\boxed{3}")]),
                       judge="confidence", threshold=1)
    record = out["trace"][0]
    assert record["score"] == 0.0 and record["accepted"] is False and record["writer"] == "base"
    assert "no token logprobs" in record["judge_error"]


def test_an_unsure_draft_is_rewritten_by_the_base_model():
    out, _, _ = run([step("Maybe nine.", logprobs=[-3.0, -4.0])],
                    base_script(steps=[step(r"\boxed{3}")]), judge="confidence", threshold=5)
    assert out["trace"][0]["writer"] == "base" and out["steps"] == [r"\boxed{3}"]


# --- likelihood ----------------------------------------------------------------------------------

def test_likelihood_reads_the_base_models_logprobs_of_exactly_the_draft():
    draft = r"So the answer is \boxed{3}."
    reply = prompt_logprobs(["<s>", "What", " is"], [("So", -0.5), (" the answer", -0.1),
                                                     (r" is \boxed{3}.", -0.3)])
    out, _, base = run([step(draft)], base_script(likelihood=[reply]), judge="likelihood",
                       threshold=5)
    record = out["trace"][0]
    assert record["score"] == pytest.approx(9 * math.exp(-0.3))
    assert record["judges"]["likelihood"]["reads"]["tokens"] == 3
    assert record["judge_prompt_tokens"] == 6 and record["judge_cached_tokens"] == 0
    messages, kwargs = base.calls[0]
    assert kwargs["extra_body"] == {"prompt_logprobs": 0, "continue_final_message": True,
                                    "add_generation_prompt": False}
    assert messages[-1].content.endswith(draft) and len(messages) == 2


def test_likelihood_without_prompt_logprobs_rejects():
    out, _, _ = run([step(r"So \boxed{3}")], base_script(steps=[step(r"\boxed{3}")],
                                                   likelihood=[prompt_logprobs(["a"], None)]),
                    judge="likelihood", threshold=1)
    record = out["trace"][0]
    assert record["accepted"] is False and "no prompt logprobs" in record["judge_error"]


# --- check ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("draft", [
    "She has 16 eggs/day - 48 eggs/day = -22 eggs/day left.",
    r"Each gets $\frac{3}{4} = 0.9$ pies.",
    r"The total is $3 \times 4 = 13$.",
])
def test_check_rejects_a_false_equation_without_any_model_call_and_the_base_rewrites(draft):
    out, _, base = run([step(draft)], base_script(steps=[step(r"\boxed{3}")]), judge="check")
    record = out["trace"][0]
    assert record["accepted"] is False and record["score"] == 0.0
    assert record["judges"]["check"]["reads"]["false"]
    assert [kw.get("max_tokens") for _, kw in base.calls] == [512]  # the regeneration only


@pytest.mark.parametrize("draft", [r"So $3 \times 4 = 12$ apples.", "No arithmetic in this step."])
def test_check_keeps_true_or_no_arithmetic(draft):
    out, _, base = run([step(draft), step(r"\boxed{12}")], base_script(), judge="check")
    assert [r["accepted"] for r in out["trace"]] == [True, True] and base.calls == []


# --- cascade -------------------------------------------------------------------------------------

CASCADE = "check:1-10,confidence:3-8,yes_no"


def test_cascade_rejects_false_arithmetic_first_and_asks_nobody():
    out, _, base = run([step("2 + 2 = 5 so", logprobs=[-0.01] * 6)],
                       base_script(steps=[step(r"\boxed{4}")]), judge="cascade", cascade=CASCADE)
    record = out["trace"][0]
    assert record["accepted"] is False
    assert record["judges"]["cascade"]["reads"]["decided_by"] == "check"
    assert [kw.get("max_tokens") for _, kw in base.calls] == [512]


def test_cascade_accepts_a_confident_draft_without_a_judge_call():
    out, _, base = run([step(r"So \boxed{3}", logprobs=[-0.01, -0.01])], base_script(),
                       judge="cascade", cascade=CASCADE)
    record = out["trace"][0]
    assert record["accepted"] is True and record["score"] == 9.0
    assert record["judges"]["cascade"]["reads"]["decided_by"] == "confidence"
    assert base.calls == []


def test_cascade_asks_the_model_judge_when_the_free_signals_are_undecided():
    middling = [math.log(0.6)] * 2  # 9 × 0.6 = 5.4, inside 3-8
    out, _, base = run([step(r"So \boxed{3}", logprobs=middling)],
                       base_script(judge_replies=[score("No", {"Yes": 0.1, "No": 0.9})],
                                   steps=[step(r"\boxed{3}")]),
                       judge="cascade", cascade=CASCADE, threshold=5)
    record = out["trace"][0]
    stages = record["judges"]["cascade"]["reads"]["stages"]
    assert [s["judge"] for s in stages] == ["check", "confidence", "yes_no"]
    assert record["score"] == pytest.approx(0.9) and record["accepted"] is False
    assert record["writer"] == "base"


@pytest.mark.parametrize(("cascade", "message"), [
    ("", "at least one judge"),
    ("oracle", "unknown judge 'oracle'"),
    ("check,yes_no", "give its band"),
    ("check:1-10,yes_no:3-5", "the last stage takes no band"),
    ("check:5-1,yes_no", "LOW <= HIGH"),
    ("cascade:1-2,yes_no", "unknown judge 'cascade'"),
])
def test_a_bad_cascade_fails_when_the_context_is_built(cascade, message):
    with pytest.raises(ValueError, match=message):
        Context(cascade=cascade)


# --- every judge, recorded -----------------------------------------------------------------------

def test_also_judge_records_every_judge_and_only_the_chosen_one_decides():
    draft = r"So $1 + 2 = 3$ and \boxed{3}"
    words = len(draft.split(" "))
    out, _, base = run(
        [step(draft, logprobs=[-0.5] * words)],
        base_script(judge_replies=[score("2"), score("No", {"Yes": 0.2, "No": 0.8})],
                    likelihood=[prompt_logprobs(["a"], [(draft, -0.2)])],
                    steps=[step(r"\boxed{3}")]),
        judge="score", threshold=7, also_judge=["yes_no", "confidence", "likelihood", "check"])
    record = out["trace"][0]
    assert set(record["judges"]) == {"score", "yes_no", "confidence", "likelihood", "check"}
    assert record["judges"]["check"]["score"] == 9.0
    assert record["judges"]["yes_no"]["score"] == pytest.approx(1.8)
    assert record["score"] == 2.0 and record["accepted"] is False  # the paper's judge decided


def test_a_failing_aside_judge_is_recorded_and_the_run_goes_on():
    def base(messages, kwargs):
        if likelihood_call(kwargs):
            raise server_gone()
        return score("9")

    out, _, _ = run([step(r"So \boxed{3}")], base, also_judge=["likelihood"])
    record = out["trace"][0]
    assert record["accepted"] is True
    assert "APIConnectionError" in record["judges"]["likelihood"]["error"]


def test_a_malformed_reply_to_the_deciding_judge_rejects_and_is_recorded():
    def base(messages, kwargs):
        if likelihood_call(kwargs):
            raise TypeError("Received response with null value for 'choices'")
        return step(r"\boxed{3}")

    out, _, _ = run([step(r"So \boxed{3}")], base, judge="likelihood", threshold=1)
    record = out["trace"][0]
    assert record["accepted"] is False and record["writer"] == "base"
    assert record["judge_error"].startswith("MalformedReply")


def test_every_judge_is_registered_under_its_context_name():
    from specreason_graph.context import JUDGE_NAMES

    assert set(JUDGES) == set(JUDGE_NAMES)
    assert all(JUDGES[name].name == name for name in JUDGES)


def test_the_trace_keeps_a_step_that_was_never_judged_free_of_judges():
    out, _, _ = run([step(r"\boxed{3}")], base_script(), small_only=True)
    assert out["trace"][0]["judge"] is None and out["trace"][0]["judges"] == {}


def test_an_ai_message_reply_object_is_what_the_fakes_send():
    assert isinstance(prompt_logprobs(["a"], [("b", -1.0)]), AIMessage)
