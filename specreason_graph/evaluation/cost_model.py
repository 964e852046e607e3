"""A cost model fitted on the recorded calls: it predicts each mode's speedup from draft/base decode
speed, judge cost per new prefill token and the acceptance rate, and projects it onto the speeds of a
GPU setup (:data:`GPU_PROFILES`) or of this CPU at one run in flight.

Token-level speculative decoding inside the base server (SpecDecode: vLLM's speculative config, a
draft model proposing k tokens that the base model verifies in one forward pass over k + 1
positions, keeping the accepted prefix and one token of its own). With per-token acceptance α
(tokens accepted independently; Leviathan et al. 2023) one verification pass yields

    E = (1 − α^(k+1)) / (1 − α)        tokens (k + 1 at α = 1),

so the base model's decode time per token becomes

    c_sd = (k · c_draft + c_verify) / E.

c_draft is the draft model's per-token decode time inside the base server, first estimated by the
small server's fitted decode line (the same model); c_verify = v · c_base is one base forward pass
over k + 1 tokens, c_base the plain base model's per-token decode time (the base line fitted on the
plain server's calls) and v the verify factor fitted on the one-request speculative runs (their
measured seconds per token solved for v). k and α come from each mode's counters (``spec_decode``
in its records): k = draft_tokens / drafts, and α solves α(1 − α^k)/(1 − α) = accepted / drafts
(the accepted tokens a draft is expected to have), so that E = 1 + accepted / drafts. The calls of a
speculating mode are predicted with its own c_sd per base token and the plain lines otherwise (the
judge's one-token prefill on the speculative server included); the calls of speculating modes are
left out of the plain lines' fit. :func:`spec_decode_check` sets the predicted mean times beside
the measured ones: SpecDecode's, from which v is fitted, agrees by construction; SpecReason +
SpecDecode's is the test.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from specreason_graph.evaluation.stats import (
    REFERENCE,
    spec_decode_totals,
    speculates,
    speculating,
)

# --- per-call lines --------------------------------------------------------------------------------

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
        "single-stream speeds measured in docs/serving.md (0.5B 10 tok/s, 1.5B 3.4 tok/s "
        "decode, ~42 tok/s prefill)"),
}


def parse_gpu(text: str, flag: str = "--gpu") -> GpuProfile:
    if text in GPU_PROFILES:
        return GPU_PROFILES[text]
    try:
        small, base, prefill, overhead = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} takes one of {', '.join(GPU_PROFILES)} or four numbers "
                         "small_decode_tps,base_decode_tps,base_prefill_tps,overhead_s") from None
    return GpuProfile("user-given", small, base, prefill, overhead, "speeds given by the user")


def profile_lines(gpu: GpuProfile) -> dict[str, Line]:
    """A speed profile as the per-call lines :func:`predict` takes."""
    return {"draft": Line(gpu.call_overhead_s, 1 / gpu.small_decode_tps, 0),
            "judge": Line(gpu.call_overhead_s + 1 / gpu.base_decode_tps, 1 / gpu.base_prefill_tps, 0),
            "base": Line(gpu.call_overhead_s, 1 / gpu.base_decode_tps, 0),
            "small": Line(gpu.call_overhead_s, 1 / gpu.small_decode_tps, 0)}


def predict(run: dict[str, Any], speeds: dict[str, Line], one_request: str | None = None) -> float:
    """Seconds of a recorded run's model calls at ``speeds``. ``one_request`` ("base" or "small"):
    the run's tokens as that model writing the whole solution in one call (a one-request baseline
    predicted from a step-by-step run)."""
    if one_request:
        return speeds[one_request](sum(c["tokens"] for c in run["trace"]))
    seconds = 0.0
    for c in run["trace"]:
        if c["draft"] is not None:
            seconds += speeds["draft"](c["draft_tokens"])
        if c["accepted"] is not None:
            seconds += speeds["judge"](c["judge_prompt_tokens"] - (c["judge_cached_tokens"] or 0))
        if c["base_tokens"]:
            seconds += speeds["base"](c["base_tokens"])
    return seconds


def fit_lines(records: dict[str, dict[str, Any]]) -> dict[str, Line | None]:
    """The draft, judge and base per-call lines fitted on every recorded call of the plain base
    server (runs whose base server speculated are left out: its decode speed is another)."""
    draft_pts, judge_pts, base_pts = [], [], []
    fast = speculating(records)
    for r in records.values():
        if r["mode"] in fast:
            continue
        for c in r.get("trace") or []:
            if c["draft"] is not None and c["draft_ms"]:
                draft_pts.append((c["draft_tokens"], c["draft_ms"] / 1000))
            if c["accepted"] is not None and c["judge_ms"] and not c.get("judge_error"):
                new = c["judge_prompt_tokens"] - (c["judge_cached_tokens"] or 0)
                judge_pts.append((new, c["judge_ms"] / 1000))
            if c["base_tokens"]:
                base_pts.append((c["base_tokens"], c["base_ms"] / 1000))
    return {"draft": fit(draft_pts), "judge": fit(judge_pts), "base": fit(base_pts)}


def cost_model(records: dict[str, dict[str, Any]], rows: Sequence[dict[str, Any]],
               reference: str = REFERENCE, gpu: GpuProfile | None = None) -> dict[str, Any]:
    """Fit per-call latency lines on every recorded call, predict each mode's mean run time from its
    calls' token counts, and compare predicted speedups with the measured ones (``rows``: the
    per-mode figures of :func:`.stats.mode_rows`).

    - draft call: fixed + tokens / small decode speed (fitted on draft calls)
    - judge call: fixed + new (uncached) prefill tokens × cost per token (fitted on judge calls)
    - base call: fixed + tokens / base decode speed (fitted on regenerations and base-only steps)
    A mode's predicted time is the sum of its calls' predictions, so the model says where the time
    goes: with acceptance rate a, a SpecReason step costs draft + judge + (1 - a) × regeneration.
    """
    lines = fit_lines(records)
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
    sd = spec_decode_fit(by_mode, filled)
    result["spec_decode"] = sd if sd["modes"] or "missing" in sd else None  # None: nothing speculates
    cpu_ref = statistics.fmean(predict(r, filled) for r in by_mode[reference])
    gpu_speeds = None
    if gpu:
        gpu_speeds = profile_lines(gpu)
        gpu_ref = statistics.fmean(predict(r, gpu_speeds) for r in by_mode[reference])
        result["gpu"] = gpu.__dict__
    measured = {row["mode"]: row["speedup"] for row in rows}
    for mode, runs in by_mode.items():
        speeds = filled
        if any(map(speculates, runs)):
            if mode not in sd["modes"]:  # no verify factor (or no counters): nothing to say
                continue
            speeds = {**filled, "base": Line(filled["base"].fixed, sd["modes"][mode]["per_token_s"], 0)}
        predicted_s = statistics.fmean(predict(r, speeds) for r in runs)
        entry: dict[str, Any] = {
            "predicted_s": predicted_s,
            "predicted_speedup": cpu_ref / predicted_s if predicted_s else None,
            "measured_speedup": measured.get(mode)}
        if measured.get(mode):
            entry["error"] = entry["predicted_speedup"] / measured[mode] - 1
        if gpu and gpu_speeds:
            on_gpu = gpu_speeds if speeds is filled else {
                **gpu_speeds, "base": Line(gpu.call_overhead_s, _gpu_spec_per_token(
                    gpu, sd["modes"][mode], sd["verify_factor"]), 0)}
            gpu_s = statistics.fmean(predict(r, on_gpu) for r in runs)
            entry.update({"gpu_s": gpu_s, "gpu_speedup": gpu_ref / gpu_s})
        result["modes"][mode] = entry
        if mode in sd["modes"]:
            sd["modes"][mode].update(spec_decode_check(runs, predicted_s))
    return result


# --- token-level speculative decoding in the base server ------------------------------------------

def expected_tokens(alpha: float, k: float) -> float:
    """E = (1 − α^(k+1)) / (1 − α): the tokens one verification pass of k drafted tokens yields
    (the accepted prefix and the base model's own next token), k + 1 at α = 1."""
    if alpha >= 1:
        return k + 1
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def acceptance_alpha(accepted_per_draft: float, k: float) -> float:
    """The per-token acceptance α whose expected accepted tokens per draft of k,
    α(1 − α^k)/(1 − α) = E − 1, is ``accepted_per_draft`` (bisection: E rises with α)."""
    if accepted_per_draft <= 0:
        return 0.0
    if accepted_per_draft >= k:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if expected_tokens(mid, k) - 1 < accepted_per_draft else (low, mid)
    return (low + high) / 2


def spec_decode_per_token(c_draft: float, c_verify: float, alpha: float, k: float) -> float:
    """The base model's seconds per token under speculative decoding: (k · c_draft + c_verify) / E."""
    return (k * c_draft + c_verify) / expected_tokens(alpha, k)


def speculation(runs: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """k, α and E of the runs' speculative decoding, from their counters summed (None without)."""
    total = spec_decode_totals(runs)
    if not total or not total["drafts"]:
        return None
    k = total["draft_tokens"] / total["drafts"]
    per_draft = total["accepted_tokens"] / total["drafts"]
    alpha = acceptance_alpha(per_draft, k)
    return {"k": k, "accepted_per_draft": per_draft, "alpha": alpha,
            "expected_tokens": expected_tokens(alpha, k), "runs": total["runs"]}


def _one_request_base(run: dict[str, Any]) -> bool:
    """Every call of the run is the base model writing (no draft, no judge): SpecDecode's runs."""
    trace = run.get("trace") or []
    return bool(trace) and all(c["draft"] is None and c["accepted"] is None and c["base_tokens"]
                               for c in trace)


def spec_decode_fit(by_mode: dict[str, list[dict[str, Any]]], lines: dict[str, Line]
                    ) -> dict[str, Any]:
    """The speculative-decoding term's parts: c_base and the per-call fixed cost from the plain
    base line, c_draft from the draft line, the verify factor v fitted on the one-request
    speculating runs (their base calls' seconds beyond the fixed cost, per token, is
    (k · c_draft + v · c_base) / E at their own k and α), and each speculating mode's k, α, E and
    predicted seconds per base token. ``missing`` says what could not be fitted."""
    c_base, fixed, c_draft = lines["base"].per_token, lines["base"].fixed, lines["draft"].per_token
    found: dict[str, Any] = {"c_base": c_base, "c_draft": c_draft, "fixed": fixed,
                             "verify_factor": None, "fitted_on": [], "modes": {}}
    fast = {m: runs for m, runs in by_mode.items() if any(map(speculates, runs))}
    if not fast:
        return found
    fitting = {m: [r for r in runs if _one_request_base(r) and speculates(r)]
               for m, runs in fast.items()}
    fitting = {m: runs for m, runs in fitting.items() if runs}
    pooled = [r for runs in fitting.values() for r in runs]
    spec = speculation(pooled)
    calls = [c for r in pooled for c in r["trace"]]
    tokens = sum(c["base_tokens"] for c in calls)
    if spec is None or not tokens or not c_base:
        found["missing"] = ("no one-request run on the speculative server with its counters and "
                            "base tokens, or no plain base line, to fit the verify factor on")
        return found
    measured = (sum(c["base_ms"] for c in calls) / 1000 - fixed * len(calls)) / tokens
    v = (measured * spec["expected_tokens"] - spec["k"] * c_draft) / c_base
    found.update(verify_factor=v, fitted_on=sorted(fitting), measured_per_token_s=measured)
    for mode, runs in fast.items():
        if (mine := speculation(runs)) is not None:
            found["modes"][mode] = {**mine, "per_token_s": spec_decode_per_token(
                c_draft, v * c_base, mine["alpha"], mine["k"])}
    return found


def spec_decode_check(runs: Sequence[dict[str, Any]], predicted_s: float
                      ) -> dict[str, float | None]:
    """A speculating mode's predicted mean seconds beside its measured mean wall time."""
    walls = [r["wall_s"] for r in runs if r.get("error") is None]
    measured = statistics.fmean(walls)
    return {"predicted_s": predicted_s, "measured_s": measured,
            "error": predicted_s / measured - 1 if measured else None}


def _gpu_spec_per_token(gpu: GpuProfile, mode: dict[str, float], verify_factor: float) -> float:
    """The speculative term at a GPU profile's speeds: the small model drafts at its decode speed,
    a verification pass costs the verify factor times one base token (same k and α)."""
    return spec_decode_per_token(1 / gpu.small_decode_tps, verify_factor / gpu.base_decode_tps,
                                 mode["alpha"], mode["k"])


# --- checked at one run in flight ----------------------------------------------------------------

def _signature(settings: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two modes of two benchmarks the same method (one-request and step-by-step
    baselines match: the prediction says which of the two it is for)."""
    kind = str(settings.get("kind"))
    if kind.split("-")[0] in ("base", "small"):
        return (kind.split("-")[0],)
    return (kind, settings.get("judge", "score"), settings.get("threshold"),
            settings.get("score_method"), settings.get("cascade") if settings.get("judge") ==
            "cascade" else None)


def one_in_flight_check(loaded: dict[str, dict[str, Any]], loaded_modes: dict[str, dict[str, Any]],
                        measured: dict[str, dict[str, Any]], measured_modes: dict[str, dict[str, Any]],
                        rows: Sequence[dict[str, Any]], speeds: GpuProfile,
                        reference: str = REFERENCE, tolerance: float = 0.10) -> dict[str, Any]:
    """The cost model's prediction for one run in flight, made from a loaded benchmark's calls
    (token counts, steps, acceptance) at single-stream ``speeds``, beside what a benchmark at
    concurrency 1 measured (``measured`` and its ``rows``). Modes are matched by method
    (:func:`_signature`); a one-request baseline is predicted as one call of the loaded run's tokens.

    The why of a miss is in the same result: ``speeds`` against the per-call lines fitted on the
    measured run, and the loaded run's tokens and acceptance against the measured run's.
    """
    lines = profile_lines(speeds)
    ok: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in loaded.values():
        if r.get("error") is None:
            ok[r["mode"]].append(r)
    by_method: dict[tuple[Any, ...], str] = {}
    loaded_fast = speculating(loaded)
    for name, settings in loaded_modes.items():
        if ok.get(name) and name not in loaded_fast:
            by_method.setdefault(_signature(settings), name)
    fast = speculating(measured)
    row_of = {row["mode"]: row for row in rows}
    result: dict[str, Any] = {"speeds": speeds.__dict__, "tolerance": tolerance, "modes": []}
    ref = measured_modes.get(reference)
    ref_loaded = by_method.get(_signature(ref)) if ref else None
    if ref is None or ref_loaded is None or reference not in row_of:
        result["missing"] = f"no {reference} in both runs to compare against"
        return result
    ref_s = statistics.fmean(predict(r, lines, ref.get("one_request")) for r in ok[ref_loaded])
    for name, settings in measured_modes.items():
        row, source = row_of.get(name), by_method.get(_signature(settings))
        if row is None or source is None or name in fast:  # no plain run predicts these
            continue
        predicted_s = statistics.fmean(predict(r, lines, settings.get("one_request"))
                                       for r in ok[source])
        loaded_row = _tokens(ok[source])
        entry = {"mode": name, "loaded_mode": source, "predicted_s": predicted_s,
                 "measured_s": row["mean_s"], "loaded_tokens": loaded_row["tokens"],
                 "measured_tokens": row.get("kept_tokens"), "loaded_acceptance":
                 loaded_row["acceptance"], "measured_acceptance": row.get("acceptance")}
        if name != reference and row.get("speedup"):
            entry["predicted_speedup"] = ref_s / predicted_s
            entry["measured_speedup"] = row["speedup"]
            entry["error"] = entry["predicted_speedup"] / row["speedup"] - 1
        result["modes"].append(entry)
    errors = [e["error"] for e in result["modes"] if "error" in e]
    result["within"] = bool(errors) and all(abs(e) <= tolerance for e in errors)
    fitted = fit_lines(measured)
    result["speeds_vs_measured"] = {
        part: {"assumed": lines[part].__dict__, "measured": fitted[part].__dict__ if fitted[part]
               else None} for part in ("draft", "judge", "base")}
    return result


def _tokens(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    judged = [c for r in runs for c in r["trace"] if c["accepted"] is not None]
    return {"tokens": statistics.fmean(sum(c["tokens"] for c in r["trace"]) for r in runs),
            "acceptance": sum(bool(c["accepted"]) for c in judged) / len(judged) if judged else None}
