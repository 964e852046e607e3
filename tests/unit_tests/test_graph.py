"""The graph's logic, with scripted chat models in place of the two vLLM servers (no network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import RetryPolicy
from pydantic import ValidationError

from specreason_graph import Context, build_graph
from specreason_graph.models import MalformedReply, ModelCallError, transient
from tests.fakes import ScriptedModel, by_kind, context_full_error, score, step

pytestmark = pytest.mark.usefixtures("both_paths")

PROMPTS = Path(__file__).resolve().parents[2] / "prompts"
PROBLEM = "What is 1 + 2?"
DRAFT_KEYS = ("stop", "max_tokens", "temperature", "top_p", "seed", "extra_body")



def user_prompt(problem: str = PROBLEM, prompt: str = "math") -> str:
    return (PROMPTS / f"{prompt}.txt").read_text(encoding="utf-8").strip().replace(
        "{problem}", problem)


JUDGE_TEXT = (PROMPTS / "judge.txt").read_text(encoding="utf-8").strip()
JUDGE_PREFILL = (PROMPTS / "judge_prefill.txt").read_text(encoding="utf-8")


def view(messages: list[BaseMessage]) -> list[tuple[str, str]]:
    return [(m.type, m.content) for m in messages]


def without_model(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k != "model"}


def step_requests(model: ScriptedModel) -> list[tuple[list[BaseMessage], dict[str, Any]]]:
    return [(m, kw) for m, kw in model.calls if kw.get("max_tokens") != 1]


def judge_requests(model: ScriptedModel) -> list[tuple[list[BaseMessage], dict[str, Any]]]:
    return [(m, kw) for m, kw in model.calls if kw.get("max_tokens") == 1]


QUICK_RETRY = RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False, retry_on=transient)
"""RETRY's attempts without its seconds of backoff."""


def run(small_script, base_script, problem: str = PROBLEM, **ctx: Any):
    small = ScriptedModel(script=small_script)
    base = ScriptedModel(script=base_script)
    graph = build_graph(small=small, base=base, retry=QUICK_RETRY).compile()
    out = graph.invoke({"problem": problem}, context=Context(**ctx))
    return out, small, base


# --- routing by the threshold ------------------------------------------------------------------

@pytest.mark.parametrize(("judge_token", "threshold", "accepted"), [
    ("7", 7, True),      # score == threshold accepts
    ("8", 7, True),
    ("6", 7, False),
    ("0", 0, True),      # threshold 0 keeps everything, even a 0
    ("9", 10, False),    # threshold 10 rejects everything, even a 9
    ("9", 9, True),
])
def test_threshold_routing(judge_token, threshold, accepted):
    out, small, base = run(
        [step(r"small says \boxed{3}")],
        by_kind([step(r"base says \boxed{4}")], [score(judge_token)]),
        threshold=threshold)
    record = out["trace"][0]
    assert record["score"] == float(judge_token)
    assert record["judges"]["score"]["reads"]["token"] == judge_token
    assert record["accepted"] is accepted
    assert record["draft"] == r"small says \boxed{3}"
    if accepted:
        assert record["writer"] == "small"
        assert out["steps"] == [r"small says \boxed{3}"]
        assert out["answer"] == "3"
        assert len(step_requests(base)) == 0
    else:
        assert record["writer"] == "base"
        assert out["steps"] == [r"base says \boxed{4}"]
        assert out["answer"] == "4"
        assert len(step_requests(base)) == 1
    assert len(small.calls) == 1
    assert len(judge_requests(base)) == 1
    assert out["stop_reason"] == "answer"


def test_threshold_zero_accepts_every_draft_of_a_run():
    out, small, base = run(
        [step("a = 1"), step("b = 2"), step(r"\boxed{3}")],
        by_kind([], [score("0"), score("x"), score(None, logprobs=False)]),
        threshold=0)
    assert [r["writer"] for r in out["trace"]] == ["small"] * 3
    assert [r["accepted"] for r in out["trace"]] == [True] * 3
    assert step_requests(base) == []


def test_threshold_ten_rejects_every_draft_of_a_run():
    out, small, base = run(
        [step("a = 1"), step(r"\boxed{3}")],
        by_kind([step("A = 1"), step(r"\boxed{30}")], [score("9"), score("9")]),
        threshold=10)
    assert [r["writer"] for r in out["trace"]] == ["base", "base"]
    assert out["steps"] == ["A = 1", r"\boxed{30}"]
    assert out["answer"] == "30"


@pytest.mark.parametrize(("threshold", "accepted"), [(8.0, True), (8.01, False)])
def test_expected_score_routing(threshold, accepted):
    # 9 and 7 equally likely, 'x' dropped before renormalising: score exactly 8.0
    out, _, _ = run(
        [step(r"\boxed{3}")],
        by_kind([step(r"\boxed{4}")], [score("9", {"9": 0.4, "7": 0.4, "x": 0.2})]),
        score_method="expected", threshold=threshold)
    record = out["trace"][0]
    assert record["score"] == pytest.approx(8.0)
    assert record["accepted"] is accepted
    assert record["writer"] == ("small" if accepted else "base")


def test_greedy_ignores_alternatives_expected_uses_them():
    # generated '9' but the alternatives say mostly 2: greedy keeps, expected rejects
    reply = {"9": 0.3, "2": 0.7}
    greedy, _, _ = run([step(r"\boxed{3}")],
                       by_kind([step(r"\boxed{4}")], [score("9", reply)]),
                       score_method="greedy", threshold=7)
    expected, _, _ = run([step(r"\boxed{3}")],
                         by_kind([step(r"\boxed{4}")], [score("9", reply)]),
                         score_method="expected", threshold=7)
    assert greedy["trace"][0]["score"] == 9.0
    assert greedy["trace"][0]["writer"] == "small"
    assert expected["trace"][0]["score"] == pytest.approx(0.3 * 9 + 0.7 * 2)
    assert expected["trace"][0]["writer"] == "base"


@pytest.mark.parametrize("method", ["greedy", "expected"])
def test_non_digit_judge_token_scores_zero_and_regenerates(method):
    out, _, base = run(
        [step(r"\boxed{3}")],
        by_kind([step(r"\boxed{4}")], [score("Good", {"Good": 0.9, "ok": 0.1})]),
        score_method=method, threshold=1)
    record = out["trace"][0]
    assert record["score"] == 0.0
    assert record["judges"]["score"]["reads"]["token"] == "Good"
    assert record["accepted"] is False
    assert record["writer"] == "base"
    assert out["answer"] == "4"
    assert len(step_requests(base)) == 1


@pytest.mark.parametrize("method", ["greedy", "expected"])
def test_judge_reply_without_logprobs_scores_zero_and_regenerates(method):
    out, _, base = run(
        [step(r"\boxed{3}")],
        by_kind([step(r"\boxed{4}")], [score(None, logprobs=False)]),
        score_method=method, threshold=1)
    record = out["trace"][0]
    assert record["score"] == 0.0
    assert record["judges"]["score"]["reads"].get("token") is None
    assert record["accepted"] is False
    assert record["writer"] == "base"
    assert out["steps"] == [r"\boxed{4}"]


def test_judge_without_logprobs_greedy_falls_back_to_generated_text():
    out, _, _ = run([step(r"\boxed{3}")],
                    by_kind([step(r"\boxed{4}")], [score("8", logprobs=False)]),
                    score_method="greedy", threshold=7)
    assert out["trace"][0]["score"] == 8.0
    assert out["trace"][0]["writer"] == "small"
    # expected has no alternatives to weigh: 0
    out, _, _ = run([step(r"\boxed{3}")],
                    by_kind([step(r"\boxed{4}")], [score("8", logprobs=False)]),
                    score_method="expected", threshold=7)
    assert out["trace"][0]["score"] == 0.0
    assert out["trace"][0]["writer"] == "base"


# --- first_n_base ------------------------------------------------------------------------------

def test_first_n_base_steps_are_forced_and_not_judged():
    out, small, base = run(
        [step(r"\boxed{3}")],
        by_kind([step("b0"), step("b1")], [score("9")]),
        first_n_base=2)
    assert out["steps"] == ["b0", "b1", r"\boxed{3}"]
    writers = [(r["writer"], r["forced"], r["draft"], r["score"], r["accepted"])
               for r in out["trace"]]
    assert writers == [("base", True, None, None, None),
                       ("base", True, None, None, None),
                       ("small", False, r"\boxed{3}", 9.0, True)]
    assert [r["index"] for r in out["trace"]] == [0, 1, 2]
    assert len(judge_requests(base)) == 1          # only the drafted step is judged
    assert len(step_requests(base)) == 2
    assert len(small.calls) == 1
    # the small model drafts after the forced steps
    assert view(small.calls[0][0])[-1] == ("ai", "b0\n\nb1\n\n")


def test_first_n_base_zero_drafts_from_the_first_step():
    out, small, base = run([step(r"\boxed{3}")], by_kind([], [score("9")]), first_n_base=0)
    assert out["trace"][0]["forced"] is False
    assert step_requests(base) == []


# --- stop rules end to end ---------------------------------------------------------------------

def test_stop_on_answer_marker_extracts_answer():
    out, _, _ = run(
        [step("x = 1"), step(r"so x + 2 = \boxed{\frac{6}{2}}")],
        by_kind([], [score("9"), score("9")]))
    assert out["stop_reason"] == "answer"
    assert out["answer"] == r"\frac{6}{2}"
    assert out["steps"] == ["x = 1", r"so x + 2 = \boxed{\frac{6}{2}}"]


def test_stop_on_answer_line():
    out, _, _ = run([step("ANSWER: B")], by_kind([], [score("9")]))
    assert out["stop_reason"] == "answer"
    assert out["answer"] == "B"


def test_stop_on_two_identical_kept_steps():
    out, small, _ = run(
        [step("x = 1"), step("x = 1"), step("never drafted")],
        by_kind([], [score("9"), score("9")]))
    assert out["stop_reason"] == "repeated_step"
    assert out["steps"] == ["x = 1", "x = 1"]
    assert out["answer"] is None
    assert len(small.calls) == 2


def test_repeat_counts_kept_text_not_drafts():
    # the second draft repeats the first but is rejected; the base writes something else
    out, _, _ = run(
        [step("x = 1"), step("x = 1"), step(r"\boxed{1}")],
        by_kind([step("y = 2")], [score("9"), score("1"), score("9")]))
    assert out["steps"] == ["x = 1", "y = 2", r"\boxed{1}"]
    assert out["stop_reason"] == "answer"


def test_stop_on_token_budget():
    out, small, _ = run(
        [step("a", tokens=4), step("b", tokens=4), step("c", tokens=4), step("d", tokens=4)],
        by_kind([], [score("9")] * 3),
        token_budget=10)
    assert out["stop_reason"] == "token_budget"
    assert out["steps"] == ["a", "b", "c"]
    assert out["kept_tokens"] == 12          # may overshoot by up to one step
    assert len(small.calls) == 3


def test_budget_counts_kept_tokens_only():
    # a rejected 100-token draft and the judge calls do not count against a budget of 50
    out, _, _ = run(
        [step("long draft", tokens=100), step("b", tokens=5), step(r"\boxed{1}", tokens=5)],
        by_kind([step("short", tokens=3)], [score("0"), score("9"), score("9")]),
        token_budget=50)
    assert out["stop_reason"] == "answer"
    assert out["kept_tokens"] == 13
    assert [r["tokens"] for r in out["trace"]] == [3, 5, 5]
    assert out["trace"][0]["draft_tokens"] == 100
    assert out["trace"][0]["base_tokens"] == 3


def test_stop_when_small_model_ends_its_turn():
    out, small, _ = run(
        [step("That is all.", end="eos"), step("never drafted")],
        by_kind([], [score("9")]))
    assert out["stop_reason"] == "finished"
    assert out["steps"] == ["That is all."]
    assert out["trace"][0]["ended_turn"] is True
    assert out["trace"][0]["truncated"] is False
    assert out["answer"] is None
    assert len(small.calls) == 1


def test_stop_when_regenerated_step_ends_the_turn():
    out, _, _ = run(
        [step("x = 1"), step("never drafted")],
        by_kind([step("Done.", end="eos")], [score("0")]))
    assert out["stop_reason"] == "finished"
    assert out["trace"][0]["writer"] == "base"
    assert out["trace"][0]["ended_turn"] is True


def test_rejected_draft_that_ended_its_turn_does_not_stop():
    out, _, _ = run(
        [step("bye", end="eos"), step(r"\boxed{2}")],
        by_kind([step("x = 1")], [score("0"), score("9")]))
    assert out["steps"] == ["x = 1", r"\boxed{2}"]
    assert out["trace"][0]["ended_turn"] is False
    assert out["stop_reason"] == "answer"


def test_step_cut_by_cap_is_kept_and_marked_truncated():
    out, small, _ = run(
        [step("a very long partial", end="length", tokens=7), step(r"\boxed{1}")],
        by_kind([], [score("9"), score("9")]),
        max_step_tokens=7)
    assert out["steps"] == ["a very long partial", r"\boxed{1}"]
    assert out["trace"][0]["truncated"] is True
    assert out["trace"][0]["ended_turn"] is False
    assert out["trace"][1]["truncated"] is False
    assert out["stop_reason"] == "answer"
    # joined like any other step
    assert view(small.calls[1][0])[-1] == ("ai", "a very long partial\n\n")


def test_think_close_without_answer_is_removed_from_kept_step():
    out, small, base = run(
        [step("x = 1 </think>"), step(r"\boxed{1}")],
        by_kind([], [score("9"), score("9")]))
    assert out["steps"] == ["x = 1 ", r"\boxed{1}"]
    assert out["trace"][0]["text"] == "x = 1 "
    for messages, _ in small.calls[1:] + base.calls[1:]:
        assert all("</think>" not in m.content for m in messages)


def test_think_close_with_answer_is_kept():
    out, _, _ = run([step("</think>\nThe result is \\boxed{1}")], by_kind([], [score("9")]))
    assert out["steps"] == ["</think>\nThe result is \\boxed{1}"]
    assert out["answer"] == "1"


def test_judge_never_sees_think_close_of_a_step_that_would_be_cleaned():
    _, _, base = run(
        [step("x = 1"), step("so y = 2 </think>"), step(r"\boxed{1}")],
        by_kind([], [score("9"), score("9"), score("9")]),
        thinking_opener="<think>\n")
    for messages, _ in judge_requests(base):
        assert all("</think>" not in m.content for m in messages)


# --- what each model sees ----------------------------------------------------------------------

def test_rejected_draft_never_reaches_later_prompts():
    secret = "WRONG DRAFT 1+2=13"
    out, small, base = run(
        [step("a = 1"), step(secret), step("c = 3"), step(r"\boxed{3}")],
        by_kind([step("b = 2 (base)")],
                [score("9"), score("1"), score("9"), score("9")]))
    assert out["steps"] == ["a = 1", "b = 2 (base)", "c = 3", r"\boxed{3}"]
    assert out["trace"][1]["draft"] == secret          # recorded in the trace only

    def mentions(messages):
        return any(secret in m.content for m in messages)

    # base calls: judge(a), judge(secret), regenerate, judge(c), judge(boxed)
    assert [kw["max_tokens"] for _, kw in base.calls] == [1, 1, 512, 1, 1]
    assert [mentions(m) for m, _ in base.calls] == [False, True, False, False, False]
    assert not any(mentions(m) for m, _ in small.calls)
    # and the later prompts carry the base's step in its place
    assert view(base.calls[3][0])[1] == ("ai", "a = 1\n\nb = 2 (base)\n\nc = 3")
    assert view(small.calls[2][0])[-1] == ("ai", "a = 1\n\nb = 2 (base)\n\n")


def test_judge_message_layout_is_exact():
    _, _, base = run(
        [step("a = 1"), step("b = 2"), step(r"\boxed{3}")],
        by_kind([], [score("9"), score("9"), score("9")]),
        judge_top_logprobs=5)
    judges = judge_requests(base)
    assert len(judges) == 3
    assert view(judges[0][0]) == [("human", user_prompt()), ("ai", "a = 1"),
                                  ("human", JUDGE_TEXT), ("ai", JUDGE_PREFILL)]
    assert view(judges[1][0]) == [("human", user_prompt()), ("ai", "a = 1\n\nb = 2"),
                                  ("human", JUDGE_TEXT), ("ai", JUDGE_PREFILL)]
    assert view(judges[2][0]) == [("human", user_prompt()),
                                  ("ai", "a = 1\n\nb = 2\n\n\\boxed{3}"),
                                  ("human", JUDGE_TEXT), ("ai", JUDGE_PREFILL)]
    # the pre-fill ends right where the digit goes
    assert JUDGE_PREFILL == "Score: "
    kwargs = judges[0][1]
    assert kwargs["max_tokens"] == 1
    assert kwargs["temperature"] == 0.0
    assert kwargs["logprobs"] is True
    assert kwargs["top_logprobs"] == 5
    assert kwargs["extra_body"]["continue_final_message"] is True
    assert kwargs["extra_body"]["add_generation_prompt"] is False


def test_multiple_choice_prompt_is_used_for_every_call():
    _, small, base = run([step(r"\boxed{B}")], by_kind([], [score("9")]),
                         prompt="multiple_choice")
    expected = user_prompt(prompt="multiple_choice")
    assert view(small.calls[0][0])[0] == ("human", expected)
    assert view(base.calls[0][0])[0] == ("human", expected)


def test_a_prompt_set_replaces_the_problem_and_judge_prompts(tmp_path):
    """prompt_set="paper": every call's problem turn and every judge turn come from
    prompts/paper/; a folder of one's own replaces only the files it holds."""
    paper = PROMPTS / "paper"
    _, small, base = run([step("a = 1"), step(r"\boxed{3}")], by_kind([], [score("9"), score("9")]),
                         prompt_set="paper")
    expected = (paper / "math.txt").read_text(encoding="utf-8").strip().replace("{problem}",
                                                                                 PROBLEM)
    assert expected != user_prompt()
    assert {view(m)[0] for m, _ in small.calls + base.calls} == {("human", expected)}
    for messages, _ in judge_requests(base):
        assert view(messages)[2:] == [
            ("human", (paper / "judge.txt").read_text(encoding="utf-8").strip()),
            ("ai", (paper / "judge_prefill.txt").read_text(encoding="utf-8"))]

    (tmp_path / "judge_prefill.txt").write_text("Grade: ", encoding="utf-8")
    _, small, base = run([step(r"\boxed{3}")], by_kind([], [score("9")]), prompt_set=str(tmp_path))
    assert view(small.calls[0][0])[0] == ("human", user_prompt())  # not in the folder: ours
    [(messages, _)] = judge_requests(base)
    assert view(messages)[2:] == [("human", JUDGE_TEXT), ("ai", "Grade: ")]


def test_an_unknown_prompt_set_is_refused_before_any_call():
    with pytest.raises(ValidationError, match="prompt set 'nope' is neither '' nor 'paper' nor"):
        Context(prompt_set="nope")


@pytest.mark.parametrize("opener", ["", "<think>\n"])
def test_regeneration_request_is_identical_to_draft_request(opener):
    _, small, base = run(
        [step("a = 1"), step("bad"), step(r"\boxed{3}")],
        by_kind([step("b = 2")], [score("9"), score("0"), score("9")]),
        thinking_opener=opener, seed=7, temperature=0.3, top_p=0.9, max_step_tokens=64)
    draft_messages, draft_kwargs = small.calls[1]
    [(regen_messages, regen_kwargs)] = step_requests(base)
    assert view(regen_messages) == view(draft_messages)
    assert without_model(regen_kwargs) == without_model(draft_kwargs)
    assert view(regen_messages)[-1] == ("ai", opener + "a = 1\n\n")


def test_step_request_parameters_without_opener():
    _, small, _ = run(
        [step("a = 1"), step("b = 2"), step(r"\boxed{3}")],
        by_kind([], [score("9")] * 3),
        max_step_tokens=77, temperature=0.3, top_p=0.9, seed=11)
    first, second, third = small.calls
    # first step: no pre-fill, the server adds the generation prompt
    assert view(first[0]) == [("human", user_prompt())]
    assert first[1]["extra_body"]["add_generation_prompt"] is True
    assert first[1]["extra_body"]["continue_final_message"] is False
    # later steps: continue the pre-filled assistant turn
    assert view(second[0]) == [("human", user_prompt()), ("ai", "a = 1\n\n")]
    assert view(third[0]) == [("human", user_prompt()), ("ai", "a = 1\n\nb = 2\n\n")]
    for _, kwargs in (second, third):
        assert kwargs["extra_body"]["continue_final_message"] is True
        assert kwargs["extra_body"]["add_generation_prompt"] is False
    for _, kwargs in (first, second, third):
        assert kwargs["stop"] == ["\n\n"]
        assert kwargs["max_tokens"] == 77
        assert kwargs["temperature"] == 0.3
        assert kwargs["top_p"] == 0.9
        assert kwargs["seed"] == 11


def test_step_request_defaults_follow_the_paper():
    _, small, _ = run([step(r"\boxed{3}")], by_kind([], [score("9")]))
    kwargs = small.calls[0][1]
    assert kwargs["stop"] == ["\n\n"]
    assert kwargs["max_tokens"] == 512
    assert kwargs["temperature"] == 0.6
    assert kwargs["top_p"] == 0.95


def test_thinking_opener_prefills_every_step_request():
    _, small, base = run(
        [step("a = 1"), step("bad"), step(r"\boxed{3}")],
        by_kind([step("b = 2")], [score("9"), score("0"), score("9")]),
        thinking_opener="<think>\n")
    requests = small.calls + step_requests(base)
    prefills = [view(m)[-1] for m, _ in requests]
    assert prefills == [("ai", "<think>\n"), ("ai", "<think>\na = 1\n\n"),
                        ("ai", "<think>\na = 1\n\nb = 2\n\n"), ("ai", "<think>\na = 1\n\n")]
    for _, kwargs in requests:
        assert kwargs["extra_body"]["continue_final_message"] is True
        assert kwargs["extra_body"]["add_generation_prompt"] is False
    # the judge sees the same opener before the steps
    assert [view(m)[1] for m, _ in judge_requests(base)] == [
        ("ai", "<think>\na = 1"), ("ai", "<think>\na = 1\n\nbad"),
        ("ai", "<think>\na = 1\n\nb = 2\n\n\\boxed{3}")]


# --- custom stream -----------------------------------------------------------------------------

def test_custom_stream_emits_one_event_per_committed_step():
    small = ScriptedModel(script=[step("a = 1", tokens=3), step("bad", tokens=9),
                                  step(r"\boxed{3}", tokens=2)])
    base = ScriptedModel(script=by_kind([step("b = 2", tokens=4)],
                                        [score("8"), score("2"), score("9")]))
    graph = build_graph(small=small, base=base).compile()
    chunks = list(graph.stream({"problem": PROBLEM}, context=Context(),
                               stream_mode=["custom", "values"]))
    events = [c for mode, c in chunks if mode == "custom"]
    final = [c for mode, c in chunks if mode == "values"][-1]
    picked = [{k: e[k] for k in ("index", "writer", "score", "accepted", "tokens", "text")}
              for e in events]
    assert picked == [
        {"index": 0, "writer": "small", "score": 8.0, "accepted": True, "tokens": 3,
         "text": "a = 1"},
        {"index": 1, "writer": "base", "score": 2.0, "accepted": False, "tokens": 4,
         "text": "b = 2"},
        {"index": 2, "writer": "small", "score": 9.0, "accepted": True, "tokens": 2,
         "text": r"\boxed{3}"},
    ]
    for event, record in zip(events, final["trace"], strict=True):
        assert isinstance(event["ms"], float)
        assert event["ms"] >= 0
        assert event["ms"] == round(record["ms"], 1)
        assert record["ms"] == pytest.approx(
            record["draft_ms"] + record["judge_ms"] + record["base_ms"])


def test_custom_stream_only_mode_and_forced_steps():
    small = ScriptedModel(script=[step(r"\boxed{3}")])
    base = ScriptedModel(script=by_kind([step("b0")], [score("9")]))
    graph = build_graph(small=small, base=base).compile()
    events = list(graph.stream({"problem": PROBLEM}, context=Context(first_n_base=1),
                               stream_mode="custom"))
    assert len(events) == 2
    assert [(e["index"], e["writer"], e["score"], e["accepted"], e["text"]) for e in events] == [
        (0, "base", None, None, "b0"), (1, "small", 9.0, True, r"\boxed{3}")]


# --- input and settings ------------------------------------------------------------------------

@pytest.mark.parametrize("problem", ["", "   ", "\n\t  \n"])
def test_empty_problem_raises_before_any_model_call(problem):
    small = ScriptedModel(script=[step("x")])
    base = ScriptedModel(script=by_kind([step("y")], [score("9")]))
    graph = build_graph(small=small, base=base).compile()
    with pytest.raises(ValueError, match="empty"):
        graph.invoke({"problem": problem}, context=Context())
    assert small.calls == []
    assert base.calls == []


@pytest.mark.parametrize(("field", "value"), [
    ("threshold", 11),
    ("threshold", -0.5),
    ("score_method", "x"),
    ("first_n_base", -1),
    ("token_budget", 0),
    ("max_step_tokens", 0),
    ("prompt", "poetry"),
])
def test_context_validation_names_the_field(field, value):
    with pytest.raises(ValidationError) as info:
        Context(**{field: value})
    assert [e["loc"][0] for e in info.value.errors()] == [field]


def test_context_rejects_non_http_url():
    with pytest.raises(ValidationError, match="base_url"):
        Context(base_url="127.0.0.1:8101")


def test_context_defaults_are_the_papers():
    ctx = Context()
    assert (ctx.judge, ctx.threshold, ctx.score_method, ctx.first_n_base, ctx.token_budget,
            ctx.max_step_tokens, ctx.judge_top_logprobs, ctx.step_delimiter, ctx.temperature,
            ctx.top_p) == ("score", 7.0, "greedy", 0, 8192, 512, 10, "\n\n", 0.6, 0.95)
    assert ctx.servers is None and ctx.thinking_opener is None  # read from the served template


def test_context_falls_back_to_env(monkeypatch):
    monkeypatch.setenv("SPECREASON_THRESHOLD", "9")
    monkeypatch.setenv("SPECREASON_SCORE_METHOD", "expected")
    monkeypatch.setenv("SPECREASON_FIRST_N_BASE", "2")
    monkeypatch.setenv("SPECREASON_BASE_URL", "http://example.invalid:9/v1")
    ctx = Context()
    assert ctx.threshold == 9.0
    assert ctx.score_method == "expected"
    assert ctx.first_n_base == 2
    assert ctx.base_url == "http://example.invalid:9/v1"
    # an explicit value wins over the environment
    assert Context(threshold=3).threshold == 3.0


def test_context_env_value_is_validated(monkeypatch):
    monkeypatch.setenv("SPECREASON_THRESHOLD", "11")
    with pytest.raises(ValidationError) as info:
        Context()
    assert [e["loc"][0] for e in info.value.errors()] == ["threshold"]


def test_env_setting_changes_the_run(monkeypatch):
    monkeypatch.setenv("SPECREASON_FIRST_N_BASE", "1")
    out, small, base = run([step(r"\boxed{3}")], by_kind([step("b0")], [score("9")]))
    assert [(r["writer"], r["forced"]) for r in out["trace"]] == [("base", True),
                                                                   ("small", False)]


# --- checkpointed threads ----------------------------------------------------------------------

def test_reused_thread_starts_a_fresh_trace():
    small = ScriptedModel(script=[step("a = 1"), step(r"\boxed{3}"),
                                  step("c = 5"), step(r"\boxed{7}")])
    base = ScriptedModel(script=by_kind([], [score("9")] * 4))
    graph = build_graph(small=small, base=base).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "same"}}
    first = graph.invoke({"problem": "first problem"}, config, context=Context())
    second = graph.invoke({"problem": "second problem"}, config, context=Context())
    assert first["steps"] == ["a = 1", r"\boxed{3}"]
    assert second["problem"] == "second problem"
    assert second["steps"] == ["c = 5", r"\boxed{7}"]
    assert [r["index"] for r in second["trace"]] == [0, 1]
    assert [r["text"] for r in second["trace"]] == ["c = 5", r"\boxed{7}"]
    assert second["kept_tokens"] == first["kept_tokens"] == 4
    assert second["answer"] == "7"
    # the second problem's requests carry nothing of the first
    for messages, _ in small.calls[2:] + base.calls[2:]:
        assert all("first problem" not in m.content and "a = 1" not in m.content
                   for m in messages)
    assert view(small.calls[2][0]) == [("human", user_prompt("second problem"))]
    # the thread's saved state holds only the second run
    saved = graph.get_state(config).values
    assert saved["steps"] == ["c = 5", r"\boxed{7}"]
    assert len(saved["trace"]) == 2


# --- per-problem threshold override (agents that retry more strictly) ------------------------------

def test_threshold_in_the_input_overrides_the_context():
    small = ScriptedModel(script=[step("a = 1")])
    base = ScriptedModel(script=by_kind([step(r"base: \boxed{1}")], [score("8")]))
    out = build_graph(small=small, base=base).compile().invoke(
        {"problem": PROBLEM, "threshold": 9}, context=Context(threshold=7))
    assert [r["accepted"] for r in out["trace"]] == [False]
    assert out["trace"][0]["writer"] == "base" and out["stop_reason"] == "answer"


@pytest.mark.parametrize("bad", [-1, 10.5, "high"])
def test_threshold_override_out_of_range_is_refused_before_any_call(bad):
    small = ScriptedModel(script=[])
    base = ScriptedModel(script=[])
    g = build_graph(small=small, base=base).compile()
    with pytest.raises(ValueError, match="threshold must be a number from 0 to 10"):
        g.invoke({"problem": "q", "threshold": bad}, context=Context())
    assert small.calls == [] and base.calls == []


# --- a full context, server errors, unreadable judge replies ---------------------------------------

@pytest.mark.parametrize("where", ["draft", "judge", "regenerate"])
def test_a_full_context_mid_run_stops_with_a_reason_and_keeps_the_steps(where):
    full = context_full_error()
    small = [step("a = 1"), full if where == "draft" else step("b = 2")]
    judged = [score("9"), full if where == "judge" else score("1")]
    base_steps = [full]
    out, _, _ = run(small, by_kind(base_steps, judged))
    assert out["stop_reason"] == "context_full"
    assert out["steps"] == ["a = 1"] and len(out["trace"]) == 1


def test_a_problem_longer_than_the_context_is_bad_input_not_a_stop():
    with pytest.raises(ValueError, match="does not fit the small model's context at .*maximum context"):
        run([context_full_error()], by_kind([], []))


def test_the_context_full_stop_is_streamed():
    small = ScriptedModel(script=[step("a = 1"), context_full_error()])
    base = ScriptedModel(script=by_kind([], [score("9")]))
    events = list(build_graph(small=small, base=base).compile().stream(
        {"problem": PROBLEM}, context=Context(), stream_mode="custom"))
    assert [e["event"] for e in events] == ["step", "stop"]
    assert events[-1]["stop_reason"] == "context_full"


def test_an_unreadable_judge_reply_scores_zero_and_is_recorded():
    import json as _json

    def base_script(messages, kwargs):
        if kwargs.get("max_tokens") == 1:
            raise _json.JSONDecodeError("Expecting value", "<html>", 0)
        return step(r"base: \boxed{2}")

    small = ScriptedModel(script=[step("a draft")])
    base = ScriptedModel(script=base_script)
    out = build_graph(small=small, base=base).compile().invoke({"problem": PROBLEM},
                                                                context=Context())
    record = out["trace"][0]
    assert record["score"] == 0 and record["accepted"] is False and record["writer"] == "base"
    assert record["judge_error"].startswith("JSONDecodeError")


def test_a_non_transient_server_error_names_server_node_and_step_and_is_not_retried():
    import httpx
    import openai

    from specreason_graph.models import ModelCallError

    request = httpx.Request("POST", "http://127.0.0.1:8101/v1/chat/completions")
    denied = openai.AuthenticationError("bad key", response=httpx.Response(401, request=request),
                                        body=None)
    small = ScriptedModel(script=[step("a")])
    base = ScriptedModel(script=lambda m, kw: denied)
    with pytest.raises(ModelCallError, match=r"the base server at \S+ failed in judge of step 0: "
                                             r"AuthenticationError"):
        build_graph(small=small, base=base).compile().invoke({"problem": PROBLEM},
                                                              context=Context())
    assert len(base.calls) == 1


def test_a_reply_that_is_not_a_completion_is_retried_then_named():
    page = ValueError("Unexpected response type: <class 'str'>")  # what a proxy's HTML page gives
    small = ScriptedModel(script=lambda m, kw: page)
    base = ScriptedModel(script=by_kind([], []))
    graph = build_graph(small=small, base=base, retry=RetryPolicy(
        max_attempts=2, initial_interval=0.01, jitter=False, retry_on=transient)).compile()
    with pytest.raises(ModelCallError, match=r"small server at \S+ failed in draft of step 0: "
                                             r"MalformedReply: ValueError: Unexpected response"):
        graph.invoke({"problem": PROBLEM}, context=Context())
    assert len(small.calls) == 2  # retried once


@pytest.mark.parametrize("error", [
    TypeError("Received response with null value for 'choices'"),
    # what langchain-openai says of JSON without choices; VLLMChatOpenAI's own check of the body
    KeyError("Response missing 'choices' key: dict_keys(['unexpected'])"),
    MalformedReply("the reply has no choices: {'choices': []}"),
])
def test_a_judge_reply_of_the_wrong_shape_scores_zero(error):
    def base_script(messages, kwargs):
        if kwargs.get("max_tokens") == 1:
            raise error
        return step(r"base: \boxed{2}")

    out = build_graph(small=ScriptedModel(script=[step("draft")]),
                      base=ScriptedModel(script=base_script)).compile().invoke(
        {"problem": PROBLEM}, context=Context())
    record = out["trace"][0]
    assert record["score"] == 0 and record["writer"] == "base"
    assert record["judge_error"].startswith(type(error).__name__)


@pytest.mark.parametrize("bug", [IndexError("list index out of range"), KeyError("score"),
                                 ValueError("invalid literal for int()"),
                                 TypeError("unsupported operand type(s)"),
                                 AttributeError("'NoneType' object has no attribute 'get'")])
def test_a_bug_in_the_judge_call_is_not_taken_for_a_bad_reply(bug):
    """Only a reply that is not a completion scores 0; any other error inside the call is a bug
    (ours or a library's) and ends the run, unretried."""
    def base_script(messages, kwargs):
        if kwargs.get("max_tokens") == 1:
            raise bug
        return step(r"base: \boxed{2}")

    base = ScriptedModel(script=base_script)
    with pytest.raises(type(bug)):
        build_graph(small=ScriptedModel(script=[step("draft")]), base=base).compile().invoke(
            {"problem": PROBLEM}, context=Context())
    assert len(judge_requests(base)) == 1


@pytest.mark.parametrize("bug", [IndexError("list index out of range"), KeyError("steps"),
                                 ValueError("bad value"), TypeError("not callable")])
def test_a_bug_in_a_step_call_is_not_retried_as_a_bad_reply(bug):
    small = ScriptedModel(script=lambda m, kw: bug)
    with pytest.raises(type(bug)):
        build_graph(small=small, base=ScriptedModel(script=by_kind([], []))).compile().invoke(
            {"problem": PROBLEM}, context=Context())
    assert len(small.calls) == 1


def _without_usage(message, *, logprobs: bool):
    message = message.model_copy(update={"usage_metadata": None})
    if not logprobs:
        message.response_metadata.pop("logprobs", None)
    return message


def test_a_step_reply_without_usage_is_counted_from_its_logprobs_and_the_budget_trips():
    steps = [_without_usage(step(f"step {i} has five words", logprobs=[-0.1] * 5), logprobs=True)
             for i in range(10)]
    out, small, _ = run(steps, by_kind([], [score("9")] * 10), token_budget=12)
    # five tokens and the delimiter's each (the logprobs hold one entry per generated token)
    assert [r["tokens"] for r in out["trace"]] == [6, 6]
    assert out["stop_reason"] == "token_budget" and out["kept_tokens"] == 12


def test_a_step_reply_without_usage_or_logprobs_fails_loudly():
    bare = _without_usage(step("a step"), logprobs=False)
    small = ScriptedModel(script=lambda m, kw: bare)
    graph = build_graph(small=small, base=ScriptedModel(script=by_kind([], [])), retry=RetryPolicy(
        max_attempts=2, initial_interval=0.01, jitter=False, retry_on=transient)).compile()
    with pytest.raises(ModelCallError, match=r"small server .* draft of step 0: MalformedReply: "
                                             r".*no token usage"):
        graph.invoke({"problem": PROBLEM}, context=Context())


def test_a_one_request_reply_without_usage_fails_loudly():
    bare = _without_usage(step(r"\boxed{3}", end="eos"), logprobs=False)
    with pytest.raises(ModelCallError, match="no token usage"):
        run(lambda m, kw: bare, by_kind([], []), one_request="small")


@pytest.mark.parametrize("settings", [{}, {"thinking_opener": "<think>\n"}, {"one_request": "base"},
                                      {"small_only": True}, {"first_n_base": 1}])
def test_first_request_is_what_the_first_model_call_sends(settings):
    from specreason_graph.graph import first_request

    ctx = Context(**settings)
    first = first_request(PROBLEM, ctx)
    small = ScriptedModel(script=lambda m, kw: step(r"\boxed{3}", end="eos"))
    base = ScriptedModel(script=lambda m, kw: score("9") if kw.get("max_tokens") == 1
                         else step(r"\boxed{3}", end="eos"))
    build_graph(small=small, base=base).compile().invoke({"problem": PROBLEM}, context=ctx)
    messages, kwargs = (base if settings.get("one_request") or settings.get("first_n_base")
                        else small).calls[0]
    assert view(messages) == view(first.messages)
    assert kwargs["max_tokens"] == first.max_tokens
    assert kwargs.get("extra_body", {}).get("continue_final_message", False) == first.continue_final
    assert first.roles == (("base",) if settings.get("one_request") else
                           ("small",) if settings.get("small_only") else ("base", "small"))
