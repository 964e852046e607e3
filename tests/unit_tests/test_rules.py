"""The pure rules in specreason_graph.rules: scoring a judge reply, stopping, reading the answer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specreason_graph.rules import (
    close_think,
    expected_score,
    extract_answer,
    greedy_score,
    has_answer,
    stop_reason,
)

DIGITS = [str(d) for d in range(10)]


def lp(p: float) -> float:
    return math.log(p)


# --- greedy_score --------------------------------------------------------------------------------

@pytest.mark.parametrize("digit", range(10))
def test_greedy_score_reads_every_digit(digit):
    assert greedy_score(str(digit)) == float(digit)


@pytest.mark.parametrize(("token", "expected"), [
    (" 7", 7.0),     # the leading-space variant of the same digit
    ("7 ", 7.0),
    ("\n8", 8.0),
    ("\t3\n", 3.0),
])
def test_greedy_score_ignores_surrounding_whitespace(token, expected):
    assert greedy_score(token) == expected


@pytest.mark.parametrize("token", ["x", "", " ", "10", "77", "7.", "-1", "seven", "9/9", "\n"])
def test_greedy_score_non_digit_tokens_score_zero(token):
    assert greedy_score(token) == 0.0


def test_greedy_score_none_scores_zero():
    assert greedy_score(None) == 0.0


def test_greedy_score_returns_float():
    assert isinstance(greedy_score("5"), float)


# --- expected_score ------------------------------------------------------------------------------

def test_expected_score_renormalises_over_digit_tokens_only():
    alternatives = [("9", lp(0.5)), ("7", lp(0.25)), ("x", lp(0.25))]
    assert expected_score(alternatives) == pytest.approx((9 * 0.5 + 7 * 0.25) / 0.75)


def test_expected_score_adds_spaced_and_bare_tokens_of_one_digit():
    # ' 7' and '7' are the same digit: 0.3 + 0.3 on 7, 0.4 on 2 -> 0.6*7 + 0.4*2 = 5.0
    alternatives = [(" 7", lp(0.3)), ("7", lp(0.3)), ("2", lp(0.4))]
    assert expected_score(alternatives) == pytest.approx(5.0)


def test_expected_score_spaced_digit_counts_like_bare_digit():
    assert expected_score([(" 7", lp(0.5)), ("3", lp(0.5))]) == pytest.approx(5.0)


def test_expected_score_single_digit_is_that_digit():
    assert expected_score([("6", lp(0.2)), ("maybe", lp(0.8))]) == pytest.approx(6.0)


def test_expected_score_softmax_of_unnormalised_logprobs():
    # logprobs need not sum to 1: equal logprobs give equal weights
    assert expected_score([("8", 0.0), ("2", 0.0)]) == pytest.approx(5.0)
    # very negative logprobs do not underflow to 0/0
    expected = (9 + 1 * math.exp(-1)) / (1 + math.exp(-1))
    assert expected_score([("9", -1000.0), ("1", -1001.0)]) == pytest.approx(expected)


@pytest.mark.parametrize("alternatives", [
    [],
    [("x", lp(0.6)), ("y", lp(0.4))],
    [("10", lp(0.9)), ("", lp(0.1))],
])
def test_expected_score_without_digits_is_zero(alternatives):
    assert expected_score(alternatives) == 0.0


@pytest.mark.parametrize("bad", [-math.inf, math.inf, math.nan])
def test_expected_score_ignores_non_finite_logprobs(bad):
    assert expected_score([("9", bad), ("3", lp(0.5)), ("5", lp(0.5))]) == pytest.approx(4.0)


def test_expected_score_all_minus_inf_is_zero():
    assert expected_score([("9", -math.inf), ("4", -math.inf)]) == 0.0


def test_expected_score_minus_inf_plus_finite_for_same_digit():
    assert expected_score([("9", -math.inf), (" 9", lp(0.5)), ("1", lp(0.5))]) == pytest.approx(5.0)


# --- has_answer / close_think --------------------------------------------------------------------

@pytest.mark.parametrize("step", [
    r"So the result is \boxed{4}.",
    "Answer: 4",
    "ANSWER: B",
    "final Answer: 12",
])
def test_has_answer_true_for_each_marker(step):
    assert has_answer(step) is True


@pytest.mark.parametrize("step", [
    "The answer is 4",
    "answer: 4",          # markers are case-sensitive, as in the paper
    "Answer 4",
    "",
    "</think>",
])
def test_has_answer_false_without_marker(step):
    assert has_answer(step) is False


def test_close_think_removes_think_close_without_answer():
    assert close_think("so x = 2</think>") == "so x = 2"
    assert close_think("</think>a</think>b") == "ab"


def test_close_think_keeps_think_close_with_answer():
    step = "</think>\nThe result is \\boxed{3}"
    assert close_think(step) == step


def test_close_think_leaves_other_steps_alone():
    assert close_think("x = 1") == "x = 1"
    assert close_think("<think>\nx = 1") == "<think>\nx = 1"


# --- stop_reason ---------------------------------------------------------------------------------

def test_stop_reason_empty_steps_is_none():
    assert stop_reason([], kept_tokens=10_000, budget=1, ended_turn=True) is None


def test_stop_reason_answer_marker_in_last_step():
    assert stop_reason(["x = 1", r"\boxed{1}"], kept_tokens=2, budget=100) == "answer"


def test_stop_reason_only_last_step_is_checked_for_answer():
    assert stop_reason(["Answer: 1", "x = 2"], kept_tokens=2, budget=100) is None


def test_stop_reason_two_identical_last_steps():
    assert stop_reason(["a", "b", "b"], kept_tokens=3, budget=100) == "repeated_step"


def test_stop_reason_non_adjacent_repeat_goes_on():
    assert stop_reason(["a", "b", "a"], kept_tokens=3, budget=100) is None


def test_stop_reason_budget_reached_exactly_and_overshot():
    assert stop_reason(["a"], kept_tokens=10, budget=10) == "token_budget"
    assert stop_reason(["a"], kept_tokens=11, budget=10) == "token_budget"
    assert stop_reason(["a"], kept_tokens=9, budget=10) is None


def test_stop_reason_finished_when_turn_ended():
    assert stop_reason(["a"], kept_tokens=1, budget=10, ended_turn=True) == "finished"
    assert stop_reason(["a"], kept_tokens=1, budget=10, ended_turn=False) is None
    assert stop_reason(["a"], kept_tokens=1, budget=10) is None


def test_stop_reason_order_answer_first():
    steps = [r"\boxed{1}", r"\boxed{1}"]
    assert stop_reason(steps, kept_tokens=100, budget=1, ended_turn=True) == "answer"


def test_stop_reason_order_repeat_before_budget():
    assert stop_reason(["a", "a"], kept_tokens=100, budget=1, ended_turn=True) == "repeated_step"


def test_stop_reason_order_budget_before_finished():
    assert stop_reason(["a", "b"], kept_tokens=100, budget=1, ended_turn=True) == "token_budget"


# --- extract_answer ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    (r"so \boxed{42}.", "42"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"x \boxed{\sqrt{\frac{a}{b}} + {c}} y", r"\sqrt{\frac{a}{b}} + {c}"),
    (r"first \boxed{1} then \boxed{2}", "2"),
    (r"\boxed{ 7 }", "7"),
    (r"\boxed {8}", "8"),
    (r"\fbox{C}", "C"),
    (r"Answer: 5, so \boxed{6}", "6"),           # a box wins over an Answer line
    (r"\boxed{1} and an unclosed \boxed{2", "1"),  # unclosed box is ignored
])
def test_extract_answer_boxed(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Answer: 42", "42"),
    ("so\nANSWER: B  ", "B"),
    ("Answer: 1\nthen\nANSWER: 2", "2"),
    ("Final Answer: x = 3", "x = 3"),
])
def test_extract_answer_answer_line_fallback(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "x = 1", "the answer is 4", r"\boxed{3", "answer: 4"])
def test_extract_answer_none(text):
    assert extract_answer(text) is None


def test_extract_answer_empty_answer_line_is_none():
    assert extract_answer("Answer:   ") is None


@pytest.mark.parametrize(("text", "expected"), [
    (r"maybe \boxed{3}? No.</think> So \boxed{4}", "4"),         # the answer after the thinking
    (r"maybe \boxed{3}.</think>\nAnswer: 4", "4"),                # an Answer line there counts
    (r"\boxed{3} then </think> and nothing after", "3"),          # none after: the whole step
    (r"</think> \boxed{1} </think> \boxed{2}", "2"),               # after the last one
])
def test_extract_answer_reads_after_the_closing_think(text, expected):
    assert extract_answer(text) == expected


# --- properties ----------------------------------------------------------------------------------

TOKENS = st.one_of(
    st.sampled_from(DIGITS + [" " + d for d in DIGITS] + ["x", "", " ", "10", "\n7"]),
    st.text(max_size=4),
)
LOGPROBS = st.floats(allow_nan=True, allow_infinity=True)


@given(st.lists(st.tuples(TOKENS, LOGPROBS), max_size=20))
def test_expected_score_is_bounded_and_total(alternatives):
    value = expected_score(alternatives)
    assert isinstance(value, float)
    assert 0.0 <= value <= 9.0


@given(st.sampled_from(DIGITS), st.lists(st.floats(min_value=-700, max_value=0), min_size=1,
                                         max_size=5),
       st.lists(st.tuples(st.text(alphabet="abc xyz", max_size=3), LOGPROBS), max_size=5))
def test_expected_score_of_one_digit_is_that_digit(digit, logprobs, noise):
    alternatives = [(digit, p) for p in logprobs] + noise
    assert expected_score(alternatives) == pytest.approx(float(digit))


@given(st.lists(st.tuples(TOKENS, LOGPROBS), max_size=10), st.randoms())
def test_expected_score_ignores_order(alternatives, rnd):
    shuffled = list(alternatives)
    rnd.shuffle(shuffled)
    assert expected_score(shuffled) == pytest.approx(expected_score(alternatives))


@given(st.one_of(st.none(), st.text()))
def test_greedy_score_is_total_and_a_digit(token):
    value = greedy_score(token)
    assert value in {float(d) for d in range(10)}
    if token is not None and token.strip() in DIGITS:
        assert value == float(token.strip())


@given(st.lists(st.text(max_size=30), max_size=6), st.integers(), st.integers(min_value=1),
       st.booleans())
def test_stop_reason_is_total(steps, kept, budget, ended):
    reason = stop_reason(steps, kept, budget, ended)
    assert reason in {None, "answer", "repeated_step", "token_budget", "finished"}
    if not steps:
        assert reason is None


@given(st.integers(), st.integers(min_value=1), st.booleans())
def test_stop_reason_empty_list_is_always_none(kept, budget, ended):
    assert stop_reason([], kept, budget, ended) is None


@given(st.text(alphabet=st.characters(blacklist_characters="{}\\", blacklist_categories=("Cs",))))
def test_extract_answer_round_trips_a_box(content):
    assert extract_answer("so " + "\\boxed{" + content + "} done") == content.strip()
