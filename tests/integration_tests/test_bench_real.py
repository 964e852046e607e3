"""``specreason bench`` against the two real vLLM servers: Ctrl-C keeps the finished runs and the
same command resumes with only the missing ones; then the report (tables, CSV, JSON, plots) and the
prefix-cache figures from ``/metrics``. Budgets are tiny: the 1.5B base writes ~3 tokens/s."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specreason_graph import compile_graph
from specreason_graph.evaluation import datasets, report
from specreason_graph.evaluation.metrics import ACTIVITY_COUNTERS, PREFIX_COUNTERS, scrape
from specreason_graph.evaluation.modes import parse_mode
from specreason_graph.evaluation.records import META_FILE, RUNS_FILE, load_records
from specreason_graph.evaluation.records import key as run_key
from specreason_graph.evaluation.runner import run_bench
from tests.integration_tests.faultproxy import FaultProxy, Rule

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODES = ("base", "small")
MODE_NAMES = {"base-only", "small-only"}
BUDGET, STEP = 24, 12  # two steps a run; under another benchmark's load a base run takes minutes


def complete_records(path: Path) -> list[dict]:
    """The records of ``runs.jsonl`` whose line is fully written (ends with a newline)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def check_record(record: dict) -> None:
    assert {"key", "mode", "id", "correct", "wall_s", "trace"} <= set(record), record
    assert record["error"] is None, record["error"]
    assert record["mode"] in MODE_NAMES
    assert record["id"] in ("0", "1")
    assert record["key"] == run_key(record["mode"], record["id"], record["sample"])
    assert isinstance(record["correct"], bool)
    assert record["wall_s"] > 0
    assert isinstance(record["trace"], list) and record["trace"]


def table_rows(markdown: str) -> list[str]:
    """The mode column of summary.md's first table (the per-mode one)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| mode | runs |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line.strip("|").split("|")[0].strip())
    return rows


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def slow_base(local_servers):
    """The base server behind a proxy that can hold its model calls back (see the test)."""
    with FaultProxy(local_servers.role("base").origin) as proxy:
        yield proxy


def test_bench_cli_interrupted_then_resumed(local_servers, slow_base, tmp_path):
    base, small = local_servers.role("base"), local_servers.role("small")
    # While the first command runs, every base-model call waits 60 s in the proxy: the small-only
    # runs finish, the base-only ones are surely still in flight when Ctrl-C comes (on idle
    # servers all four runs would otherwise finish before the signal lands). The proxy forwards
    # nothing for a client that has gone. The resumed command gets the server at full speed.
    slow_base.set(Rule("delay", kind="model", seconds=60))
    out = tmp_path / "bench"
    argv = [sys.executable, "-m", "specreason_graph.cli", "bench", "--dataset", "gsm8k",
            "--limit", "2", "--modes", *MODES, "--concurrency", "2",
            "--token-budget", str(BUDGET), "--max-step-tokens", str(STEP),
            "--temperature", "0",  # greedy: no speculation probe (it would wait in the proxy too)
            "--out", str(out), "--no-serve",
            "--base-url", slow_base.url, "--base-model", base.served_model_name,
            "--small-url", small.url, "--small-model", small.served_model_name]
    runs = out / RUNS_FILE

    # 1. Start, wait for the first finished run, then Ctrl-C.
    with (tmp_path / "first.out").open("w") as stdout, (tmp_path / "first.err").open("w") as stderr:
        # The child gets SIGINT's default disposition: a process started with SIGINT ignored
        # (as this one may be, from the pytest process or a background job) ignores Ctrl-C.
        first = subprocess.Popen(argv, stdout=stdout, stderr=stderr, cwd=tmp_path,
                                 start_new_session=True, preexec_fn=_default_sigint)
        try:
            deadline = time.monotonic() + 300
            while not complete_records(runs):
                assert first.poll() is None, (
                    f"bench ended (exit {first.returncode}) before a run finished: "
                    f"{(tmp_path / 'first.err').read_text()[-2000:]}")
                assert time.monotonic() < deadline, "no run finished in 300 s"
                time.sleep(0.5)
            first.send_signal(signal.SIGINT)
            try:
                code = first.wait(timeout=120)  # not held up by the runs still in the proxy
            except subprocess.TimeoutExpired:
                raise AssertionError("bench did not exit within 120 s of Ctrl-C: "
                                     + (tmp_path / "first.err").read_text()[-2000:]) from None
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait()
    err = (tmp_path / "first.err").read_text()
    assert code == 130, err[-2000:]
    assert "Interrupted" in err

    before = complete_records(runs)
    assert 1 <= len(before) < 4, [r["key"] for r in before]
    assert {r["mode"] for r in before} == {"small-only"}  # the base-only runs were held back
    for record in before:
        check_record(record)
    meta = json.loads((out / META_FILE).read_text())
    assert len(meta["segments"]) == 1
    assert meta["segments"][0]["interrupted"] is True
    assert meta["segments"][0]["completed"] == len(before)

    # 2. The same command again: only the missing runs, then the full report.
    slow_base.set()
    resumed = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # not a terminal: a line per finished run instead of a progress bar
    assert re.search(r"^\d+/\d+ (base|small)-only gsm8k:[01] (right|wrong) \d+ s", resumed.stderr,
                     re.M), resumed.stderr[-2000:]

    after = complete_records(runs)
    assert len(after) == 4, [r["key"] for r in after]  # 2 problems × 2 modes, nothing re-run
    assert len({r["key"] for r in after}) == 4
    assert {(r["mode"], r["id"]) for r in after} == {(m, p) for m in MODE_NAMES for p in ("0", "1")}
    for record in after:
        check_record(record)
    assert after[: len(before)] == before  # the earlier lines are untouched ...
    kept = load_records(out)
    for record in before:  # ... and are still the records in force (not run again)
        assert kept[record["key"]]["finished_at"] == record["finished_at"]

    meta = json.loads((out / META_FILE).read_text())
    assert [s["interrupted"] for s in meta["segments"]] == [True, False]
    assert meta["segments"][1]["runs"] == meta["segments"][1]["completed"] == 4 - len(before)
    # Each resumed run sampled the servers' queues (through the proxy) and saw nothing but its own
    # requests: at most 2 in flight at concurrency 2.
    for record in after[len(before):]:
        assert record["concurrency"] == 2
        assert record["load"]["samples"] >= 1, record["load"]
        assert record["load"]["others"] == 0 and record["load"]["peak_requests"] <= 2

    # Traces: base-only is all base, no judge; small-only is all small, no judge.
    for record in after:
        writers = {step["writer"] for step in record["trace"]}
        assert all(step["accepted"] is None for step in record["trace"])
        if record["mode"] == "base-only":
            assert writers == {"base"}
            assert all(step["draft"] is None for step in record["trace"])
            assert record["summary"]["base_tokens"] > 0
        else:
            assert writers == {"small"}
            assert all(step["base_tokens"] == 0 for step in record["trace"])
        assert sum(step["tokens"] for step in record["trace"]) < BUDGET + STEP

    # The report (rows come in the order the modes first finished).
    assert sorted(table_rows((out / "summary.md").read_text())) == ["base-only", "small-only"]
    with (out / "summary.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert {row["mode"] for row in csv_rows} == MODE_NAMES and len(csv_rows) == 2
    for name in ("accuracy_latency.png", "threshold_sweep.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name

    summary = json.loads((out / "summary.json").read_text())
    # The base server's /metrics were read before and after the resumed segment (through the
    # proxy) and its prefix-cache queries grew by at least the two base-only prompts (each run is one
    # request: two different problems share less than one 32-token block, so the hit rate itself
    # may well be 0 here; test_run_bench_spec_... checks hits).
    queries_name, _ = PREFIX_COUNTERS
    resumed_segment = meta["segments"][1]
    queried = (resumed_segment["metrics_after"][slow_base.url][queries_name]
               - resumed_segment["metrics_before"][slow_base.url][queries_name])
    assert queried >= 2 * 40, resumed_segment  # each prompt: the template and a GSM8K problem
    assert summary["prefix_cache"][slow_base.url] is not None, summary["prefix_cache"]
    rows = {row["mode"]: row for row in summary["rows"]}
    assert set(rows) == MODE_NAMES
    assert rows["base-only"]["speedup"] == 1.0
    assert isinstance(rows["small-only"]["speedup"], float) and rows["small-only"]["speedup"] > 0
    assert rows["small-only"]["speedup_problems"] == 2
    for row in rows.values():
        assert row["runs"] == 2 and row["failed"] == 0
        assert row["acceptance"] is None  # nothing judged in either baseline
    assert rows["base-only"]["steps_small"] == 0 and rows["small-only"]["steps_base"] == 0


def test_run_bench_spec_records_judge_cache_and_builds_report(context_of, tmp_path):
    # The paper's judge: one model call per draft, whose prompt and cache reads are checked below
    # (the CPU default's cascade may decide a draft by the small model's confidence, with no call).
    ctx = context_of(token_budget=30, max_step_tokens=16)
    problems = datasets.select("gsm8k", limit=1)
    mode = parse_mode("spec:t=0")
    seen = []
    result = run_bench(compile_graph(), problems, [mode], ctx, tmp_path,
                             on_progress=seen.append)

    assert not result.interrupted and result.abandoned == 0
    assert len(seen) == 1 and seen[0].done == seen[0].total == 1
    (record,) = result.records.values()
    assert record["error"] is None, record["error"]
    assert record["mode"] == "specreason t=0" and record["id"] == problems[0].id
    trace = record["trace"]
    assert trace
    for step in trace:  # threshold 0: every draft is judged and kept
        assert step["accepted"] is True and step["writer"] == "small"
        assert step["judge_prompt_tokens"] > 0
        assert step["judge_cached_tokens"] is not None  # --enable-prompt-tokens-details
        assert 0 <= step["judge_cached_tokens"] <= step["judge_prompt_tokens"]
    assert record["summary"]["drafts_judged"] == len(trace)
    # What runs.jsonl holds is the record as returned (tuples come back from JSON as lists).
    assert load_records(tmp_path) == json.loads(json.dumps(result.records, default=str))

    # One request at a time (a sample may fall between two calls, never on two at once).
    assert record["concurrency"] == 1 and record["load"]["samples"] >= 1
    assert record["load"]["peak_requests"] <= 1 and record["load"]["others"] == 0
    assert "stale_samples" in record["load"]  # read by the watch that checks the gauges
    for url in (ctx.base_url, ctx.small_url):  # ... by the token counters a real vLLM gives
        counters = scrape(url, ACTIVITY_COUNTERS)
        assert counters is not None and all(v > 0 for v in counters.values()), (url, counters)

    summary = report.build(tmp_path)
    assert summary["load"]["concurrency"] == 1 and summary["load"]["load_unknown"] == 0
    (row,) = summary["rows"]
    assert row["mode"] == "specreason t=0" and row["runs"] == 1
    assert row["acceptance"] == 1.0
    assert row["speedup"] is None  # no base-only runs to compare with
    assert row["judge_prompt_tokens"] > 0
    # Every judge call after the first re-reads the problem and the steps before it from the base
    # server's prefix cache: per request (usage) and in the server's own counters (/metrics).
    cached = [step["judge_cached_tokens"] for step in trace]
    if len(trace) >= 2:
        assert all(c > 0 for c in cached[1:]), cached
        assert row["judge_cache_hit"] > 0
        assert summary["prefix_cache"][ctx.base_url] > 0, summary["prefix_cache"]
    assert row["judge_cache_hit"] == pytest.approx(
        sum(cached) / sum(step["judge_prompt_tokens"] for step in trace))
    assert summary["settings"]["modes"]["specreason t=0"]["threshold"] == 0.0
    for name in ("summary.md", "summary.csv", "accuracy_latency.png", "threshold_sweep.png"):
        assert (tmp_path / name).exists(), name
