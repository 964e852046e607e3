"""specreason_graph.evaluation.grading: right and wrong answers in every dataset's format, and threads.

GPQA questions must not appear in plain text anywhere, failure messages included: the GPQA problems
used here have their question replaced by its sha256 (grading reads only the answer and the prompt).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from math_verify import parse

from specreason_graph.evaluation import datasets
from specreason_graph.evaluation.datasets import Problem
from specreason_graph.evaluation.grading import Grade, choice_letter, grade


def _redacted(problem: Problem) -> Problem:
    digest = hashlib.sha256(problem.question.encode()).hexdigest()
    return dataclasses.replace(problem, question=f"<gpqa question sha256 {digest[:16]}>")


def _gpqa(index: int = 0) -> Problem:
    return _redacted(datasets.load("gpqa")[index])


def _other_letters(letter: str) -> list[str]:
    return [other for other in "ABCD" if other != letter]


# --- the Grade --------------------------------------------------------------------------------------

def test_grade_reports_prediction_and_gold():
    problem = datasets.get("gsm8k", "0")
    assert grade(problem, "The total is \\boxed{18}.") == Grade(True, "18", "18")
    assert grade(problem, "\\boxed{17}") == Grade(False, "17", "18")


def test_grade_is_frozen():
    result = grade(datasets.get("gsm8k", "0"), "\\boxed{18}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.correct = False  # type: ignore[misc]


@pytest.mark.parametrize("response", [None, "", "I am not sure.", "The eggs earn 18 dollars a day."])
def test_no_answer_is_wrong_not_an_error(response):
    assert grade(datasets.get("gsm8k", "0"), response) == Grade(False, None, "18")


def test_no_answer_is_wrong_for_multiple_choice_too():
    problem = _gpqa()
    assert grade(problem, None) == Grade(False, None, problem.answer)
    assert grade(problem, f"I would pick {problem.answer}").correct is False  # no marker: no answer


# --- GSM8K -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("response", [
    "\\boxed{18}",
    "\\boxed{\\$18}",
    "\\boxed{$18}",
    "\\boxed{\\$18.00}",
    "\\boxed{18 \\text{ dollars}}",
    "\\boxed{18\\text{dollars}}",
    "\\boxed{18 dollars}",
    "\\boxed{\\textbf{18}}",
    "\\boxed{x = 18}",
    "\\boxed{18.}",
    "so first \\boxed{17}, no wait: \\boxed{18}",
    "Answer: 18",
    "Answer: $18",
    "Answer: 18 dollars.",
    "Answer: **18**",
    "Answer: The final answer is 18.",
    "Answer: the answer is $18 per day",
    "ANSWER: $\\frac{36}{2}$",
])
def test_gsm8k_right(response):
    assert grade(datasets.get("gsm8k", "0"), response).correct


@pytest.mark.parametrize("response", [
    "\\boxed{17}",
    "\\boxed{\\$17}",
    "\\boxed{18.5}",
    "\\boxed{180}",
    "\\boxed{18 or 19}",
    "\\boxed{18, 19}",
    "\\boxed{eighteen}",
    "\\boxed{}",
    "\\boxed{18} then \\boxed{17}",  # the last box counts
    "18",                           # no box, no Answer: line
    "The answer is 18.",
])
def test_gsm8k_wrong(response):
    assert not grade(datasets.get("gsm8k", "0"), response).correct


def test_gsm8k_thousands_commas():
    problem = next(p for p in datasets.load("gsm8k") if int(p.answer) >= 1000)
    number = int(problem.answer)
    for spelled in (f"{number:,}", f"{number:,}".replace(",", "{,}"), f"{number:,}".replace(",", ",\\!"),
                    f"\\${number:,}", f"{number:,} dollars", str(number)):
        assert grade(problem, f"\\boxed{{{spelled}}}").correct, spelled
    assert not grade(problem, f"\\boxed{{{number + 1:,}}}").correct


def test_gsm8k_negative_gold():
    problem = next(p for p in datasets.load("gsm8k") if p.answer.startswith("-"))
    assert grade(problem, f"\\boxed{{{problem.answer}}}").correct
    unicode_minus = problem.answer.replace("-", "\u2212")
    assert grade(problem, f"\\boxed{{{unicode_minus}}}").correct
    assert not grade(problem, f"\\boxed{{{problem.answer[1:]}}}").correct


# --- AIME --------------------------------------------------------------------------------------------

def test_aime_gold_with_leading_zero():
    problem = next(p for p in datasets.load("aime24") if p.answer.startswith("0"))
    value = int(problem.answer)
    assert grade(problem, f"\\boxed{{{value}}}").correct
    assert grade(problem, f"\\boxed{{{problem.answer}}}").correct
    assert grade(problem, f"Answer: {value}").correct
    assert grade(problem, f"\\boxed{{{value:03d}}}").correct
    assert not grade(problem, f"\\boxed{{{value + 1}}}").correct
    assert not grade(problem, f"\\boxed{{{value * 10}}}").correct
    assert not grade(problem, f"{value}").correct


def test_aime_prediction_with_leading_zero():
    problem = next(p for p in datasets.load("aime25") if len(p.answer) == 2)
    assert grade(problem, f"\\boxed{{0{problem.answer}}}").correct
    assert not grade(problem, f"\\boxed{{{problem.answer}0}}").correct


@pytest.mark.parametrize("dataset", ["aime24", "aime25"])
def test_aime_every_gold_as_a_plain_integer(dataset):
    for problem in datasets.load(dataset):
        assert grade(problem, f"\\boxed{{{int(problem.answer)}}}").correct, problem.id
        assert not grade(problem, f"\\boxed{{{int(problem.answer) + 1}}}").correct, problem.id


# --- MATH500 -----------------------------------------------------------------------------------------

MATH500_CASES = {
    # id: (gold as in the file, right spellings, wrong answers)
    "test/algebra/2584.json": (
        "\\frac{14}{3}",
        ["\\frac{14}{3}", "\\dfrac{14}{3}", "14/3", "4\\frac{2}{3}"],
        ["\\frac{3}{14}", "4.6", "4.67", "14"],
    ),
    "test/counting_and_probability/282.json": (
        "\\frac{1}{2}",
        ["0.5", "1/2", "\\frac12", "\\tfrac{1}{2}"],
        ["2", "0.25", "\\frac{1}{3}"],
    ),
    "test/algebra/2036.json": (
        "3\\sqrt{13}",
        ["3\\sqrt{13}", "3 \\sqrt{13}", "\\sqrt{117}"],
        ["3\\sqrt{12}", "13\\sqrt{3}", "\\sqrt{13}"],
    ),
    "test/algebra/1519.json": (
        "\\frac{\\sqrt{3}}{3}",
        ["\\frac{1}{\\sqrt{3}}", "\\sqrt{3}/3", "\\frac{\\sqrt3}{3}"],
        ["\\sqrt{3}", "\\frac{\\sqrt{3}}{2}"],
    ),
    "test/precalculus/1199.json": (
        "\\pi",
        ["\\pi", "\\frac{2\\pi}{2}"],
        ["3.14", "2\\pi", "\\pi/2"],
    ),
    "test/intermediate_algebra/558.json": (
        "(3,4]",
        ["(3,4]", "(3, 4]", "\\left(3, 4\\right]"],
        ["(3,4)", "[3,4]", "[3,4)", "(3,5]"],
    ),
    "test/intermediate_algebra/183.json": (
        "(2,\\infty)",
        ["(2,\\infty)", "(2, \\infty)", "\\left(2,\\infty\\right)"],
        ["[2,\\infty)", "(-\\infty,2)", "(3,\\infty)"],
    ),
    "test/intermediate_algebra/1992.json": (
        "(0,9) \\cup (9,36)",
        ["(0,9)\\cup(9,36)"],
        ["(0,36)", "(0,9)"],
    ),
    "test/precalculus/807.json": (
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        ["(3, \\frac{\\pi}{2})", "\\left(3,\\frac{\\pi}{2}\\right)", "(3,\\pi/2)"],
        ["(\\frac{\\pi}{2}, 3)", "(3, \\pi)", "3", "\\frac{\\pi}{2}"],
    ),
    "test/intermediate_algebra/956.json": (
        "(6,31,-1)",
        ["(6, 31, -1)"],
        ["(6,31,1)", "(-1,31,6)"],
    ),
    "test/intermediate_algebra/1388.json": (
        "1,-2",
        ["1, -2", "-2, 1"],
        ["1", "-2", "1, 2"],
    ),
    "test/intermediate_algebra/662.json": (
        "1 \\pm \\sqrt{19}",
        ["1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"],
        ["1+\\sqrt{19}"],
    ),
    "test/precalculus/1300.json": (
        "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
        ["\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\\\ \\frac53 \\end{pmatrix}"],
        ["\\begin{pmatrix} 1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}"],
    ),
    "test/precalculus/927.json": (
        "90^\\circ",
        ["90^\\circ", "90", "90^{\\circ}"],
        ["45^\\circ", "180"],
    ),
    "test/counting_and_probability/508.json": (
        "10,\\!080",
        ["10080", "10,080", "10{,}080"],
        ["10081", "1008"],
    ),
    "test/algebra/2626.json": (
        "\\$32,\\!348",
        ["32348", "\\$32,348", "32,348 dollars"],
        ["32347"],
    ),
    "test/number_theory/864.json": (
        "52_8",
        ["52_8", "52"],
        ["42_8", "53"],
    ),
    "test/algebra/1349.json": (
        "\\text{Evelyn}",
        ["\\text{Evelyn}", "Evelyn"],
        ["\\text{Bob}", "Bob"],
    ),
    "test/precalculus/990.json": (
        "6 - 5i",
        ["6-5i", "6 -5i"],
        ["6+5i", "5i-6"],
    ),
    "test/algebra/2193.json": (
        "x=5",
        ["x=5", "5"],
        ["x=-5", "6"],
    ),
    "test/intermediate_algebra/1994.json": (
        "p - q",
        ["p-q", "-q+p"],
        ["q-p", "p+q"],
    ),
    "test/prealgebra/1003.json": (
        "\\frac{270}7\\text{ degrees}",
        ["\\frac{270}{7}", "\\frac{270}{7}^\\circ"],
        ["\\frac{7}{270}", "38"],
    ),
}


def _math500_case_ids() -> list[str]:
    return list(MATH500_CASES)


@pytest.mark.parametrize("problem_id", _math500_case_ids())
def test_math500_gold_is_the_one_tested(problem_id):
    assert datasets.get("math500", problem_id).answer == MATH500_CASES[problem_id][0]


@pytest.mark.parametrize(("problem_id", "right"),
                         [(pid, r) for pid, (_, rights, _) in MATH500_CASES.items() for r in rights])
def test_math500_right(problem_id, right):
    assert grade(datasets.get("math500", problem_id), f"Thus \\boxed{{{right}}}.").correct


@pytest.mark.parametrize(("problem_id", "wrong"),
                         [(pid, w) for pid, (_, _, wrongs) in MATH500_CASES.items() for w in wrongs])
def test_math500_wrong(problem_id, wrong):
    assert not grade(datasets.get("math500", problem_id), f"Thus \\boxed{{{wrong}}}.").correct


def test_math500_cases_cover_the_formats_found_in_the_data():
    """Scan the golds: every format the cases cover really occurs, and each is covered."""
    golds = [p.answer for p in datasets.load("math500")]
    formats = {
        "fraction": lambda a: "frac" in a,
        "sqrt": lambda a: "\\sqrt" in a,
        "pi": lambda a: "\\pi" in a,
        "interval": lambda a: a.endswith("]") or "\\infty" in a,
        "tuple": lambda a: a.replace("\\left", "").lstrip().startswith("(") and "," in a,
        "text": lambda a: "\\text" in a,
        "degrees": lambda a: "circ" in a,
        "thousands": lambda a: ",\\!" in a,
        "matrix": lambda a: "pmatrix" in a,
    }
    cased = [gold for gold, _, _ in MATH500_CASES.values()]
    for name, occurs in formats.items():
        assert sum(map(occurs, golds)) >= 3, name
        assert any(map(occurs, cased)), f"no test case for the {name} format"


@pytest.mark.parametrize("dataset", ["gsm8k", "math500", "aime24", "aime25"])
def test_every_math_gold_grades_right_against_itself(dataset):
    wrong = [p.id for p in datasets.load(dataset) if not grade(p, f"\\boxed{{{p.answer}}}").correct]
    assert wrong == []


def test_math500_answers_of_other_problems_are_mostly_wrong():
    problems = datasets.load("math500")
    neighbours = zip(problems, problems[1:] + problems[:1], strict=True)
    coincidences = [p.id for p, q in neighbours if grade(p, f"\\boxed{{{q.answer}}}").correct]
    assert len(coincidences) <= 5  # equal values (7 and 7; also 5 and x=5, which math-verify accepts)


@pytest.mark.xfail(strict=True, reason="math-verify reads i as a symbol whose assumptions depend on spacing")
def test_math500_complex_with_spaced_i():
    assert grade(datasets.get("math500", "test/precalculus/990.json"), "\\boxed{6 - 5 i}").correct


@pytest.mark.xfail(strict=True, reason="math-verify accepts a percentage as its number or its hundredth")
def test_percent_of_the_gold_is_wrong():
    assert not grade(datasets.get("gsm8k", "0"), "\\boxed{1800\\%}").correct


def test_percent_leniency_as_it_is():
    """Documents math-verify: 18% is taken as 18 (and as 0.18), so it grades right for gold 18."""
    assert grade(datasets.get("gsm8k", "0"), "\\boxed{18\\%}").correct


# --- GPQA ------------------------------------------------------------------------------------------

def test_gpqa_problem_is_multiple_choice_with_a_letter():
    problem = _gpqa()
    assert problem.prompt == "multiple_choice"
    assert problem.answer in tuple("ABCD")


@pytest.mark.parametrize("spelling", [
    "\\boxed{{{L}}}",
    "\\boxed{{({L})}}",
    "\\boxed{{\\text{{{L}}}}}",
    "\\boxed{{\\text{{({L})}}}}",
    "\\boxed{{\\textbf{{{L}}}}}",
    "\\boxed{{\\mathrm{{{L}}}}}",
    "\\boxed{{{L}) the option's text}}",
    "\\boxed{{({L}) the option's text}}",
    "Answer: {L}",
    "Answer: ({L})",
    "Answer: {L}) the option's text",
    "Answer: {L}. the option's text",
    "Answer: **{L}**",
    "Answer: ${L}$",
    "ANSWER: {L}",
])
@pytest.mark.parametrize("index", [0, 1, 2, 3, 50, 197])
def test_gpqa_gold_letter_right(spelling, index):
    problem = _gpqa(index)
    result = grade(problem, "reasoning... " + spelling.format(L=problem.answer))
    assert result.correct, (problem.id, result)


@pytest.mark.parametrize("spelling", [
    "\\boxed{{{L}}}",
    "\\boxed{{({L})}}",
    "\\boxed{{\\text{{{L}}}}}",
    "Answer: {L}) the option's text",
])
@pytest.mark.parametrize("index", [0, 1, 2, 3, 50, 197])
def test_gpqa_other_letters_wrong(spelling, index):
    problem = _gpqa(index)
    for other in _other_letters(problem.answer):
        result = grade(problem, spelling.format(L=other))
        assert not result.correct, (problem.id, result)


@pytest.mark.parametrize("spelling", [
    "\\boxed{{{l}}}",              # lower case
    "\\boxed{{Option {L}}}",
    "\\boxed{{The answer is {L}}}",
    "\\boxed{{{L}{L}}}",
    "\\boxed{{E}}",
    "\\boxed{{}}",
    "\\boxed{{the option's text}}",
    "\\boxed{{{L}, {O}}}",
])
def test_gpqa_anything_else_wrong(spelling):
    problem = _gpqa()
    other = _other_letters(problem.answer)[0]
    result = grade(problem, spelling.format(L=problem.answer, l=problem.answer.lower(), O=other))
    assert not result.correct, (problem.id, result)


@pytest.mark.parametrize("hedge", [
    "{L} and {O}", "{L} or {O}", "({L}) or ({O})", "({L}) and ({O})", "{L}, {O}", "{L},{O}",
    "{L}/{O}", "{L} & {O}", "{L} and/or {O}", "{L} or maybe {O}", "{L} (or {O})",
    "{L}) 3.2 eV or {O}) 4.1 eV", "\\text{{{L} and {O}}}", "{L}; {O}", "{L} OR {O}",
    "{L}, {O} and {P}", "either {L} or {O}", "({L}), ({O})",
])
def test_gpqa_a_hedged_answer_is_wrong(hedge):
    """Naming two options is no answer, even when the first is the gold one."""
    problem = _gpqa()
    other, third = _other_letters(problem.answer)[:2]
    predicted = hedge.format(L=problem.answer, O=other, P=third)
    for response in (f"\\boxed{{{predicted}}}", f"Answer: {predicted}"):
        result = grade(problem, response)
        assert not result.correct, (response, result)


@pytest.mark.parametrize("spelling", [
    "{L}) the option's text, or so", "{L}. 3 and 4 eV", "{L}) A and B are both zero",
    "{L}: 2 or more",
])
def test_gpqa_an_option_text_with_and_or_or_is_no_hedge(spelling):
    problem = _gpqa()
    assert grade(problem, f"\\boxed{{{spelling.format(L=problem.answer)}}}").correct


def test_gpqa_every_gold_letter_right_and_every_other_letter_wrong():
    for original in datasets.load("gpqa"):
        problem = _redacted(original)
        assert grade(problem, f"\\boxed{{{problem.answer}}}").correct, problem.id
        assert not any(grade(problem, f"\\boxed{{{o}}}").correct for o in _other_letters(problem.answer)), \
            problem.id


@pytest.mark.parametrize(("predicted", "letter"), [
    ("B", "B"), (" (C) ", "C"), ("\\text{D}", "D"), ("\\textbf{(A)}", "A"), ("A) 3 eV", "A"), ("$B$", "B"),
    ("B: 3 eV", "B"), ("b", None), ("E", None), ("AB", None), ("Option A", None), ("", None), ("3 eV", None),
])
def test_choice_letter(predicted, letter):
    assert choice_letter(predicted) == letter


# --- threads and processes ------------------------------------------------------------------------

def _mixed_pairs() -> list[tuple[Problem, str | None]]:
    gsm = datasets.get("gsm8k", "0")
    frac = datasets.get("math500", "test/algebra/2584.json")
    interval = datasets.get("math500", "test/intermediate_algebra/558.json")
    aime = next(p for p in datasets.load("aime24") if p.answer.startswith("0"))
    gpqa = _gpqa()
    wrong_letter = _other_letters(gpqa.answer)[0]
    return [
        (gsm, "\\boxed{\\$18}"), (gsm, "\\boxed{17}"), (gsm, None), (gsm, "Answer: 18 dollars"),
        (frac, "\\boxed{14/3}"), (frac, "\\boxed{\\frac{3}{14}}"), (frac, "\\boxed{4\\frac{2}{3}}"),
        (interval, "\\boxed{(3,4]}"), (interval, "\\boxed{[3,4]}"),
        (aime, f"\\boxed{{{int(aime.answer)}}}"), (aime, "\\boxed{999}"),
        (gpqa, f"\\boxed{{({gpqa.answer})}}"), (gpqa, f"\\boxed{{{wrong_letter}}}"),
    ]


def test_raw_math_verify_refuses_threads_so_the_thread_test_means_something():
    errors = []

    def run():
        try:
            parse("\\boxed{\\frac{1}{2}}")  # default timeout: signal.alarm
        except ValueError as error:
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1


def test_grade_works_in_a_thread():
    pairs = _mixed_pairs()
    expected = [grade(problem, response) for problem, response in pairs]
    results: list[Grade] = []
    errors: list[BaseException] = []

    def run():
        try:
            results.extend(grade(problem, response) for problem, response in pairs)
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread below
            errors.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert errors == []
    assert results == expected
    assert [g.correct for g in results] == [True, False, False, True, True, False, True, True, False, True,
                                            False, True, False]


# --- never an error -----------------------------------------------------------------------------------

_ANSWERISH = st.text(alphabet="0123456789-+.,/^_{}()[]$\\ abcfrxsqtpiedgxABCD:%", max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(junk=_ANSWERISH, boxed=st.booleans())
def test_grade_never_raises(junk, boxed):
    response = f"\\boxed{{{junk}}}" if boxed else f"Answer: {junk}"
    problems = (datasets.get("gsm8k", "0"), datasets.get("math500", "test/precalculus/807.json"), _gpqa())
    for problem in problems:
        result = grade(problem, response)
        assert isinstance(result.correct, bool)
        assert result.gold == problem.answer
