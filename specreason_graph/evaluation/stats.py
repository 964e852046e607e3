"""Figures of a benchmark's recorded runs: a row per mode, and each mode paired with the reference.

- per mode: accuracy (pass@1 averaged over samples) and speedup against the reference mode
  (base-only), both on the problems the mode and the reference finished (every problem the mode
  finished when there is no reference; a failed run counts in ``failed``, and
  ``accuracy_problems`` says how many problems the accuracy is on), wall time per run (mean /
  median / p90), the judge's unreadable replies (``judge_errors``), steps written by
  each model, acceptance rate, tokens (kept, drafted and rejected, written by the base, read by the
  judge and how many of those came from vLLM's prefix cache), the share of model time spent in
  draft / judge / base calls, and the judge's cost against regenerating the same steps;
- per mode against the reference: the paired accuracy difference with a bootstrap 95% interval, and
  McNemar's exact test on the discordant problems (one sample per problem).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

REFERENCE = "base-only"


# --- which runs may be compared ------------------------------------------------------------------

def load_known(record: dict[str, Any]) -> bool:
    """The run's load was sampled and says whether another client was there: under the
    ten-samples-in-a-row rule of :class:`.LoadWatch`, or with no excess at all. Records made before
    loads were, and excesses seen by the first, peak-only watch (which vLLM's gauge lag alone can
    make), carry no verdict."""
    load = record.get("load") or {}
    return bool(load.get("samples")) and ("excess_samples" in load or load.get("others") == 0)


def gauge_checked(record: dict[str, Any]) -> bool:
    """The run's load was read by the watch that believes a server's gauge only while its token
    counters move (records with ``stale_samples``); earlier watches believed the gauge alone."""
    return load_known(record) and "stale_samples" in record["load"]


def saw_others(record: dict[str, Any]) -> bool:
    """The servers held requests beyond the benchmark's own while this run was in flight."""
    return load_known(record) and bool(record["load"]["others"])


def with_others(record: dict[str, Any]) -> bool:
    """Another client's requests were on the servers, as far as the watch can tell: a run to
    measure again (``bench`` does, the report refuses it)."""
    return gauge_checked(record) and saw_others(record)


def comparable(records: dict[str, dict[str, Any]], where: str = "this folder") -> dict[str, Any]:
    """Check that the runs' latencies can be set side by side, and say what is known of their load.

    Raises ValueError when the runs were taken at different concurrency (a speedup between them would
    measure the load, not the method), or when a run was taken alongside another client's requests
    (:func:`with_others`; the same ``bench`` command measures such runs again). Runs read by an
    earlier watch, which believed vLLM's gauges alone, are counted by mode in ``excess_by_mode``
    when they saw an excess, and the report shows them; they are not refused, since that watch
    cannot tell another client from a gauge that lags (:class:`.metrics.LoadWatch`).
    """
    levels = Counter(r.get("concurrency") for r in records.values())
    if len(levels) > 1:
        found = " and ".join(f"{c} ({n} runs)" for c, n in sorted(levels.items(), key=str))
        raise ValueError(f"{where} mixes runs taken at concurrency {found}: a speedup between them "
                         "would measure the load, not the method. Keep one concurrency per results "
                         "folder (bench --out).")
    crowded = Counter(r["mode"] for r in records.values() if with_others(r))
    if crowded:
        found = ", ".join(f"{m} ×{n}" for m, n in sorted(crowded.items()))
        raise ValueError(f"{where} has {sum(crowded.values())} run(s) taken while the servers held "
                         f"another client's requests for 10 s or more ({found}): their times "
                         "measure that client too. Run the same bench command again with nothing "
                         "else on the servers: it measures those runs again.")
    loaded = [r for r in records.values() if saw_others(r)]
    unknown = sum(1 for r in records.values() if not load_known(r))
    return {"concurrency": next(iter(levels), None), "runs": len(records),
            "load_unknown": unknown,
            "gauge_checked": sum(1 for r in records.values() if gauge_checked(r)),
            "stale_samples": sum(r["load"]["stale_samples"] for r in records.values()
                                 if gauge_checked(r)),
            "peak_requests": max((r["load"]["peak_requests"] or 0
                                  for r in records.values() if load_known(r)), default=0),
            "excess_by_mode": dict(sorted(Counter(r["mode"] for r in loaded).items()))}


# --- per mode ------------------------------------------------------------------------------------

def _p90(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def mode_rows(records: dict[str, dict[str, Any]], reference: str = REFERENCE,
              order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row of figures per mode: the modes in ``order`` first (as given to the benchmark), then
    any others in the order their runs were recorded."""
    by_mode: dict[str, list[dict[str, Any]]] = {m: [] for m in order}
    for r in records.values():
        by_mode.setdefault(r["mode"], []).append(r)
    by_mode = {m: runs for m, runs in by_mode.items() if runs}
    ref_wall = _per_problem(by_mode.get(reference, []), "wall_s")
    has_reference = bool(ref_wall)
    rows = []
    for mode, runs in by_mode.items():
        ok = [r for r in runs if r.get("error") is None]
        walls = [r["wall_s"] for r in ok]
        s = [r["summary"] for r in ok]
        calls = [step for r in ok for step in r["trace"]]
        judged = [c for c in calls if c["accepted"] is not None]
        spent = {part: sum(x[f"{part}_s"] for x in s) for part in ("draft", "judge", "base")}
        model_s = sum(spent.values())
        mine = _per_problem(ok, "wall_s")
        common = sorted(set(mine) & set(ref_wall))
        speedup = (statistics.fmean(ref_wall[p] for p in common)
                   / statistics.fmean(mine[p] for p in common)) if common and mode != reference \
            else (1.0 if mode == reference and common else None)
        right = _per_problem([{**r, "right": float(bool(r["correct"]))} for r in ok], "right")
        scored = common if has_reference else sorted(right)
        judge_prompt = sum(c["judge_prompt_tokens"] for c in judged)
        judge_cached = sum(c["judge_cached_tokens"] or 0 for c in judged)
        rows.append({
            "mode": mode, "runs": len(ok), "failed": len(runs) - len(ok),
            "problems": len({r["id"] for r in ok}),
            "accuracy": _mean([right[p] for p in scored]), "accuracy_problems": len(scored),
            "mean_s": _mean(walls), "median_s": statistics.median(walls) if walls else None,
            "p90_s": _p90(walls) if walls else None,
            "speedup": speedup, "speedup_problems": len(common),
            "steps_small": _mean([x["steps_small"] for x in s]),
            "steps_base": _mean([x["steps_base"] for x in s]),
            "acceptance": (sum(1 for c in judged if c["accepted"]) / len(judged)) if judged else None,
            "kept_tokens": _mean([x["kept_tokens"] for x in s]),
            "draft_tokens": _mean([x["draft_tokens"] for x in s]),
            "rejected_tokens": _mean([x["rejected_draft_tokens"] for x in s]),
            "base_tokens": _mean([x["base_tokens"] for x in s]),
            "judge_prompt_tokens": _mean([x["judge_prompt_tokens"] for x in s]),
            "judge_new_tokens": _mean([x["judge_prompt_tokens"] - x["judge_cached_tokens"] for x in s]),
            "judge_calls": _mean([x["drafts_judged"] for x in s]),
            "judge_cache_hit": judge_cached / judge_prompt if judge_prompt else None,
            "share_draft": spent["draft"] / model_s if model_s else None,
            "share_judge": spent["judge"] / model_s if model_s else None,
            "share_base": spent["base"] / model_s if model_s else None,
            "no_answer": sum(1 for r in ok if r.get("predicted") is None),
            "judge_errors": sum(1 for c in judged if c.get("judge_error")),
        })
    base_rate = _base_rate(records)
    for row, runs in zip(rows, by_mode.values(), strict=True):
        row["judge_vs_regen"] = _judge_vs_regen(runs, base_rate)
    return rows


def _per_problem(runs: Sequence[dict[str, Any]], field: str) -> dict[str, float]:
    """Mean of ``field`` over each problem's samples (failed runs left out)."""
    values: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r.get("error") is None:
            values[r["id"]].append(float(r[field]))
    return {pid: statistics.fmean(v) for pid, v in values.items()}


def _base_rate(records: dict[str, dict[str, Any]]) -> float | None:
    """Seconds per token of the base model writing steps, over every base-written step recorded."""
    tokens = secs = 0.0
    for r in records.values():
        for c in r.get("trace") or []:
            if c["base_tokens"]:
                tokens += c["base_tokens"]
                secs += c["base_ms"] / 1000
    return secs / tokens if tokens else None


def _judge_vs_regen(runs: Sequence[dict[str, Any]], base_s_per_token: float | None) -> float | None:
    """Judge time / the time the base model would take to write the judged steps itself."""
    judge_s = regen_s = 0.0
    for r in runs:
        for c in r.get("trace") or []:
            if c["accepted"] is not None and base_s_per_token:
                judge_s += c["judge_ms"] / 1000
                regen_s += c["draft_tokens"] * base_s_per_token
    return judge_s / regen_s if regen_s else None


# --- paired comparison ---------------------------------------------------------------------------

def paired(records: dict[str, dict[str, Any]], mode: str, reference: str = REFERENCE,
           resamples: int = 10_000, seed: int = 0) -> dict[str, Any] | None:
    """Accuracy of ``mode`` minus ``reference`` on the problems both finished: the difference, a
    percentile bootstrap 95% interval over problems, and McNemar's exact two-sided p-value (one
    sample per problem; with more samples the per-problem mean is compared and p is None)."""
    acc: dict[str, dict[str, list[float]]] = {mode: defaultdict(list), reference: defaultdict(list)}
    for r in records.values():
        if r["mode"] in acc and r.get("error") is None:
            acc[r["mode"]][r["id"]].append(float(bool(r["correct"])))
    common = sorted(set(acc[mode]) & set(acc[reference]))
    if not common or mode == reference:
        return None
    a = [statistics.fmean(acc[mode][p]) for p in common]
    b = [statistics.fmean(acc[reference][p]) for p in common]
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=n)) for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    p_value = None
    if all(v in (0.0, 1.0) for v in a + b):
        wins = sum(1 for x, y in zip(a, b, strict=True) if x > y)
        losses = sum(1 for x, y in zip(a, b, strict=True) if x < y)
        p_value = mcnemar_exact(wins, losses)
    return {"mode": mode, "reference": reference, "problems": n, "diff": statistics.fmean(diffs),
            "ci_low": low, "ci_high": high, "mcnemar_p": p_value}


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p = 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


# --- against random routing ----------------------------------------------------------------------

SMALL_REFERENCE = "small-only"


def above_routing(records: dict[str, dict[str, Any]], mode: str, small: str = SMALL_REFERENCE,
                  base: str = REFERENCE, resamples: int = 10_000, seed: int = 0
                  ) -> dict[str, Any] | None:
    """How far ``mode``'s accuracy lies above the straight line between small-only and base-only at
    its own mean latency — the line that sending whole problems at random to one model or the other
    traces — on the problems all three finished, with a paired bootstrap 95% interval (problems
    resampled, all five means recomputed each time). None without both references."""
    per: dict[str, dict[str, tuple[float, float]]] = {}
    for name in (mode, small, base):
        acc, wall = _per_problem_runs(records, name)
        per[name] = {pid: (acc[pid], wall[pid]) for pid in acc}
    common = sorted(set(per[mode]) & set(per[small]) & set(per[base]))
    if not common or mode in (small, base):
        return None

    def margin(pids: list[str]) -> float | None:
        m = {name: (statistics.fmean(per[name][p][0] for p in pids),
                    statistics.fmean(per[name][p][1] for p in pids)) for name in per}
        (acc_s, t_s), (acc_b, t_b), (acc, t) = m[small], m[base], m[mode]
        if t_b == t_s:
            return None
        return acc - (acc_s + (acc_b - acc_s) * (t - t_s) / (t_b - t_s))

    observed = margin(common)
    if observed is None:
        return None
    rng = random.Random(seed)
    draws = sorted(v for _ in range(resamples)
                   if (v := margin(rng.choices(common, k=len(common)))) is not None)
    return {"mode": mode, "problems": len(common), "margin": observed,
            "ci_low": draws[int(0.025 * len(draws))], "ci_high": draws[int(0.975 * len(draws)) - 1]}


def _per_problem_runs(records: dict[str, dict[str, Any]], mode: str
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy and wall time of ``mode`` per problem (means over samples; failed runs left out)."""
    runs = [r for r in records.values() if r["mode"] == mode]
    return _per_problem(runs, "correct"), _per_problem(runs, "wall_s")
