"""specreason_graph.evaluation.runner (modes, the resumable runner, /metrics), datasets.select and the bench /
bench-report / calibrate command lines' error paths. The graph is the real one, with scripted chat
models in place of the two servers; nothing here contacts a server."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from specreason_graph import Context, build_graph, cli
from specreason_graph.context import declared_default
from specreason_graph.evaluation import datasets, metrics, runner, stats
from specreason_graph.evaluation.metrics import scrape
from specreason_graph.evaluation.modes import ALL_STEPS_BY_BASE, Mode, parse_mode
from specreason_graph.evaluation.records import META_FILE, RUNS_FILE, load_records
from specreason_graph.evaluation.records import key as run_key
from specreason_graph.evaluation.render import splice
from specreason_graph.evaluation.runner import Progress, left, run_bench
from specreason_graph.trace import summarize
from tests.fakes import ScriptedModel, score, step


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
URL = f"http://127.0.0.1:{closed_port()}/v1"
"""Nothing listens here: scrape() gets a refused connection and returns None at once."""

P0 = datasets.get("gsm8k", "0")  # gold 18
P1 = datasets.get("gsm8k", "1")  # gold 3
P2 = datasets.get("gsm8k", "2")  # gold 70000
SMALL_TEXT = r"The answer is \boxed{18}."
BASE_TEXT = r"The answer is \boxed{3}."


def ctx(**fields: Any) -> Context:
    return Context(base_url=URL, small_url=URL, **fields)


def asked(messages) -> str:
    return "\n".join(str(m.content) for m in messages)


class Pair:
    """The real graph over two scripted models: the small one always answers 18 (right for
    gsm8k 0, wrong for 1), the base one answers 3 (the reverse) and scores every draft ``judge``.
    ``fail``: the small model raises for this question. ``hook``: called with every small request."""

    def __init__(self, judge: str = "9", fail: str | None = None, hook=None):
        def small(messages, kwargs):
            if hook:
                hook(messages, kwargs)
            if fail is not None and fail in asked(messages):
                return RuntimeError("boom")
            return step(SMALL_TEXT, end="eos")

        def base(messages, kwargs):
            return score(judge) if kwargs.get("max_tokens") == 1 else step(BASE_TEXT, end="eos")

        self.small = ScriptedModel(script=small)
        self.base = ScriptedModel(script=base)
        self.graph = build_graph(small=self.small, base=self.base).compile()

    def calls(self) -> tuple[int, int, int]:
        """(small calls, base step calls, base judge calls)."""
        return len(self.small.calls), len(self.base.step_calls()), len(self.base.judge_calls())


def modes(*texts: str) -> list[Mode]:
    return [parse_mode(t) for t in texts]


def lines(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / RUNS_FILE).read_text().splitlines()]


def meta(out: Path) -> dict[str, Any]:
    return json.loads((out / META_FILE).read_text())


# --- parse_mode ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("base", Mode("base-only", "base")),
    ("small", Mode("small-only", "small")),
    ("spec", Mode("specreason", "spec")),
    ("  spec  ", Mode("specreason", "spec")),
    ("spec:", Mode("specreason", "spec")),
    ("spec:t=5,score=expected", Mode("specreason t=5 expected", "spec", 5.0, "expected")),
    ("spec:threshold=7.5,score_method=greedy,first_n=2",
     Mode("specreason t=7.5 greedy n=2", "spec", 7.5, "greedy", 2)),
    ("spec:n=0", Mode("specreason", "spec", first_n_base=0)),
    ("spec: t = 0 , first_n_base=3", Mode("specreason t=0 n=3", "spec", 0.0, None, 3)),
    ("spec:t=10", Mode("specreason t=10", "spec", 10.0)),
    ("spec:t=5,name=mine", Mode("mine", "spec", 5.0)),
    ("spec:t=5,name=", Mode("specreason t=5", "spec", 5.0)),
    ("base:url=http://h:8000/v1,model=qwq-specdec",
     Mode("base-only @http://h:8000/v1", "base", base_url="http://h:8000/v1",
                base_model="qwq-specdec")),
    ("spec:t=7,url=http://h:8000/v1,name=SpecReason+SpecDecode",
     Mode("SpecReason+SpecDecode", "spec", 7.0, base_url="http://h:8000/v1")),
    ("small:model=other", Mode("small-only", "small", base_model="other")),
])
def test_parse_mode(text, expected):
    assert parse_mode(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("fast", "unknown mode 'fast': start with base, small or spec (e.g. spec:t=5,score=expected)"),
    ("Spec", "unknown mode 'Spec'"),
    ("", "unknown mode ''"),
    ("base:t=5", "mode 'base:t=5': t=, score= and n= only apply to spec"),
    ("small:score=greedy", "mode 'small:score=greedy': t=, score= and n= only apply to spec"),
    ("base:n=2", "only apply to spec"),
    ("spec:t=11", "mode 'spec:t=11': the threshold must be from 0 to 10"),
    ("spec:t=-0.5", "the threshold must be from 0 to 10"),
    ("spec:t=nan", "the threshold must be from 0 to 10"),
    ("spec:t=high", "mode 'spec:t=high': t= takes a number, n= a whole number"),
    ("spec:t=", "t= takes a number"),
    ("spec:n=1.5", "t= takes a number, n= a whole number"),
    ("spec:score=foo", "mode 'spec:score=foo': score= is greedy or expected"),
    ("spec:temperature=1", "mode 'spec:temperature=1': cannot read 'temperature=1'; "
                           "use t=, score=, n=, url=, model=, name="),
    ("spec:t5", "cannot read 't5'"),
])
def test_parse_mode_errors(text, message):
    with pytest.raises(ValueError) as info:
        parse_mode(text)
    assert message in str(info.value)


# --- Mode.context / settings ---------------------------------------------------------------------

def test_base_steps_mode_has_the_base_write_every_step():
    c = parse_mode("base-steps").context(ctx(small_only=True, first_n_base=2))
    assert c.first_n_base == ALL_STEPS_BY_BASE == 1_000_000
    assert c.small_only is False
    assert (c.base_url, c.small_url) == (URL, URL)


def test_small_steps_mode_is_small_only():
    c = parse_mode("small-steps").context(ctx(first_n_base=2))
    assert c.small_only is True and c.one_request is None
    assert c.first_n_base == 0  # the run's first-N would have the base write the first steps


def test_small_steps_mode_never_has_the_base_write_even_with_first_n_base():
    pair = Pair()
    pair.small.script = iter([step("a = 1"), step("b = 2"), step(SMALL_TEXT, end="eos")])
    out = pair.graph.invoke({"problem": P0.question},
                            context=parse_mode("small-steps").context(ctx(first_n_base=2)))
    assert [r["writer"] for r in out["trace"]] == ["small", "small", "small"]
    assert pair.calls() == (3, 0, 0)


def test_spec_mode_overrides_only_the_fields_it_names():
    base = ctx(threshold=3, score_method="expected", first_n_base=1, small_only=True)
    plain = parse_mode("spec").context(base)
    assert (plain.threshold, plain.score_method, plain.first_n_base, plain.small_only) == (
        3.0, "expected", 1, False)
    only_t = parse_mode("spec:t=8").context(base)
    assert (only_t.threshold, only_t.score_method, only_t.first_n_base) == (8.0, "expected", 1)
    every = parse_mode("spec:t=0,score=greedy,n=0").context(base)
    assert (every.threshold, every.score_method, every.first_n_base) == (0.0, "greedy", 0)
    assert base.threshold == 3.0  # the given Context is not changed


def test_url_and_model_override_the_base_server_only():
    c = parse_mode("spec:url=http://other:9000/v1,model=qwq").context(ctx())
    assert c.base_url == "http://other:9000/v1" and c.base_model == "qwq"
    assert c.small_url == URL and c.small_model == Context().small_model


def test_base_and_small_modes_write_the_whole_solution_in_one_request():
    assert parse_mode("base").context(ctx(first_n_base=2)).one_request == "base"
    small = parse_mode("small").context(ctx(small_only=True))
    assert (small.one_request, small.small_only) == ("small", False)
    assert parse_mode("spec").context(ctx(one_request="base")).one_request is None
    assert [parse_mode(k).name for k in ("base", "small", "base-steps", "small-steps")] == [
        "base-only", "small-only", "base-steps", "small-steps"]


def test_context_extra_fields():
    c = parse_mode("small").context(ctx(), prompt="multiple_choice", seed=7)
    assert (c.prompt, c.seed, c.one_request) == ("multiple_choice", 7, "small")


def test_settings_record_the_effective_fields():
    c = ctx(threshold=6)
    assert parse_mode("base").settings(c) == {
        "kind": "base", "judge": c.judge, "cascade": c.cascade,
        "threshold": 6.0, "score_method": "greedy", "first_n_base": 0,
        "small_only": False, "one_request": "base", "base_url": URL, "base_model": c.base_model}
    assert parse_mode("spec:t=5,score=expected,url=http://x:1/v1").settings(c) == {
        "kind": "spec", "judge": c.judge, "cascade": c.cascade,
        "threshold": 5.0, "score_method": "expected", "first_n_base": 0,
        "small_only": False, "one_request": None, "base_url": "http://x:1/v1",
        "base_model": c.base_model}


# --- scrape --------------------------------------------------------------------------------------

METRICS = """\
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1200.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 300.0
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 1.5e2
vllm:prefix_cache_hits_created 1.7e9
vllm:num_requests_running{model_name="m"} 2.0
"""


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_scrape_sums_counters_over_labels(monkeypatch):
    asked_for = []

    def urlopen(url, timeout):
        asked_for.append((url, timeout))
        return FakeResponse(METRICS.encode())

    monkeypatch.setattr(metrics.urllib.request, "urlopen", urlopen)
    assert scrape("http://h:8101/v1/") == {
        "vllm:prefix_cache_queries_total": 1500.0, "vllm:prefix_cache_hits_total": 150.0}
    assert asked_for == [("http://h:8101/metrics", 10.0)]
    assert scrape("http://h:8101", ["vllm:num_requests_running", "absent"], timeout=2) == {
        "vllm:num_requests_running": 2.0, "absent": 0.0}
    assert asked_for[-1] == ("http://h:8101/metrics", 2)


def test_scrape_of_a_server_that_does_not_answer_is_none():
    started = time.perf_counter()
    assert scrape(URL, timeout=2) is None
    assert scrape("not a url") is None
    assert time.perf_counter() - started < 5


def test_scrape_of_a_server_that_fails_is_none(monkeypatch):
    def urlopen(url, timeout):
        raise TimeoutError("timed out")  # an OSError

    monkeypatch.setattr(metrics.urllib.request, "urlopen", urlopen)
    assert scrape("http://h:1/v1") is None


# --- load_records --------------------------------------------------------------------------------

def test_load_records_keeps_the_last_record_of_a_key_and_skips_a_torn_line(tmp_path):
    assert load_records(tmp_path) == {}
    (tmp_path / RUNS_FILE).write_text(
        '{"key": "a|0|0", "n": 1}\n'
        '\n'
        '[1, 2]\n'
        '{"no_key": 1}\n'
        '{"key": "b|0|0", "n": 2}\n'
        '{"key": "a|0|0", "n": 3}\n'
        '{"key": "c|0|0", "n"')
    assert load_records(tmp_path) == {"a|0|0": {"key": "a|0|0", "n": 3},
                                           "b|0|0": {"key": "b|0|0", "n": 2}}


def test_key():
    assert run_key("base-only", "12", 3) == "base-only|12|3"


# --- run_bench -----------------------------------------------------------------------------------

FOUR = ("base-steps", "small-steps", "spec", "spec:t=10")
EXPECTED_CORRECT = {  # (mode, problem) -> right?
    ("base-steps", "0"): False, ("base-steps", "1"): True,
    ("small-steps", "0"): True, ("small-steps", "1"): False,
    ("specreason", "0"): True, ("specreason", "1"): False,       # judge 9 >= 7: the draft is kept
    ("specreason t=10", "0"): False, ("specreason t=10", "1"): True,  # rejected: the base rewrites
}


def test_run_bench_records_every_mode_problem_and_sample(tmp_path):
    pair = Pair()
    progress: list[Progress] = []
    result = run_bench(pair.graph, [P0, P1], modes(*FOUR), ctx(), tmp_path, samples=2,
                             seed=100, on_progress=progress.append)
    assert result.out == tmp_path and result.interrupted is False and result.abandoned == 0
    order = [f"{m}|{p}|{s}" for p in ("0", "1") for s in (0, 1)
             for m in ("base-steps", "small-steps", "specreason", "specreason t=10")]
    assert list(result.records) == order  # concurrency 1: the queue's order, modes interleaved
    on_disk = lines(tmp_path)
    assert [r["key"] for r in on_disk] == order
    assert on_disk == json.loads(json.dumps(list(result.records.values())))
    assert load_records(tmp_path) == {r["key"]: r for r in on_disk}

    for r in on_disk:
        mode, pid, sample = r["key"].split("|")
        problem = {"0": P0, "1": P1}[pid]
        assert (r["mode"], r["id"], r["sample"], r["dataset"]) == (mode, pid, int(sample), "gsm8k")
        assert r["gold"] == problem.answer and r["error"] is None and r["concurrency"] == 1
        assert r["correct"] is EXPECTED_CORRECT[(mode, pid)]
        assert r["predicted"] == r["answer"] == ("3" if mode in ("base-steps", "specreason t=10")
                                                 else "18")
        assert r["stop_reason"] == "answer" and r["wall_s"] >= 0 and r["finished_at"]
        assert r["summary"] == summarize(r["trace"]) and len(r["trace"]) == 1

    by_mode = {r["mode"]: r["trace"][0] for r in on_disk if r["id"] == "0" and r["sample"] == 0}
    base_only, small_only, spec, strict = (by_mode[m] for m in (
        "base-steps", "small-steps", "specreason", "specreason t=10"))
    assert (base_only["writer"], base_only["forced"], base_only["draft"]) == ("base", True, None)
    assert (base_only["accepted"], base_only["judges"], base_only["score"]) == (None, {}, None)
    assert (small_only["writer"], small_only["draft"], small_only["accepted"]) == (
        "small", SMALL_TEXT, None)
    assert small_only["judges"] == {} and small_only["judge_prompt_tokens"] == 0
    assert (spec["writer"], spec["accepted"], spec["score"], spec["judges"]["score"]["reads"]["token"]) == (
        "small", True, 9.0, "9")
    assert (strict["writer"], strict["accepted"], strict["draft"], strict["text"]) == (
        "base", False, SMALL_TEXT, BASE_TEXT)

    # 8 runs per sample: small drafts in small-steps, spec, spec t=10; base writes base-steps and
    # the t=10 rewrites and judges spec and spec t=10.
    assert pair.calls() == (12, 8, 8)
    assert {kw["seed"] for _, kw in pair.small.calls} == {100, 101}
    assert sorted(kw["seed"] for _, kw in pair.base.calls if kw.get("max_tokens") != 1) == [
        100, 100, 100, 100, 101, 101, 101, 101]

    assert [p.done for p in progress] == list(range(1, 17))
    assert {p.total for p in progress} == {16}
    assert [p.record["key"] for p in progress] == order
    assert progress[-1].correct_by_mode == {
        "base-steps": (2, 4), "small-steps": (2, 4), "specreason": (2, 4), "specreason t=10": (2, 4)}
    assert progress[0].correct_by_mode == {"base-steps": (0, 1)}


def test_one_request_baselines_write_the_whole_solution_in_one_call(tmp_path):
    pair = Pair()
    result = run_bench(pair.graph, [P0], modes("base", "small"), ctx(token_budget=300), tmp_path)
    base_only, small_only = (result.records[f"{m}|0|0"] for m in ("base-only", "small-only"))
    assert (base_only["correct"], small_only["correct"]) == (False, True)
    assert [len(r["trace"]) for r in (base_only, small_only)] == [1, 1]
    assert (base_only["trace"][0]["writer"], small_only["trace"][0]["writer"]) == ("base", "small")
    assert pair.calls() == (1, 1, 0)  # one request each, no judge
    for model in (pair.small, pair.base):
        _, kwargs = model.calls[0]
        assert kwargs["max_tokens"] == 300 and kwargs.get("stop") is None
        assert (kwargs["temperature"], kwargs["top_p"]) == (0.6, 0.95)


def test_meta_records_settings_machine_and_segments(tmp_path):
    c = ctx(token_budget=2048)
    run_bench(Pair().graph, [P0, P1], modes("base", "spec:t=5"), c, tmp_path,
                    concurrency=2, seed=3)
    m = meta(tmp_path)
    settings = m["settings"]
    assert settings["dataset"] == ["gsm8k"] and settings["samples"] == 1
    assert settings["context"]["token_budget"] == 2048
    assert settings["context"]["base_url"] == settings["context"]["small_url"] == URL
    for dropped in ("api_key", "threshold", "score_method", "first_n_base", "small_only",
                    "request_timeout"):
        assert dropped not in settings["context"]
    assert settings["modes"] == {
        "base-only": parse_mode("base").settings(c),
        "specreason t=5": parse_mode("spec:t=5").settings(c)}
    assert set(m["machine"]) == {"host", "cpus", "memory_gib", "platform", "python"}
    [segment] = m["segments"]
    assert {k: segment[k] for k in ("concurrency", "seed", "runs", "problems", "modes",
                                    "completed", "interrupted")} == {
        "concurrency": 2, "seed": 3, "runs": 4, "problems": ["0", "1"],
        "modes": ["base-only", "specreason t=5"], "completed": 4, "interrupted": False}
    assert segment["metrics_before"] == segment["metrics_after"] == {URL: None}
    assert segment["started"] <= segment["ended"]
    assert not (tmp_path / "meta.tmp").exists()


def test_concurrent_workers_run_at_once(tmp_path):
    """Two runs must be in flight together to pass the barrier; one at a time would break it."""
    barrier = threading.Barrier(2, timeout=10)
    lock, seen = threading.Lock(), []

    def hook(messages, kwargs):
        with lock:
            seen.append(1)
            first_two = len(seen) <= 2
        if first_two:
            barrier.wait()

    pair = Pair(hook=hook)
    problems = [P0, P1, P2]
    result = run_bench(pair.graph, problems, modes("small", "spec"), ctx(), tmp_path,
                             concurrency=4)
    assert len(result.records) == 6
    assert all(r["error"] is None for r in result.records.values())
    assert {r["concurrency"] for r in lines(tmp_path)} == {4}
    assert sorted(result.records) == sorted(
        f"{m}|{p.id}|0" for p in problems for m in ("small-only", "specreason"))
    assert {k: r["correct"] for k, r in result.records.items()} == {
        "small-only|0|0": True, "small-only|1|0": False, "small-only|2|0": False,
        "specreason|0|0": True, "specreason|1|0": False, "specreason|2|0": False}


def test_resume_runs_only_what_is_missing(tmp_path):
    first = Pair()
    run_bench(first.graph, [P0], modes("base", "small"), ctx(), tmp_path)
    assert first.calls() == (1, 1, 0)

    second = Pair()
    result = run_bench(second.graph, [P0, P1], modes("base", "small", "spec"), ctx(), tmp_path)
    # missing: base-only|1, small-only|1, specreason|0, specreason|1
    assert second.calls() == (3, 1, 2)
    assert len(result.records) == 6 and len(lines(tmp_path)) == 6
    m = meta(tmp_path)
    assert [s["runs"] for s in m["segments"]] == [2, 4]
    assert [s["completed"] for s in m["segments"]] == [2, 4]
    assert list(m["settings"]["modes"]) == ["base-only", "small-only", "specreason"]

    assert left(tmp_path, [P0, P1], modes("base", "small", "spec"), 1) == 0
    assert left(tmp_path, [P0, P1], modes("base", "small", "spec"), 2) == 6  # second samples
    assert left(tmp_path, [P0, P1], modes("base"), 1, redo=[P0.id]) == 1
    assert left(tmp_path / "new", [P0], modes("base"), 1) == 1
    third = Pair()
    done = run_bench(third.graph, [P0, P1], modes("base", "small", "spec"), ctx(), tmp_path)
    assert third.calls() == (0, 0, 0)
    assert done.interrupted is False and len(done.records) == 6
    assert [s["runs"] for s in meta(tmp_path)["segments"]] == [2, 4, 0]
    assert len(lines(tmp_path)) == 6


def test_redo_measures_a_problems_runs_again_and_keeps_the_old_records(tmp_path):
    run_bench(Pair().graph, [P0, P1], modes("base", "small"), ctx(), tmp_path)
    before = load_records(tmp_path)

    again = Pair()
    result = run_bench(again.graph, [P0, P1], modes("base"), ctx(), tmp_path, redo=[P1.id])
    assert again.calls() == (0, 1, 0)  # base-only of P1 only: not small-only, not P0
    rows = lines(tmp_path)
    assert len(rows) == 5 and rows[-1]["key"] == run_key("base-only", P1.id, 0)
    assert rows[:4] == list(before.values())  # the old records stay, above the new one
    now = load_records(tmp_path)
    assert now[run_key("base-only", P1.id, 0)] == rows[-1] == result.records[rows[-1]["key"]]
    assert now[run_key("base-only", P0.id, 0)] == before[run_key("base-only", P0.id, 0)]
    assert meta(tmp_path)["segments"][-1]["redo"] == [P1.id]
    assert "redo" not in meta(tmp_path)["segments"][0]


def test_redo_progress_counts_a_redone_run_once(tmp_path):
    run_bench(Pair().graph, [P0], modes("base"), ctx(), tmp_path)
    seen = []
    run_bench(Pair().graph, [P0], modes("base"), ctx(), tmp_path, redo=[P0.id],
              on_progress=seen.append)
    assert [sum(n for _, n in p.correct_by_mode.values()) for p in seen] == [1]


def test_a_failed_run_is_recorded_and_retried_on_resume(tmp_path):
    broken = Pair(fail=P1.question.strip())
    progress: list[Progress] = []
    result = run_bench(broken.graph, [P0, P1, P2], modes("small"), ctx(), tmp_path,
                             on_progress=progress.append)
    failed = result.records["small-only|1|0"]
    assert failed["error"] == "RuntimeError: boom" and failed["correct"] is None
    assert "trace" not in failed and "predicted" not in failed
    assert [r["error"] for r in lines(tmp_path)] == [None, "RuntimeError: boom", None]
    assert progress[-1].correct_by_mode == {"small-only": (1, 2)}  # the failed run not counted
    assert result.interrupted is False

    fixed = Pair()
    again = run_bench(fixed.graph, [P0, P1, P2], modes("small"), ctx(), tmp_path,
                            on_progress=progress.append)
    assert fixed.calls() == (1, 0, 0)
    assert P1.question.strip() in asked(fixed.small.calls[0][0])
    assert again.records["small-only|1|0"]["error"] is None
    assert again.records["small-only|1|0"]["correct"] is False
    assert len(lines(tmp_path)) == 4  # the failed line stays; the newer record wins
    assert load_records(tmp_path)["small-only|1|0"]["error"] is None
    assert progress[-1].correct_by_mode == {"small-only": (1, 3)}
    assert meta(tmp_path)["segments"][-1]["runs"] == 1


def test_stop_interrupts_keeps_finished_runs_and_the_same_call_resumes(tmp_path):
    """``stop`` set after the first record, while the second run is in flight (held at a gate)."""
    stop, gate, second_started = threading.Event(), threading.Event(), threading.Event()
    lock, count = threading.Lock(), [0]

    def hook(messages, kwargs):
        with lock:
            count[0] += 1
            n = count[0]
        if n == 2:
            second_started.set()
            assert gate.wait(10)

    def on_progress(p: Progress) -> None:
        assert second_started.wait(10)
        stop.set()

    pair = Pair(hook=hook)
    problems = [P0, P1, P2]
    try:
        result = run_bench(pair.graph, problems, modes("small", "spec"), ctx(), tmp_path,
                                 on_progress=on_progress, stop=stop)
    finally:
        gate.set()  # let the daemon worker finish its (dropped) run
    assert result.interrupted is True
    assert result.abandoned == 1  # the held run; the other four never left the queue
    assert list(result.records) == ["small-only|0|0"]
    assert [r["key"] for r in lines(tmp_path)] == ["small-only|0|0"]
    [segment] = meta(tmp_path)["segments"]
    assert (segment["runs"], segment["completed"], segment["interrupted"]) == (6, 1, True)
    assert "ended" in segment and "metrics_after" in segment

    rest = Pair()
    done = run_bench(rest.graph, problems, modes("small", "spec"), ctx(), tmp_path)
    assert done.interrupted is False and done.abandoned == 0
    assert rest.calls() == (5, 0, 3)
    assert len(done.records) == 6
    assert sorted(r["key"] for r in lines(tmp_path)) == sorted(done.records)


def test_ctrl_c_in_the_main_loop_is_an_interruption(tmp_path):
    def on_progress(p: Progress) -> None:
        raise KeyboardInterrupt

    result = run_bench(Pair().graph, [P0, P1], modes("small"), ctx(), tmp_path,
                             on_progress=on_progress)
    assert result.interrupted is True
    assert len(lines(tmp_path)) == 1 and len(result.records) == 1
    assert meta(tmp_path)["segments"][0]["interrupted"] is True


def test_stop_set_before_the_start_runs_nothing(tmp_path):
    stop = threading.Event()
    stop.set()
    pair = Pair()
    result = run_bench(pair.graph, [P0, P1], modes("small"), ctx(), tmp_path, stop=stop)
    assert (result.interrupted, result.records, result.abandoned) == (True, {}, 0)
    assert pair.calls() == (0, 0, 0)
    assert (tmp_path / RUNS_FILE).read_text() == ""


@pytest.mark.parametrize(("name", "other"), [
    ("prompt_set", "paper"), ("seed", 1), ("token_budget", 1000), ("thinking_opener", "<think>\n")])
def test_a_folder_from_before_a_setting_existed_resumes_at_its_default(tmp_path, name, other):
    """A Context field added after a results folder was made: the folder's settings lack it, and it
    counts as the field's declared default (the value that behaves as before the field existed),
    whichever field it is: the folder resumes at that value, and is refused at another."""
    assert getattr(ctx(), name) == declared_default(name) != other
    run_bench(Pair().graph, [P0], modes("base"), ctx(), tmp_path)
    saved = meta(tmp_path)
    del saved["settings"]["context"][name]
    (tmp_path / "meta.json").write_text(json.dumps(saved))
    pair = Pair()
    run_bench(pair.graph, [P0, P1], modes("base"), ctx(), tmp_path)
    assert pair.calls() == (0, 1, 0)  # base-only of P1 only
    saved = meta(tmp_path)
    assert saved["settings"]["context"][name] == declared_default(name)
    del saved["settings"]["context"][name]
    (tmp_path / "meta.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other settings \\(context\\)"):
        run_bench(Pair().graph, [P0, P1], modes("base"), ctx(**{name: other}), tmp_path)


def test_a_folder_recording_a_setting_the_context_no_longer_has_is_refused(tmp_path):
    run_bench(Pair().graph, [P0], modes("base"), ctx(), tmp_path)
    saved = meta(tmp_path)
    saved["settings"]["context"]["removed_field"] = 1
    (tmp_path / "meta.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="other settings \\(context\\)"):
        run_bench(Pair().graph, [P0, P1], modes("base"), ctx(), tmp_path)


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in RESULTS.glob("*/meta.json")))
def test_every_committed_results_folder_still_resumes(folder):
    """Each folder under benchmarks/results resumes with the settings it recorded: every recorded
    value is still a valid setting, and the fields added since are at their defaults (the resume
    check is a pure function: no server, no run)."""
    saved = json.loads((RESULTS / folder / META_FILE).read_text())["settings"]
    settings = runner._settings([], [], Context(**saved["context"]), saved["samples"])
    runner._check_resumable({"settings": saved}, {**settings, "dataset": saved["dataset"]},
                            RESULTS / folder)


@pytest.mark.parametrize(("change", "detail"), [
    ({"context": ctx(token_budget=1000)}, "(context)"),
    ({"samples": 2}, "(samples)"),
    ({"problems": [datasets.get("aime24", "60")]}, "(dataset)"),
    ({"modes": modes("base", "small:name=specreason")}, "(mode 'specreason')"),
    ({"context": ctx(temperature=0.0), "samples": 3}, "(context, samples)"),
])
def test_resume_with_other_settings_is_refused(tmp_path, change, detail):
    out = tmp_path / "results"
    run_bench(Pair().graph, [P0], modes("base", "spec"), ctx(), out)
    args = {"problems": [P0], "modes": modes("base", "spec"), "context": ctx(), "samples": 1,
            **change}
    pair = Pair()
    with pytest.raises(ValueError) as info:
        run_bench(pair.graph, args["problems"], args["modes"], args["context"], out,
                        samples=args["samples"])
    assert str(info.value) == (f"{out} holds results made with other settings {detail}; "
                               "give another --out, or the same settings to resume")
    assert pair.calls() == (0, 0, 0)
    assert len(meta(out)["segments"]) == 1 and len(lines(out)) == 2


def test_resume_may_add_modes_and_problems_and_change_concurrency(tmp_path):
    run_bench(Pair().graph, [P0], modes("base"), ctx(), tmp_path)
    result = run_bench(Pair().graph, [P0, P1], modes("base", "spec:t=3"), ctx(), tmp_path,
                             concurrency=3, seed=1)
    assert len(result.records) == 4
    assert [s["concurrency"] for s in meta(tmp_path)["segments"]] == [1, 3]


@pytest.mark.parametrize(("args", "message"), [
    ({"problems": []}, "no problems to run: check --limit / --ids"),
    ({"modes": []}, "no modes to run"),
    ({"modes": modes("spec:t=5,name=x", "small:name=x")}, "two modes share a name: ['x', 'x']"),
    ({"samples": 0}, "samples and concurrency must be at least 1"),
    ({"concurrency": 0}, "samples and concurrency must be at least 1"),
    ({"redo": ["7"]}, "--redo names problems this slice does not hold: 7"),
])
def test_run_bench_refuses_bad_arguments(tmp_path, args, message):
    given = {"problems": [P0], "modes": modes("base"), "samples": 1, "concurrency": 1, "redo": (),
             **args}
    with pytest.raises(ValueError) as info:
        run_bench(Pair().graph, given["problems"], given["modes"], ctx(), tmp_path / "out",
                  samples=given["samples"], concurrency=given["concurrency"], redo=given["redo"])
    assert message in str(info.value)
    assert not (tmp_path / "out").exists()


def test_a_torn_last_line_is_skipped_on_resume(tmp_path):
    run_bench(Pair().graph, [P0], modes("small"), ctx(), tmp_path)
    with (tmp_path / RUNS_FILE).open("a") as f:
        f.write('{"key": "small-only|1|0", "mode": "small-on')  # killed while writing
    assert list(load_records(tmp_path)) == ["small-only|0|0"]
    pair = Pair()
    result = run_bench(pair.graph, [P0, P1], modes("small"), ctx(), tmp_path)
    assert pair.calls() == (1, 0, 0)  # only the torn run is run again
    assert sorted(result.records) == ["small-only|0|0", "small-only|1|0"]


def test_the_record_written_after_a_torn_line_survives(tmp_path):
    run_bench(Pair().graph, [P0], modes("small"), ctx(), tmp_path)
    with (tmp_path / RUNS_FILE).open("a") as f:
        f.write('{"key": "small-only|1|0", "mode": "small-on')
    run_bench(Pair().graph, [P0, P1], modes("small"), ctx(), tmp_path)
    assert sorted(load_records(tmp_path)) == ["small-only|0|0", "small-only|1|0"]


# --- datasets.select -----------------------------------------------------------------------------

def ids(problems) -> list[str]:
    return [p.id for p in problems]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"ids": "0-2,5"}, ["0", "1", "2", "5"]),
    ({"ids": " 7 , 3 "}, ["7", "3"]),
    ({"ids": "1,,2,"}, ["1", "2"]),
    ({"ids": "4-4"}, ["4"]),
    ({"ids": "0-9", "limit": 3}, ["0", "1", "2"]),
    ({"ids": "10,11", "offset": 5}, ["10", "11"]),  # offset is for slices, not ids
    ({"limit": 2}, ["0", "1"]),
    ({"limit": 3, "offset": 5}, ["5", "6", "7"]),
    ({"offset": 1317}, ["1317", "1318"]),
    ({"offset": 1318, "limit": 10}, ["1318"]),
])
def test_select_gsm8k(kwargs, expected):
    assert ids(datasets.select("gsm8k", **kwargs)) == expected


def test_select_other_datasets():
    assert ids(datasets.select("aime24", ids="60-62")) == ["60", "61", "62"]
    assert ids(datasets.select("aime24")) == [p.id for p in datasets.load("aime24")]
    first = datasets.load("math500")[0].id
    assert "-" not in first and ids(datasets.select("math500", ids=first)) == [first]
    assert datasets.select("gsm8k", ids="0") == [P0]
    gpqa = datasets.select("gpqa", limit=1)
    assert gpqa[0].prompt == "multiple_choice"


def test_select_math500_by_level():
    """MATH500 has 43 level-1 and 90 level-2 problems; --levels filters before offset and limit."""
    level1 = datasets.select("math500", levels="1")
    assert len(level1) == 43 and {p.level for p in level1} == {1}
    assert [p.id for p in level1] == [p.id for p in datasets.load("math500") if p.level == 1]
    both = datasets.select("math500", levels="1-2")
    assert len(both) == 133 and both == datasets.select("math500", levels="1,2")
    assert datasets.select("math500", levels="1", offset=40, limit=10) == level1[40:]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dataset": "gsm8k", "levels": "1"}, "gsm8k has no difficulty levels; --levels is for math500"),
    ({"dataset": "math500", "levels": "9"}, "math500 has no problems at --levels 9"),
    ({"dataset": "math500", "levels": "easy"}, "--levels takes numbers and ranges like 1,2 or 1-2"),
    ({"dataset": "math500", "levels": "1", "ids": "x"}, "give --ids or --levels, not both"),
    ({"dataset": "math500", "levels": "1", "offset": 43}, "outside math500's 43 problems at --levels 1"),
])
def test_select_levels_refuses(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        datasets.select(kwargs.pop("dataset"), **kwargs)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"limit": 0}, ValueError, "--limit must be at least 1, got 0"),
    ({"ids": "1", "limit": -1}, ValueError, "--limit must be at least 1, got -1"),
    ({"offset": 1319}, ValueError, "--offset 1319 is outside gsm8k's 1319 problems"),
    ({"offset": -1}, ValueError, "--offset -1 is outside gsm8k's 1319 problems"),
    ({"ids": "99999"}, KeyError, "gsm8k has no problem with id '99999'"),
    ({"ids": "1-2,x"}, KeyError, "gsm8k has no problem with id 'x'"),
    ({"ids": "1318-1320"}, KeyError, "gsm8k has no problem with id '1319'"),
    ({"ids": "5-3,7"}, ValueError, "--ids range '5-3' runs backwards"),
    ({"ids": "1,2,1-2"}, ValueError, "--ids names 1, 2 more than once"),
])
def test_select_errors(kwargs, error, message):
    with pytest.raises(error) as info:
        datasets.select("gsm8k", **kwargs)
    assert message in str(info.value)


def test_select_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'gsm9k'"):
        datasets.select("gsm9k")


# --- the command line ----------------------------------------------------------------------------

def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, " ".join(err.split())


NO_SERVER = ("--no-serve", "--base-url", URL, "--small-url", URL)


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "--modes", "base", "fast"], "unknown mode 'fast': start with base, small or spec"),
    (["bench", "--modes", "spec:t=11"], "mode 'spec:t=11': the threshold must be from 0 to 10"),
    (["bench", "--modes", "base:t=5"], "t=, score= and n= only apply to spec"),
    (["bench", "--gpu", "h100"], "--gpu takes one of paper-2xA6000, cpu-1-in-flight or four numbers"),
    (["bench", "--gpu", "1,2,3"], "--gpu takes one of"),
    (["bench", "--ids", "99999"], "gsm8k has no problem with id '99999'"),
    (["bench", "--limit", "0"], "--limit must be at least 1, got 0"),
    (["bench", "--offset", "5000"], "--offset 5000 is outside gsm8k's 1319 problems"),
    (["bench", "--threshold", "11"], "--threshold"),
    (["bench", "--limit", "3", "--redo", "3"], "--redo names problems this slice does not hold: 3"),
    (["bench", "--redo", "5-2"], "--redo range '5-2' runs backwards"),
    (["calibrate", "--threshold", "5"], "calibrate judges every draft at threshold 0 and reads "
                                        "both score methods; drop --threshold / --score-method"),
    (["calibrate", "--threshold", "0"], "drop --threshold / --score-method"),
    (["calibrate", "--score-method", "expected"], "drop --threshold / --score-method"),
    (["calibrate", "--ids", "x"], "gsm8k has no problem with id 'x'"),
    (["calibrate", "--dataset", "aime24", "--offset", "30"], "--offset 30 is outside aime24's 30"),
])
def test_bench_and_calibrate_refuse_bad_input_before_any_server(capsys, tmp_path, args, message):
    code, out, err = run_cli(capsys, *args, "--out", str(tmp_path / "out"), *NO_SERVER)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bench_report_on_an_empty_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "bench-report", str(tmp_path))
    assert code == 2 and f"{tmp_path} has no recorded runs yet" in err
    code, _, err = run_cli(capsys, "bench-report", str(tmp_path / "missing"))
    assert code == 2 and "has no recorded runs yet" in err


def test_bench_report_bad_gpu(capsys, tmp_path):
    code, _, err = run_cli(capsys, "bench-report", str(tmp_path), "--gpu", "x,y,z,w")
    assert code == 2 and "--gpu takes one of" in err


def test_bench_report_of_recorded_runs(capsys, tmp_path):
    run_bench(Pair().graph, [P0, P1], modes("base", "small", "spec"), ctx(), tmp_path)
    code, out, err = run_cli(capsys, "bench-report", str(tmp_path), "--gpu", "100,10,1000,0.01")
    assert code == 0, err
    for mode in ("base-only", "small-only", "specreason"):
        assert mode in out
    assert "small-only vs base-only: accuracy +0.0%" in out
    for name in ("summary.md", "summary.csv", "summary.json", "accuracy_latency.png",
                 "threshold_sweep.png"):
        assert (tmp_path / name).is_file()


# --- thresholds from a calibration, and BENCHMARKS.md splicing -----------------------------------

def test_a_calibration_file_sets_the_judge_of_every_mode_that_leaves_it_open(tmp_path):
    path = tmp_path / "choice.json"
    path.write_text(json.dumps({"choice": {"judge": "yes_no", "threshold": 6.5,
                                           "score_method": "expected"}}))
    ctx = Context(calibration=str(path))
    assert (ctx.judge, ctx.threshold, ctx.score_method) == ("yes_no", 6.5, "expected")
    open_mode = parse_mode("spec").context(ctx)
    assert (open_mode.judge, open_mode.threshold) == ("yes_no", 6.5)
    paper = parse_mode("spec:judge=score,t=7,score=greedy").context(ctx)
    assert (paper.judge, paper.threshold, paper.score_method) == ("score", 7.0, "greedy")
    assert parse_mode("spec:judge=check").name == "specreason check"
    with pytest.raises(ValueError, match="judge= is one of"):
        parse_mode("spec:judge=oracle")
    with pytest.raises(ValueError, match="cannot read the calibration"):
        Context(calibration=str(tmp_path / "missing.json"))


def test_splice_replaces_only_its_own_section(tmp_path):

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nhand-written findings\n")
    out = tmp_path / "benchmarks" / "results" / "gsm8k"
    splice(doc, out, "| table v1 |")
    first = doc.read_text()
    assert first.startswith("# Benchmarks\n\nhand-written findings\n")
    assert "<!-- bench:gsm8k -->\n| table v1 |" in first
    assert "(benchmarks/results/gsm8k/accuracy_latency.png)" in first
    doc.write_text(first + "\nmore notes after\n")
    splice(doc, out, "| table v2 |")
    second = doc.read_text()
    assert "| table v1 |" not in second and second.count("<!-- bench:gsm8k -->") == 1
    assert "| table v2 |" in second and second.endswith("more notes after\n")
    assert "hand-written findings" in second



# --- the load each run saw, and the folder's lock ------------------------------------------------

def test_load_watch_keeps_samples_only_when_every_server_answers():
    answers = {"a": [{"r": 1.0, "w": 0.0}, None, {"r": 2.0, "w": 1.0}], "b": [{"r": 0.0, "w": 0.0}] * 3}
    watch = metrics.LoadWatch(["a", "b"], read=lambda url: answers[url].pop(0))
    for _ in range(3):
        watch.sample()
    assert [n for _, n, _ in watch.samples] == [1.0, 3.0]
    everything = watch.window(float("-inf"), float("inf"), ours=1)
    assert everything == {"samples": 2, "peak_requests": 3.0, "others": 0.0, "excess_samples": 1,
                          "stale_samples": 0}
    assert watch.window(0, 0, ours=1) == {"samples": 0, "peak_requests": None, "others": None,
                                          "excess_samples": 0, "stale_samples": 0}
    assert watch.window(float("-inf"), watch.samples[0][0], ours=1)["others"] == 0.0


def test_load_watch_counts_only_an_excess_that_lasts():
    """vLLM's running gauge lags a reply by seconds: a short excess over our own requests is that
    lag; ``sustain`` samples in a row (10 by default) are another client's."""
    assert metrics.LoadWatch(["a"]).sustain == 10
    totals = iter([1.0, 2.0, 2.0, 1.0, 3.0, 4.0, 3.0, 1.0])
    watch = metrics.LoadWatch(["a"], read=lambda url: {"running": next(totals)}, sustain=3)
    for _ in range(8):
        watch.sample()
    load = watch.window(float("-inf"), float("inf"), ours=1)
    assert load == {"samples": 8, "peak_requests": 4.0, "others": 2.0, "excess_samples": 5,
                    "stale_samples": 0}
    lag_only = metrics.LoadWatch(["a"], read=lambda url: {"running": 2.0}, sustain=3)
    lag_only.sample()
    lag_only.sample()
    assert lag_only.window(float("-inf"), float("inf"), ours=1)["others"] == 0.0
    strict = metrics.LoadWatch(["a"], read=lambda url: {"running": 2.0}, sustain=1)
    strict.sample()
    assert strict.window(float("-inf"), float("inf"), ours=1)["others"] == 1.0


def _server(running, prompt=0.0, generated=0.0):
    return {"vllm:num_requests_running": running, "vllm:num_requests_waiting": 0.0,
            "vllm:prompt_tokens_total": prompt, "vllm:generation_tokens_total": generated}


def test_a_gauge_on_a_server_whose_token_counters_stand_still_is_not_believed():
    """What was polled at one run in flight: the small server drafts (its counters move) while the
    base server's gauge still counts the rewrite that returned seconds ago (its counters stand
    still). That is one request, ours; a base server whose counters move holds another client's."""
    small = iter([_server(1, 100, g) for g in range(0, 40, 4)])
    base = iter([_server(1, 500, 80)] * 10)
    watch = metrics.LoadWatch(["base", "small"], sustain=3,
                              read=lambda url: next(base if url == "base" else small))
    for _ in range(10):
        watch.sample()
    load = watch.window(float("-inf"), float("inf"), ours=1)
    assert load == {"samples": 10, "peak_requests": 2.0, "others": 0.0, "excess_samples": 1,
                    "stale_samples": 9}  # the first reading has nothing to compare with

    small = iter([_server(1, 100, g) for g in range(0, 40, 4)])
    busy = iter([_server(1, 500, g) for g in range(80, 100, 2)])
    watch = metrics.LoadWatch(["base", "small"], sustain=3,
                              read=lambda url: next(busy if url == "base" else small))
    for _ in range(10):
        watch.sample()
    load = watch.window(float("-inf"), float("inf"), ours=1)
    assert (load["others"], load["excess_samples"], load["stale_samples"]) == (1.0, 10, 0)


def test_a_server_that_does_not_give_its_counters_is_read_by_its_gauge():
    watch = metrics.LoadWatch(["a"], sustain=2, read=lambda url: {"vllm:num_requests_running": 2.0})
    for _ in range(3):
        watch.sample()
    assert watch.window(float("-inf"), float("inf"), ours=1)["others"] == 1.0


def test_each_run_records_its_concurrency_and_the_load_it_saw(tmp_path, monkeypatch):
    """The servers are polled while runs are in flight; requests beyond the benchmark's own
    concurrency are counted; such a run is recorded with them, refused by the report, and measured
    again by the same call once the other client has gone."""
    held = {"n": 1.0}
    tokens = itertools.count()  # the servers are generating: their gauges are believed
    monkeypatch.setattr(metrics, "scrape", lambda url, names=None, timeout=10.0: (
        _server(held["n"], 0.0, float(next(tokens)))
        if names == metrics.LOAD_GAUGES + metrics.ACTIVITY_COUNTERS else None))
    slow = Pair(hook=lambda messages, kwargs: time.sleep(0.3))  # ≥ 10 samples: a lasting excess
    out = tmp_path / "out"
    run_bench(slow.graph, [P0], modes("small"), ctx(), out, load_interval=0.01)
    (first,) = lines(out)
    assert first["concurrency"] == 1
    assert first["load"]["samples"] >= 1 and first["load"]["others"] == 0.0
    assert meta(out)["segments"][0]["load"]["others"] == 0.0

    held["n"] = 3.0  # two requests more than the bench's own on every sample
    out2 = tmp_path / "loaded"
    run_bench(slow.graph, [P0], modes("small"), ctx(), out2, load_interval=0.01)
    assert lines(out2)[0]["load"]["others"] == 2.0 and lines(out2)[0]["load"]["excess_samples"] >= 10
    with pytest.raises(ValueError, match="another client's requests"):
        stats.comparable(load_records(out2))
    held["n"] = 1.0  # the other client has gone
    result = run_bench(slow.graph, [P0], modes("small"), ctx(), out2, load_interval=0.01)
    assert len(lines(out2)) == 2 and result.records == load_records(out2)
    (again,) = result.records.values()
    assert again["load"]["others"] == 0.0 and stats.comparable(result.records)["runs"] == 1


def test_a_locked_results_folder_is_refused_and_left_untouched(tmp_path):
    from specreason_graph.evaluation.records import FolderBusy, locked
    out = tmp_path / "out"
    out.mkdir()
    with locked(out):
        assert f"pid {os.getpid()}" in (out / ".lock").read_text()
        with pytest.raises(FolderBusy, match=rf"{out} is being written by pid {os.getpid()}"):
            run_bench(Pair().graph, [P0], modes("small"), ctx(), out)
        assert not (out / RUNS_FILE).exists() and not (out / META_FILE).exists()
    run_bench(Pair().graph, [P0], modes("small"), ctx(), out)  # released: the next one writes
    assert len(lines(out)) == 1


# --- SpecDecode: the base server speculates ---------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("specdecode", Mode("specdecode", "base", base_url="http://h:8103/v1")),
    ("specdecode:name=sd", Mode("sd", "base", base_url="http://h:8103/v1")),
    ("specdecode:url=http://g:1/v1", Mode("specdecode", "base", base_url="http://g:1/v1")),
    ("specreason+specdecode", Mode("specreason+specdecode", "spec", base_url="http://h:8103/v1")),
    ("specreason+specdecode:judge=score,t=7,score=greedy,name=paper+sd",
     Mode("paper+sd", "spec", 7.0, "greedy", judge="score", base_url="http://h:8103/v1")),
])
def test_parse_specdecode_modes(text, expected):
    assert parse_mode(text, specdecode_url="http://h:8103/v1") == expected


def test_a_specdecode_mode_needs_to_know_which_server_speculates():
    with pytest.raises(ValueError, match="which server speculates"):
        parse_mode("specdecode")
    assert parse_mode("specdecode:url=http://g:1/v1").base_url == "http://g:1/v1"


def test_runs_on_a_speculating_base_server_record_its_counters(tmp_path):
    """Each run whose base server speculates records that server's speculative-decoding counters
    over the run (vLLM's /metrics, here a stand-in's); runs elsewhere record none, and the load
    is watched on the servers the modes use only."""
    from tests.vllm_stub import VLLMStub

    with VLLMStub(model="base", acceptance=lambda t: 0.0) as server:
        def base(messages, kwargs):  # every base-model call drafts 4 tokens and accepts 3
            server.drafted += 4
            server.accepted += 3
            return score("9") if kwargs.get("max_tokens") == 1 else step(BASE_TEXT, end="eos")

        graph = build_graph(small=ScriptedModel(script=lambda m, k: step(SMALL_TEXT, end="eos")),
                            base=ScriptedModel(script=base)).compile()
        sd = [parse_mode(t, specdecode_url=server.url)
              for t in ("specdecode", "specreason+specdecode:t=10", "small:url=" + server.url)]
        result = run_bench(graph, [P0], sd, ctx(), tmp_path)
    by_mode = {r["mode"]: r for r in result.records.values()}
    assert by_mode["specdecode"]["spec_decode"] == {"drafts": 0.0, "draft_tokens": 4.0,
                                                    "accepted_tokens": 3.0}
    # judged (one call) and rewritten (one more): the base server twice
    assert by_mode["specreason+specdecode"]["spec_decode"] == {
        "drafts": 0.0, "draft_tokens": 8.0, "accepted_tokens": 6.0}
    assert "spec_decode" not in by_mode[f"small-only @{server.url}"]  # never asks the base model
    assert stats.speculating(result.records) == {"specdecode", "specreason+specdecode"}
    segment = meta(tmp_path)["segments"][-1]
    assert sorted(segment["metrics_before"]) == sorted({server.url, URL})


def test_plain_runs_record_no_counters(tmp_path):
    result = run_bench(Pair().graph, [P0], modes("base", "spec"), ctx(), tmp_path)
    assert all("spec_decode" not in r for r in result.records.values())


def test_bench_refuses_modes_that_need_both_local_base_servers(tmp_path, monkeypatch, capsys):
    """The plain and the speculating CPU base servers do not fit in memory together: modes needing
    both are refused before any server starts, pointing at alternating segments."""
    code = cli.main(["bench", "--modes", "base", "specdecode", "--limit", "1",
                     "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2
    assert "need 2 base servers at once" in err and "do not fit in memory together" in err
    assert "segment of their own" in err and not (tmp_path / "b" / RUNS_FILE).exists()
