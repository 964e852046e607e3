"""Every step says what decided it: ``trace.explain``'s one line, in the trace record
(``decision``), in the ``step`` stream event and on ``specreason ask``'s step lines — for each judge,
each way a cascade settles, forced and unjudged steps, a judge that failed; and the CLI's tables
printed whole off a terminal."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from specreason_graph import Context, build_graph
from specreason_graph.cli import ask as ask_cmd
from specreason_graph.cli.bench_report import print_report
from specreason_graph.cli.common import print_table
from specreason_graph.trace import explain
from tests.fakes import ScriptedModel, prompt_logprobs, score, step
from tests.streams import run_streamed

PAPER = {"judge": "score", "threshold": 7.0, "score_method": "greedy"}
CASCADE = "check:1-10,confidence:3-8,yes_no"


def run(small_script, base_script, **ctx: Any) -> tuple[dict, list[dict]]:
    """The final state and the custom stream's events of one run with scripted models."""
    small, base = ScriptedModel(script=small_script), ScriptedModel(script=base_script)
    graph = build_graph(small=small, base=base).compile()
    return run_streamed(graph, {"problem": "What is 1 + 2?"}, Context(**{**PAPER, **ctx}))


def base_script(steps=(), judge_replies=(), likelihood=()):
    steps, judge_replies, likelihood = iter(steps), iter(judge_replies), iter(likelihood)

    def respond(messages, kwargs):
        if (kwargs.get("extra_body") or {}).get("prompt_logprobs") is not None:
            return next(likelihood)
        return next(judge_replies) if kwargs.get("max_tokens") == 1 else next(steps)

    return respond


def decided(final: dict, events: list[dict]) -> str:
    """The first step's decision, the same in its trace record and its stream event."""
    record, event = final["trace"][0], events[0]
    assert event["event"] == "step" and event["decision"] == record["decision"]
    return record["decision"]


BOXED = step(r"\boxed{3}")
ANSWER = step(r"So \boxed{3}")


# --- each judge ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("draft", "replies", "ctx", "expected"), [
    (ANSWER, dict(judge_replies=[score("8")]), {}, "score 8 ≥ 7"),
    (step("So 4."), dict(judge_replies=[score("6")], steps=[BOXED]), {}, "score 6 < 7"),
    (step("So 4."), dict(judge_replies=[score("8")], steps=[BOXED]), {"threshold": 9},
     "score 8 < 9"),
    (ANSWER, dict(judge_replies=[score("7", {"7": 0.5, "8": 0.5})]),
     {"score_method": "expected"}, "score (expected) 7.50 ≥ 7"),
    (step("So 4."), dict(judge_replies=[score("The")], steps=[BOXED]), {},
     "score: token 'The' is no digit → 0 < 7"),
    (step("So 4."), dict(judge_replies=[score("No", {"Yes": 0.31, "No": 0.69})], steps=[BOXED]),
     {"judge": "yes_no", "threshold": 8}, "yes_no P(yes) 0.31 → 2.8 < 8"),
    (step(r"So \boxed{3} ok", logprobs=[math.log(0.88)] * 3), {}, {"judge": "confidence", "threshold": 7},
     "confidence 7.9 ≥ 7"),
    (step("So 3 ok", logprobs=[math.log(0.88)] * 3), dict(steps=[BOXED]),
     {"judge": "confidence", "threshold": 8}, "confidence 7.9 < 8"),
    (step("So 3."), dict(likelihood=[prompt_logprobs(["a"], [("So 3.", math.log(0.5))])],
                         steps=[BOXED]),
     {"judge": "likelihood"}, "likelihood 4.5 < 7"),
    (step("She has 16 - 48 = -22 eggs left."), dict(steps=[BOXED]), {"judge": "check"},
     "check 16 - 48 = -22 is false → 0 < 7"),
    (step("So 3 * 4 = 12 and 12 - 2 = 10."), {}, {"judge": "check"},
     "check 2 equations hold → 9 ≥ 7"),
    (step("No arithmetic here."), {}, {"judge": "check"}, "check no arithmetic → 9 ≥ 7"),
])
def test_each_judge_names_its_reading_and_the_threshold(draft, replies, ctx, expected):
    final, events = run([draft, BOXED], base_script(**replies), **ctx)
    assert decided(final, events) == expected


def test_a_judge_that_cannot_read_its_signal_says_why():
    final, events = run([step("So 3.")], base_script(steps=[BOXED]), judge="confidence",
                        threshold=1)
    assert decided(final, events) == (
        "confidence failed (the small model's reply carried no token logprobs) → 0 < 1")


def test_a_long_judge_error_is_cut_to_a_line():
    record = {"forced": False, "judge": "score", "score": 0.0, "judges": {"score": {
        "score": 0.0, "error": "MalformedReply: " + "x" * 300 + "\nsecond line", "reads": {}}}}
    line = explain(record, 7)
    assert line.startswith("score failed (MalformedReply: xxx") and line.endswith("…) → 0 < 7")
    assert len(line) < 90 and "second line" not in line


# --- a cascade: the stages asked, and how the last one settled it ---------------------------------

def test_a_cascade_stage_below_its_band_rejects():
    final, events = run([step("2 + 2 = 5 so", logprobs=[-0.01] * 6)], base_script(steps=[BOXED]),
                        judge="cascade", cascade=CASCADE)
    assert decided(final, events) == "cascade: check 2 + 2 = 5 is false → 0 < 1 → rejected"


def test_a_cascade_stage_at_the_top_of_its_band_accepts():
    final, events = run([step(r"So \boxed{3}", logprobs=[-0.01, -0.01])], base_script(),
                        judge="cascade", cascade=CASCADE)
    assert decided(final, events) == (
        "cascade: check no arithmetic → 9 in 1-10, confidence 8.9 ≥ 8 → accepted")


def test_the_last_cascade_stage_meets_the_threshold():
    middling = [math.log(0.6)] * 2  # 9 × 0.6 = 5.4, inside 3-8
    final, events = run([step("So 3.", logprobs=middling)],
                        base_script(judge_replies=[score("No", {"Yes": 0.1, "No": 0.9})],
                                    steps=[BOXED]),
                        judge="cascade", cascade=CASCADE, threshold=5)
    assert decided(final, events) == ("cascade: check no arithmetic → 9 in 1-10, confidence 5.4 "
                                      "in 3-8, yes_no P(yes) 0.10 → 0.9 < 5")


def test_a_cascade_stage_that_cannot_read_passes_the_draft_on():
    final, events = run([ANSWER], base_script(judge_replies=[score("Yes", {"Yes": 0.9,
                                                                                  "No": 0.1})]),
                        judge="cascade", cascade=CASCADE, threshold=5)
    assert decided(final, events) == (
        "cascade: check no arithmetic → 9 in 1-10, confidence failed (the small model's reply "
        "carried no token logprobs) → 0, yes_no P(yes) 0.90 → 8.1 ≥ 5")


def stage(judge: str, score: float, band: list[float] | None, **reads: Any) -> dict:
    return {"judge": judge, "score": score, "error": None, "reads": reads, "band": band}


def cascaded(score: float, stages: list[dict]) -> Any:
    return {"forced": False, "judge": "cascade", "score": score, "judges": {"cascade": {
        "score": score, "error": None, "reads": {"decided_by": stages[-1]["judge"],
                                                 "stages": stages}}}}


def test_a_threshold_that_overrules_the_band_is_shown_as_such():
    record = cascaded(9.0, [stage("confidence", 8.8, [3, 8])])
    assert explain(record, 10) == "cascade: confidence 8.8 ≥ 8 → 9 < 10"
    record = cascaded(0.0, [stage("confidence", 1.0, [3, 8])])
    assert explain(record, 0) == "cascade: confidence 1 < 3 → 0 ≥ 0"


def test_a_cascade_record_from_before_the_bands_were_recorded_still_reads():
    old = cascaded(9.0, [stage("check", 9.0, None, equations=0, false=[]),
                         stage("confidence", 8.8, None)])
    for s in old["judges"]["cascade"]["reads"]["stages"]:
        del s["band"]
    assert explain(old, 7) == "cascade: check no arithmetic → 9, confidence 8.8 → accepted"


@pytest.mark.parametrize(("score", "threshold", "shown"), [
    (7.96, 8, "7.96 < 8"), (8.04, 8, "8.04 ≥ 8"), (7.9999, 8, "7.9999 < 8"), (7.5, 8, "7.5 < 8"),
])
def test_a_score_is_never_rounded_across_the_threshold(score, threshold, shown):
    record = {"forced": False, "judge": "confidence", "score": score,
              "judges": {"confidence": {"score": score, "error": None, "reads": {}}}}
    assert explain(record, threshold) == f"confidence {shown}"


# --- forced and unjudged steps -------------------------------------------------------------------

def test_forced_and_unjudged_steps_say_so():
    final, events = run([], base_script(steps=[step("First."), BOXED]), first_n_base=2)
    assert [e["decision"] for e in events] == [
        "forced: one of the first_n_base steps, no draft or judge"] * 2
    assert [r["decision"] for r in final["trace"]] == [e["decision"] for e in events]
    final, events = run([step("So 3."), BOXED], base_script(), small_only=True)
    assert [e["decision"] for e in events] == ["unjudged: small-only keeps every draft"] * 2


# --- specreason ask ------------------------------------------------------------------------------

def ask_lines(capsys, small_script, base_script_, **ctx: Any) -> list[str]:
    small, base = ScriptedModel(script=small_script), ScriptedModel(script=base_script_)
    code = ask_cmd._run(build_graph(small=small, base=base).compile(), "What is 1 + 2?", None,
                        Context(**{**PAPER, **ctx}), False)
    assert code == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]


def test_ask_prints_what_decided_each_step(capsys):
    lines = ask_lines(capsys, [step("So 4."), ANSWER],
                      base_script(judge_replies=[score("No", {"Yes": 0.31, "No": 0.69}),
                                                 score("Yes", {"Yes": 0.9, "No": 0.1})],
                                  steps=[step("First."), step("Then 1 + 2 = 3.")]),
                      judge="yes_no", threshold=8, first_n_base=1)
    assert lines[0].startswith("step 0  base forced: one of the first_n_base steps, no draft or judge")
    assert lines[1].startswith("step 1  small ✗ yes_no P(yes) 0.31 → 2.8 < 8 → base rewrote  ")
    assert lines[2].startswith("step 2  small ✓ yes_no P(yes) 0.90 → 8.1 ≥ 8  ")


def test_ask_prints_a_cascade_decision_and_unjudged_steps(capsys):
    lines = ask_lines(capsys, [step("2 + 2 = 5 so", logprobs=[-0.01] * 6)],
                      base_script(steps=[BOXED]), judge="cascade", cascade=CASCADE)
    assert lines[0].startswith(
        "step 0  small ✗ cascade: check 2 + 2 = 5 is false → 0 < 1 → rejected → base rewrote")
    lines = ask_lines(capsys, [BOXED], base_script(), small_only=True)
    assert lines[0].startswith("step 0  small unjudged: small-only keeps every draft  ")


def test_ask_prints_an_event_from_before_decisions_were_recorded():
    out = Console(file=io.StringIO(), width=200)
    ask_cmd._print_step({"index": 4, "writer": "small", "score": 8.0, "accepted": False,
                         "forced": False, "tokens": 3, "ms": 10.0, "text": "x"}, out)
    assert out.file.getvalue().startswith("step 4  small ✗ score 8 → base rewrote")


def test_a_decision_with_brackets_is_printed_as_text_not_markup():
    out = Console(file=io.StringIO(), width=200)
    ask_cmd._print_step({"index": 0, "writer": "base", "score": 0.0, "accepted": False,
                         "forced": False, "decision": "check [2] + 2 = 5 is false → 0 < 7",
                         "tokens": 3, "ms": 10.0, "text": "x"}, out)
    assert "check [2] + 2 = 5 is false" in out.file.getvalue()


# --- tables read whole wherever they go ------------------------------------------------------------

def summary_with_long_figures() -> dict:
    rows = [{"mode": name, "runs": 1234, "accuracy": 0.70123, "mean_s": 12345.6, "p90_s": 23456.7,
             "speedup": 1.2345, "acceptance": 0.8123, "share_judge": 0.4567,
             "judge_cache_hit": 0.9876, "failed": 17, "accuracy_problems": 1234, "judge_errors": 42}
            for name in ("base", "specreason+specdecode:t=7,score=expected")]
    return {"title": "gsm8k: 1234 problems", "rows": rows, "paired": []}


def test_a_piped_bench_table_prints_every_figure_uncut(capsys):
    print_report(summary_with_long_figures())
    out = capsys.readouterr().out
    for figure in ("specreason+specdecode:t=7,score=expected", "1234", "70.1%", "12345.6",
                   "23456.7", "1.23×", "81%", "46%", "99%", "17", "42"):
        assert figure in out, figure
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()) > 80


def test_on_a_terminal_a_table_keeps_the_terminals_width():
    table = Table("a", "b")
    table.add_row("x" * 70, "y" * 70)
    out = Console(file=io.StringIO(), force_terminal=True, width=80, color_system=None)
    print_table(table, out)
    assert max(len(line) for line in out.file.getvalue().splitlines()) <= 80


def test_off_a_terminal_any_table_prints_at_its_full_width():
    table = Table("a", "b")
    table.add_row("x" * 70, "y" * 70)
    buffer = io.StringIO()
    print_table(table, Console(file=buffer, width=80))
    assert "x" * 70 in buffer.getvalue() and "y" * 70 in buffer.getvalue()
