"""The reasoning-model path on real servers: the CPU pair served with a reasoning model's kind of
chat template (servers/cpu-reasoning.toml, servers/templates/reasoning.jinja: the assistant turn
opens '<think>\\n', earlier assistant turns lose their thinking), as QwQ-32B and the R1 distills of
servers/gpu-*.toml are served.

- the graph takes the thinking opener from the served template itself: the runs are made with a
  plain Context that sets no opener (as a library user writes it), and preflight reads the same;
- every draft, judge and regeneration prompt, rendered by vLLM into token ids (``/tokenize`` with
  the request's own messages and flags), is exactly the problem turn, the thinking opened once,
  the kept steps once each in order, then the candidate and the judge turn: nothing dropped by the
  template, nothing doubled;
- each judge prompt extends its draft's prompt token for token, and vLLM served that prefix from its
  cache (cached prompt tokens per judge call);
- a step that closes the thinking and answers ends the run, with the answer read after '</think>';
- at temperature 0 the graph's traces equal a plain loop written from the paper's description
  (below, sharing nothing with the graph but the prompt files) on six problems.

Both servers of the default give way to this pair (the two pairs do not fit in memory together):
the module is marked ``servers("cpu-reasoning")``, so the session runs it after every test on the
other configurations.
"""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from openai import OpenAI

from specreason_graph import Context, compile_graph, prompts
from specreason_graph.context import PAPER_JUDGE
from specreason_graph.evaluation import datasets
from specreason_graph.serving import config, preflight
from tests.integration_tests.faultproxy import FaultProxy

pytestmark = pytest.mark.servers("cpu-reasoning")

OPENER = "<think>\n"
"""What servers/templates/reasoning.jinja opens the assistant turn with."""
SETTINGS = {**PAPER_JUDGE, "seed": 0, "temperature": 0.0, "token_budget": 64,
            "max_step_tokens": 64}
"""The paper's judge at temperature 0, with budgets that keep the 1.5B's share short."""
CLOSE_AND_ANSWER = ("Copy this line exactly as your whole reply: "
                    "17 + 25 = 42 </think> The answer is \\boxed{42}")
"""A problem after which the 1.5B, writing every step (THRESHOLDS), closes its thinking and
answers in one step at temperature 0 (the 0.5B leaves '</think>' out)."""
PROBLEMS = [p.question for p in datasets.select("gsm8k", offset=1102, limit=5)] + [CLOSE_AND_ANSWER]
"""GSM8K 1102-1106: neither the evaluation (0-39) nor calibration (1000-1019) uses them."""
THRESHOLDS = [SETTINGS["threshold"]] * 5 + [10.0]
"""Per problem; 10 rejects every draft, so the base model writes every step."""


@dataclass
class Runs:
    pair: config.ServerSet
    user_prompt: str
    """The problem prompt file the runs used."""
    opener: str | None
    finals: list[dict[str, Any]]
    base: FaultProxy
    small: FaultProxy


@pytest.fixture(scope="module")
def reasoning(server_pool):
    """The reasoning pair up in place of the plain one (the pool brings the others back at the
    session's end if they were up before it)."""
    return server_pool.use("cpu-reasoning")


@pytest.fixture(scope="module")
def runs(reasoning):
    """The graph on every problem through logging proxies, with a Context that sets no opener:
    the graph reads it from the served template (through the proxy, once per endpoint)."""
    ctx = reasoning.context(**SETTINGS)
    assert ctx.thinking_opener is None
    opener = preflight.check(ctx).thinking_opener
    with FaultProxy(reasoning.role("base").origin, max_requests=2000) as base, \
            FaultProxy(reasoning.role("small").origin, max_requests=2000) as small:
        proxied = Context(base_url=base.url, small_url=small.url,
                          base_model=ctx.base_model, small_model=ctx.small_model, **SETTINGS)
        graph = compile_graph()
        finals = [graph.invoke({"problem": p, "threshold": t}, context=proxied)
                  for p, t in zip(PROBLEMS, THRESHOLDS, strict=True)]
    return Runs(reasoning, ctx.prompt, opener, finals, base, small)


def test_the_opener_comes_from_the_served_template(runs):
    assert runs.opener == OPENER
    reads = [e.path for e in runs.base.entries("other") if e.path in ("/tokenize", "/detokenize")]
    assert reads == ["/tokenize", "/tokenize", "/detokenize"]  # the graph read it once, for all six
    assert preflight.check(runs.pair.context(**SETTINGS)).warnings == []


# --- what vLLM renders ---------------------------------------------------------------------------

def _post(spec: config.ServerSpec, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"{spec.origin}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def rendered(spec: config.ServerSpec, request: dict[str, Any]) -> list[int]:
    """The prompt token ids vLLM renders for a chat request the graph sent."""
    return _post(spec, "/tokenize", {
        "model": spec.served_model_name, "messages": request["messages"],
        "add_generation_prompt": request.get("add_generation_prompt", True),
        "continue_final_message": request.get("continue_final_message", False)})["tokens"]


def tokens_of(spec: config.ServerSpec, text: str) -> list[int]:
    return _post(spec, "/tokenize", {"model": spec.served_model_name, "prompt": text,
                                     "add_special_tokens": False})["tokens"]


def text_of(spec: config.ServerSpec, ids: list[int]) -> str:
    return _post(spec, "/detokenize", {"model": spec.served_model_name, "tokens": ids})["prompt"]


def turn(role: str, text: str, *, close: bool = True) -> str:
    return f"<|im_start|>{role}\n{text}" + ("<|im_end|>\n" if close else "")


def expected_step_prompt(user: str, kept: list[str]) -> str:
    return turn("user", user) + turn("assistant", OPENER + "".join(s + "\n\n" for s in kept),
                                     close=False)


def expected_judge_prompt(user: str, kept: list[str], candidate: str) -> str:
    thinking = OPENER + "".join(s + "\n\n" for s in kept) + candidate.replace("</think>", "")
    return (turn("user", user) + turn("assistant", thinking) + turn("user", prompts.load("judge"))
            + turn("assistant", prompts.load("judge_prefill"), close=False))


def test_every_prompt_holds_the_kept_steps_exactly_once(runs):
    """Replays the graph's requests in order against its traces: the small server saw one draft
    request per drafted step; the base server a judge request per draft and a step request per
    rewrite, each rendered exactly as the template and the kept steps say."""
    base, small = runs.pair.role("base"), runs.pair.role("small")
    drafts, judges = runs.small.entries("step"), runs.base.entries("judge")
    rewrites = runs.base.entries("step")
    for problem, final in zip(PROBLEMS, runs.finals, strict=True):
        user = prompts.render_problem(runs.user_prompt, problem)
        kept: list[str] = []
        for record in final["trace"]:
            draft_request, judge_request = drafts.pop(0).body, judges.pop(0).body
            draft_ids = rendered(small, draft_request)
            want = tokens_of(small, expected_step_prompt(user, kept))
            assert draft_ids == want, text_of(small, draft_ids)
            judge_ids = rendered(base, judge_request)
            want = tokens_of(base, expected_judge_prompt(user, kept, record["draft"]))
            assert judge_ids == want, text_of(base, judge_ids)
            assert judge_ids[:len(draft_ids)] == draft_ids  # the judge extends the draft's prefix
            if not record["accepted"]:
                rewrite_ids = rendered(base, rewrites.pop(0).body)
                assert rewrite_ids == draft_ids  # the same prefix; the draft is not in it
            kept.append(record["text"])
    assert drafts == [] and judges == [] and rewrites == []  # every request accounted for
    assert sum(len(final["trace"]) >= 2 for final in runs.finals) >= 3  # kept steps to render


def test_the_prefix_cache_serves_the_judge(runs):
    """A judge call prefills only what is new since the base server's earlier calls of the run:
    the steps kept since, the candidate and the judge turn. The rest of its prompt comes from
    vLLM's prefix cache, all but a last partial block (servers/cpu.toml caches 32-token blocks)."""
    base, block = runs.pair.role("base"), 32
    seen: list[list[int]] = []  # the base server's prompts so far in this run
    judged = 0
    for entry in runs.base.entries():
        if entry.kind == "other":
            continue
        ids = rendered(base, entry.body)
        if entry.body["messages"][-1]["role"] != "assistant":  # a run's first step: a new prefix
            seen = []
        if entry.kind == "judge":
            usage = entry.reply["usage"]
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
            assert usage["prompt_tokens"] == len(ids)
            shared = max((common_prefix(ids, earlier) for earlier in seen), default=0)
            assert cached is not None and cached >= shared // block * block, (cached, shared)
            judged += shared >= 2 * block
        seen.append(ids)
    assert judged >= 3  # judge calls that had a cached prefix worth the name


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_a_step_that_closes_the_thinking_and_answers_ends_the_run(runs):
    final = runs.finals[PROBLEMS.index(CLOSE_AND_ANSWER)]
    last = final["steps"][-1]
    assert final["stop_reason"] == "answer" and "</think>" in last, final["steps"]
    assert final["answer"] == "42" and "42" in last.rsplit("</think>", 1)[1]
    assert all(r["writer"] == "base" for r in final["trace"])
    assert all("</think>" not in step for step in final["steps"][:-1])


# --- the plain loop ------------------------------------------------------------------------------

def plain_specreason(base: config.ServerSpec, small: config.ServerSpec, problem: str,
                     *, threshold: float, budget: int, step_tokens: int) -> list[tuple]:
    """SpecReason as the paper describes it, written out with the openai client: per step the small
    model drafts (chat completion up to the blank line; later steps continue the assistant turn
    pre-filled with the opener and the kept steps), the base model scores the draft with one greedy
    token after the judge turn, a score below the threshold has the base model rewrite the step
    from the same prefix; a kept '</think>' without an answer is dropped; the run stops at an
    answer marker, a repeated step, the token budget, or (our addition) a model ending its turn.
    Returns the trace as (writer, text, score) per step, then the stop reason."""
    user = prompts.render_problem("math", problem)
    clients = {spec.role: (OpenAI(base_url=spec.url, api_key="none", max_retries=0, timeout=900),
                           spec.served_model_name) for spec in (base, small)}

    def chat(role: str, messages: list[dict[str, str]], **params: Any) -> Any:
        client, model = clients[role]
        continued = messages[-1]["role"] == "assistant"
        return client.chat.completions.create(
            model=model, messages=messages, temperature=0.0, extra_body={
                "continue_final_message": continued, "add_generation_prompt": not continued},
            **params).choices[0]

    def step(role: str, kept: list[str]) -> tuple[str, int, bool]:
        messages = [{"role": "user", "content": user}]
        if kept:
            messages.append({"role": "assistant", "content": OPENER + "".join(
                s + "\n\n" for s in kept)})
        client, model = clients[role]
        reply = client.chat.completions.create(
            model=model, messages=messages, temperature=0.0, max_tokens=step_tokens,
            stop=["\n\n"], extra_body={"continue_final_message": bool(kept),
                                       "add_generation_prompt": not kept})
        choice = reply.choices[0]
        ended = choice.finish_reason == "stop" and getattr(choice, "stop_reason", None) is None
        return choice.message.content or "", reply.usage.completion_tokens, ended

    trace: list[tuple] = []
    kept: list[str] = []
    spent = 0
    while True:
        text, tokens, ended = step("small", kept)
        thinking = OPENER + "".join(s + "\n\n" for s in kept) + text.replace("</think>", "")
        judged = chat("base", [{"role": "user", "content": user},
                               {"role": "assistant", "content": thinking},
                               {"role": "user", "content": prompts.load("judge")},
                               {"role": "assistant", "content": prompts.load("judge_prefill")}],
                      max_tokens=1, logprobs=True, top_logprobs=10)
        token = judged.logprobs.content[0].token
        score = int(token) if token.strip().isdigit() else 0
        writer = "small"
        if score < threshold:
            text, tokens, ended = step("base", kept)
            writer = "base"
        if "</think>" in text and not any(m in text for m in ("boxed", "Answer:", "ANSWER:")):
            text = text.replace("</think>", "")
        kept.append(text)
        spent += tokens
        trace.append((writer, text, float(score)))
        if any(m in text for m in ("boxed", "Answer:", "ANSWER:")):
            return [*trace, "answer"]
        if len(kept) >= 2 and kept[-1] == kept[-2]:
            return [*trace, "repeated_step"]
        if spent >= budget:
            return [*trace, "token_budget"]
        if ended:
            return [*trace, "finished"]


def test_greedy_traces_equal_the_plain_loop(runs):
    base, small = runs.pair.role("base"), runs.pair.role("small")
    for problem, threshold, final in zip(PROBLEMS, THRESHOLDS, runs.finals, strict=True):
        plain = plain_specreason(base, small, problem, threshold=threshold,
                                 budget=SETTINGS["token_budget"],
                                 step_tokens=SETTINGS["max_step_tokens"])
        graph = [(r["writer"], r["text"], r["score"]) for r in final["trace"]]
        assert [*graph, final["stop_reason"]] == plain, problem
