"""A benchmark summary as text: the per-mode table (Markdown, CSV), the report's Markdown, and the
splice that puts it into a document such as BENCHMARKS.md."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# --- tables --------------------------------------------------------------------------------------

COLUMNS = [  # (key, header, format)
    ("mode", "mode", "{}"), ("runs", "runs", "{}"), ("accuracy", "accuracy", "{:.1%}"),
    ("mean_s", "mean s", "{:.1f}"), ("median_s", "median s", "{:.1f}"), ("p90_s", "p90 s", "{:.1f}"),
    ("speedup", "speedup", "{:.2f}×"), ("steps_small", "steps small", "{:.1f}"),
    ("steps_base", "steps base", "{:.1f}"), ("acceptance", "accept", "{:.0%}"),
    ("spec_decode_acceptance", "SD accept", "{:.0%}"),
    ("spec_decode_accepted_per_draft", "SD tok/draft", "{:.2f}"),
    ("kept_tokens", "kept tok", "{:.0f}"), ("draft_tokens", "drafted tok", "{:.0f}"),
    ("rejected_tokens", "rejected tok", "{:.0f}"), ("base_tokens", "base tok", "{:.0f}"),
    ("judge_new_tokens", "judge new tok", "{:.0f}"), ("judge_cache_hit", "judge cache hit", "{:.0%}"),
    ("share_draft", "draft", "{:.0%}"), ("share_judge", "judge", "{:.0%}"),
    ("share_base", "base", "{:.0%}"), ("judge_vs_regen", "judge/regen", "{:.0%}"),
    ("same_output", "same text", "{}"), ("failed", "failed", "{}"),
    ("accuracy_problems", "accuracy on", "{}"), ("judge_errors", "judge errors", "{}"),
]

BLANK_WHEN_NONE = {"same_output"}
"""Columns that do not apply to most modes: left blank there rather than marked as missing."""


def cell(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    return fmt.format(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|" + "|".join(":---" if k == "mode" else "---:" for k, _, _ in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(
            "" if k in BLANK_WHEN_NONE and row.get(k) is None else cell(row.get(k), f)
            for k, _, f in COLUMNS) + " |")
    return "\n".join(lines)


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["mode"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()



# --- the report's Markdown ------------------------------------------------------------------

def markdown(summary: dict[str, Any]) -> str:
    s = summary
    ctx = (s.get("settings") or {}).get("context", {})
    levels = "/".join(str(c) for c in s["concurrency"]) or "?"
    lines = [f"**{s['title']}** — timings taken with {levels} run(s) in flight, modes "
             "interleaved problem by problem so they share the load.", ""]
    if load := s.get("load"):
        seen = load["runs"] - load["load_unknown"]
        unknown = (f"the load of {load['load_unknown']} runs is not known (recorded before loads "
                   "were, an excess seen by the first, peak-only watch, or too short to sample)")
        excess = load.get("excess_by_mode") or {}
        if seen:
            lines += [f"Server load: {seen} of {load['runs']} runs sampled vLLM's queues while in "
                      f"flight (peak {load['peak_requests']:g} request(s) on the servers at once); "
                      + (f"{sum(excess.values())} of them saw more requests than the bench's own "
                         "for 10 s or more (" + ", ".join(f"{m} ×{n}" for m, n in excess.items())
                         + ")" if excess else "none saw more requests than the bench's own")
                      + (f"; {unknown}" if load["load_unknown"] else "")
                      + (f"; {load['gauge_checked']} of them read the gauges only on servers whose "
                         f"token counters moved ({load['stale_samples']} sample(s) where a lagging "
                         "gauge alone would have counted an excess)"
                         if load.get("gauge_checked") else "") + ".", ""]
        else:
            lines += [f"Server load: {unknown[0].upper()}{unknown[1:]}.", ""]
    if ctx:
        lines += [f"Budget {ctx.get('token_budget')} tokens, ≤ {ctx.get('max_step_tokens')} per "
                  f"step, temperature {ctx.get('temperature')}, top_p {ctx.get('top_p')}; "
                  f"base `{ctx.get('base_model')}`, small `{ctx.get('small_model')}`.", ""]
    lines += [markdown_table(s["rows"]), "",
              "accuracy and speedup: on the problems the mode and base-only both finished "
              "(accuracy on: how many; a run that failed is counted in failed, not in accuracy). "
              "speedup: mean wall time of base-only / of the mode. judge errors: judge replies "
              "that could not be read (scored 0, the step rewritten by the base model). "
              "draft/judge/base: share of model-call time. judge/regen: judge time against the "
              "base model writing the judged steps itself. judge cache hit: prompt tokens of judge "
              "calls served from vLLM's prefix cache."
              + (" SD accept / SD tok/draft: the base server's speculative decoding, the share of "
                 "drafted tokens it accepted and the accepted tokens per draft (vLLM's counters "
                 "over the mode's runs)." if any(r.get("spec_decode_acceptance") is not None
                                                 for r in s["rows"]) else "")
              + (" same text: on how many problems the mode's whole solution is base-only's word "
                 "for word (greedy decoding: lossless speculation changes no token)."
                 if any(r.get("same_output") for r in s["rows"]) else ""), ""]
    if s["paired"]:
        lines += ["| mode vs base-only | problems | accuracy diff | bootstrap 95% CI | McNemar p |",
                  "|:---|---:|---:|---:|---:|"]
        for c in s["paired"]:
            lines.append(f"| {c['mode']} | {c['problems']} | {c['diff']:+.1%} | "
                         f"[{c['ci_low']:+.1%}, {c['ci_high']:+.1%}] | "
                         f"{cell(c['mcnemar_p'], '{:.3f}')} |")
        lines.append("")
    if s.get("above_frontier"):
        lines += [frontier_markdown(s["above_frontier"]), ""]
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
    if cm.get("spec_decode"):
        lines += [spec_decode_markdown(cm["spec_decode"]), ""]
    if s.get("cost_check"):
        lines += [cost_check_markdown(s["cost_check"]), ""]
    if s.get("drift"):
        lines += [drift_markdown(s["drift"]), ""]
    if s["prefix_cache"]:
        lines.append("Prefix-cache hit rate from `/metrics` over the run (all requests): " + ", ".join(
            f"{url} {cell(rate, '{:.0%}')}" for url, rate in s["prefix_cache"].items()) + ".")
    return "\n".join(lines)


def frontier_markdown(found: Sequence[dict[str, Any]]) -> str:
    """Each judging mode's distance above the frontier of the modes that do not judge."""
    names = ", ".join(found[0]["frontier"])
    lines = ["| mode vs the frontier | problems | accuracy above the frontier | bootstrap 95% CI |",
             "|:---|---:|---:|---:|"]
    for c in found:
        margin = f"{c['margin']:+.1%}"
        if c["faster"]:
            margin += f" against {c['fastest']} (faster than every non-judging mode)"
        lines.append(f"| {c['mode']} | {c['problems']} | {margin} | "
                     f"[{c['ci_low']:+.1%}, {c['ci_high']:+.1%}] |")
    lines += ["", f"The frontier of the modes that do not judge ({names}): sending whole problems "
              "at random among them reaches every point of it — the upper concave envelope of "
              "their (mean latency, accuracy) points, flat beyond the most accurate one — on the "
              "problems the mode and all of them finished. A mode is worth its judge only above "
              "it. Faster than every one of them the frontier is not defined: such a mode is "
              "given its distance to the fastest one's accuracy, and only that."]
    return "\n".join(lines)


def spec_decode_markdown(sd: dict[str, Any]) -> str:
    """The cost model's speculative-decoding term, its fitted parts, and its check per mode."""
    if sd.get("missing"):
        return f"Speculative decoding in the base server not modelled: {sd['missing']}."
    lines = ["Speculative decoding in the base server (per base token (k · c_draft + c_verify) / E, "
             "E = (1 − α^(k+1)) / (1 − α), Leviathan et al. 2023): c_base "
             f"{1000 * sd['c_base']:.1f} ms/token (plain base line), c_draft "
             f"{1000 * sd['c_draft']:.1f} ms/token (the small server's draft line), c_verify = "
             f"{sd['verify_factor']:.2f} × c_base, the factor fitted on "
             f"{', '.join(sd['fitted_on'])} ({1000 * sd['measured_per_token_s']:.1f} ms per base "
             "token measured there beyond the fixed cost per call). k: drafted tokens per draft, "
             "α solved from the accepted tokens per draft.", "",
             "| mode | k | accepted/draft | α | E | ms/base token | predicted s | measured s | error |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, e in sd["modes"].items():
        lines.append(f"| {mode} | {e['k']:.2f} | {e['accepted_per_draft']:.2f} | {e['alpha']:.2f} | "
                     f"{e['expected_tokens']:.2f} | {1000 * e['per_token_s']:.1f} | "
                     f"{cell(e.get('predicted_s'), '{:.1f}')} | {cell(e.get('measured_s'), '{:.1f}')} | "
                     f"{cell(e.get('error'), '{:+.0%}')} |")
    lines += ["", f"{', '.join(sd['fitted_on'])}: in-sample (the verify factor is fitted on it); "
              "the other modes test the term. Predicted: the mode's model calls; measured: its "
              "mean wall time."]
    return "\n".join(lines)


def drift_markdown(drift: dict[str, Any]) -> str:
    """How fast the small model wrote in each segment, and each group of segments against the
    first: the modes of different groups ran at different times, and their speedups hold that."""
    groups = "; ".join(f"{g['group']}: {', '.join(g['modes'])}" for g in drift["groups"])
    lines = [f"**Drift between segments.** The modes ran in segments of different modes ({groups}). "
             "The small model's seconds per generated token on its server, which every segment "
             "used (small-only's one request and the drafts of the step-by-step modes apart):", "",
             "| segment | group | started | ended | runs | small calls | s/token one request | "
             "s/token drafts |", "|---:|:---|:---|:---|---:|---:|---:|---:|"]
    for r in drift["segments"]:
        lines.append(f"| {r['segment']} | {r['group']} | {r['started']} | {r['ended'] or '–'} | "
                     f"{r['runs']} | {r['small_calls']} | "
                     f"{cell(r['one_request_s_per_token'], '{:.3f}')} | "
                     f"{cell(r['drafts_s_per_token'], '{:.3f}')} |")
    said = [f"{g['group']} against A: one request "
            f"{cell(g['ratio_one_request'], '×{:.3f}')}, drafts {cell(g['ratio_drafts'], '×{:.3f}')}"
            for g in drift["groups"][1:]]
    lines += ["", "; ".join(said) + " (above 1: the machine was slower than in A; a speedup "
              "between groups holds this drift as well as the method)."]
    if drift.get("adjusted"):
        lines += ["", "Adjusted for it (each run's time divided by its segment's draft speed "
                  "relative to all segments'; a segment that wrote no drafts takes the mean of the ones "
                  "just before and after it; an "
                  "estimate that assumes the base model slowed as the small one did): "
                  + "; ".join(f"{a['mode']} {a['speedup']:.2f}× → {a['adjusted']:.2f}×"
                              for a in drift["adjusted"]) + "."]
    return "\n".join(lines)


def cost_check_markdown(check: dict[str, Any]) -> str:
    """The cost model's one-run-in-flight prediction (fitted on a loaded run) against this run."""
    sp = check["speeds"]
    lines = [f"**Cost model checked at one run in flight.** Predicted from the calls of "
             f"`{check['fitted_on']}` (a loaded run: its tokens, steps and acceptance) at the "
             f"single-stream speeds '{sp['name']}' (small {sp['small_decode_tps']:g} tok/s, base "
             f"{sp['base_decode_tps']:g} tok/s decode, {sp['base_prefill_tps']:g} tok/s prefill, "
             f"{sp['call_overhead_s']:g} s per call), against this run's measured times.", ""]
    if check.get("missing"):
        return "\n".join([*lines, f"Not checked: {check['missing']}."])
    lines += ["| mode | fitted on | tokens/run (loaded → here) | predicted s | measured s | "
              "predicted speedup | measured speedup | error |", "|:---|:---|---:|---:|---:|---:|---:|---:|"]
    for e in check["modes"]:
        lines.append(f"| {e['mode']} | {e['loaded_mode']} | {e['loaded_tokens']:.0f} → "
                     f"{cell(e['measured_tokens'], '{:.0f}')} | {e['predicted_s']:.1f} | "
                     f"{cell(e['measured_s'], '{:.1f}')} | {cell(e.get('predicted_speedup'), '{:.2f}×')} | "
                     f"{cell(e.get('measured_speedup'), '{:.2f}×')} | {cell(e.get('error'), '{:+.0%}')} |")
    errors = [e for e in check["modes"] if "error" in e]
    tolerance = f"{check['tolerance']:.0%}"
    if check["within"]:
        lines += ["", f"Every predicted speedup is within {tolerance} of the measured one."]
    else:
        missed = sorted((e for e in errors if abs(e["error"]) > check["tolerance"]),
                        key=lambda e: -abs(e["error"]))
        said = [f"{e['mode']} {'is off ' if i == 0 else ''}by {e['error']:+.0%}"
                for i, e in enumerate(missed)]
        lines += ["", f"Not within {tolerance}" + (f": {', '.join(said)}." if said
                                                   else ": nothing to compare.")]
    why = []
    for part, what in (("draft", "small decode"), ("base", "base decode"),
                       ("judge", "judge prefill")):
        pair = check["speeds_vs_measured"][part]
        if pair["measured"] and pair["measured"]["per_token"]:
            why.append(f"{what} {1 / pair['assumed']['per_token']:.1f} tok/s assumed, "
                       f"{1 / pair['measured']['per_token']:.1f} measured here "
                       f"(fixed {pair['measured']['fixed']:.2f} s per call, assumed "
                       f"{pair['assumed']['fixed']:.2f})")
    if why:
        lines += ["Where the assumed speeds and this run differ (per-call lines fitted on this run's "
                  "calls): " + "; ".join(why) + ". A prediction is as good as these speeds and "
                  "the loaded run's token counts, which come from other problems or samples."]
    return "\n".join(lines)


def splice(document: Path, out: Path, summary_md: str, plots: bool = True) -> None:
    """Put ``summary_md`` (and the folder's two plots) into ``document`` between the markers
    ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (NAME: the results folder's name), or
    append a marked section if there is none yet. Everything outside the markers is left alone."""
    name = Path(out).name
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    try:
        rel = Path(out).resolve().relative_to(Path(document).resolve().parent).as_posix()
    except ValueError:
        rel = Path(out).resolve().as_posix()
    pictures = (f"\n\n![accuracy vs latency]({rel}/accuracy_latency.png) "
                f"![threshold sweep]({rel}/threshold_sweep.png)") if plots else ""
    body = f"{start}\n{summary_md.strip()}{pictures}\n{end}"
    text = Path(document).read_text(encoding="utf-8") if Path(document).exists() else ""
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + body + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + body + "\n"
    Path(document).write_text(text, encoding="utf-8")


# --- a calibration's Markdown --------------------------------------------------------------------

def calibration_markdown(found: dict[str, Any], slice_text: str) -> str:
    """The AUROC table of every signal, the best setting of each judge, and the choice."""
    lines = [f"Calibration slice: {slice_text}. {found['drafts']} drafts judged by every judge; "
             f"{found['labelled']} carry a rollout label ({found['bad']} bad); "
             f"{found['arithmetic_false']} state a false equation.", "",
             "| signal | drafts | AUROC (rollout label) | bootstrap 95% CI | AUROC (problem label) "
             "| mean score good | mean score bad | s per call, 1 in flight | s per call, measured "
             "| prompt tok | cached tok |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in found["table"]:
        ci = row["auroc_ci"]
        lines.append(
            f"| {row['signal']} | {row['drafts']} | {cell(row['auroc'], '{:.2f}')} | "
            f"{f'[{ci[0]:.2f}, {ci[1]:.2f}]' if ci else '–'} | "
            f"{cell(row['auroc_problem_label'], '{:.2f}')} | {cell(row['mean_good'], '{:.2f}')} | "
            f"{cell(row['mean_bad'], '{:.2f}')} | {cell(row['seconds_per_call'], '{:.2f}')} | "
            f"{cell(row['measured_seconds_per_call'], '{:.2f}')} | "
            f"{cell(row['prompt_tokens'], '{:.0f}')} | {cell(row['cached_tokens'], '{:.0f}')} |")
    lines += ["", "The best setting of each judge on the same drafts (step-level model: seconds per "
              "step, share of steps left sound, and the distance above the line that sending steps "
              "at random to the small or the base model traces):", "",
              "| setting | accepts | bad drafts kept | s per step | sound steps | above random routing |",
              "|:---|---:|---:|---:|---:|---:|"]
    for p in found["best_by_judge"]:
        lines.append(f"| {p['candidate']} | {p['acceptance']:.0%} | "
                     f"{cell(p['false_accept'], '{:.0%}')} | {p['seconds_per_step']:.1f} | "
                     f"{p['sound_steps']:.1%} | {p['margin']:+.1%} |")
    choice = found["choice"]
    if choice and choice.get("margin") is None:
        lines += ["", f"Chosen: **{choice['candidate']}** — no labelled draft to choose on."]
    elif choice:
        verdict = ("it beats random routing on this slice" if found["beats_random_routing"] else
                   "**no setting beats random routing on this slice**; this is the closest")
        sp = found["speeds"]
        lines += ["", f"Chosen: **{choice['candidate']}** — {verdict}. Per step at one run in "
                      f"flight: small-only {choice['small_only_s']:.1f} s, base-only "
                      f"{choice['base_only_s']:.1f} s ({sp['name']}: small {sp['small_decode_tps']:g} "
                      f"tok/s, base {sp['base_decode_tps']:g} tok/s decode and "
                      f"{sp['base_prefill_tps']:g} tok/s prefill, {sp['call_overhead_s']:g} s a call). "
                      "The measured seconds per call were taken with several runs in flight."]
    return "\n".join(lines)
