"""What a benchmark's ``runs.jsonl`` says: a row per mode, paired comparisons, a cost model, plots.

Everything here is computed from the recorded runs (never from new model calls), so a report can be
rebuilt any time with ``specreason bench-report OUT``. Figures:

- per mode: accuracy (pass@1 averaged over samples), wall time per run (mean / median / p90),
  speedup against the reference mode (base-only) on the problems both finished, steps written by
  each model, acceptance rate, tokens (kept, drafted and rejected, written by the base, read by the
  judge and how many of those came from vLLM's prefix cache), the share of model time spent in
  draft / judge / base calls, and the judge's cost against regenerating the same steps;
- per mode against the reference: the paired accuracy difference with a bootstrap 95% interval, and
  McNemar's exact test on the discordant problems (one sample per problem);
- a cost model (:func:`cost_model`) fitted on the measured calls, which predicts each mode's
  speedup from draft/base decode speed, judge cost per new prefill token and the acceptance rate,
  and the same model with the speeds of a GPU setup (:data:`GPU_PROFILES`) to project there;
- the server's prefix-cache counters from ``/metrics``, read before and after each run segment.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specreason_graph.bench import META_FILE, PREFIX_COUNTERS, load_records

REFERENCE = "base-only"


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
        judge_prompt = sum(c["judge_prompt_tokens"] for c in judged)
        judge_cached = sum(c["judge_cached_tokens"] or 0 for c in judged)
        rows.append({
            "mode": mode, "runs": len(ok), "failed": len(runs) - len(ok),
            "problems": len({r["id"] for r in ok}),
            "accuracy": _mean([float(bool(r["correct"])) for r in ok]),
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


# --- prefix cache from /metrics ------------------------------------------------------------------

def prefix_cache(meta: dict[str, Any]) -> dict[str, float | None]:
    """Hit rate of each server's prefix cache over the benchmark's segments (counter deltas)."""
    queries_name, hits_name = PREFIX_COUNTERS
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for seg in meta.get("segments", []):
        before, after = seg.get("metrics_before") or {}, seg.get("metrics_after") or {}
        for url, b in before.items():
            a = after.get(url)
            if not a or not b:
                continue
            totals[url][0] += a[queries_name] - b[queries_name]
            totals[url][1] += a[hits_name] - b[hits_name]
    return {url: (hits / queries if queries else None) for url, (queries, hits) in totals.items()}


# --- the cost model ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """seconds = fixed + per_token × tokens (least squares over the measured calls)."""

    fixed: float
    per_token: float
    calls: int

    def __call__(self, tokens: float) -> float:
        return self.fixed + self.per_token * tokens


def fit(points: Sequence[tuple[float, float]]) -> Line | None:
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return Line(0.0, my / mx, len(points)) if mx else Line(my, 0.0, len(points))
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    if slope <= 0:  # too few or too noisy calls to see a per-token cost: a constant
        return Line(my, 0.0, len(points))
    if my - slope * mx < 0:  # a negative fixed cost is noise: fit through the origin instead
        return Line(0.0, sum(x * y for x, y in zip(xs, ys, strict=True))
                    / sum(x * x for x in xs), len(points))
    return Line(my - slope * mx, slope, len(points))


@dataclass(frozen=True)
class GpuProfile:
    """Speeds of a setup the CPU cannot measure; the default is the paper's, approximated."""

    name: str
    small_decode_tps: float
    base_decode_tps: float
    base_prefill_tps: float
    call_overhead_s: float
    note: str


GPU_PROFILES = {
    "paper-2xA6000": GpuProfile(
        "QwQ-32B (base, TP=2) + R1-Distill-1.5B (small) on 2×A6000, vLLM", 150.0, 20.0, 2000.0,
        0.02, "assumed from the GPUs' memory bandwidth and FLOPs, not measured; pass your own "
              "with --gpu small_tps,base_tps,base_prefill_tps,overhead_s"),
    "cpu-1-in-flight": GpuProfile(
        "this CPU pair with one run in flight", 10.0, 3.4, 42.0, 0.3,
        "single-stream speeds measured in ../shared/docs/serving.md (0.5B 10 tok/s, 1.5B 3.4 tok/s "
        "decode, ~42 tok/s prefill)"),
}


def parse_gpu(text: str) -> GpuProfile:
    if text in GPU_PROFILES:
        return GPU_PROFILES[text]
    try:
        small, base, prefill, overhead = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--gpu takes one of {', '.join(GPU_PROFILES)} or four numbers "
                         "small_decode_tps,base_decode_tps,base_prefill_tps,overhead_s") from None
    return GpuProfile("user-given", small, base, prefill, overhead, "speeds given by the user")


def cost_model(records: dict[str, dict[str, Any]], reference: str = REFERENCE,
               gpu: GpuProfile | None = None) -> dict[str, Any]:
    """Fit per-call latency lines on every recorded call, predict each mode's mean run time from its
    calls' token counts, and compare predicted speedups with the measured ones.

    - draft call: fixed + tokens / small decode speed (fitted on draft calls)
    - judge call: fixed + new (uncached) prefill tokens × cost per token (fitted on judge calls)
    - base call: fixed + tokens / base decode speed (fitted on regenerations and base-only steps)
    A mode's predicted time is the sum of its calls' predictions, so the model says where the time
    goes: with acceptance rate a, a SpecReason step costs draft + judge + (1 - a) × regeneration.
    """
    draft_pts, judge_pts, base_pts = [], [], []
    for r in records.values():
        for c in r.get("trace") or []:
            if c["draft"] is not None and c["draft_ms"]:
                draft_pts.append((c["draft_tokens"], c["draft_ms"] / 1000))
            if c["accepted"] is not None and c["judge_ms"] and not c.get("judge_error"):
                new = c["judge_prompt_tokens"] - (c["judge_cached_tokens"] or 0)
                judge_pts.append((new, c["judge_ms"] / 1000))
            if c["base_tokens"]:
                base_pts.append((c["base_tokens"], c["base_ms"] / 1000))
    lines = {"draft": fit(draft_pts), "judge": fit(judge_pts), "base": fit(base_pts)}

    def predict(run: dict[str, Any], speeds: dict[str, Any]) -> float:
        seconds = 0.0
        for c in run["trace"]:
            if c["draft"] is not None:
                seconds += speeds["draft"](c["draft_tokens"])
            if c["accepted"] is not None:
                seconds += speeds["judge"](c["judge_prompt_tokens"] - (c["judge_cached_tokens"] or 0))
            if c["base_tokens"]:
                seconds += speeds["base"](c["base_tokens"])
        return seconds

    by_mode: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records.values():
        if r.get("error") is None:
            by_mode[r["mode"]].append(r)
    result: dict[str, Any] = {"lines": {k: (v.__dict__ if v else None) for k, v in lines.items()},
                              "modes": {}}
    ok = all(lines[k] for k in ("draft", "judge", "base")) or (
        lines["base"] is not None and set(by_mode) <= {reference})
    if not ok or reference not in by_mode:
        return result
    filled = {k: v or Line(0.0, 0.0, 0) for k, v in lines.items()}
    cpu_ref = statistics.fmean(predict(r, filled) for r in by_mode[reference])
    gpu_speeds = None
    if gpu:
        gpu_speeds = {
            "draft": Line(gpu.call_overhead_s, 1 / gpu.small_decode_tps, 0),
            "judge": Line(gpu.call_overhead_s + 1 / gpu.base_decode_tps, 1 / gpu.base_prefill_tps, 0),
            "base": Line(gpu.call_overhead_s, 1 / gpu.base_decode_tps, 0)}
        gpu_ref = statistics.fmean(predict(r, gpu_speeds) for r in by_mode[reference])
        result["gpu"] = gpu.__dict__
    measured = {row["mode"]: row["speedup"] for row in mode_rows(records, reference)}
    for mode, runs in by_mode.items():
        predicted_s = statistics.fmean(predict(r, filled) for r in runs)
        entry: dict[str, Any] = {
            "predicted_s": predicted_s, "predicted_speedup": cpu_ref / predicted_s,
            "measured_speedup": measured.get(mode)}
        if measured.get(mode):
            entry["error"] = entry["predicted_speedup"] / measured[mode] - 1
        if gpu_speeds:
            gpu_s = statistics.fmean(predict(r, gpu_speeds) for r in runs)
            entry.update({"gpu_s": gpu_s, "gpu_speedup": gpu_ref / gpu_s})
        result["modes"][mode] = entry
    return result


# --- tables --------------------------------------------------------------------------------------

COLUMNS = [  # (key, header, format)
    ("mode", "mode", "{}"), ("runs", "runs", "{}"), ("accuracy", "accuracy", "{:.1%}"),
    ("mean_s", "mean s", "{:.1f}"), ("median_s", "median s", "{:.1f}"), ("p90_s", "p90 s", "{:.1f}"),
    ("speedup", "speedup", "{:.2f}×"), ("steps_small", "steps small", "{:.1f}"),
    ("steps_base", "steps base", "{:.1f}"), ("acceptance", "accept", "{:.0%}"),
    ("kept_tokens", "kept tok", "{:.0f}"), ("draft_tokens", "drafted tok", "{:.0f}"),
    ("rejected_tokens", "rejected tok", "{:.0f}"), ("base_tokens", "base tok", "{:.0f}"),
    ("judge_new_tokens", "judge new tok", "{:.0f}"), ("judge_cache_hit", "judge cache hit", "{:.0%}"),
    ("share_draft", "draft", "{:.0%}"), ("share_judge", "judge", "{:.0%}"),
    ("share_base", "base", "{:.0%}"), ("judge_vs_regen", "judge/regen", "{:.0%}"),
    ("failed", "failed", "{}"),
]


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    return fmt.format(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join(":---" if k == "mode" else "---:" for k, _, _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row.get(k), f) for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["mode"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- plots ---------------------------------------------------------------------------------------

def pareto(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Modes no other mode beats on both accuracy and mean latency."""
    points = [r for r in rows if r["accuracy"] is not None and r["mean_s"] is not None]
    return [r["mode"] for r in points if not any(
        o["accuracy"] >= r["accuracy"] and o["mean_s"] <= r["mean_s"]
        and (o["accuracy"], o["mean_s"]) != (r["accuracy"], r["mean_s"]) for o in points)]


def _figure() -> tuple[Any, Any]:
    """A latency (x) / accuracy (y) figure, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def _save(fig: Any, ax: Any, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel("mean wall time per problem (s)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_latency(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    front = set(pareto(rows))
    fig, ax = _figure()
    for r in rows:
        if r["accuracy"] is None or r["mean_s"] is None:
            continue
        ax.scatter(r["mean_s"], 100 * r["accuracy"], s=60,
                   marker="*" if r["mode"] in front else "o",
                   color="tab:red" if r["mode"] in front else "tab:blue")
        ax.annotate(r["mode"], (r["mean_s"], 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    pts = sorted((r["mean_s"], 100 * r["accuracy"]) for r in rows if r["mode"] in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts, strict=True), color="tab:red", linewidth=1, alpha=0.5,
                label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, ax, path, title)


def plot_threshold_sweep(rows: Sequence[dict[str, Any]], modes: dict[str, dict[str, Any]],
                         path: Path, title: str) -> Path:
    """SpecReason modes by threshold, one line per score method, base/small-only as references."""
    fig, ax = _figure()
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        s = modes.get(r["mode"], {})
        if r["accuracy"] is None or r["mean_s"] is None:
            continue
        if s.get("kind") == "spec":
            series[f"{s['score_method']} score"].append(
                (s["threshold"], r["mean_s"], 100 * r["accuracy"]))
        else:
            ax.scatter(r["mean_s"], 100 * r["accuracy"], marker="s", color="gray")
            ax.annotate(r["mode"], (r["mean_s"], 100 * r["accuracy"]),
                        textcoords="offset points", xytext=(5, -10), fontsize=8, color="gray")
    for label, points in series.items():
        points.sort()
        ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=label)
        for i, (t, x, y) in enumerate(points):  # alternate heights: close points stay legible
            ax.annotate(f"t={t:g}", (x, y), textcoords="offset points",
                        xytext=(5, 5 if i % 2 == 0 else -12), fontsize=8)
    if not series:
        ax.text(0.5, 0.5, "no SpecReason modes in this run", transform=ax.transAxes, ha="center")
    else:
        ax.legend(fontsize=8)
    return _save(fig, ax, path, title)


# --- the whole report ----------------------------------------------------------------------------

def build(out: Path, reference: str = REFERENCE, gpu: GpuProfile | None = None,
          title: str | None = None) -> dict[str, Any]:
    """Write summary.md / summary.csv / summary.json and the two plots into ``out``; return them."""
    out = Path(out)
    records = load_records(out)
    if not records:
        raise ValueError(f"{out} has no recorded runs yet")
    meta = json.loads((out / META_FILE).read_text()) if (out / META_FILE).exists() else {}
    modes = meta.get("settings", {}).get("modes", {})
    rows = mode_rows(records, reference, order=list(modes))
    comparisons = [c for r in rows if (c := paired(records, r["mode"], reference))]
    model = cost_model(records, reference, gpu)
    cache = prefix_cache(meta)
    concurrency = sorted({s["concurrency"] for s in meta.get("segments", []) if s.get("runs")})
    datasets = ", ".join(meta.get("settings", {}).get("dataset", [])) or "?"
    problems = len({r["id"] for r in records.values()})
    levels = "/".join(str(c) for c in concurrency) or "?"
    title = title or f"{datasets}, {problems} problems, concurrency {levels}"
    plot_accuracy_latency(rows, out / "accuracy_latency.png", title)
    plot_threshold_sweep(rows, modes, out / "threshold_sweep.png", "Threshold sweep — " + title)

    summary = {"title": title, "concurrency": concurrency, "rows": rows,
               "paired": comparisons, "cost_model": model, "prefix_cache": cache,
               "pareto": pareto(rows), "machine": meta.get("machine"),
               "settings": meta.get("settings"),
               "segments": [{k: v for k, v in s.items() if not k.startswith("metrics")}
                            for s in meta.get("segments", [])]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.csv").write_text(csv_text(rows))
    (out / "summary.md").write_text(markdown(summary) + "\n")
    return summary


def markdown(summary: dict[str, Any]) -> str:
    s = summary
    ctx = (s.get("settings") or {}).get("context", {})
    levels = "/".join(str(c) for c in s["concurrency"]) or "?"
    lines = [f"**{s['title']}** — timings taken with {levels} run(s) in flight, modes "
             "interleaved problem by problem so they share the load.", ""]
    if ctx:
        lines += [f"Budget {ctx.get('token_budget')} tokens, ≤ {ctx.get('max_step_tokens')} per "
                  f"step, temperature {ctx.get('temperature')}, top_p {ctx.get('top_p')}; "
                  f"base `{ctx.get('base_model')}`, small `{ctx.get('small_model')}`.", ""]
    lines += [markdown_table(s["rows"]), "",
              "speedup: mean wall time of base-only / of the mode on the problems both finished. "
              "draft/judge/base: share of model-call time. judge/regen: judge time against the "
              "base model writing the judged steps itself. judge cache hit: prompt tokens of judge "
              "calls served from vLLM's prefix cache.", ""]
    if s["paired"]:
        lines += ["| mode vs base-only | problems | accuracy diff | bootstrap 95% CI | McNemar p |",
                  "|:---|---:|---:|---:|---:|"]
        for c in s["paired"]:
            lines.append(f"| {c['mode']} | {c['problems']} | {c['diff']:+.1%} | "
                         f"[{c['ci_low']:+.1%}, {c['ci_high']:+.1%}] | "
                         f"{cell(c['mcnemar_p'], '{:.3f}')} |")
        lines.append("")
    cm = s["cost_model"]
    if cm.get("modes"):
        fitted = cm["lines"]
        lines += ["Cost model (per call: fixed seconds + seconds per token, least squares over "
                  "every recorded call):", ""]
        for name, what in (("draft", "small decode"), ("judge", "judge per new prefill token"),
                           ("base", "base decode")):
            f = fitted.get(name)
            if f:
                lines.append(f"- {name}: {f['fixed']:.2f} s + {1000 * f['per_token']:.1f} ms/token "
                             f"({what}; {f['calls']} calls)")
        gpu = cm.get("gpu")
        header = "| mode | predicted s | predicted speedup | measured speedup | error |"
        rule = "|:---|---:|---:|---:|---:|"
        if gpu:
            header += " GPU projected speedup |"
            rule += "---:|"
        lines += ["", header, rule]
        for mode, e in cm["modes"].items():
            row = (f"| {mode} | {e['predicted_s']:.1f} | {e['predicted_speedup']:.2f}× | "
                   f"{cell(e.get('measured_speedup'), '{:.2f}×')} | {cell(e.get('error'), '{:+.0%}')} |")
            if gpu:
                row += f" {e['gpu_speedup']:.2f}× |"
            lines.append(row)
        if gpu:
            lines += ["", f"GPU projection: {gpu['name']} — small {gpu['small_decode_tps']:g} tok/s, "
                          f"base {gpu['base_decode_tps']:g} tok/s decode and "
                          f"{gpu['base_prefill_tps']:g} tok/s prefill, {gpu['call_overhead_s']:g} s "
                          f"per call ({gpu['note']}); same token counts and acceptance as measured."]
        lines.append("")
    if s["prefix_cache"]:
        lines.append("Prefix-cache hit rate from `/metrics` over the run (all requests): " + ", ".join(
            f"{url} {cell(rate, '{:.0%}')}" for url, rate in s["prefix_cache"].items()) + ".")
    return "\n".join(lines)


def splice(document: Path, out: Path, summary_md: str) -> None:
    """Put ``summary_md`` (and the folder's two plots) into ``document`` between the markers
    ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (NAME: the results folder's name), or
    append a marked section if there is none yet. Everything outside the markers is left alone."""
    name = Path(out).name
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    try:
        rel = Path(out).resolve().relative_to(Path(document).resolve().parent).as_posix()
    except ValueError:
        rel = Path(out).resolve().as_posix()
    body = (f"{start}\n{summary_md.strip()}\n\n"
            f"![accuracy vs latency]({rel}/accuracy_latency.png) "
            f"![threshold sweep]({rel}/threshold_sweep.png)\n{end}")
    text = Path(document).read_text(encoding="utf-8") if Path(document).exists() else ""
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + body + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + body + "\n"
    Path(document).write_text(text, encoding="utf-8")

