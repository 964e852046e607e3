"""Pick the judge and its threshold for a model pair, from labelled steps of a calibration slice.

The paper's judge (the base model's 0–9 digit, threshold 7) was set for QwQ-32B judging R1-1.5B; on
another pair it may carry no information at all (the 1.5B CPU judge writes 9 for nearly every
draft). Calibration measures every judge on steps labelled by rollouts (:mod:`.labels`):

- per signal, the ROC AUC against the rollout labels (good = some finish after the draft reaches
  the gold answer), with a percentile bootstrap 95% interval over drafts; the acceptance and the
  false-accept rate (share of bad drafts kept) at each threshold; the cost per call;
- per candidate (a judge and a threshold, or a cascade of judges with bands), a **step-level
  accuracy–time point**, and its distance above the straight line between small-only and base-only.

How the choice is made. For one draft, the small model's step costs ``draft`` seconds, the base
model writing the same step ``regen`` seconds, a judge ``judge`` seconds — all three from the
draft's token counts and the speeds of one run in flight (a :class:`.cost_model.GpuProfile`; the
CPU pair's by default), not from the calibration run's own timings, which were taken with several
runs in flight. A candidate that accepts a share ``a`` of the drafts and keeps a share ``f_bad`` of
all drafts that are bad costs ``T = draft + judge + (1 - a) · regen`` per step and leaves
``Q = 1 - f_bad`` of the steps sound (a rewritten step counts as sound). Small-only is
``(draft, 1 - bad)``; base-only is ``(regen, 1)``; sending whole steps to one or the other at random
gives every point of the straight line between them. The chosen candidate maximises ``Q`` minus that
line at its own ``T``: the expected share of sound steps it gains over random routing for the same
time. A margin at or below zero means no judge beats random routing on this slice, and the report
says so; the candidate closest to the line is still named.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specreason_graph.evaluation.cost_model import GpuProfile

THRESHOLDS = tuple(x / 2 for x in range(0, 21))  # 0, 0.5, ..., 10
BANDS = tuple(x / 2 for x in range(0, 21))

SELECTABLE = {  # signal -> the Context fields that make the judge node compute it
    "score:greedy": {"judge": "score", "score_method": "greedy"},
    "score:expected": {"judge": "score", "score_method": "expected"},
    "yes_no": {"judge": "yes_no"},
    "confidence:mean": {"judge": "confidence"},
    "likelihood:mean": {"judge": "likelihood"},
    "check": {"judge": "check"},
}
JUDGE_OF = {signal: fields["judge"] for signal, fields in SELECTABLE.items()}
JUDGE_OF.update({"confidence:min": "confidence", "likelihood:min": "likelihood"})
FREE = ("check", "confidence:mean")
"""Signals that cost no model call: the cascades' first stages."""


# --- the statistics ------------------------------------------------------------------------------

def auroc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """P(a good draft scores above a bad one), ties counting half (Mann–Whitney U / n_good·n_bad)."""
    good = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    bad = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not good or not bad:
        return None
    ranked = sorted((s, y) for s, y in zip(scores, labels, strict=True))
    rank_sum, i = 0.0, 0
    while i < len(ranked):  # average ranks over ties
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average = (i + 1 + j) / 2
        rank_sum += average * sum(1 for _, y in ranked[i:j] if y == 1)
        i = j
    return (rank_sum - len(good) * (len(good) + 1) / 2) / (len(good) * len(bad))


def bootstrap_auroc(scores: Sequence[float], labels: Sequence[int], resamples: int = 1000,
                    seed: int = 0) -> tuple[float, float] | None:
    """Percentile 95% interval of the AUROC over drafts resampled with replacement."""
    rng = random.Random(seed)
    n = len(scores)
    values = []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        value = auroc([scores[k] for k in picks], [labels[k] for k in picks])
        if value is not None:
            values.append(value)
    if len(values) < resamples // 2:
        return None
    values.sort()
    return values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1]


# --- the step-level time model -------------------------------------------------------------------

def draft_s(row: dict[str, Any], speeds: GpuProfile) -> float:
    """The small model writing this draft, at one run in flight."""
    return speeds.call_overhead_s + row["draft_tokens"] / speeds.small_decode_tps


def regen_s(row: dict[str, Any], speeds: GpuProfile) -> float:
    """The base model writing a step as long as this draft, at one run in flight."""
    return speeds.call_overhead_s + row["draft_tokens"] / speeds.base_decode_tps


def judge_s(row: dict[str, Any], signal: str, speeds: GpuProfile) -> float:
    """The judge behind ``signal`` on this draft, at one run in flight: its new (uncached) prompt
    tokens prefilled and one token generated; nothing for a judge that makes no call."""
    cost = row["costs"].get(JUDGE_OF[signal]) or {}
    new = (cost.get("prompt_tokens") or 0) - (cost.get("cached_tokens") or 0)
    if not cost.get("prompt_tokens"):
        return 0.0
    return speeds.call_overhead_s + 1 / speeds.base_decode_tps + new / speeds.base_prefill_tps


@dataclass(frozen=True)
class Candidate:
    """A judge setting and what it would do on the labelled drafts."""

    name: str
    fields: dict[str, Any]
    """The Context fields that select it (judge, threshold, score_method, cascade)."""
    accept: list[bool]
    seconds: list[float]
    """Judge seconds per draft (the stages it asked)."""


def single(signal: str, threshold: float, rows: Sequence[dict[str, Any]],
           speeds: GpuProfile) -> Candidate:
    scores = [row["signals"][signal] for row in rows]
    fields = {**SELECTABLE[signal], "threshold": threshold}
    return Candidate(f"{signal} t={threshold:g}", fields, [s >= threshold for s in scores],
                     [judge_s(row, signal, speeds) for row in rows])


def cascade(stages: Sequence[tuple[str, float, float]], final: str, threshold: float,
            rows: Sequence[dict[str, Any]], speeds: GpuProfile) -> Candidate:
    """Free stages with bands (reject below low, accept at high or above), then ``final``."""
    accept, seconds = [], []
    for row in rows:
        spent, decided = 0.0, None
        for signal, low, high in stages:
            spent += judge_s(row, signal, speeds)
            score = row["signals"][signal]
            if score < low:
                decided = False
            elif score >= high:
                decided = True
            if decided is not None:
                break
        if decided is None:
            spent += judge_s(row, final, speeds)
            decided = row["signals"][final] >= threshold
        accept.append(decided)
        seconds.append(spent)
    text = ",".join(f"{JUDGE_OF[s]}:{low:g}-{high:g}" for s, low, high in stages)
    text += f",{JUDGE_OF[final]}"
    fields = {"judge": "cascade", "cascade": text, "threshold": threshold}
    if final.startswith("score:"):
        fields["score_method"] = final.split(":")[1]
    return Candidate(f"cascade {text} t={threshold:g}", fields, accept, seconds)


def point(candidate: Candidate, rows: Sequence[dict[str, Any]], speeds: GpuProfile
          ) -> dict[str, Any]:
    """The candidate's step-level time and soundness, and its margin over random routing."""
    n = len(rows)
    bad = [row["labels"]["rollout"] == 0 for row in rows]
    draft = statistics.fmean(draft_s(row, speeds) for row in rows)
    regen = statistics.fmean(regen_s(row, speeds) for row in rows)
    a = sum(candidate.accept) / n
    t = draft + statistics.fmean(candidate.seconds) + statistics.fmean(
        0.0 if ok else regen_s(row, speeds) for ok, row in zip(candidate.accept, rows, strict=True))
    bad_kept = sum(1 for ok, b in zip(candidate.accept, bad, strict=True) if ok and b) / n
    bad_share = sum(bad) / n
    q = 1 - bad_kept
    line = (1 - bad_share) + bad_share * (t - draft) / (regen - draft) if regen > draft else q
    return {"candidate": candidate.name, "fields": candidate.fields, "acceptance": a,
            "false_accept": (bad_kept / bad_share) if bad_share else None,
            "seconds_per_step": t, "sound_steps": q, "margin": q - line,
            "small_only_s": draft, "base_only_s": regen, "bad_share": bad_share}


# --- the whole calibration -----------------------------------------------------------------------

def calibrate(rows: Sequence[dict[str, Any]], speeds: GpuProfile, resamples: int = 1000
              ) -> dict[str, Any]:
    """The AUROC table, the threshold sweeps, every candidate's point and the choice (see the module
    docstring). ``rows``: the labelled set (:func:`.labels.label`)."""
    labelled = [r for r in rows if r["labels"]["rollout"] is not None]
    signals = sorted({s for r in labelled for s in r["signals"]})
    table = []
    for signal in signals:
        usable = [r for r in labelled if r["signals"].get(signal) is not None]
        scores = [r["signals"][signal] for r in usable]
        ys = [r["labels"]["rollout"] for r in usable]
        problem_ys = [int(r["labels"]["problem"]) for r in usable]
        interval = bootstrap_auroc(scores, ys, resamples) if usable else None
        costs = [judge_s(r, signal, speeds) for r in usable]
        measured = [float((r["costs"].get(JUDGE_OF[signal]) or {}).get("ms") or 0) / 1000
                    for r in usable]
        tokens = [(r["costs"].get(JUDGE_OF[signal]) or {}).get("prompt_tokens") or 0 for r in usable]
        cached = [(r["costs"].get(JUDGE_OF[signal]) or {}).get("cached_tokens") or 0 for r in usable]
        bad = [s for s, y in zip(scores, ys, strict=True) if y == 0]
        table.append({
            "signal": signal, "drafts": len(usable), "auroc": auroc(scores, ys),
            "auroc_ci": interval, "auroc_problem_label": auroc(scores, problem_ys),
            "mean_good": _mean([s for s, y in zip(scores, ys, strict=True) if y == 1]),
            "mean_bad": _mean(bad), "seconds_per_call": _mean(costs),
            "measured_seconds_per_call": _mean(measured),
            "prompt_tokens": _mean(tokens), "cached_tokens": _mean(cached),
            "sweep": [{"threshold": t, "acceptance": sum(s >= t for s in scores) / len(scores),
                       "false_accept": (sum(s >= t for s in bad) / len(bad)) if bad else None}
                      for t in THRESHOLDS] if scores else []})
    complete = [r for r in labelled if all(r["signals"].get(s) is not None for s in SELECTABLE)]
    points = []
    if complete:
        points = [point(c, complete, speeds) for c in candidates(complete, speeds)]
        points.sort(key=lambda p: -p["margin"])
    choice = points[0] if points else None
    return {"drafts": len(rows), "labelled": len(labelled),
            "bad": sum(1 for r in labelled if r["labels"]["rollout"] == 0),
            "arithmetic_false": sum(1 for r in rows if r["labels"]["arithmetic"] is False),
            "speeds": dataclasses.asdict(speeds), "table": table,
            "best_by_judge": _best_by_judge(points), "choice": choice,
            "beats_random_routing": bool(choice and choice["margin"] > 0)}


def candidates(rows: Sequence[dict[str, Any]], speeds: GpuProfile) -> list[Candidate]:
    """Every single judge at every threshold, and cascades: check, then the small model's
    confidence with a band, then a model judge."""
    found = [single(s, t, rows, speeds) for s in SELECTABLE for t in THRESHOLDS]
    finals = [s for s in SELECTABLE if s not in FREE]
    for final in finals:
        for t in THRESHOLDS:
            found.append(cascade([("check", 1.0, 10.0)], final, t, rows, speeds))
            for low in BANDS:
                for high in BANDS:
                    if low < high:
                        found.append(cascade([("check", 1.0, 10.0), ("confidence:mean", low, high)],
                                             final, t, rows, speeds))
    return found


def _best_by_judge(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for p in points:
        kind = p["fields"]["judge"] + (f":{p['fields']['score_method']}"
                                       if "score_method" in p["fields"] else "")
        if kind not in best or p["margin"] > best[kind]["margin"]:
            best[kind] = p
    return sorted(best.values(), key=lambda p: -p["margin"])


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None
