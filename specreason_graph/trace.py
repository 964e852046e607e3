"""Figures of one run, computed from its trace (the paper's per-run quantities), and the one line
on why each step was kept or rewritten (:func:`explain`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from specreason_graph.state import StepRecord


def judge_reads(record: StepRecord) -> dict[str, Any]:
    """What the deciding judge read for a kept step (``{}`` when it was not judged): for a one-token
    judge (``score``, ``yes_no``) its generated ``token`` and the ``alternatives`` at that position,
    as (token, logprob) pairs; the trace holds them only there."""
    judge = record.get("judge")
    found = record.get("judges", {}).get(judge) if judge else None
    return found["reads"] if found else {}


def summarize(trace: Sequence[StepRecord]) -> dict[str, Any]:
    judged = [r for r in trace if r["accepted"] is not None]
    accepted = sum(1 for r in judged if r["accepted"])
    return {
        "steps": len(trace),
        "steps_small": sum(1 for r in trace if r["writer"] == "small"),
        "steps_base": sum(1 for r in trace if r["writer"] == "base"),
        "steps_forced": sum(1 for r in trace if r["forced"]),
        "drafts_judged": len(judged),
        "acceptance_rate": accepted / len(judged) if judged else None,
        "kept_tokens": sum(r["tokens"] for r in trace),
        "draft_tokens": sum(r["draft_tokens"] for r in trace),
        "rejected_draft_tokens": sum(r["draft_tokens"] for r in judged if not r["accepted"]),
        "base_tokens": sum(r["base_tokens"] for r in trace),
        "judge_prompt_tokens": sum(r["judge_prompt_tokens"] for r in trace),
        "judge_cached_tokens": sum(r["judge_cached_tokens"] or 0 for r in trace),
        "draft_s": sum(r["draft_ms"] for r in trace) / 1000,
        "judge_s": sum(r["judge_ms"] for r in trace) / 1000,
        "base_s": sum(r["base_ms"] for r in trace) / 1000,
        "model_s": sum(r["ms"] for r in trace) / 1000,
        "truncated_steps": sum(1 for r in trace if r["truncated"]),
    }


# --- why a step was kept or rewritten ------------------------------------------------------------

_MAX = 9.0  # the judges' scale tops out at 9 (rules.SCORE_MAX; trace does not import rules)


def explain(record: StepRecord, threshold: float) -> str:
    """One line on what decided a committed step, from its record and the threshold it was held to
    (``StepRecord.decision``, the ``step`` stream event's ``decision`` and ``specreason ask``'s step
    lines): the deciding judge's reading and the comparison, e.g. ``score 6 < 7``,
    ``yes_no P(yes) 0.31 → 2.8 < 8``, ``check 16 - 48 = -22 is false → 0 < 7``; for a cascade every
    stage asked and how the last one settled it (below its band: rejected, at its top: accepted,
    the last stage against the threshold), e.g. ``cascade: check no arithmetic → 9 in 1-10,
    confidence 7.6 in 7.5-8, yes_no P(yes) 0.31 → 2.8 < 8``. Forced and unjudged steps say so."""
    if record["forced"]:
        return "forced: one of the first_n_base steps, no draft or judge"
    name = record.get("judge")
    if name is None:
        return "unjudged: small-only keeps every draft"
    found = record.get("judges", {}).get(name)
    score = record["score"] if record["score"] is not None else 0.0
    if found is None:  # a record written without its judge's readings
        return f"{name} {_num(score, threshold)} {_against(score, threshold)}"
    if name == "cascade":
        return "cascade: " + _cascade(found, score, threshold)
    return f"{_reading(name, found, threshold)} {_against(score, threshold)}"


def _cascade(found: Mapping[str, Any], score: float, threshold: float) -> str:
    """Each stage asked, in order: those that passed the draft on (inside their band, or unable to
    read their signal), then the one that settled it."""
    stages = found.get("reads", {}).get("stages") or []
    parts = []
    for i, stage in enumerate(stages):
        judge, band = stage["judge"], stage.get("band")
        if i < len(stages) - 1:
            reading = _reading(judge, stage, *(band or ()))
            parts.append(f"{reading} in {band[0]:g}-{band[1]:g}" if band and not stage.get("error")
                         else reading)
        elif band is None and ("band" in stage or stage["score"] == score):
            # the last stage (a record from before the bands were recorded: one whose score stands)
            parts.append(f"{_reading(judge, stage, threshold)} {_against(score, threshold)}")
        else:  # a band settled it: below LOW the cascade scores 0, at HIGH or above 9
            rejected = stage["score"] < band[0] if band else score == 0
            edge = "" if band is None else f" < {band[0]:g}" if rejected else f" ≥ {band[1]:g}"
            if (score >= threshold) != rejected:
                outcome = "rejected" if rejected else "accepted"
            else:  # a threshold of 0 or 10 overrules the band
                outcome = f"{_num(score)} {_against(score, threshold)}"
            parts.append(f"{_reading(judge, stage, *(band or ()))}{edge} → {outcome}")
    return ", ".join(parts) or f"{_num(score, threshold)} {_against(score, threshold)}"


def _reading(name: str, found: Mapping[str, Any], *bounds: float) -> str:
    """What judge ``name`` read, ending in its score (printed precisely enough against
    ``bounds``): ``score 8``, ``yes_no P(yes) 0.31 → 2.8``, ``check 2 + 2 = 5 is false → 0``."""
    score, reads, error = found["score"], found.get("reads") or {}, found.get("error")
    if error:
        return f"{name} failed ({_brief(error)}) → {_num(score, *bounds)}"
    if name == "score":
        if reads.get("method") == "expected":
            return f"score (expected) {_num(score, *bounds, places=2)}"
        token = reads.get("token")
        if token is not None and not (len(token.strip()) == 1 and token.strip().isdigit()):
            return f"score: token {token!r} is no digit → {_num(score, *bounds)}"
        return f"score {_num(score, *bounds)}"
    if name == "yes_no" and reads.get("p_yes") is not None:
        return f"yes_no P(yes) {reads['p_yes']:.2f} → {_num(score, *bounds)}"
    if name == "check" and "false" in reads:
        false, count = reads["false"], reads.get("equations", 0)
        if false:
            more = f" (and {len(false) - 1} more)" if len(false) > 1 else ""
            return f"check {false[0]} is false{more} → {_num(score, *bounds)}"
        held = (f"{count} equation{'s' if count != 1 else ''} hold{'s' if count == 1 else ''}"
                if count else "no arithmetic")
        return f"check {held} → {_num(score, *bounds)}"
    return f"{name} {_num(score, *bounds)}"


def _against(score: float, threshold: float) -> str:
    return f"{'≥' if score >= threshold else '<'} {threshold:g}"


def _num(x: float, *bounds: float, places: int = 1) -> str:
    """``x`` rounded to ``places`` decimals (an integer as one), or to as many more as it takes
    to compare with each bound as ``x`` does: 7.96 against 8 is ``7.96``, never ``8.0 < 8``."""
    if x == int(x):
        return str(int(x))
    for digits in range(places, 10):
        text = f"{x:.{digits}f}"
        shown = float(text)
        if all((shown < b) == (x < b) and (shown == b) == (x == b) for b in bounds):
            return text
    return repr(x)


def _brief(error: str, limit: int = 60) -> str:
    line = error.strip().splitlines()[0] if error.strip() else "error"
    return line if len(line) <= limit else line[:limit - 1].rstrip() + "…"
