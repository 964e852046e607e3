"""Step labels by rollouts and the calibration that picks a judge: on hand-made records shaped like
the runner's, and rollouts through a scripted small model (no network)."""

from __future__ import annotations

import json
import math

import pytest

from specreason_graph import Context
from specreason_graph.evaluation import calibrate, labels
from specreason_graph.evaluation.cost_model import GpuProfile
from specreason_graph.evaluation.datasets import Problem
from specreason_graph.models import Models
from tests.fakes import ScriptedModel, step

PROBLEM = Problem("gsm8k", "7", "What is 1 + 2?", "3")
SPEEDS = GpuProfile("test", small_decode_tps=10.0, base_decode_tps=2.0, base_prefill_tps=40.0,
                    call_overhead_s=0.1, note="")


def judged(text: str, signals: dict[str, float], tokens: int = 10) -> dict:
    """A trace record of a draft kept at threshold 0, judged by every judge."""
    judges = {
        "score": {"score": signals["score"], "ms": 1000.0, "prompt_tokens": 40, "cached_tokens": 32,
                  "error": None, "reads": {"token": str(int(signals["score"])),
                                           "alternatives": [[str(int(signals["score"])), 0.0]]}},
        "yes_no": {"score": signals["yes_no"], "ms": 1000.0, "prompt_tokens": 40,
                   "cached_tokens": 32, "error": None, "reads": {"p_yes": signals["yes_no"] / 9}},
        "confidence": {"score": signals["confidence"], "ms": 0.0, "prompt_tokens": 0,
                       "cached_tokens": None, "error": None,
                       "reads": {"mean_logprob": math.log(signals["confidence"] / 9),
                                 "min_logprob": -2.0, "tokens": tokens}},
        "likelihood": {"score": signals["likelihood"], "ms": 3000.0, "prompt_tokens": 200,
                       "cached_tokens": 0, "error": None,
                       "reads": {"mean_logprob": math.log(signals["likelihood"] / 9),
                                 "min_logprob": -3.0, "tokens": tokens}},
        "check": {"score": signals["check"], "ms": 1.0, "prompt_tokens": 0, "cached_tokens": None,
                  "error": None, "reads": {"equations": 1, "false": []}},
    }
    return {"text": text, "draft": text, "draft_ms": 2000.0, "draft_tokens": tokens,
            "judges": judges, "accepted": True}


def run(key: str, correct: bool, steps: list[dict], answer: str | None = "3") -> dict:
    return {"key": key, "mode": "calibration", "id": "7", "error": None, "correct": correct,
            "answer": answer, "trace": steps}


GOOD = {"score": 9, "yes_no": 8.0, "confidence": 8.0, "likelihood": 6.0, "check": 9.0}
BAD = {"score": 9, "yes_no": 2.0, "confidence": 8.0, "likelihood": 6.0, "check": 9.0}


# --- the statistics ------------------------------------------------------------------------------

def test_auroc_counts_pairs_and_ties():
    assert calibrate.auroc([1, 2, 3, 4], [0, 0, 1, 1]) == 1.0
    assert calibrate.auroc([4, 3, 2, 1], [0, 0, 1, 1]) == 0.0
    assert calibrate.auroc([5, 5, 5, 5], [0, 1, 0, 1]) == 0.5
    assert calibrate.auroc([1, 3, 2, 4], [0, 0, 1, 1]) == 0.75
    assert calibrate.auroc([1, 2], [1, 1]) is None


def test_bootstrap_interval_brackets_the_auroc():
    scores = [0.1 * i for i in range(40)]
    ys = [int(i >= 15) for i in range(40)]
    low, high = calibrate.bootstrap_auroc(scores, ys, resamples=200)
    assert low <= calibrate.auroc(scores, ys) <= high == 1.0
    noisy = [0, 1] * 20
    low, high = calibrate.bootstrap_auroc(scores, noisy, resamples=200)
    assert low < 0.5 < high


# --- labels --------------------------------------------------------------------------------------

def test_prefixes_skip_the_full_trace_of_a_run_that_answered():
    answered = run("a", True, [judged("x", GOOD), judged("y", GOOD)])
    unfinished = run("b", False, [judged("x", GOOD)], answer=None)
    failed = {**run("c", False, []), "error": "RuntimeError: boom"}
    found = labels.prefixes([answered, unfinished, failed], {"7": PROBLEM})
    assert [p.key for p in found] == ["a|0", "a|1", "b|0", "b|1"]
    assert found[1].steps == ("x",)


def test_rollout_labels_blame_only_the_draft_that_lost_the_answer():
    trace = [judged("s0", GOOD), judged("s1", BAD), judged("s2", GOOD)]
    rollouts = {"a|0": {"reached": [True, False]}, "a|1": {"reached": [True, True]},
                "a|2": {"reached": [False, False]}}  # s1 lost it; s2 cannot be blamed
    rows = labels.label([run("a", False, trace)], rollouts)
    assert [r["labels"]["rollout"] for r in rows] == [1, 0, None]
    assert [r["labels"]["reach_after"] for r in rows] == [1.0, 0.0, 0.0]  # a wrong answer: 0
    assert rows[1]["labels"]["problem"] is False
    assert rows[1]["signals"]["yes_no"] == 2.0
    assert rows[1]["signals"]["score:expected"] == 9.0
    assert rows[1]["signals"]["confidence:min"] == pytest.approx(9 * math.exp(-2.0))
    assert rows[1]["costs"]["likelihood"]["prompt_tokens"] == 200


def test_the_arithmetic_label_is_kept_beside_the_rollout_label():
    rows = labels.label([run("a", True, [judged("2 + 2 = 5", BAD)])], {"a|0": {"reached": [1]}})
    assert rows[0]["labels"]["arithmetic"] is False and rows[0]["labels"]["rollout"] == 1


def test_rollouts_are_graded_written_and_resumed(tmp_path):
    small = ScriptedModel(script=lambda messages, kwargs: step(r"so \boxed{3}", end="eos"))
    ctx = Context(token_budget=64)
    todo = labels.prefixes([run("a", True, [judged("1 + 2 = 3", GOOD)])], {"7": PROBLEM})
    found = labels.run_rollouts(Models(small=small), ctx, todo, tmp_path, k=2, concurrency=2)
    assert found["a|0"]["reached"] == [True, True]
    _, kwargs = small.calls[0]
    assert kwargs["n"] == 2 and kwargs["max_tokens"] == 64
    assert kwargs["extra_body"]["add_generation_prompt"] is True  # the empty prefix
    lines = (tmp_path / labels.ROLLOUTS_FILE).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a|0"]
    again = labels.run_rollouts(Models(small=small), ctx, todo, tmp_path, k=2)
    assert again == found and len(small.calls) == 1  # nothing new to roll out


# --- the choice ----------------------------------------------------------------------------------

def labelled_set(n: int = 20) -> list[dict]:
    """yes_no separates good from bad drafts perfectly; the paper's digit is 9 for all of them."""
    rows = []
    for i in range(n):
        bad = i % 4 == 0
        trace = [judged(f"step {i}", BAD if bad else GOOD)]
        rollouts = {f"r{i}|0": {"reached": [True]}, f"r{i}|1": {"reached": [not bad]}}
        rows += labels.label([{**run(f"r{i}", not bad, trace, answer=None)}], rollouts)
    return rows


def test_calibration_finds_the_signal_and_beats_random_routing():
    found = calibrate.calibrate(labelled_set(), SPEEDS,
                                resamples=100)
    by_signal = {row["signal"]: row for row in found["table"]}
    assert by_signal["yes_no"]["auroc"] == 1.0 and by_signal["score:greedy"]["auroc"] == 0.5
    assert found["labelled"] == 20 and found["bad"] == 5
    choice = found["choice"]
    assert found["beats_random_routing"] and choice["margin"] > 0
    assert choice["false_accept"] == 0.0  # every bad draft caught
    assert choice["fields"]["judge"] in ("yes_no", "cascade")
    if choice["fields"]["judge"] == "cascade":
        assert choice["fields"]["cascade"].endswith("yes_no")
    paper = next(p for p in found["best_by_judge"] if p["fields"]["judge"] == "score")
    assert paper["margin"] <= 1e-9  # a rubber stamp is no better than routing at random
    Context(**choice["fields"])  # the choice is a valid Context


def test_calibration_without_labels_chooses_nothing():
    rows = labels.label([run("a", True, [judged("x", GOOD)])], {})
    found = calibrate.calibrate(rows, SPEEDS, resamples=10)
    assert found["labelled"] == 0 and found["choice"] is None
    assert not found["beats_random_routing"]


def test_a_choice_file_is_what_the_context_loads(tmp_path):
    found = calibrate.calibrate(labelled_set(), SPEEDS, resamples=10)
    path = tmp_path / "choice.json"
    path.write_text(json.dumps({"choice": found["choice"]["fields"]}))
    ctx = Context(calibration=str(path))
    assert ctx.judge == found["choice"]["fields"]["judge"]
    assert ctx.threshold == found["choice"]["fields"]["threshold"]


def test_the_calibration_renders_as_markdown():
    from specreason_graph.evaluation.render import calibration_markdown

    found = calibrate.calibrate(labelled_set(), SPEEDS, resamples=10)
    text = calibration_markdown(found, "gsm8k ids 1000-1019")
    assert "| yes_no | 20 | 1.00 |" in text and "| score:greedy | 20 | 0.50 |" in text
    assert f"Chosen: **{found['choice']['candidate']}** — it beats random routing" in text


def test_a_step_is_priced_at_one_run_in_flight_from_its_tokens():
    row = labels.label([run("a", True, [judged("x", GOOD, tokens=20)])], {"a|0": {"reached": [1]}})[0]
    assert calibrate.draft_s(row, SPEEDS) == pytest.approx(0.1 + 20 / 10)
    assert calibrate.regen_s(row, SPEEDS) == pytest.approx(0.1 + 20 / 2)
    # score: 40 prompt tokens, 32 cached: 8 new at 40 tok/s, one token at 2 tok/s, one call
    assert calibrate.judge_s(row, "score:greedy", SPEEDS) == pytest.approx(0.1 + 0.5 + 8 / 40)
    assert calibrate.judge_s(row, "likelihood:mean", SPEEDS) == pytest.approx(0.1 + 0.5 + 200 / 40)
    assert calibrate.judge_s(row, "confidence:mean", SPEEDS) == 0.0
    assert calibrate.judge_s(row, "check", SPEEDS) == 0.0


def test_a_calibration_without_labels_renders_the_paper_judge_as_the_choice():
    from specreason_graph.evaluation.render import calibration_markdown

    found = calibrate.calibrate(labels.label([run("a", True, [judged("x", GOOD)])], {}), SPEEDS,
                                resamples=10)
    found["choice"] = {"candidate": "the paper's judge (nothing to choose on)", "fields": {},
                       "margin": None}
    text = calibration_markdown(found, "gsm8k ids 1")
    assert "0 carry a rollout label" in text
    assert "Chosen: **the paper's judge (nothing to choose on)** — no labelled draft" in text
