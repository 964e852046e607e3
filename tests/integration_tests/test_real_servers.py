"""SpecReason end to end on the two real vLLM servers (Qwen2.5-Coder 0.5B drafts, 1.5B judges)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from specreason_graph import compile_graph, rules
from specreason_graph.evaluation import datasets
from specreason_graph.trace import judge_reads
from tests.integration_tests.conftest import metric
from tests.streams import run_streamed

GSM8K = datasets.get("gsm8k", "1")  # "A robe takes 2 bolts of blue fiber and half that much white..."


def run(context, problem=GSM8K.question):
    return run_streamed(compile_graph(), {"problem": problem}, context)


def test_gsm8k_question_runs_to_a_stop_with_real_scores(context_of):
    ctx = context_of()
    final, events = run(ctx)
    trace = final["trace"]
    assert final["stop_reason"] in {"answer", "repeated_step", "token_budget", "finished"}
    assert trace and len(events) == len(trace) == len(final["steps"])
    for record in trace:
        assert record["accepted"] is not None, "no forced steps at first_n_base=0"
        # The judge's reply carries real logprobs: the generated token and its alternatives.
        reads = judge_reads(record)
        assert isinstance(reads["token"], str)
        assert 1 <= len(reads["alternatives"]) <= ctx.judge_top_logprobs
        assert reads["token"] in [t for t, _ in reads["alternatives"]]
        assert record["score"] == rules.greedy_score(reads["token"])
        assert record["accepted"] == (record["score"] >= ctx.threshold)
        assert record["writer"] == ("small" if record["accepted"] else "base")
        assert record["judge_prompt_tokens"] > 0 and record["judge_ms"] > 0
    assert final["kept_tokens"] == sum(r["tokens"] for r in trace)
    if final["stop_reason"] == "answer":
        assert final["answer"] == rules.extract_answer(final["steps"][-1])


def test_expected_score_from_real_logprobs(context_of):
    ctx = context_of(score_method="expected", token_budget=64, max_step_tokens=32, threshold=8.5)
    final, _ = run(ctx)
    for record in final["trace"]:
        assert record["score"] == pytest.approx(rules.expected_score(judge_reads(record)["alternatives"]))
        assert 0.0 <= record["score"] <= 9.0
        assert record["accepted"] == (record["score"] >= 8.5)


def test_threshold_zero_keeps_every_draft(context_of):
    final, _ = run(context_of(threshold=0, token_budget=100, max_step_tokens=64))
    assert final["trace"]
    assert all(r["accepted"] and r["writer"] == "small" and r["base_tokens"] == 0
               for r in final["trace"])


def test_threshold_ten_regenerates_every_step(context_of):
    final, _ = run(context_of(threshold=10, token_budget=40, max_step_tokens=32))
    assert final["trace"]
    for record in final["trace"]:
        assert record["accepted"] is False and record["writer"] == "base"
        assert record["draft"] is not None and record["base_tokens"] > 0
        assert record["text"] != record["draft"] or record["draft"] == ""  # base's own text


def test_first_n_base_steps_are_written_by_the_base_model(context_of):
    final, _ = run(context_of(first_n_base=1, token_budget=60, max_step_tokens=40))
    first = final["trace"][0]
    assert first["forced"] and first["writer"] == "base" and first["score"] is None


def test_judge_prefix_hits_vllms_prefix_cache(local_servers, context_of):
    base = local_servers.role("base")
    hits_before = metric(base, "vllm:prefix_cache_hits_total")
    final, _ = run(context_of(threshold=0, token_budget=150, max_step_tokens=64))
    hits_after = metric(base, "vllm:prefix_cache_hits_total")
    assert len(final["trace"]) >= 2
    assert hits_after > hits_before, "no prefix-cache hit on the base server during judging"
    # Every judge call after the first reuses the cached problem prefix (whole 128-token blocks).
    later = final["trace"][1:]
    assert all((r["judge_cached_tokens"] or 0) >= 128 for r in later), [
        (r["judge_prompt_tokens"], r["judge_cached_tokens"]) for r in later]


def test_cli_ask_prints_live_steps_and_a_summary(local_servers):
    ctx = local_servers.context()
    result = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "ask", "What is 6 times 7?", "--no-serve",
         "--base-url", ctx.base_url, "--small-url", ctx.small_url, "--token-budget", "120",
         "--seed", "0"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert "step 0" in result.stdout and "stop reason" in result.stdout
    assert "acceptance" in result.stdout


def test_cli_ask_json_output(local_servers):
    ctx = local_servers.context()
    result = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "ask", "What is 2 + 2?", "--no-serve",
         "--base-url", ctx.base_url, "--small-url", ctx.small_url, "--token-budget", "60",
         "--seed", "0", "--json"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["summary"]["steps"] == len(payload["trace"]) >= 1
    assert payload["stop_reason"] is not None


def test_cli_names_a_server_that_serves_another_model(local_servers):
    ctx = local_servers.context()
    result = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "ask", "x", "--no-serve",
         "--base-url", ctx.base_url, "--small-url", ctx.small_url, "--base-model", "nope"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "serves ['qwen2.5-coder-1.5b-instruct'], not 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


def test_preflight_finds_the_real_pair_of_one_tokenizer_family(local_servers):
    from specreason_graph.serving import preflight

    ctx = local_servers.context()
    base = preflight.check_endpoint("base", ctx.base_url, ctx.base_model)
    small = preflight.check_endpoint("small", ctx.small_url, ctx.small_model)
    assert base.max_model_len == small.max_model_len == 10240
    assert base.probe_tokens and base.probe_tokens == small.probe_tokens
    assert preflight.check(ctx).warnings == []
