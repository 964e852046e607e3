"""The report's parts for the paper's SpecDecode rows: the frontier of the modes that do not judge,
the base server's draft acceptance, SpecDecode's solutions against base-only's, the drift between
segments of different modes, the cost model's speculative-decoding term, and build() on a
synthetic folder that holds all of them (hand-made records shaped like the runner's)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from specreason_graph.evaluation import report
from specreason_graph.evaluation.cost_model import (
    GpuProfile,
    acceptance_alpha,
    cost_model,
    expected_tokens,
    one_in_flight_check,
    spec_decode_per_token,
)
from specreason_graph.evaluation.records import META_FILE, RUNS_FILE
from specreason_graph.evaluation.render import (
    drift_markdown,
    frontier_markdown,
    markdown_table,
    spec_decode_markdown,
)
from specreason_graph.evaluation.stats import (
    above_frontier,
    envelope,
    frontier_at,
    identical_outputs,
    mode_rows,
    non_judging,
    segment_drift,
)
from tests.unit_tests.test_report import PNG_MAGIC, base_call, call, drafted, record, records

# --- the frontier --------------------------------------------------------------------------------

def test_envelope_is_the_upper_concave_hull_up_to_the_most_accurate_point():
    # (1, .2) fastest; (2, .3) lies under the chord from (1, .2) to (3, .6); (4, .7) the most
    # accurate; (5, .5) slower and worse: under the flat part; (3, .5) same latency as (3, .6)
    points = [(3.0, 0.6), (1.0, 0.2), (2.0, 0.3), (4.0, 0.7), (5.0, 0.5), (3.0, 0.5)]
    assert envelope(points) == [(1.0, 0.2), (3.0, 0.6), (4.0, 0.7)]
    assert envelope([]) == []
    assert envelope([(2.0, 0.5)]) == [(2.0, 0.5)]
    # the fastest is the most accurate: the frontier is flat from it on
    assert envelope([(1.0, 0.9), (3.0, 0.8)]) == [(1.0, 0.9)]
    # two fastest: the more accurate starts it; two most accurate: the faster ends it
    assert envelope([(1.0, 0.1), (1.0, 0.3), (2.0, 0.8), (3.0, 0.8)]) == [(1.0, 0.3), (2.0, 0.8)]
    # a point on the chord is no corner
    assert envelope([(1.0, 0.25), (2.0, 0.5), (3.0, 0.75)]) == [(1.0, 0.25), (3.0, 0.75)]


def test_frontier_at_interpolates_is_flat_after_and_undefined_before():
    corners = [(1.0, 0.2), (3.0, 0.6), (4.0, 0.7)]
    assert frontier_at(corners, 0.5) is None
    assert frontier_at(corners, 1.0) == pytest.approx(0.2)
    assert frontier_at(corners, 2.0) == pytest.approx(0.4)
    assert frontier_at(corners, 3.5) == pytest.approx(0.65)
    assert frontier_at(corners, 9.0) == pytest.approx(0.7)
    assert frontier_at([], 1.0) is None


def test_non_judging_takes_every_one_request_mode_small_first_then_the_reference():
    modes = {"specdecode": {"kind": "base"}, "base-only": {"kind": "base"},
             "judge": {"kind": "spec"}, "small-only": {"kind": "small"},
             "base-steps": {"kind": "base-steps"}, "absent": {"kind": "base"}}
    present = ["specdecode", "base-only", "judge", "small-only", "base-steps"]
    assert non_judging(modes, present) == ["small-only", "base-only", "specdecode"]
    assert non_judging({}, present) == ["small-only", "base-only"]  # no settings: by name
    assert non_judging({}, ["base-only"]) == ["base-only"]


def frontier_records() -> dict[str, dict[str, Any]]:
    """Four problems. small-only 1 s, 25%; specdecode 2 s, 75%; base-only 3 s, 75%: the frontier
    runs from (1, 25%) to (2, 75%) and is flat after; base-only lies on its flat part."""
    right = {"small-only": [1, 0, 0, 0], "specdecode": [1, 1, 1, 0], "base-only": [1, 1, 1, 0],
             "judge": [1, 1, 0, 0], "fast": [1, 0, 0, 0], "slow": [1, 1, 1, 1]}
    wall = {"small-only": 1.0, "specdecode": 2.0, "base-only": 3.0, "judge": 1.5, "fast": 0.5,
            "slow": 4.0}
    return records(*(record(mode, f"p{i}", bool(ok), wall[mode], [])
                     for mode, oks in right.items() for i, ok in enumerate(oks)))


def test_above_frontier_of_three_modes():
    rs = frontier_records()
    three = ["small-only", "base-only", "specdecode"]
    judge = above_frontier(rs, "judge", three, resamples=300)
    # at 1.5 s the frontier is halfway between 25% and 75%: 50%; judge has 50%
    assert judge["margin"] == pytest.approx(0.0) and judge["faster"] is False
    assert judge["frontier"] == three and judge["problems"] == 4
    slow = above_frontier(rs, "slow", three, resamples=300)  # flat at 75% after specdecode
    assert slow["margin"] == pytest.approx(0.25)
    # without specdecode the frontier is the line to base-only: at 4 s, flat at 75% too
    assert above_frontier(rs, "slow", three[:2], resamples=300)["margin"] == pytest.approx(0.25)
    assert above_frontier(rs, "judge", three[:2], resamples=300)["margin"] == pytest.approx(
        0.5 - (0.25 + 0.5 * 0.25))
    assert above_frontier(rs, "specdecode", three) is None


def test_a_mode_faster_than_every_non_judging_one_is_measured_against_the_fastest_only():
    found = above_frontier(frontier_records(), "fast", ["small-only", "base-only"], resamples=300)
    assert found["faster"] is True and found["fastest"] == "small-only"
    assert found["margin"] == pytest.approx(0.0)
    text = frontier_markdown([found])
    assert "against small-only (faster than every non-judging mode)" in text
    assert "The frontier of the modes that do not judge (small-only, base-only)" in text


# --- speculative decoding in the rows --------------------------------------------------------------

def sd(drafts: float, draft_tokens: float, accepted: float) -> dict[str, float]:
    return {"drafts": drafts, "draft_tokens": draft_tokens, "accepted_tokens": accepted}


def test_rows_give_the_base_servers_draft_acceptance_and_a_dash_without_counters():
    rs = records(
        record("base-only", "p1", True, 1.0, [base_call(10, 1000)]),
        {**record("specdecode", "p1", True, 0.5, [base_call(10, 500)]),
         "spec_decode": sd(4, 16, 6)},
        {**record("specdecode", "p2", True, 0.5, [base_call(10, 500)]),
         "spec_decode": sd(6, 24, 10)},
        {**record("specdecode", "p3", True, 0.5, [base_call(10, 500)]), "spec_decode": None},
        {**record("specdecode", "p4", None, 0.5, [], error="boom"), "spec_decode": sd(9, 9, 9)})
    base, fast = mode_rows(rs)
    assert fast["spec_decode_acceptance"] == pytest.approx(16 / 40)
    assert fast["spec_decode_accepted_per_draft"] == pytest.approx(16 / 10)
    assert base["spec_decode_acceptance"] is None and base["spec_decode_accepted_per_draft"] is None
    table = markdown_table([{**base, "same_output": None}, {**fast, "same_output": "1 of 1"}])
    assert "| SD accept | SD tok/draft |" in table and "| 40% | 1.60 |" in table
    assert "| 1 of 1 |" in table and "| – |  | 0 |" in table  # blank, not a dash, where n/a


def test_identical_outputs_counts_spec_decodes_solutions_equal_to_base_onlys():
    def one(mode: str, pid: str, text: str, sample: int = 0, **kw: Any) -> dict[str, Any]:
        return record(mode, pid, True, 1.0, [{**base_call(5, 100), "text": text}], sample, **kw)

    rs = records(one("base-only", "p1", "a"), one("specdecode", "p1", "a"),
                 one("base-only", "p2", "b"), one("specdecode", "p2", "c"),
                 one("base-only", "p3", "d", sample=1), one("specdecode", "p3", "d", sample=1),
                 one("specdecode", "p4", "e"),  # base-only never ran p4
                 one("base-only", "p5", "f"), one("specdecode", "p5", "f", error="boom"),
                 one("small-only", "p1", "a"), one("url-small", "p1", "a"))
    modes = {"base-only": {"kind": "base"}, "specdecode": {"kind": "base"},
             "small-only": {"kind": "small"}, "url-small": {"kind": "small"},
             "judge": {"kind": "spec"}}
    assert identical_outputs(rs, modes) == {"specdecode": "2 of 3"}
    assert identical_outputs(rs, {}) == {}


# --- drift between segments ----------------------------------------------------------------------

A = ["base-only", "small-only", "judge"]
B = ["specdecode", "judge+sd"]
SEGMENTS = [
    {"started": "2025-01-01T00:00:00+00:00", "ended": "2025-01-01T01:00:00+00:00", "modes": A},
    {"started": "2025-01-01T01:00:10+00:00", "modes": B},  # killed: no end of its own
    {"started": "2025-01-01T02:00:00+00:00", "ended": "2025-01-01T03:00:00+00:00", "modes": A},
    {"started": "2025-01-01T03:00:10+00:00", "ended": "2025-01-01T04:00:00+00:00", "modes": B},
]


def at(r: dict[str, Any], when: str) -> dict[str, Any]:
    return {**r, "finished_at": f"2025-01-01T{when}+00:00"}


def test_segment_drift_compares_the_small_models_speed_between_groups_of_segments():
    small = lambda tokens, ms: call(tokens=tokens, draft_tokens=tokens, draft_ms=ms)  # noqa: E731
    rs = records(
        at(record("small-only", "p1", True, 1.0, [small(100, 10_000)]), "00:30:00"),
        at(record("judge", "p1", True, 1.0, [small(10, 2000), small(10, 2000)]), "00:40:00"),
        at(record("base-only", "p1", True, 1.0, [base_call(10, 999)]), "00:50:00"),
        at(record("judge+sd", "p1", True, 1.0, [small(20, 4400)]), "01:30:00"),  # 1.1 × slower
        at(record("specdecode", "p1", True, 1.0, [base_call(10, 500)]), "01:40:00"),
        at(record("small-only", "p2", True, 1.0, [small(50, 5000)]), "02:30:00"),
        at(record("judge", "p2", True, 1.0, [small(20, 4000)]), "02:40:00"),
        at(record("judge+sd", "p2", True, 1.0, [small(40, 8800)]), "03:30:00"),
        at(record("judge", "p3", None, 1.0, [], error="boom"), "02:50:00"),
        at(record("judge", "p4", True, 1.0, [small(5, 5000)]), "05:00:00"),  # after A's end
        at(record("judge", "p5", True, 1.0, [small(5, 5000)]), "00:00:00"),  # as A began
    )
    modes = {m: {"kind": "small" if m == "small-only" else "base" if "only" in m or m ==
                 "specdecode" else "spec"} for m in A + B}
    drift = segment_drift(rs, SEGMENTS, modes)
    assert [(s["segment"], s["group"], s["runs"]) for s in drift["segments"]] == [
        (1, "A", 4), (2, "B", 2), (3, "A", 2), (4, "B", 1)]
    first = drift["segments"][0]
    assert first["one_request_s_per_token"] == pytest.approx(0.1)
    assert first["drafts_s_per_token"] == pytest.approx(9 / 25)  # with p5's slow draft
    assert first["small_calls"] == 4 and first["small_tokens"] == 125
    assert first["ended"] == "2025-01-01T01:00:00+00:00" and drift["segments"][1]["ended"] is None
    a, b = drift["groups"]
    assert (a["group"], a["modes"], a["segments"]) == ("A", A, [1, 3])
    assert (b["group"], b["modes"], b["segments"]) == ("B", B, [2, 4])
    assert a["drafts_s_per_token"] == pytest.approx(13 / 45)
    assert b["drafts_s_per_token"] == pytest.approx(0.22)
    assert b["ratio_drafts"] == pytest.approx(0.22 / (13 / 45)) and a["ratio_drafts"] == 1.0
    assert b["ratio_one_request"] is None  # B ran no small-only
    # Adjusted: base-only's p1 ran in segment 1 (drafts 0.36 s/token), specdecode's in segment 2
    # (0.22): the machine was faster for specdecode, so its equal wall time is a loss once adjusted
    adjusted = {a["mode"]: a for a in drift["adjusted"]}
    assert set(adjusted) == {"small-only", "judge", "specdecode", "judge+sd"}
    sd = adjusted["specdecode"]
    assert (sd["problems"], sd["speedup"]) == (1, 1.0)
    assert sd["adjusted"] == pytest.approx(0.22 / 0.36)
    assert adjusted["judge"]["adjusted"] == pytest.approx(1.0)  # the same segment as base-only
    text = drift_markdown(drift)
    assert "**Drift between segments.**" in text and "| 2 | B | 2025-01-01T01:00:10+00:00 | – |" in text
    assert f"B against A: one request –, drafts ×{0.22 / (13 / 45):.3f}" in text
    assert f"specdecode 1.00× → {0.22 / 0.36:.2f}×" in text


def test_a_segment_without_drafts_is_adjusted_by_its_neighbours():
    """A segment of modes that write no drafts (base-only or specdecode alone) takes the mean
    draft speed of the segments with drafts just before and after it."""
    small = lambda tokens, ms: call(tokens=tokens, draft_tokens=tokens, draft_ms=ms)  # noqa: E731
    rs = records(
        at(record("judge", "p1", True, 1.0, [small(10, 2000)]), "00:30:00"),      # seg 1: 0.2
        at(record("base-only", "p1", True, 2.0, [base_call(10, 999)]), "00:40:00"),
        at(record("specdecode", "p1", True, 1.0, [base_call(10, 500)]), "01:30:00"),  # seg 2: none
        at(record("judge", "p2", True, 1.0, [small(10, 4000)]), "02:30:00"),      # seg 3: 0.4
        at(record("base-only", "p2", True, 2.0, [base_call(10, 999)]), "02:40:00"),
        at(record("specdecode", "p2", True, 1.0, [base_call(10, 500)]), "03:30:00"),  # seg 4: none
    )
    modes = {"judge": {"kind": "spec"}, "base-only": {"kind": "base"}, "specdecode": {"kind": "base"}}
    segments = [dict(s, modes=["judge", "base-only"] if s["modes"] == A else ["specdecode"])
                for s in SEGMENTS]
    drift = segment_drift(rs, segments, modes)
    sd = next(a for a in drift["adjusted"] if a["mode"] == "specdecode")
    # segment 2 takes the mean of segments 1 and 3 (0.3 s/token), segment 4 segment 3's (0.4)
    base = (2 / 0.2 + 2 / 0.4) / 2
    assert sd["speedup"] == pytest.approx(2.0)
    assert sd["adjusted"] == pytest.approx(base / ((1 / 0.3 + 1 / 0.4) / 2))


def test_no_drift_when_every_segment_ran_the_same_modes():
    rs = records(at(record("judge", "p1", True, 1.0, []), "00:30:00"),
                 at(record("judge", "p2", True, 1.0, []), "02:30:00"))
    assert segment_drift(rs, [SEGMENTS[0], SEGMENTS[2]]) is None
    assert segment_drift(rs, []) is None
    # a group that ran nothing recorded does not count
    assert segment_drift(rs, SEGMENTS) is None


# --- the cost model's speculative-decoding term ----------------------------------------------------

def test_expected_tokens_and_the_acceptance_it_is_solved_from():
    assert expected_tokens(0.0, 4) == 1.0 and expected_tokens(1.0, 4) == 5.0
    assert expected_tokens(0.5, 4) == pytest.approx(1 + 0.5 + 0.25 + 0.125 + 0.0625)
    for alpha in (0.1, 0.5, 0.8, 0.95):
        assert acceptance_alpha(expected_tokens(alpha, 4) - 1, 4) == pytest.approx(alpha, abs=1e-9)
    assert acceptance_alpha(0.0, 4) == 0.0 and acceptance_alpha(4.0, 4) == 1.0
    assert spec_decode_per_token(0.005, 0.03, 0.8, 4) == pytest.approx(0.05 / 3.3616)


K, V = 4.0, 1.5
C_DRAFT, C_BASE, FIXED = 0.005, 0.02, 0.2


def sd_run(mode: str, pid: str, trace: list, alpha: float, slower: float = 1.0
           ) -> dict[str, Any]:
    """A run whose base calls decode speculatively at ``alpha`` (k = 4, c_verify = 1.5 × c_base):
    each base call takes FIXED + tokens × (k c_draft + c_verify) / E; its counters say the same.
    ``slower`` scales every call (drift)."""
    e = expected_tokens(alpha, K)
    per_token = spec_decode_per_token(C_DRAFT, V * C_BASE, alpha, K)
    out = []
    for c in trace:
        c = dict(c)
        if c["base_tokens"]:
            c["base_ms"] = 1000 * (FIXED + c["base_tokens"] * per_token)
        c.update({k: c[k] * slower for k in ("draft_ms", "judge_ms", "base_ms")})
        c["ms"] = c["draft_ms"] + c["judge_ms"] + c["base_ms"]
        out.append(c)
    tokens = sum(c["base_tokens"] for c in out)
    drafts = tokens / e
    return {**record(mode, pid, True, sum(c["ms"] for c in out) / 1000, out),
            "spec_decode": sd(drafts, K * drafts, (e - 1) * drafts)}


def sd_costs(slower: float = 1.0) -> dict[str, dict[str, Any]]:
    """Plain calls that cost exactly (draft 0.1 s + 5 ms/token, judge 0.05 s + 1 ms per new prompt
    token, base 0.2 s + 20 ms/token), and the same problems on the speculative server: specdecode
    at α = 0.8, the SpecReason mode at α = 0.6 (its rewrites are harder to guess)."""
    judge_p2 = lambda: drafted(20, 200, accepted=False, prompt=120, cached=100,  # noqa: E731
                               judge_ms=70, base_tokens=10, base_ms=400)
    plain = records(
        record("base-only", "p1", False, 0.4, [base_call(10, 400)]),
        record("base-only", "p2", True, 0.6, [base_call(20, 600)]),
        record("small-only", "p1", True, 0.25, [call(tokens=30, draft_tokens=30, draft_ms=250)]),
        record("small-only", "p2", False, 0.15, [call(tokens=10, draft_tokens=10, draft_ms=150)]),
        record("judge", "p1", True, 0.24, [
            drafted(10, 150, accepted=True, prompt=100, cached=60, judge_ms=90)]),
        record("judge", "p2", True, 0.67, [judge_p2()]))
    fast = records(
        sd_run("specdecode", "p1", [base_call(10, 0)], 0.8),
        sd_run("specdecode", "p2", [base_call(30, 0)], 0.8),
        sd_run("judge+sd", "p1", [drafted(10, 150, accepted=True, prompt=100, cached=60,
                                          judge_ms=90)], 0.6, slower),
        sd_run("judge+sd", "p2", [judge_p2()], 0.6, slower))
    fast["judge+sd|p1|0"]["spec_decode"] = None  # nothing regenerated: no counters written
    return plain | fast


def test_cost_model_fits_the_verify_factor_on_specdecode_and_predicts_specreason_with_it():
    rs = sd_costs()
    model = cost_model(rs, mode_rows(rs))
    lines = model["lines"]  # the speculative runs are not in the plain lines
    assert lines["base"] == pytest.approx({"fixed": 0.2, "per_token": 0.02, "calls": 3})
    assert lines["draft"] == pytest.approx({"fixed": 0.1, "per_token": 0.005, "calls": 4})
    fit = model["spec_decode"]
    assert fit["verify_factor"] == pytest.approx(V) and fit["fitted_on"] == ["specdecode"]
    assert fit["c_base"] == pytest.approx(C_BASE) and fit["c_draft"] == pytest.approx(C_DRAFT)
    spec, judge = fit["modes"]["specdecode"], fit["modes"]["judge+sd"]
    assert spec["k"] == pytest.approx(4) and spec["alpha"] == pytest.approx(0.8)
    assert spec["expected_tokens"] == pytest.approx(expected_tokens(0.8, 4))
    assert judge["alpha"] == pytest.approx(0.6) and judge["runs"] == 1
    assert judge["per_token_s"] == pytest.approx(spec_decode_per_token(C_DRAFT, V * C_BASE, 0.6, 4))
    for e in (spec, judge):  # both exact: wall = the calls, and v carries over
        assert e["predicted_s"] == pytest.approx(e["measured_s"]) and e["error"] == pytest.approx(0)
    entry = model["modes"]["judge+sd"]
    assert entry["predicted_speedup"] == pytest.approx(entry["measured_speedup"])

    drifted = sd_costs(slower=1.1)  # the speculative SpecReason runs ran on a slower machine
    found = cost_model(drifted, mode_rows(drifted))["spec_decode"]["modes"]["judge+sd"]
    assert found["error"] == pytest.approx(1 / 1.1 - 1)

    text = spec_decode_markdown(model["spec_decode"])
    assert "c_verify = 1.50 × c_base, the factor fitted on specdecode" in text
    assert "| judge+sd | 4.00 | " in text and "| +0% |" in text


def test_cost_model_projects_speculation_onto_a_gpu_and_says_when_it_cannot_fit_it():
    gpu = GpuProfile("test", small_decode_tps=100, base_decode_tps=10, base_prefill_tps=1000,
                     call_overhead_s=0.01, note="")
    rs = sd_costs()
    modes = cost_model(rs, mode_rows(rs), gpu=gpu)["modes"]
    per_token = spec_decode_per_token(1 / 100, V / 10, 0.8, 4)
    assert modes["specdecode"]["gpu_s"] == pytest.approx(0.01 + 20 * per_token)
    assert modes["base-only"]["gpu_s"] == pytest.approx(0.01 + 1.5)

    no_fit = {k: r for k, r in rs.items() if r["mode"] != "specdecode"}
    model = cost_model(no_fit, mode_rows(no_fit))
    assert "judge+sd" not in model["modes"] and "judge" in model["modes"]
    plain = {k: r for k, r in no_fit.items() if r["mode"] != "judge+sd"}
    assert cost_model(plain, mode_rows(plain))["spec_decode"] is None  # nothing speculates
    assert "verify factor" in model["spec_decode"]["missing"]
    assert "not modelled" in spec_decode_markdown(model["spec_decode"])


def test_the_one_in_flight_check_leaves_speculating_modes_out():
    rs = sd_costs()
    modes = {"base-only": {"kind": "base", "one_request": "base"},
             "specdecode": {"kind": "base", "one_request": "base"}}
    check = one_in_flight_check(rs, modes, rs, modes, mode_rows(rs),
                                GpuProfile("t", 100.0, 50.0, 1000.0, 0.1, ""))
    assert [e["mode"] for e in check["modes"]] == ["base-only"]
    assert check["modes"][0]["loaded_mode"] == "base-only"


# --- build() on a folder with every new part ---------------------------------------------------------

SD_MODES = {"base-only": {"kind": "base", "base_url": "http://127.0.0.1:8101/v1"},
            "small-only": {"kind": "small", "base_url": "http://127.0.0.1:8101/v1"},
            "judge": {"kind": "spec", "threshold": 7.0, "score_method": "greedy",
                      "base_url": "http://127.0.0.1:8101/v1"},
            "specdecode": {"kind": "base", "base_url": "http://127.0.0.1:8103/v1"},
            "judge+sd": {"kind": "spec", "threshold": 7.0, "score_method": "greedy",
                         "base_url": "http://127.0.0.1:8103/v1"}}


@pytest.fixture
def folder(tmp_path):
    """sd_costs() written as a results folder run in two segments of each pair of servers (ABAB),
    the speculative SpecReason runs 10% slower, at temperature 0, specdecode writing base-only's
    text on p1 only."""
    rs = sd_costs(slower=1.1)
    when = {"base-only": "00:10:00", "small-only": "00:20:00", "judge": "00:30:00",
            "specdecode": "01:10:00", "judge+sd": "01:20:00"}
    runs = []
    for r in rs.values():
        second = r["id"] == "p2"
        stamp = when[r["mode"]]
        r = at(r, f"0{int(stamp[1]) + 2 * second}{stamp[2:]}")
        if r["mode"] in ("base-only", "specdecode"):
            text = "same" if r["id"] == "p1" or r["mode"] == "base-only" else "other"
            r["trace"] = [{**c, "text": text} for c in r["trace"]]
        runs.append(r)
    (tmp_path / RUNS_FILE).write_text("".join(json.dumps(r) + "\n" for r in runs))
    meta = {"settings": {"dataset": ["gsm8k"], "modes": SD_MODES,
                         "context": {"temperature": 0.0, "token_budget": 64}},
            "segments": [{**s, "concurrency": 1, "modes": list(SD_MODES)[:3] if i % 2 == 0 else
                          list(SD_MODES)[3:]} for i, s in enumerate(SEGMENTS)]}
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    return tmp_path


def test_build_reports_specdecode_rows_frontier_drift_and_the_cost_term(folder):
    summary = report.build(folder)
    rows = {r["mode"]: r for r in summary["rows"]}
    assert list(rows) == list(SD_MODES)
    assert summary["frontier"] == ["small-only", "base-only", "specdecode"]
    assert [c["mode"] for c in summary["above_frontier"]] == ["judge", "judge+sd"]
    assert rows["specdecode"]["spec_decode_acceptance"] == pytest.approx(
        (expected_tokens(0.8, 4) - 1) / 4)
    assert rows["base-only"]["spec_decode_acceptance"] is None
    assert rows["specdecode"]["same_output"] == "1 of 2" and rows["judge"]["same_output"] is None
    a, b = summary["drift"]["groups"]
    assert (a["segments"], b["segments"]) == ([1, 3], [2, 4])
    assert b["ratio_drafts"] == pytest.approx(1.1)
    sd_fit = summary["cost_model"]["spec_decode"]
    assert sd_fit["verify_factor"] == pytest.approx(V)
    assert sd_fit["modes"]["judge+sd"]["error"] == pytest.approx(1 / 1.1 - 1)

    md = (folder / "summary.md").read_text()
    for text in ("| mode vs the frontier |",
                 "The frontier of the modes that do not judge (small-only, base-only, specdecode)",
                 "SD accept / SD tok/draft", "same text: on how many problems",
                 "**Drift between segments.**", "B against A: one request –, drafts ×1.100",
                 "Speculative decoding in the base server", "| judge+sd | 4.00 |"):
        assert text in md
    assert "| 1 of 2 |" in md
    table = list(csv.DictReader(io.StringIO((folder / "summary.csv").read_text())))
    assert {r["mode"]: r["same_output"] for r in table}["specdecode"] == "1 of 2"
    assert (folder / "accuracy_latency.png").read_bytes()[:8] == PNG_MAGIC


def test_build_counts_identical_text_only_at_temperature_zero(folder):
    meta = json.loads((folder / META_FILE).read_text())
    meta["settings"]["context"]["temperature"] = 0.6
    (folder / META_FILE).write_text(json.dumps(meta))
    summary = report.build(folder)
    assert all(r["same_output"] is None for r in summary["rows"])
    assert "same text: on how many" not in (folder / "summary.md").read_text()
