"""Whether a run's answer is right: math answers through math-verify, GPQA through its option letter.

The predicted answer is read from the response with :func:`specreason_graph.rules.extract_answer`
(the last ``\\boxed{...}``, else the last ``Answer: ...`` line); no answer at all grades as wrong,
never as an error.

Math (GSM8K, MATH500, AIME): the gold and the prediction are both parsed by math-verify as the
contents of a ``\\boxed{}`` and compared with :func:`math_verify.verify` (numbers, fractions,
``\\sqrt``, ``\\pi``, intervals, tuples, sets, matrices, ``\\$``/``,``/``\\text{units}``). Before
that the prediction loses a few things math-verify does not: a Unicode minus, a lead-in ("The final
answer is"), Markdown bold, a final full stop, and plain words after a plain number
(``18 dollars`` -> ``18``). If the boxed reading finds no expression at all, math-verify reads the
prediction as free text instead.

GPQA (``problem.prompt == "multiple_choice"``): the prediction must *start* with one letter A-D,
optionally in parentheses and/or wrapped in ``\\text{}``/``\\textbf{}``/``\\mathrm{}``/``$``/``**``
and followed by nothing or a separator and the option's text: ``B``, ``(B)``, ``\\text{B}``,
``B) 3.2 eV``, ``B. 3.2 eV``. Anything else (``Option B``, ``b``, ``3.2 eV``) is wrong, and so is
a hedge that names a second option (``A and B``, ``(A) or (C)``, ``A, B``, ``B) 3 eV or C) 4 eV``),
even when its first letter is the gold one.

Threads: math-verify bounds parsing and comparing with ``signal.alarm``, which only works in the
main thread. :func:`grade` uses those timeouts (:data:`TIMEOUT_SECONDS`) in the main thread and
switches them off in any other thread (math-verify's ``parsing_timeout=None`` and
``timeout_seconds=None``, which use no signal), so it is safe to call from a worker thread, but there
a pathological expression can take as long as sympy needs.
math-verify logs one warning ("Timeout is disabled ...") the first time the timeouts are off.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from specreason_graph.evaluation.datasets import Problem
from specreason_graph.rules import extract_answer

TIMEOUT_SECONDS = 5
"""math-verify's limit for one parse and for one comparison (main thread only)."""

_EXTRACTION = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


@dataclass(frozen=True)
class Grade:
    correct: bool
    predicted: str | None
    """What extract_answer read from the response (None: no answer found)."""
    gold: str


def grade(problem: Problem, response: str | None) -> Grade:
    """Grade ``response`` (the final kept step, or the whole text) against ``problem``'s gold answer.

    Safe in any thread; see the module docstring for what changes outside the main thread.
    """
    predicted = extract_answer(response) if response else None
    if predicted is None:
        return Grade(False, None, problem.answer)
    if problem.prompt == "multiple_choice":
        correct = choice_letter(predicted) == problem.answer.strip()
    else:
        timeout = TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None
        correct = _math_equal(problem.answer, predicted, timeout)
    return Grade(correct, predicted, problem.answer)


def parses(answer: str | None) -> bool:
    """math-verify reads ``answer`` (a boxed answer's contents) as a math expression. Thread-safe
    like :func:`grade` (the same timeouts in the main thread, none elsewhere)."""
    if answer is None or not answer.strip():
        return False
    timeout = TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None
    return any(not isinstance(item, str) for item in _parse_predicted(answer, timeout))


# --- multiple choice ----------------------------------------------------------------------------

_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LETTER = re.compile(r"\(?([A-D])\)?(?=$|[\s.:)\]])")


# After the letter: another option listed right after it (", B", "/ B", "& (C)"), or named after a
# conjunction as an option label ("or B" at the end or before punctuation, "and (C)", "or C) ..."),
# which an option's own text ("A) A and B are both zero") does not do.
_LISTED = re.compile(r"^\)?\s*[,;/&+]\s*\(?[A-D]\)?(?=$|[\s.,;:)\]])")
_ALTERNATIVE = re.compile(r"\b(?i:and/or|and|or|nor|vs\.?|versus)\s+(?:[a-z]+\s+){0,2}"
                          r"(?:\([A-D]\)|[A-D](?=\s*$|\s*[.,;:)\]]))")


def choice_letter(predicted: str) -> str | None:
    """The option letter an extracted answer names (``B``, ``(B)``, ``\\text{B}``, ``B) ...``), else
    None; None too for a hedge naming another option (``A or B``, ``(A) and (C)``, ``A, B``)."""
    text = predicted.strip()
    while (unwrapped := _WRAPPER.sub(r"\1", text)) != text:
        text = unwrapped
    text = text.strip().strip("$*").strip()
    match = _LETTER.match(text)
    if match is None:
        return None
    rest = text[match.end():]
    if _LISTED.match(rest) or _ALTERNATIVE.search(rest):
        return None
    return match.group(1)


# --- math -----------------------------------------------------------------------------------------

# A plain number (optionally $ / \$, a sign, thousands commas, decimals, %) then only plain words.
_NUMBER_THEN_WORDS = re.compile(
    r"(?P<number>(?:\\?\$)?\s*[-+]?(?:\d[\d,]*)?\.?\d+\s*(?:\\?%)?)\s+[A-Za-z]{2,}[A-Za-z\s'-]*")
# "The final answer is", "answer is:" ... before the answer itself.
_LEAD_IN = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*", re.I)


def _normalise(predicted: str) -> str:
    text = predicted.replace("\u2212", "-").strip()
    if lead_in := _LEAD_IN.match(text):
        text = text[lead_in.end():]
    if text.startswith("**") and text.endswith("**") and len(text) > 4:
        text = text[2:-2].strip()
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    match = _NUMBER_THEN_WORDS.fullmatch(text)
    return match.group("number") if match else text


def _parse(text: str, timeout: int | None) -> list:
    return parse(text, extraction_config=_EXTRACTION, parsing_timeout=timeout)


@lru_cache(maxsize=4096)
def _parse_gold(gold: str, timeout: int | None) -> tuple:
    return tuple(_parse("\\boxed{" + gold + "}", timeout))


def _parse_predicted(predicted: str, timeout: int | None) -> list:
    text = _normalise(predicted)
    parsed = _parse("\\boxed{" + text + "}", timeout)
    if any(not isinstance(item, str) for item in parsed):
        return parsed
    return _parse(text, timeout) or parsed


def _math_equal(gold: str, predicted: str, timeout: int | None) -> bool:
    gold_parsed = _parse_gold(gold, timeout)
    predicted_parsed = _parse_predicted(predicted, timeout)
    if not gold_parsed or not predicted_parsed:
        return False
    return bool(verify(list(gold_parsed), predicted_parsed, timeout_seconds=timeout))
