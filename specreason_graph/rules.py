"""The algorithm's pure decisions: how a judge reply becomes a score, when a run stops, what the answer is.

No I/O here, so every rule is tested directly (and with hypothesis) without a server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from specreason_graph.state import StopReason

ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")
THINK_CLOSE = "</think>"
THRESHOLD_MIN, THRESHOLD_MAX = 0.0, 10.0
"""A threshold's range: 0 keeps every draft, 10 none (scores run from 0 to 9)."""


def is_threshold(value: object) -> bool:
    """``value`` is a number in the threshold's range (NaN is not)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and THRESHOLD_MIN <= value <= THRESHOLD_MAX)


def checked_problem(problem: object, what: str = "the problem") -> str:
    """``problem`` when it is a question a run can take (a string with more than whitespace), else
    a ValueError that names ``what`` ("the problem", "question 3") — before any model call."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{what} is empty: give it as a non-empty string")
    return problem


def threshold_for(override: float | None, default: float) -> float:
    """A problem's threshold: its own override (``InputState.threshold``), else the run's."""
    return default if override is None else override


def _digit(token: str | None) -> int | None:
    """The digit a token stands for (' 7' and '7' both are 7), else None."""
    if token is None:
        return None
    stripped = token.strip()
    return int(stripped) if len(stripped) == 1 and stripped in "0123456789" else None


def greedy_score(token: str | None) -> float:
    """The paper's score: the generated token read as a digit; anything else scores 0."""
    digit = _digit(token)
    return float(digit) if digit is not None else 0.0


def expected_score(top_logprobs: Sequence[tuple[str, float]]) -> float:
    """Probability-weighted mean digit over the digit tokens among the alternatives.

    Probabilities are renormalised over the digit tokens only (a softmax of their logprobs). Tokens
    that are not digits, non-finite logprobs and an empty list contribute nothing; no digit at all
    scores 0.
    """
    best: dict[int, float] = {}
    for token, logprob in top_logprobs:
        digit = _digit(token)
        if digit is None or logprob is None or math.isnan(logprob) or logprob == math.inf:
            continue
        # ' 7' and '7' are different tokens for the same digit: add their probabilities.
        best[digit] = _logaddexp(best[digit], logprob) if digit in best else logprob
    finite = {d: lp for d, lp in best.items() if lp != -math.inf}
    if not finite:
        return 0.0
    top = max(finite.values())
    weights = {d: math.exp(lp - top) for d, lp in finite.items()}
    total = sum(weights.values())
    return sum(d * w for d, w in weights.items()) / total


SCORE_MAX = 9.0
"""The top of the judges' common scale (the paper's 0-9 digit)."""


def yes_probability(top_logprobs: Sequence[tuple[str, float]], token: str | None) -> float | None:
    """P(Yes) among the Yes/No tokens of the alternatives (' Yes', 'yes', 'YES' are all Yes),
    renormalised over those two answers; without alternatives, the generated token (1 or 0).
    None when neither answer is there."""
    mass = {"yes": -math.inf, "no": -math.inf}
    for alt, logprob in top_logprobs:
        word = alt.strip().lower()
        if word in mass and logprob is not None and not math.isnan(logprob):
            mass[word] = _logaddexp(mass[word], logprob)
    if mass["yes"] == mass["no"] == -math.inf:
        word = (token or "").strip().lower()
        return {"yes": 1.0, "no": 0.0}.get(word)
    top = max(mass.values())
    yes, no = math.exp(mass["yes"] - top), math.exp(mass["no"] - top)
    return yes / (yes + no)


def probability_score(logprobs: Sequence[float]) -> float:
    """A sequence's per-token geometric-mean probability on the judges' scale: 9·exp(mean logprob)."""
    return SCORE_MAX * math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0


Stage = tuple[str, float, float]
"""One stage of a cascade: a judge, and its band: reject below ``low``, accept at ``high`` or above,
undecided (ask the next stage) between."""


def parse_cascade(text: str, known: Sequence[str]) -> list[Stage]:
    """``check:1-10,confidence:3-8,yes_no``: judges in order, each but the last with its band
    ``low-high`` on the 0-9 scale (the last one's score meets the run's threshold)."""
    stages: list[Stage] = []
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError("a cascade needs at least one judge, e.g. check:1-10,yes_no")
    for i, part in enumerate(parts):
        name, _, band = part.partition(":")
        if name not in known or name == "cascade":
            raise ValueError(f"cascade stage {part!r}: unknown judge {name!r}; known: "
                             f"{', '.join(k for k in known if k != 'cascade')}")
        last = i == len(parts) - 1
        if last and band:
            raise ValueError(f"cascade stage {part!r}: the last stage takes no band (its score "
                             "meets the threshold)")
        if not last and not band:
            raise ValueError(f"cascade stage {part!r}: give its band as {name}:LOW-HIGH")
        low, high = (THRESHOLD_MIN, THRESHOLD_MAX)
        if band:
            try:
                low, high = (float(x) for x in band.split("-"))
            except ValueError:
                raise ValueError(f"cascade stage {part!r}: the band is LOW-HIGH, two numbers "
                                 "from 0 to 10") from None
            if not (is_threshold(low) and is_threshold(high) and low <= high):
                raise ValueError(f"cascade stage {part!r}: the band needs 0 <= LOW <= HIGH <= 10")
        stages.append((name, low, high))
    return stages


def _logaddexp(a: float, b: float) -> float:
    top = max(a, b)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.exp(a - top) + math.exp(b - top))


def has_answer(step: str) -> bool:
    return any(marker in step for marker in ANSWER_MARKERS)


def close_think(step: str) -> str:
    """A kept step that closes the thinking without answering gets its '</think>' removed."""
    if THINK_CLOSE in step and not has_answer(step):
        return step.replace(THINK_CLOSE, "")
    return step


def stop_reason(steps: Sequence[str], kept_tokens: int, budget: int, ended_turn: bool = False
                ) -> StopReason | None:
    """Why the run ends after the last kept step, or None to go on.

    In the paper's order: an answer marker in the last step, the last two steps identical, the
    budget spent. ``finished`` (our addition) covers a model that ends its turn without a marker,
    which instruct models do; reasoning models always answer before that.
    """
    if not steps:
        return None
    if has_answer(steps[-1]):
        return "answer"
    if len(steps) >= 2 and steps[-1] == steps[-2]:
        return "repeated_step"
    if kept_tokens >= budget:
        return "token_budget"
    if ended_turn:
        return "finished"
    return None


def one_request_stop(text: str, tokens: int, budget: int, truncated: bool) -> StopReason:
    """Why a solution written in one request ended (the one-request baselines, an agent's direct
    answer): the stop rules with the whole reply as the one kept step and ``tokens`` against the
    budget; a reply cut by ``max_tokens`` (``truncated``, the budget) without an answer ran out of
    budget, one that ended its turn without an answer ``finished``."""
    return stop_reason([text], tokens, budget, ended_turn=not truncated) or "token_budget"


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"(?:Answer|ANSWER):[ \t]*(\S.*)")


def extract_answer(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` (nested braces kept), else the last 'Answer: x' line.

    A step that closes the thinking and answers is read after its '</think>': a reasoning model's
    answer is what follows the thinking, even when a candidate was boxed inside it."""
    if THINK_CLOSE in text:
        after = _answer_in(text.rsplit(THINK_CLOSE, 1)[1])
        if after is not None:
            return after
    return _answer_in(text)


def _answer_in(text: str) -> str | None:
    found = None
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                found = text[start:pos].strip()
                break
    if found is not None:
        return found
    lines = _ANSWER_LINE.findall(text)
    return lines[-1].strip() if lines else None
