"""Every judge on the two real vLLM servers: each scores a real draft from what the servers send
(the base model's tokens and logprobs, the small model's draft logprobs, prompt logprobs), ``check``
rejects a planted false equation and the real base model rewrites the step, and ``specreason
calibrate`` on a tiny slice writes a choice that ``specreason ask`` then runs with."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from langchain_core.messages import AIMessage

from specreason_graph import build_graph, compile_graph, rules
from specreason_graph.evaluation import datasets
from tests.fakes import ScriptedModel

PROBLEM = datasets.get("gsm8k", "1")  # the robe: 2 bolts of blue fiber and half that much white
OTHERS = ["yes_no", "confidence", "likelihood", "check"]


def test_every_judge_scores_real_drafts(context_of):
    ctx = context_of(judge="score", threshold=0, also_judge=OTHERS, token_budget=60,
                     max_step_tokens=40)
    final = compile_graph().invoke({"problem": PROBLEM.question}, context=ctx)
    assert final["trace"]
    for record in final["trace"]:
        judges = record["judges"]
        assert set(judges) == {"score", *OTHERS}
        assert all(j["error"] is None and 0.0 <= j["score"] <= 9.0 for j in judges.values()), judges
        # the small model sent the draft's token logprobs with the draft
        assert record["draft_logprobs"] and all(lp <= 0.0 for lp in record["draft_logprobs"])
        assert judges["confidence"]["score"] == pytest.approx(
            rules.probability_score(record["draft_logprobs"]))
        assert judges["confidence"]["prompt_tokens"] == 0  # no call at all
        # yes_no read P(Yes) from the base model's top logprobs
        assert 0.0 <= judges["yes_no"]["reads"]["p_yes"] <= 1.0
        assert judges["yes_no"]["reads"]["token"].strip() in ("Yes", "No", "yes", "no")


def test_likelihood_reads_the_drafts_token_logprobs_from_the_base_server(context_of):
    ctx = context_of(judge="likelihood", threshold=0, token_budget=40, max_step_tokens=32)
    final = compile_graph().invoke({"problem": PROBLEM.question}, context=ctx)
    record = final["trace"][0]
    reads = record["judges"]["likelihood"]["reads"]
    # about one base-model token per draft token (the same tokenizer family)
    assert abs(reads["tokens"] - record["draft_tokens"]) <= 2, (reads, record["draft_tokens"])
    assert reads["min_logprob"] <= reads["mean_logprob"] <= 0.0
    assert record["score"] == pytest.approx(9 * math.exp(reads["mean_logprob"]))
    # its price: vLLM prefills the whole prompt for prompt logprobs, the cache is not read
    assert record["judge_prompt_tokens"] > record["draft_tokens"]
    assert (record["judge_cached_tokens"] or 0) == 0


def test_check_rejects_a_planted_false_equation_and_the_real_base_model_rewrites_it(context_of):
    planted = "She uses 3 + 4 = 9 eggs a day."
    small = ScriptedModel(script=[AIMessage(planted + "\n\n", response_metadata={
        "finish_reason": "stop"}, usage_metadata={"input_tokens": 9, "output_tokens": 12,
                                                  "total_tokens": 21})])
    graph = build_graph(small=small).compile()
    ctx = context_of(judge="check", token_budget=30, max_step_tokens=24)
    question = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and "
                "bakes muffins for her friends every day with four. How many eggs are left?")
    # one planted draft; the run is read up to its first kept step only
    final = _first_step(graph, question, ctx)
    assert final["draft"] == planted
    assert final["accepted"] is False and final["score"] == 0.0
    assert final["judges"]["check"]["reads"]["false"] == ["3 + 4 = 9"]
    assert final["writer"] == "base" and final["base_tokens"] > 0
    assert final["text"] != planted and final["judge_prompt_tokens"] == 0  # no model judged it


def _first_step(graph, question, ctx):
    """Stream the run until its first kept step, and return that step's trace record."""
    for chunk in graph.stream({"problem": question}, context=ctx, stream_mode="updates"):
        if "commit" in chunk:
            return chunk["commit"]["trace"][0]
    raise AssertionError("no step was kept")


def test_calibrate_writes_a_choice_that_ask_runs_with(local_servers, tmp_path):
    ctx = local_servers.context()
    out = tmp_path / "cal"
    endpoints = ["--no-serve", "--base-url", ctx.base_url, "--small-url", ctx.small_url]
    done = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "calibrate", "--dataset", "gsm8k",
         "--ids", "1", "--rollouts", "2", "--token-budget", "96", "--max-step-tokens", "32",
         "--rollout-tokens", "64",
         "--out", str(out), *endpoints], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    choice = json.loads((out / "choice.json").read_text())["choice"]
    rows = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert rows and all(set(r["labels"]) >= {"rollout", "arithmetic", "problem"} for r in rows)
    assert "AUROC" in done.stdout and "chosen:" in done.stdout

    asked = subprocess.run(
        [sys.executable, "-m", "specreason_graph.cli", "ask", "What is 2 + 2?", *endpoints,
         "--token-budget", "24", "--calibration", str(out / "choice.json"), "--json",
         "--temperature", "0"],  # greedy: the CLI's speculation probe is another test's
        capture_output=True, text=True, timeout=900)
    assert asked.returncode == 0, asked.stderr[-3000:]
    trace = json.loads(asked.stdout.strip().splitlines()[-1])["trace"]
    judged = [r for r in trace if r["judge"] is not None]
    assert judged and all(r["judge"] == choice["judge"] for r in judged)
    assert all(r["accepted"] == (r["score"] >= choice["threshold"]) for r in judged)
