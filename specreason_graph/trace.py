"""Figures of one run, computed from its trace (the paper's per-run quantities)."""

from __future__ import annotations

from collections.abc import Sequence
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
