"""Pick the judge threshold for a model pair from its scores on a calibration slice.

The paper's threshold (7 on the greedy digit) was set for QwQ-32B judging R1-1.5B; a small judge
uses the scale differently (the 1.5B CPU judge writes 9 for nearly every draft). Calibration runs
SpecReason with threshold 0 on a slice kept apart from the evaluation slice — every draft is judged
and kept, so the run costs about as much as small-only plus the judge — and reads, for every judged
draft, both scores from the recorded logprobs (greedy digit and expected value; no new judge
calls). Drafts are labelled by whether their problem ended with the right answer. The threshold
chosen for each score method maximises Youden's J — rejection rate on the steps of wrongly answered
problems minus that on rightly answered ones — among thresholds that still accept at least
``min_accept`` of the drafts (speed); ties go to the lower threshold. If the slice's answers are all
right or all wrong there is no label to separate, and the threshold that accepts ``min_accept`` of
the drafts is reported instead.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specreason_graph import rules

CANDIDATES = tuple(x / 2 for x in range(0, 21))  # 0, 0.5, ..., 10


def scored_steps(records: dict[str, dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Every judged draft of ``mode``'s runs with both scores and its problem's correctness."""
    steps = []
    for r in records.values():
        if r["mode"] != mode or r.get("error") is not None:
            continue
        for c in r["trace"]:
            if c["accepted"] is None or c.get("judge_error"):
                continue
            alternatives = [tuple(a) for a in c["judge_alternatives"]]
            steps.append({"id": r["id"], "correct": bool(r["correct"]),
                          "greedy": rules.greedy_score(c["judge_token"]),
                          "expected": rules.expected_score(alternatives)})
    return steps


def choose(steps: Sequence[dict[str, Any]], method: str, min_accept: float) -> dict[str, Any]:
    scores = [s[method] for s in steps]
    if not scores:
        raise ValueError("no judged drafts to calibrate on (did every run fail?)")
    right = [s[method] for s in steps if s["correct"]]
    wrong = [s[method] for s in steps if not s["correct"]]
    table = []
    for t in CANDIDATES:
        accept = sum(x >= t for x in scores) / len(scores)
        j = None
        if right and wrong:
            j = sum(x < t for x in wrong) / len(wrong) - sum(x < t for x in right) / len(right)
        table.append({"threshold": t, "acceptance": accept, "youden_j": j})
    allowed = [row for row in table if row["acceptance"] >= min_accept]
    if not allowed:
        raise ValueError(f"no threshold accepts {min_accept:.0%} of the drafts; lower --min-accept")
    if right and wrong:
        best = max(allowed, key=lambda row: (round(row["youden_j"], 9), -row["threshold"]))
        how = "max Youden's J with acceptance ≥ min_accept"
    else:  # the strictest threshold that still accepts min_accept of the drafts
        best = max(allowed, key=lambda row: row["threshold"])
        how = "no right/wrong contrast on this slice: the highest threshold accepting ≥ min_accept"
    quartiles = statistics.quantiles(scores, n=4) if len(scores) > 1 else [scores[0]] * 3
    return {"method": method, "threshold": best["threshold"], "acceptance": best["acceptance"],
            "youden_j": best["youden_j"], "how": how, "drafts": len(scores),
            "mean_right": statistics.fmean(right) if right else None,
            "mean_wrong": statistics.fmean(wrong) if wrong else None,
            "quartiles": quartiles,
            "sweep": [row for row in table if row["threshold"] in (3, 5, 7, 9)]}


def calibrate(records: dict[str, dict[str, Any]], mode: str, min_accept: float = 0.5
              ) -> dict[str, Any]:
    steps = scored_steps(records, mode)
    problems = sorted({r["id"] for r in records.values()
                       if r["mode"] == mode and r.get("error") is None})
    return {"problems": problems, "drafts": len(steps),
            "right_problems": len({s["id"] for s in steps if s["correct"]}),
            "min_accept": min_accept,
            "methods": {m: choose(steps, m, min_accept) for m in ("greedy", "expected")}}


def load_thresholds(path: str | Path) -> dict[str, float]:
    """The threshold a ``calibration.json`` chose for each score method."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
        return {method: float(c["threshold"]) for method, c in found["methods"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read the calibration {path}: {exc}") from None
