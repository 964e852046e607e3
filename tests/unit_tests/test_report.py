"""specreason_graph.evaluation's report (stats rows, paired tests, cost model, prefix cache, tables,
plots, build), on hand-made records shaped like _record's, plus one real (scripted-model) benchmark
for build()."""

from __future__ import annotations

import csv
import io
import json
import socket
from typing import Any

import pytest

from specreason_graph import Context, build_graph, rules
from specreason_graph.evaluation import datasets, report
from specreason_graph.evaluation.cost_model import (
    GPU_PROFILES,
    GpuProfile,
    Line,
    cost_model,
    fit,
    one_in_flight_check,
    parse_gpu,
)
from specreason_graph.evaluation.metrics import PREFIX_COUNTERS, prefix_cache
from specreason_graph.evaluation.modes import parse_mode
from specreason_graph.evaluation.plots import pareto, plot_accuracy_latency, plot_threshold_sweep
from specreason_graph.evaluation.records import RUNS_FILE
from specreason_graph.evaluation.records import key as run_key
from specreason_graph.evaluation.render import COLUMNS, cell, cost_check_markdown, csv_text, markdown_table
from specreason_graph.evaluation.runner import run_bench
from specreason_graph.evaluation.stats import above_frontier, mcnemar_exact, mode_rows, paired
from specreason_graph.state import StepRecord
from specreason_graph.trace import summarize
from tests.fakes import ScriptedModel, score, step

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Q, H = PREFIX_COUNTERS



# --- hand-made records ---------------------------------------------------------------------------

def call(*, writer: str = "small", tokens: int = 10, draft_tokens: int = 0, draft_ms: float = 0.0,
         accepted: bool | None = None, judge_token: str | None = None,
         alternatives: list[tuple[str, float]] | None = None, judge_error: str | None = None,
         judge_prompt: int = 0, judge_cached: int | None = None, judge_ms: float = 0.0,
         base_tokens: int = 0, base_ms: float = 0.0) -> StepRecord:
    """One committed step as the graph records it (see state.StepRecord)."""
    drafted = draft_tokens > 0
    score = None if accepted is None else rules.greedy_score(judge_token)
    judged = {"score": {"score": score, "ms": judge_ms, "prompt_tokens": judge_prompt,
                        "cached_tokens": judge_cached, "error": judge_error,
                        "reads": {"token": judge_token, "alternatives": alternatives or []}}}
    return {
        "index": 0, "writer": writer, "text": "x", "tokens": tokens, "truncated": False,
        "ended_turn": False, "forced": writer == "base" and not drafted,
        "draft": "x" if drafted else None, "draft_tokens": draft_tokens, "draft_ms": draft_ms,
        "draft_logprobs": None, "judge": "score" if accepted is not None else None,
        "judges": judged if accepted is not None else {}, "score": score,
        "judge_error": judge_error, "accepted": accepted,
        "judge_prompt_tokens": judge_prompt, "judge_cached_tokens": judge_cached,
        "judge_ms": judge_ms, "base_tokens": base_tokens, "base_ms": base_ms,
        "ms": draft_ms + judge_ms + base_ms}


def base_call(tokens: int, ms: float) -> StepRecord:
    return call(writer="base", tokens=tokens, base_tokens=tokens, base_ms=ms)


def drafted(tokens: int, ms: float, *, accepted: bool, prompt: int, cached: int | None,
            judge_ms: float, base_tokens: int = 0, base_ms: float = 0.0, token: str = "9",
            alternatives: list[tuple[str, float]] | None = None,
            judge_error: str | None = None) -> StepRecord:
    return call(writer="small" if accepted else "base", tokens=tokens if accepted else base_tokens,
                draft_tokens=tokens, draft_ms=ms, accepted=accepted, judge_token=token,
                alternatives=alternatives, judge_error=judge_error, judge_prompt=prompt,
                judge_cached=cached, judge_ms=judge_ms, base_tokens=base_tokens, base_ms=base_ms)


def record(mode: str, pid: str, correct: bool | None, wall: float, trace: list[StepRecord],
           sample: int = 0, error: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {
        "key": run_key(mode, pid, sample), "mode": mode, "dataset": "gsm8k", "id": pid,
        "sample": sample, "gold": "1", "wall_s": wall, "concurrency": 1,
        "finished_at": "2025-01-01T00:00:00+00:00"}
    if error:
        return {**r, "error": error, "correct": None}
    return {**r, "error": None, "correct": correct, "predicted": "1" if correct else "2",
            "answer": "1" if correct else "2", "stop_reason": "answer",
            "summary": summarize(trace), "trace": trace}


def records(*rs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["key"]: r for r in rs}


def exact_costs() -> dict[str, dict[str, Any]]:
    """Calls that cost exactly: draft 0.1 s + 10 ms/token, judge 0.05 s + 1 ms per new prompt
    token, base 0.2 s + 20 ms/token; every run's wall time is the sum of its calls."""
    return records(
        record("base-only", "p1", False, 0.4, [base_call(10, 400)]),
        record("base-only", "p2", True, 0.6, [base_call(20, 600)]),
        record("spec", "p1", True, 0.29, [
            drafted(10, 200, accepted=True, prompt=100, cached=60, judge_ms=90)]),
        record("spec", "p2", True, 0.77, [
            drafted(20, 300, accepted=False, prompt=120, cached=100, judge_ms=70,
                    base_tokens=10, base_ms=400)]),
    )


# --- mode_rows -----------------------------------------------------------------------------------

def test_mode_rows_exact_figures():
    rs = exact_costs()
    rs.update(records(
        record("spec", "p3", True, 9.9, [], error="RuntimeError: boom"),
        record("small", "p1", True, 0.1, [call(draft_tokens=5, draft_ms=100, tokens=5)]),
    ))
    rows = mode_rows(rs)
    assert [r["mode"] for r in rows] == ["base-only", "spec", "small"]
    base, spec, small = rows
    assert base == pytest.approx({
        "mode": "base-only", "runs": 2, "failed": 0, "problems": 2, "accuracy": 0.5,
        "mean_s": 0.5, "median_s": 0.5, "p90_s": 0.6, "speedup": 1.0, "speedup_problems": 2,
        "steps_small": 0.0, "steps_base": 1.0, "acceptance": None, "kept_tokens": 15.0,
        "draft_tokens": 0.0, "rejected_tokens": 0.0, "base_tokens": 15.0,
        "judge_prompt_tokens": 0.0, "judge_new_tokens": 0.0, "judge_calls": 0.0,
        "judge_cache_hit": None, "share_draft": 0.0, "share_judge": 0.0, "share_base": 1.0,
        "no_answer": 0, "judge_vs_regen": None, "accuracy_problems": 2, "judge_errors": 0,
        "spec_decode_acceptance": None, "spec_decode_accepted_per_draft": None})
    model_s = 0.2 + 0.09 + 0.3 + 0.07 + 0.4
    assert spec == pytest.approx({
        "mode": "spec", "runs": 2, "failed": 1, "problems": 2, "accuracy": 1.0,
        "mean_s": 0.53, "median_s": 0.53, "p90_s": 0.77, "speedup": 0.5 / 0.53,
        "speedup_problems": 2, "steps_small": 0.5, "steps_base": 0.5, "acceptance": 0.5,
        "kept_tokens": 10.0, "draft_tokens": 15.0, "rejected_tokens": 10.0, "base_tokens": 5.0,
        "judge_prompt_tokens": 110.0, "judge_new_tokens": 30.0, "judge_calls": 1.0,
        "judge_cache_hit": 160 / 220, "share_draft": 0.5 / model_s, "share_judge": 0.16 / model_s,
        "share_base": 0.4 / model_s, "no_answer": 0,
        # base writes at (0.4 + 0.6 + 0.4) s / 40 tokens; regenerating the 30 drafted tokens would
        # take 30 * 0.035 s, the judge took 0.16 s
        "judge_vs_regen": 0.16 / (30 * 1.4 / 40), "accuracy_problems": 2, "judge_errors": 0,
        "spec_decode_acceptance": None, "spec_decode_accepted_per_draft": None})
    assert small["speedup"] == pytest.approx(0.4 / 0.1)  # on p1 only, the problem both finished
    assert small["speedup_problems"] == 1 and small["judge_vs_regen"] is None


def test_mode_rows_without_a_reference_and_with_only_failures():
    rows = mode_rows(records(
        record("spec", "p1", False, 1.0, [call()]),
        record("bad", "p1", None, 1.0, [], error="ValueError: x")))
    spec, bad = rows
    assert spec["speedup"] is None and spec["speedup_problems"] == 0
    assert spec["no_answer"] == 0 and spec["accuracy"] == 0.0
    assert (bad["runs"], bad["failed"], bad["accuracy"], bad["mean_s"], bad["p90_s"]) == (
        0, 1, None, None, None)


def test_accuracy_is_taken_on_the_problems_the_reference_finished_too():
    # spec is right on p1 and p2, but base-only failed on p2: spec's accuracy is on p1 alone, the
    # problems the speedup is on; the failed base-only run is counted as failed
    rs = records(
        record("base-only", "p1", False, 1.0, [base_call(1, 1)]),
        record("base-only", "p2", None, 1.0, [], error="RuntimeError: boom"),
        record("spec", "p1", False, 1.0, [call()]),
        record("spec", "p2", True, 1.0, [call()]),
        record("spec", "p3", None, 1.0, [], error="RuntimeError: boom"))
    base, spec = mode_rows(rs)
    assert (spec["accuracy"], spec["accuracy_problems"], spec["speedup_problems"]) == (0.0, 1, 1)
    assert (spec["runs"], spec["failed"], spec["problems"]) == (2, 1, 2)
    assert (base["accuracy"], base["accuracy_problems"], base["failed"]) == (0.0, 1, 1)
    # without a reference, each mode's accuracy is on every problem it finished
    [alone] = mode_rows(rs, reference="none")[1:]
    assert (alone["accuracy"], alone["accuracy_problems"]) == (0.5, 2)


def test_judge_errors_are_counted():
    unread = drafted(5, 10, accepted=False, prompt=10, cached=0, judge_ms=1, token="x",
                     judge_error="APIResponseValidationError: not JSON")
    rs = records(
        record("spec", "p1", True, 1.0, [unread, unread]),
        record("spec", "p2", True, 1.0, [drafted(5, 10, accepted=True, prompt=10, cached=0,
                                                 judge_ms=1)]))
    [spec] = mode_rows(rs)
    assert spec["judge_errors"] == 2


def test_p90_and_median_over_ten_runs():
    rs = records(*(record("m", f"p{i}", True, float(i), [call()]) for i in range(1, 11)))
    [row] = mode_rows(rs, reference="none")
    assert (row["median_s"], row["p90_s"], row["mean_s"]) == (5.5, 9.0, 5.5)


def test_samples_are_averaged_per_problem_for_the_speedup():
    rs = records(
        record("base-only", "p1", True, 2.0, [base_call(1, 1)], sample=0),
        record("base-only", "p1", True, 4.0, [base_call(1, 1)], sample=1),
        record("fast", "p1", True, 1.0, [call()], sample=0),
        record("fast", "p1", True, 2.0, [call()], sample=1))
    rows = {r["mode"]: r for r in mode_rows(rs)}
    assert rows["fast"]["speedup"] == 2.0 and rows["fast"]["runs"] == 2
    assert rows["fast"]["problems"] == 1


# --- paired comparison and McNemar ---------------------------------------------------------------

@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 0, 1.0), (0, 5, 0.0625), (5, 0, 0.0625), (1, 4, 0.375), (4, 1, 0.375),
    (2, 0, 0.5), (5, 5, 1.0), (0, 10, 2 / 1024), (3, 7, 2 * 176 / 1024),
])
def test_mcnemar_exact(b, c, p):
    assert mcnemar_exact(b, c) == pytest.approx(p)


def paired_records(ref: list[bool], mode: list[bool]) -> dict[str, dict[str, Any]]:
    rs = [record("base-only", f"p{i}", ok, 1.0, [base_call(1, 1)]) for i, ok in enumerate(ref)]
    rs += [record("spec", f"p{i}", ok, 1.0, [call()]) for i, ok in enumerate(mode)]
    return records(*rs)


def test_paired_difference_interval_and_p_value():
    c = paired(paired_records([True, False, False], [True, True, True]), "spec")
    assert c == {"mode": "spec", "reference": "base-only", "problems": 3,
                 "diff": pytest.approx(2 / 3), "ci_low": 0.0, "ci_high": 1.0, "mcnemar_p": 0.5}


def test_paired_same_everywhere_has_a_point_interval():
    rs = paired_records([False] * 6, [True] * 6)
    c = paired(rs, "spec", resamples=200)
    assert (c["diff"], c["ci_low"], c["ci_high"]) == (1.0, 1.0, 1.0)
    assert c["mcnemar_p"] == pytest.approx(2 / 64)
    assert paired(paired_records([True] * 4, [True] * 4), "spec")["mcnemar_p"] == 1.0


def test_paired_is_deterministic_and_the_interval_holds_the_difference():
    ref = [True, False, True, False, True, True, False, True, False, False]
    mode = [True, True, True, False, False, True, True, True, True, False]
    rs = paired_records(ref, mode)
    a, b = paired(rs, "spec", seed=1), paired(rs, "spec", seed=1)
    assert a == b
    assert a["diff"] == pytest.approx(0.2) and a["ci_low"] <= 0.2 <= a["ci_high"]
    assert -1 <= a["ci_low"] < a["ci_high"] <= 1
    assert a["mcnemar_p"] == pytest.approx(mcnemar_exact(3, 1))  # 3 wins, 1 loss


def test_paired_leaves_out_failures_and_unshared_problems():
    rs = paired_records([True, False], [True, True])
    rs.update(records(record("spec", "p9", True, 1.0, [call()]),
                      record("base-only", "p8", True, 1.0, [base_call(1, 1)]),
                      record("spec", "p0", None, 1.0, [], sample=1, error="E: x")))
    c = paired(rs, "spec")
    assert c["problems"] == 2 and c["diff"] == 0.5 and c["mcnemar_p"] == 1.0


def test_paired_with_samples_compares_means_without_mcnemar():
    rs = records(
        record("base-only", "p1", True, 1.0, [], sample=0),
        record("base-only", "p1", False, 1.0, [], sample=1),
        record("spec", "p1", True, 1.0, [], sample=0),
        record("spec", "p1", True, 1.0, [], sample=1))
    c = paired(rs, "spec")
    assert c["diff"] == 0.5 and c["mcnemar_p"] is None


def test_paired_has_nothing_to_compare():
    rs = paired_records([True], [True])
    assert paired(rs, "base-only") is None
    assert paired(rs, "absent") is None
    assert paired(records(record("spec", "p1", True, 1.0, [])), "spec") is None


# --- fit -----------------------------------------------------------------------------------------

def test_fit_recovers_an_exact_line():
    line = fit([(0, 1.0), (10, 3.0), (20, 5.0)])
    assert line.fixed == pytest.approx(1.0) and line.per_token == pytest.approx(0.2)
    assert line.calls == 3 and line(50) == pytest.approx(11.0)


def test_fit_fallbacks():
    assert fit([]) is None
    assert fit([(10, 4.0), (20, 2.0)]) == Line(3.0, 0.0, 2)  # negative slope
    assert fit([(10, 3.0), (20, 3.0)]) == Line(3.0, 0.0, 2)  # flat
    assert fit([(10, 2.0), (10, 4.0)]) == Line(0.0, 0.3, 2)  # one x: y / x
    assert fit([(0, 2.0), (0, 4.0)]) == Line(3.0, 0.0, 2)    # x = 0 only
    through_origin = fit([(10, 1.0), (20, 3.0)])  # fixed would be -1: through 0 instead
    assert through_origin.fixed == 0.0
    assert through_origin.per_token == pytest.approx(70 / 500)


# --- cost model ----------------------------------------------------------------------------------

def test_cost_model_recovers_the_lines_and_predicts_the_measured_speedup():
    model = cost_model(exact_costs(), mode_rows(exact_costs()))
    lines = model["lines"]
    assert lines["draft"] == pytest.approx({"fixed": 0.1, "per_token": 0.01, "calls": 2})
    assert lines["judge"] == pytest.approx({"fixed": 0.05, "per_token": 0.001, "calls": 2})
    assert lines["base"] == pytest.approx({"fixed": 0.2, "per_token": 0.02, "calls": 3})
    assert set(model["modes"]) == {"base-only", "spec"}
    spec = model["modes"]["spec"]
    assert spec["predicted_s"] == pytest.approx(0.53)
    assert spec["predicted_speedup"] == pytest.approx(0.5 / 0.53)
    assert spec["measured_speedup"] == pytest.approx(0.5 / 0.53)
    assert spec["error"] == pytest.approx(0.0, abs=1e-9)
    assert model["modes"]["base-only"]["predicted_speedup"] == pytest.approx(1.0)
    assert "gpu" not in model and "gpu_s" not in spec


def test_cost_model_projects_onto_a_gpu():
    gpu = GpuProfile("test", small_decode_tps=100, base_decode_tps=10,
                            base_prefill_tps=1000, call_overhead_s=0.01, note="")
    model = cost_model(exact_costs(), mode_rows(exact_costs()), gpu=gpu)
    assert model["gpu"]["name"] == "test"
    # base-only: 0.01 + 10/10 and 0.01 + 20/10; spec: draft 0.01 + 10/100, judge 0.11 + 40/1000
    # and draft 0.01 + 20/100, judge 0.11 + 20/1000, rewrite 0.01 + 10/10
    assert model["modes"]["base-only"]["gpu_s"] == pytest.approx(1.51)
    assert model["modes"]["spec"]["gpu_s"] == pytest.approx(0.805)
    assert model["modes"]["spec"]["gpu_speedup"] == pytest.approx(1.51 / 0.805)


def test_cost_model_leaves_out_failed_judge_calls_from_the_judge_fit():
    rs = exact_costs()
    rs.update(records(record("spec", "p3", True, 5.0, [
        drafted(10, 200, accepted=False, prompt=0, cached=None, judge_ms=5000,
                judge_error="ValueError: junk", base_tokens=10, base_ms=400)])))
    assert cost_model(rs, mode_rows(rs))["lines"]["judge"]["calls"] == 2


def test_cost_model_needs_the_reference_and_every_line():
    no_ref = {k: r for k, r in exact_costs().items() if r["mode"] != "base-only"}
    assert cost_model(no_ref, mode_rows(no_ref))["modes"] == {}
    only_base = {k: r for k, r in exact_costs().items() if r["mode"] == "base-only"}
    model = cost_model(only_base, mode_rows(only_base))
    assert model["lines"]["draft"] is None and set(model["modes"]) == {"base-only"}
    assert model["modes"]["base-only"]["predicted_s"] == pytest.approx(0.5)
    no_drafts = records(*only_base.values(), record("other", "p1", True, 1.0, [base_call(5, 300)]))
    assert cost_model(no_drafts, mode_rows(no_drafts))["modes"] == {}


@pytest.mark.parametrize(("text", "expected"), [
    ("paper-2xA6000", GPU_PROFILES["paper-2xA6000"]),
    ("150,20,2000,0.02", GpuProfile("user-given", 150.0, 20.0, 2000.0, 0.02,
                                           "speeds given by the user")),
])
def test_parse_gpu(text, expected):
    assert parse_gpu(text) == expected


@pytest.mark.parametrize("text", ["a100", "1,2,3", "1,2,3,4,5", "a,b,c,d", ""])
def test_parse_gpu_errors(text):
    with pytest.raises(ValueError, match="--gpu takes one of paper-2xA6000, cpu-1-in-flight or four numbers"):
        parse_gpu(text)


# --- prefix cache --------------------------------------------------------------------------------

def test_prefix_cache_sums_counter_deltas_over_segments():
    u, v, w = "http://a/v1", "http://b/v1", "http://c/v1"
    meta = {"segments": [
        {"metrics_before": {u: {Q: 100, H: 50}, v: None, w: {Q: 10, H: 0}},
         "metrics_after": {u: {Q: 200, H: 130}, v: {Q: 5, H: 5}, w: {Q: 10, H: 0}}},
        {"metrics_before": {u: {Q: 200, H: 130}}, "metrics_after": None},  # killed: no after
        {"metrics_before": {u: {Q: 1000, H: 500}}, "metrics_after": {u: {Q: 1100, H: 520}}},
    ]}
    assert prefix_cache(meta) == {u: 100 / 200, w: None}
    assert prefix_cache({}) == {}


# --- tables and the front ------------------------------------------------------------------------

def row(mode: str, accuracy: float | None, mean_s: float | None) -> dict[str, Any]:
    return {"mode": mode, "accuracy": accuracy, "mean_s": mean_s}


def test_pareto():
    rows = [row("a", 0.9, 10), row("b", 0.8, 5), row("c", 0.7, 6), row("d", 0.9, 12),
            row("e", 0.9, 10), row("f", None, 1), row("g", 1.0, None), row("h", 0.95, 30)]
    assert pareto(rows) == ["a", "b", "e", "h"]
    assert pareto([]) == []


def test_markdown_table_and_csv():
    rows = mode_rows(exact_costs())
    table = markdown_table(rows).splitlines()
    assert len(table) == 4
    assert table[0].startswith("| mode | runs | accuracy | mean s |")
    assert table[1].startswith("|:---|---:|")
    assert table[2].startswith("| base-only | 2 | 50.0% | 0.5 | 0.5 | 0.6 | 1.00× |")
    assert table[3].startswith("| spec | 2 | 100.0% | 0.5 | 0.5 | 0.8 | 0.94× |")
    assert "| – |" in table[2]  # base-only has no acceptance
    assert all(line.count("|") == len(COLUMNS) + 1 for line in table)

    parsed = list(csv.DictReader(io.StringIO(csv_text(rows))))
    assert [r["mode"] for r in parsed] == ["base-only", "spec"]
    assert parsed[1]["accuracy"] == "1.0" and parsed[0]["acceptance"] == ""
    assert csv_text([]).strip() == "mode"


def test_cell():
    assert cell(None, "{:.1f}") == "–"
    assert cell(0.125, "{:.1%}") == "12.5%"
    assert cell(0, "{}") == "0"


# --- plots ---------------------------------------------------------------------------------------

def test_plots_are_pngs(tmp_path):
    rows = [row("base-only", 0.9, 10), row("small-only", 0.5, 2), row("spec t=5", 0.8, 4),
            row("spec t=7", 0.85, 5), row("spec e", 0.7, 3), row("none", None, None)]
    settings = {"base-only": {"kind": "base"}, "small-only": {"kind": "small"},
                "spec t=5": {"kind": "spec", "threshold": 5.0, "score_method": "greedy"},
                "spec t=7": {"kind": "spec", "threshold": 7.0, "score_method": "greedy"},
                "spec e": {"kind": "spec", "threshold": 6.0, "score_method": "expected"}}
    a = plot_accuracy_latency(rows, tmp_path / "a.png", "title")
    b = plot_threshold_sweep(rows, settings, tmp_path / "b.png", "title")
    c = plot_threshold_sweep(rows[:2], settings, tmp_path / "c.png", "no spec")
    for path in (a, b, c):
        assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 1000


# --- build (on a real, scripted benchmark) -------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scripted_benchmark(tmp_path_factory):
    """gsm8k 0 and 1, three modes: base-only answers 3 (right on 1), the small model 18 (right
    on 0), the judge scores 9 so SpecReason keeps every draft."""
    out = tmp_path_factory.mktemp("bench")
    small = ScriptedModel(script=lambda m, kw: step(r"\boxed{18}", end="eos"))
    base = ScriptedModel(script=lambda m, kw: score("9") if kw.get("max_tokens") == 1
                         else step(r"\boxed{3}", end="eos"))
    url = f"http://127.0.0.1:{closed_port()}/v1"
    modes = [parse_mode(t) for t in ("base", "small", "spec", "spec:t=5,score=expected")]
    run_bench(build_graph(small=small, base=base).compile(),
                    [datasets.get("gsm8k", "0"), datasets.get("gsm8k", "1")], modes,
                    Context(base_url=url, small_url=url), out, concurrency=2)
    return out


def test_build_writes_every_file(scripted_benchmark):
    summary = report.build(scripted_benchmark, gpu=GPU_PROFILES["paper-2xA6000"])
    names = ["base-only", "small-only", "specreason", "specreason t=5 expected"]
    for name in ("accuracy_latency.png", "threshold_sweep.png"):
        assert (scripted_benchmark / name).read_bytes()[:8] == PNG_MAGIC
    assert json.loads((scripted_benchmark / "summary.json").read_text()) == json.loads(
        json.dumps(summary, default=str))
    assert summary["title"].startswith("gsm8k, 2 problems, concurrency")
    assert summary["concurrency"] == [2]
    assert sorted(r["mode"] for r in summary["rows"]) == names  # finishing order (2 in flight)
    assert {r["mode"]: r["accuracy"] for r in summary["rows"]} == dict.fromkeys(names, 0.5)
    assert sorted(c["mode"] for c in summary["paired"]) == names[1:]
    for c in summary["paired"]:  # each mode is right where base-only is wrong, and vice versa
        assert (c["diff"], c["mcnemar_p"], c["problems"]) == (0.0, 1.0, 2)
    assert set(summary["cost_model"]["modes"]) == set(names)
    assert summary["cost_model"]["gpu"]["name"].startswith("QwQ-32B")
    assert summary["prefix_cache"] == {}  # the servers never answered /metrics
    assert summary["settings"]["modes"]["specreason t=5 expected"]["score_method"] == "expected"
    assert all(not k.startswith("metrics") for s in summary["segments"] for k in s)

    md = (scripted_benchmark / "summary.md").read_text()
    for name in names:  # the table, the paired comparison (not base-only) and the cost model
        rows = sum(line.startswith(f"| {name} |") for line in md.splitlines())
        # + the table against the frontier (not the two baselines it is drawn from)
        assert rows == (2 if name == "base-only" else 3 if name == "small-only" else 4)
    assert "GPU projection: QwQ-32B" in md
    assert "| mode vs base-only | problems |" in md

    table = list(csv.DictReader(io.StringIO((scripted_benchmark / "summary.csv").read_text())))
    assert sorted(r["mode"] for r in table) == names and {r["runs"] for r in table} == {"2"}


def test_build_with_a_title_and_without_meta(scripted_benchmark, tmp_path):
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    summary = report.build(tmp_path, title="mine")
    assert summary["title"] == "mine" and summary["settings"] is None
    assert summary["concurrency"] == [2] and "gpu" not in summary["cost_model"]  # from the runs
    assert "Budget" not in (tmp_path / "summary.md").read_text()


def test_build_of_nothing(tmp_path):
    with pytest.raises(ValueError, match="has no recorded runs yet"):
        report.build(tmp_path)




def test_above_frontier_of_small_and_base_is_the_distance_to_the_small_base_line():
    rs = records(
        record("small-only", "p1", False, 1.0, []), record("small-only", "p2", True, 1.0, []),
        record("base-only", "p1", True, 3.0, []), record("base-only", "p2", True, 3.0, []),
        record("spec", "p1", True, 2.0, []), record("spec", "p2", True, 2.0, []))
    two = ["small-only", "base-only"]
    found = above_frontier(rs, "spec", two, resamples=200)
    # the line at 2 s: halfway between 50% (small, 1 s) and 100% (base, 3 s) = 75%; spec has 100%
    assert found["problems"] == 2 and found["margin"] == pytest.approx(0.25)
    assert found["ci_low"] <= 0.25 <= found["ci_high"] and found["faster"] is False
    assert above_frontier(rs, "small-only", two) is None
    assert above_frontier(rs, "spec", []) is None
    assert above_frontier(rs, "spec", ["small-only", "absent"]) is None  # no shared problem


def _old_line_margin(records_: dict[str, dict[str, Any]], mode: str, resamples: int
                     ) -> tuple[float, float, float]:
    """The straight small-base line as the report drew it before the frontier (stats.above_routing
    up to commit e47e037), kept here to show the frontier of the two is the same figure."""
    import random
    import statistics

    per = {}
    for name in (mode, "small-only", "base-only"):
        runs = [r for r in records_.values() if r["mode"] == name]
        per[name] = {r["id"]: (float(r["correct"]), float(r["wall_s"])) for r in runs}
    common = sorted(set(per[mode]) & set(per["small-only"]) & set(per["base-only"]))

    def margin(pids):
        m = {name: (statistics.fmean(per[name][p][0] for p in pids),
                    statistics.fmean(per[name][p][1] for p in pids)) for name in per}
        (acc_s, t_s), (acc_b, t_b), (acc, t) = m["small-only"], m["base-only"], m[mode]
        return acc - (acc_s + (acc_b - acc_s) * (t - t_s) / (t_b - t_s))

    rng = random.Random(0)
    draws = sorted(margin(rng.choices(common, k=len(common))) for _ in range(resamples))
    return margin(common), draws[int(0.025 * resamples)], draws[int(0.975 * resamples) - 1]


def test_above_frontier_with_small_and_base_alone_equals_the_old_line_to_the_last_bit():
    """Every problem the small model gets right the base model gets right, and the mode's time
    lies between theirs on every problem: every resample stays between the two points, where the
    frontier is the old line."""
    import random

    rng = random.Random(7)
    rs: dict[str, dict[str, Any]] = {}
    for i in range(30):
        small_right = rng.random() < 0.3
        base_right = small_right or rng.random() < 0.5
        for mode, right, wall in (("small-only", small_right, 1 + rng.random()),
                                  ("base-only", base_right, 5 + rng.random()),
                                  ("judge", rng.random() < 0.6, 2.5 + rng.random())):
            rs.update(records(record(mode, str(i), right, wall, [])))
    old = _old_line_margin(rs, "judge", 500)
    new = above_frontier(rs, "judge", ["small-only", "base-only"], resamples=500)
    assert (new["margin"], new["ci_low"], new["ci_high"]) == old


# --- runs that may not be compared ---------------------------------------------------------------

def _rewrite(out, change) -> None:
    runs = [json.loads(line) for line in (out / RUNS_FILE).read_text().splitlines()]
    text = "".join(json.dumps(change(i, r)) + "\n" for i, r in enumerate(runs))
    (out / RUNS_FILE).write_text(text)


def test_the_report_refuses_runs_taken_at_different_concurrency(scripted_benchmark, tmp_path):
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    _rewrite(tmp_path, lambda i, r: {**r, "concurrency": 1 if i < 3 else 2})
    with pytest.raises(ValueError, match=r"mixes runs taken at concurrency 1 \(3 runs\) and 2 \(5 "
                                         r"runs\): a speedup between them would measure the load"):
        report.build(tmp_path)
    assert not (tmp_path / "summary.md").exists()


def test_the_report_counts_runs_that_saw_more_requests_than_the_bench_had(scripted_benchmark, tmp_path):
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    _rewrite(tmp_path, lambda i, r: {**r, "load": {"samples": 4, "peak_requests": 2 + 3 * (i == 5),
                                                   "others": float(3 * (i == 5)),
                                                   "excess_samples": 2 * (i == 5)}})
    summary = report.build(tmp_path)
    mode = json.loads((tmp_path / RUNS_FILE).read_text().splitlines()[5])["mode"]
    assert summary["load"] == {"concurrency": 2, "runs": 8, "load_unknown": 0, "gauge_checked": 0,
                               "stale_samples": 0, "peak_requests": 5, "excess_by_mode": {mode: 1}}
    assert (f"8 of 8 runs sampled vLLM's queues while in flight (peak 5 request(s) on the servers "
            f"at once); 1 of them saw more requests than the bench's own for 10 s or more ({mode} ×1)."
            ) in (tmp_path / "summary.md").read_text()
    _rewrite(tmp_path, lambda i, r: {**r, "load": {**r["load"], "others": 0.0, "peak_requests": 2}})
    summary = report.build(tmp_path)
    assert summary["load"]["excess_by_mode"] == {}
    assert "none saw more requests than the bench's own." in (tmp_path / "summary.md").read_text()


def test_the_report_refuses_runs_taken_alongside_another_client(scripted_benchmark, tmp_path):
    """Under the watch that reads a gauge only on a server whose token counters move, a lasting
    excess is another client's: the report refuses the folder and says how to measure again."""
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    checked = {"samples": 30, "peak_requests": 2, "others": 0.0, "excess_samples": 1,
               "stale_samples": 4}
    _rewrite(tmp_path, lambda i, r: {**r, "load": {**checked, "others": float(i in (2, 5))}})
    modes = [json.loads(line)["mode"] for line in (tmp_path / RUNS_FILE).read_text().splitlines()]
    found = ", ".join(f"{m} ×1" for m in sorted({modes[2], modes[5]})) if modes[2] != modes[5] \
        else f"{modes[2]} ×2"
    with pytest.raises(ValueError, match=(
            rf"has 2 run\(s\) taken while the servers held another client's requests for 10 s or "
            rf"more \({found}\): their times measure that client too. Run the same bench command "
            "again")):
        report.build(tmp_path)
    _rewrite(tmp_path, lambda i, r: {**r, "load": checked})  # lagging gauges only: compared
    summary = report.build(tmp_path)
    assert (summary["load"]["gauge_checked"], summary["load"]["stale_samples"]) == (8, 32)
    assert ("none saw more requests than the bench's own; 8 of them read the gauges only on servers "
            "whose token counters moved (32 sample(s) where a lagging gauge alone would have "
            "counted an excess).") in (tmp_path / "summary.md").read_text()


def test_a_peak_only_load_record_has_no_verdict(scripted_benchmark, tmp_path):
    """The first LoadWatch kept only the peak, which vLLM's gauge lag after a stop string can
    raise by one: such records are counted as unknown, neither refused nor run again."""
    from specreason_graph.evaluation.stats import saw_others
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    _rewrite(tmp_path, lambda i, r: {**r, "load": {"samples": 9, "peak_requests": 3, "others": 1.0}})
    summary = report.build(tmp_path)
    assert summary["load"]["load_unknown"] == 8
    assert "Server load: The load of 8 runs is not known" in (tmp_path / "summary.md").read_text()
    assert not saw_others({"load": {"samples": 9, "peak_requests": 3, "others": 1.0}})
    _rewrite(tmp_path, lambda i, r: {**r, "load": {"samples": 9, "peak_requests": 1 + (i < 3),
                                                   "others": float(i < 3)}})
    summary = report.build(tmp_path)  # no excess at all is a verdict under either watch
    assert summary["load"]["load_unknown"] == 3 and summary["load"]["peak_requests"] == 1
    assert ("5 of 8 runs sampled vLLM's queues while in flight (peak 1 request(s) on the servers at "
            "once); none saw more requests than the bench's own; the load of 3 runs is not known"
            ) in (tmp_path / "summary.md").read_text()
    assert saw_others({"load": {"samples": 9, "peak_requests": 3, "others": 1.0, "excess_samples": 2}})


def test_runs_recorded_before_loads_were_are_counted_not_refused(scripted_benchmark, tmp_path):
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    _rewrite(tmp_path, lambda i, r: {k: v for k, v in r.items() if k != "load"})
    summary = report.build(tmp_path)
    assert summary["load"]["load_unknown"] == 8
    assert "Server load: The load of 8 runs is not known" in (tmp_path / "summary.md").read_text()


# --- the cost model checked at one run in flight -------------------------------------------------

LOADED_MODES = {"base-only": {"kind": "base"}, "spec": {"kind": "spec", "threshold": 7.0,
                                                        "score_method": "greedy"}}
MEASURED_MODES = {"base-only": {"kind": "base", "one_request": "base"},
                  "paper": {"kind": "spec", "judge": "score", "threshold": 7.0,
                            "score_method": "greedy"},
                  "other": {"kind": "spec", "judge": "yes_no", "threshold": 7.0,
                            "score_method": "greedy"}}
SPEEDS = GpuProfile("test", 100.0, 50.0, 1000.0, 0.1, "exact")


def measured_costs() -> dict[str, dict[str, Any]]:
    return records(*({**r, "mode": "paper", "key": r["key"].replace("spec", "paper")}
                     if r["mode"] == "spec" else r for r in exact_costs().values()))


def test_the_one_in_flight_check_predicts_from_the_loaded_run_at_single_stream_speeds():
    """Loaded base-only ran step by step; the measured one is one request: its prediction is one
    call of the same tokens (p1 0.1 + 10 × 0.02, p2 0.1 + 20 × 0.02: mean 0.4 s). spec: p1 draft
    0.2 + judge 0.12 + 40 × 0.001 = 0.36, p2 draft 0.3 + judge 0.14 + base 0.3 = 0.74: mean 0.55."""
    measured = measured_costs()
    rows = mode_rows(measured, order=list(MEASURED_MODES))
    check = one_in_flight_check(exact_costs(), LOADED_MODES, measured, MEASURED_MODES, rows, SPEEDS)
    base, paper = check["modes"]  # "other" has no loaded mode of its method: not predicted
    assert (base["mode"], base["loaded_mode"]) == ("base-only", "base-only")
    assert base["predicted_s"] == pytest.approx(0.4) and base["measured_s"] == pytest.approx(0.5)
    assert "error" not in base
    assert (paper["mode"], paper["loaded_mode"]) == ("paper", "spec")
    assert paper["predicted_s"] == pytest.approx(0.55)
    assert paper["predicted_speedup"] == pytest.approx(0.4 / 0.55)
    assert paper["measured_speedup"] == pytest.approx(0.5 / 0.53)
    assert paper["error"] == pytest.approx((0.4 / 0.55) / (0.5 / 0.53) - 1)
    assert paper["loaded_acceptance"] == 0.5 and paper["loaded_tokens"] == pytest.approx(10)
    assert check["within"] is False
    fitted = check["speeds_vs_measured"]["base"]["measured"]
    assert fitted["fixed"] == pytest.approx(0.2) and fitted["per_token"] == pytest.approx(0.02)

    text = cost_check_markdown({**check, "fitted_on": "loaded-folder"})
    assert "Predicted from the calls of `loaded-folder`" in text
    assert "| paper | spec | 10 → 10 | 0.6 | 0.5 | 0.73× | 0.94× | -23% |" in text
    assert "Not within 10%: paper is off by -23%." in text
    two = {**check, "fitted_on": "f", "modes": [*check["modes"], {**paper, "mode": "other",
                                                                    "error": 0.31}]}
    assert "Not within 10%: other is off by +31%, paper by -23%." in cost_check_markdown(two)
    inside = {**check, "fitted_on": "f", "modes": [*check["modes"], {**paper, "mode": "other",
                                                                       "error": 0.05}]}
    assert "Not within 10%: paper is off by -23%." in cost_check_markdown(inside)  # not other
    assert "base decode 50.0 tok/s assumed, 50.0 measured here (fixed 0.20 s per call" in text

    close = one_in_flight_check(exact_costs(), LOADED_MODES, measured, MEASURED_MODES, rows, SPEEDS,
                                tolerance=0.25)
    assert close["within"] is True
    assert "within 25% of the measured one" in cost_check_markdown({**close, "fitted_on": "x"})


def test_the_one_in_flight_check_without_a_reference_says_so():
    loaded = records(*(r for r in exact_costs().values() if r["mode"] != "base-only"))
    measured = measured_costs()
    check = one_in_flight_check(loaded, LOADED_MODES, measured, MEASURED_MODES,
                                mode_rows(measured), SPEEDS)
    assert check["modes"] == [] and check["missing"] == "no base-only in both runs to compare against"
    assert "Not checked: no base-only" in cost_check_markdown({**check, "fitted_on": "x"})


def test_bench_report_cost_check_from_the_command_line(scripted_benchmark, tmp_path, capsys):
    from specreason_graph import cli
    (tmp_path / RUNS_FILE).write_text((scripted_benchmark / RUNS_FILE).read_text())
    (tmp_path / "meta.json").write_text((scripted_benchmark / "meta.json").read_text())
    assert cli.main(["bench-report", str(tmp_path), "--cost-check", str(scripted_benchmark)]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert f"Predicted from the calls of `{scripted_benchmark}`" in text
    assert "| specreason | specreason |" in text
    assert cli.main(["bench-report", str(tmp_path), "--cost-check", str(scripted_benchmark),
                     "--check-speeds", "1,2"]) == 2
    assert "--check-speeds takes one of" in capsys.readouterr().err
    assert cli.main(["bench-report", str(tmp_path), "--cost-check", str(tmp_path / "none")]) == 2
    assert "has no recorded runs to fit the cost model on" in capsys.readouterr().err
