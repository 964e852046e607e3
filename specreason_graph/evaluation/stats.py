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
  McNemar's exact test on the discordant problems (one sample per problem);
- per mode whose base server speculates (vLLM's token-level speculative decoding; its records carry
  ``spec_decode``, the deltas of the server's counters over the run): the share of drafted tokens
  the base model accepted, and the accepted tokens per draft;
- per judging mode against the frontier of the modes that do not judge (:func:`above_frontier`);
- per one-request mode writing with the base model (SpecDecode): on how many problems its solution
  is base-only's word for word (:func:`identical_outputs`; greedy decoding makes that the test of
  lossless speculation);
- the machine's drift between segments that ran different modes (:func:`segment_drift`).
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
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
            **_spec_decode_figures(ok),
        })
    fast = speculating(records)
    base_rate = {sd: _base_rate([r for r in records.values() if (r["mode"] in fast) == sd])
                 for sd in (False, True)}
    for row, runs in zip(rows, by_mode.values(), strict=True):
        # the judge against the base server this mode regenerates on (speculative or not)
        row["judge_vs_regen"] = _judge_vs_regen(runs, base_rate[row["mode"] in fast])
    return rows


def speculates(record: dict[str, Any]) -> bool:
    """The run's base server decoded speculatively: the runner recorded the deltas of its
    speculative-decoding counters (``spec_decode``) over the run."""
    return bool(record.get("spec_decode"))


def speculating(records: dict[str, dict[str, Any]]) -> set[str]:
    """The modes whose base server speculates: any of their runs carries the counters (a run that
    asked the base model nothing, or whose counters could not be read, may carry none)."""
    return {r["mode"] for r in records.values() if speculates(r)}


SPEC_DECODE_COUNTERS = ("drafts", "draft_tokens", "accepted_tokens")
"""The fields of a record's ``spec_decode``: vLLM's ``spec_decode_num_drafts_total``,
``..._num_draft_tokens_total`` and ``..._num_accepted_tokens_total``, counted over the run."""


def spec_decode_totals(runs: Iterable[dict[str, Any]]) -> dict[str, float] | None:
    """The spec_decode counters summed over the runs that finished and carry them (``runs``: how
    many); None when none does."""
    found = [r["spec_decode"] for r in runs if r.get("error") is None and speculates(r)]
    if not found:
        return None
    return {**{k: float(sum(s.get(k) or 0 for s in found)) for k in SPEC_DECODE_COUNTERS},
            "runs": float(len(found))}


def _spec_decode_figures(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Draft acceptance of the base server's speculative decoding over the mode's runs: accepted /
    drafted tokens, and accepted tokens per draft (None without counters)."""
    total = spec_decode_totals(runs) or {}
    accepted = total.get("accepted_tokens", 0.0)
    return {"spec_decode_acceptance": accepted / total["draft_tokens"]
            if total.get("draft_tokens") else None,
            "spec_decode_accepted_per_draft": accepted / total["drafts"]
            if total.get("drafts") else None}


def _per_problem(runs: Sequence[dict[str, Any]], field: str) -> dict[str, float]:
    """Mean of ``field`` over each problem's samples (failed runs left out)."""
    values: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        if r.get("error") is None:
            values[r["id"]].append(float(r[field]))
    return {pid: statistics.fmean(v) for pid, v in values.items()}


def _base_rate(runs: Iterable[dict[str, Any]]) -> float | None:
    """Seconds per token of the base model writing steps, over every base-written step of ``runs``."""
    tokens = secs = 0.0
    for r in runs:
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



# --- against the frontier of the modes that do not judge -----------------------------------------

SMALL_REFERENCE = "small-only"
ONE_REQUEST_KINDS = ("base", "small")
"""The modes that do not judge: one request for the whole solution (small-only, base-only,
SpecDecode, any ``url=`` variant of them)."""

Point = tuple[float, float]
"""(mean latency in seconds, accuracy)."""


def non_judging(modes: dict[str, dict[str, Any]], present: Iterable[str],
                reference: str = REFERENCE) -> list[str]:
    """The present modes of a one-request kind: the small model's first, then the reference, then
    the other base ones (SpecDecode, ``url=`` variants) in the settings' order. A folder without
    settings (no meta.json) knows only small-only and the reference, by name."""
    have = set(present)
    if not modes:
        return [m for m in (SMALL_REFERENCE, reference) if m in have]
    found = [m for m, s in modes.items() if s.get("kind") in ONE_REQUEST_KINDS and m in have]
    return sorted(found, key=lambda m: (modes[m]["kind"] != "small", m != reference))


def envelope(points: Iterable[Point]) -> list[Point]:
    """The corners of the frontier that sending whole problems at random among the points' modes
    reaches: the upper concave envelope of (latency, accuracy) from the fastest point (the most
    accurate of the fastest) to the most accurate one (the fastest of the most accurate). Beyond
    the last corner the frontier is flat (a mode may always be run slower: free disposal); below
    the first it is not defined. Empty without points."""
    pts = list(points)
    if not pts:
        return []
    start = min(pts, key=lambda p: (p[0], -p[1]))
    end = min(pts, key=lambda p: (-p[1], p[0]))
    corners = [start]
    for p in sorted(p for p in pts if start[0] < p[0] <= end[0]):
        if p[0] == corners[-1][0]:  # the same latency, sorted by accuracy: keep the higher
            corners.pop()
        while len(corners) >= 2 and _not_below(corners[-2], corners[-1], p):
            corners.pop()
        corners.append(p)
    return corners


def _not_below(a: Point, b: Point, c: Point) -> bool:
    """``b`` lies on or under the chord from ``a`` to ``c`` (then it is no corner of the envelope)."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]) >= 0


def frontier_at(corners: Sequence[Point], latency: float) -> float | None:
    """The frontier's accuracy at ``latency``: the corners joined by straight lines, flat after the
    last; None below the first (faster than every point it is drawn from)."""
    if not corners or latency < corners[0][0]:
        return None
    for (x0, y0), (x1, y1) in zip(corners, corners[1:], strict=False):
        if latency <= x1:  # the same expression as the old small-base line, to the last bit
            return y0 + (y1 - y0) * (latency - x0) / (x1 - x0)
    return corners[-1][1]


def above_frontier(records: dict[str, dict[str, Any]], mode: str, frontier: Sequence[str],
                   resamples: int = 10_000, seed: int = 0) -> dict[str, Any] | None:
    """How far ``mode``'s accuracy lies above the frontier of the ``frontier`` modes (those that do
    not judge: :func:`non_judging`, :func:`envelope`) at its own mean latency, on the problems the
    mode and every frontier mode finished, with a paired bootstrap 95% interval: problems
    resampled, every mode's means and the envelope recomputed each time.

    When ``mode`` is faster than every frontier mode the frontier says nothing there: ``faster`` is
    True and the margin is the distance to the fastest mode's accuracy (``fastest``), only that.
    With small-only and base-only alone, a mode between them, and base-only the more accurate, the
    margin is the distance above the straight line between the two, as before this generalisation.
    None without a frontier mode or a shared problem, and for a frontier mode itself."""
    names = [mode, *frontier]
    per: dict[str, dict[str, tuple[float, float]]] = {}
    for name in names:
        acc, wall = _per_problem_runs(records, name)
        per[name] = {pid: (acc[pid], wall[pid]) for pid in acc}
    common = sorted(set.intersection(*(set(per[n]) for n in names)))
    if not frontier or not common or mode in frontier:
        return None

    def position(pids: list[str]) -> tuple[float, str | None]:
        """The margin, and the fastest frontier mode when ``mode`` is faster than all of them."""
        m = {n: (statistics.fmean(per[n][p][1] for p in pids),
                 statistics.fmean(per[n][p][0] for p in pids)) for n in names}
        corners = envelope(m[n] for n in frontier)
        t, acc = m[mode]
        line = frontier_at(corners, t)
        if line is not None:
            return acc - line, None
        return acc - corners[0][1], min(frontier, key=lambda n: (m[n][0], -m[n][1]))

    observed, fastest = position(common)
    rng = random.Random(seed)
    draws = sorted(position(rng.choices(common, k=len(common)))[0] for _ in range(resamples))
    found = {"mode": mode, "problems": len(common), "margin": observed,
             "ci_low": draws[int(0.025 * len(draws))], "ci_high": draws[int(0.975 * len(draws)) - 1],
             "faster": fastest is not None, "frontier": list(frontier)}
    if fastest is not None:
        found["fastest"] = fastest
    return found


def _per_problem_runs(records: dict[str, dict[str, Any]], mode: str
                      ) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy and wall time of ``mode`` per problem (means over samples; failed runs left out)."""
    runs = [r for r in records.values() if r["mode"] == mode]
    return _per_problem(runs, "correct"), _per_problem(runs, "wall_s")


# --- speculation that changes nothing --------------------------------------------------------------

def identical_outputs(records: dict[str, dict[str, Any]], modes: dict[str, dict[str, Any]],
                      reference: str = REFERENCE) -> dict[str, str]:
    """For each one-request mode other than ``reference`` that writes with the base model
    (SpecDecode: kind base in ``modes``), on how many of the problems and samples both finished
    its whole solution is the reference's word for word: "n of m". A one-request record's trace is
    the one call's text, so the solutions are compared as the traces' texts joined. Under greedy
    decoding speculation that is lossless changes no token; a mismatch is numerics (batch shapes of
    the verification pass) or a bug."""
    text = {(r["mode"], r["id"], r["sample"]): "".join(c["text"] for c in r["trace"])
            for r in records.values() if r.get("error") is None}
    found = {}
    for mode, settings in modes.items():
        if settings.get("kind") != "base" or mode == reference:
            continue
        pairs = [(t, text[(reference, pid, n)]) for (m, pid, n), t in text.items()
                 if m == mode and (reference, pid, n) in text]
        if pairs:
            found[mode] = f"{sum(a == b for a, b in pairs)} of {len(pairs)}"
    return found


# --- drift between segments ----------------------------------------------------------------------

def segment_drift(records: dict[str, dict[str, Any]], segments: Sequence[dict[str, Any]],
                  modes: dict[str, dict[str, Any]] | None = None,
                  reference: str = REFERENCE) -> dict[str, Any] | None:
    """How the machine's speed moved between segments that ran different modes (the speculative
    base server and the plain one do not fit in memory together, so their modes run in
    alternating segments, and a speedup between them holds the drift too).

    Measured on the one server every segment used, the small model's: seconds per generated token
    of its calls in each segment, small-only's one request and the drafts of the step-by-step
    modes apart (a draft is short and pays its prefill on few tokens). Segments with the same modes
    form a group (A, B, ... in the order they first ran), pooled, each against the first:
    ``ratio_*`` above 1 means the machine was slower then. A run belongs to the latest segment that
    ran its mode and started before it finished. None when every segment ran the same modes.

    ``adjusted``: each mode's speedup against ``reference`` with every run's wall time divided by
    its segment's draft speed relative to all segments' pooled (a segment without drafts takes the
    mean of the segments with drafts just before and just after it): an estimate that assumes the
    base model slowed as the small one did."""
    placed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in records.values():
        if r.get("error") is None and (i := _segment_of(r, segments)) is not None:
            placed[i].append(r)
    groups: dict[frozenset[str], str] = {}
    for i in sorted(placed):
        groups.setdefault(frozenset(segments[i].get("modes") or ()), chr(ord("A") + len(groups)))
    if len(groups) < 2:
        return None
    rows: list[dict[str, Any]] = []
    pooled: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in sorted(placed):
        s = segments[i]
        group = groups[frozenset(s.get("modes") or ())]
        pooled[group] += placed[i]
        rows.append({"segment": i + 1, "group": group, "modes": list(s.get("modes") or ()),
                     "started": s.get("started"), "ended": s.get("ended"), "runs": len(placed[i]),
                     **_small_speed(placed[i], modes or {})})
    first = _small_speed(pooled["A"], modes or {})
    summary = []
    for group, runs in pooled.items():
        speed: dict[str, Any] = _small_speed(runs, modes or {})
        for part in ("one_request", "drafts"):
            mine, base = speed[f"{part}_s_per_token"], first[f"{part}_s_per_token"]
            speed[f"ratio_{part}"] = mine / base if mine and base else None
        summary.append({"group": group,
                        "modes": next(r["modes"] for r in rows if r["group"] == group),
                        "segments": [r["segment"] for r in rows if r["group"] == group], **speed})
    adjusted = _drift_adjusted(placed, rows, _small_speed(
        [r for runs in placed.values() for r in runs], modes or {})["drafts_s_per_token"],
        segments, reference)
    return {"segments": rows, "groups": summary, "adjusted": adjusted}


def _drift_adjusted(placed: dict[int, list[dict[str, Any]]], rows: list[dict[str, Any]],
                    pooled: float | None, segments: Sequence[dict[str, Any]],
                    reference: str) -> list[dict[str, Any]]:
    """Per mode: its speedup against ``reference`` (mean wall times on the problems both
    finished), raw and with each run's time divided by its segment's relative draft speed."""
    speed = {r["segment"] - 1: r["drafts_s_per_token"] for r in rows if r["drafts_s_per_token"]}
    if not pooled or not speed:
        return []

    def factor(i: int) -> float:
        if i in speed:
            return speed[i] / pooled
        around = [speed[j] for j in (max((j for j in speed if j < i), default=None),
                                     min((j for j in speed if j > i), default=None)) if j is not None]
        return statistics.fmean(around) / pooled

    walls: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for i, runs in placed.items():
        for r in runs:  # the latest record of a (mode, problem) wins, as in the tables
            walls[r["mode"]][f"{r['id']}#{r['sample']}"] = (r["wall_s"], r["wall_s"] / factor(i))
    ref = walls.get(reference, {})
    found = []
    for mode, mine in walls.items():
        common = sorted(set(mine) & set(ref))
        if mode == reference or not common:
            continue
        raw = statistics.fmean(ref[k][0] for k in common) / statistics.fmean(mine[k][0] for k in common)
        adj = statistics.fmean(ref[k][1] for k in common) / statistics.fmean(mine[k][1] for k in common)
        found.append({"mode": mode, "problems": len(common), "speedup": raw, "adjusted": adj})
    return found


def _segment_of(record: dict[str, Any], segments: Sequence[dict[str, Any]]) -> int | None:
    """The index of the latest segment that ran the record's mode and started by the time the
    record was written, and had not ended (or, killed before writing its end, had no successor
    started) then."""
    done = _when(record.get("finished_at"))
    if done is None:
        return None
    found = None
    for i, s in enumerate(segments):
        start = _when(s.get("started"))
        if record["mode"] not in (s.get("modes") or ()) or start is None or start > done:
            continue
        end = _when(s.get("ended")) or next(
            (t for later in segments[i + 1:] if (t := _when(later.get("started")))), None)
        if end is None or done <= end:
            found = i
    return found


def _when(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


def _small_speed(runs: Iterable[dict[str, Any]], modes: dict[str, dict[str, Any]]
                 ) -> dict[str, float | None]:
    """The small model's calls of ``runs``: how many, their tokens, and seconds per token pooled
    over small-only's one request (kind small; by name without settings) and over drafts."""
    parts: dict[str, list[float]] = {"one_request": [0, 0, 0], "drafts": [0, 0, 0]}
    for r in runs:
        kind = (modes.get(r["mode"]) or {}).get("kind")
        one = kind == "small" if modes else r["mode"] == SMALL_REFERENCE
        for c in r.get("trace") or []:
            if c.get("draft") is not None and c.get("draft_ms") and c.get("draft_tokens"):
                part = parts["one_request" if one else "drafts"]
                part[0] += 1
                part[1] += c["draft_tokens"]
                part[2] += c["draft_ms"] / 1000
    return {"small_calls": sum(p[0] for p in parts.values()),
            "small_tokens": sum(p[1] for p in parts.values()),
            **{f"{name}_s_per_token": (p[2] / p[1] if p[1] else None) for name, p in parts.items()}}
