"""What a prompt set costs the judge: ours (``prompts/``) against the original code's layout
(``prompts/paper/``, in our words), on the same drafts, side by side on the running base server.

A judge call in a run prefills only what its prompt adds to what the base server has cached: the
candidate step, the judge's user turn and its assistant pre-fill. So for each recorded draft and
each set (the order alternating), this first caches that set's prefix (problem turn + kept steps +
the draft: a one-token request), then times the judge call itself, as a run makes it. It reports per
set the prompt tokens, the tokens prefilled (not from the cache), the judge's wall time and its
greedy score, and the paired time ratio.

    specreason serve start          # the CPU pair (only the base server is used)
    .venv/bin/python benchmarks/prompt_sets.py --limit 40

Drafts: the calibration runs (GSM8K 1000-1009, benchmarks/results/calibration-judges-gsm8k), which
the evaluation never uses. Writes ``<out>/prompt_sets.json`` and ``prompt_sets.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from langchain_core.messages import BaseMessage, convert_to_openai_messages
from openai import OpenAI

from specreason_graph import prompts, rules
from specreason_graph.context import Context
from specreason_graph.evaluation import datasets
from specreason_graph.models import Models

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

RUNS = Path("benchmarks/results/calibration-judges-gsm8k/runs.jsonl")


def drafts(runs: Path, limit: int) -> list[dict[str, Any]]:
    """(problem, prompt name, kept steps, draft) of every judged draft in the runs, in order."""
    found = []
    for line in runs.read_text(encoding="utf-8").splitlines():
        run = json.loads(line)
        [problem] = datasets.select(run["dataset"], ids=run["id"])
        kept: list[str] = []
        for record in run["trace"]:
            if record.get("draft") is not None:
                found.append({"id": run["id"], "question": problem.question,
                              "prompt": problem.prompt, "kept": list(kept),
                              "draft": record["draft"]})
            kept.append(record["text"])
    return found[:limit]


def openai_messages(messages: Sequence[BaseMessage]) -> list[ChatCompletionMessageParam]:
    """LangChain's messages as the ``openai`` client's: ``convert_to_openai_messages`` gives plain
    dicts of OpenAI's chat format, which the client types as its message TypedDicts."""
    return cast("list[ChatCompletionMessageParam]", convert_to_openai_messages(messages))


def judge_once(client: OpenAI, ctx: Context, case: dict[str, Any], prompt_set: str
               ) -> dict[str, Any]:
    user = prompts.render_problem(case["prompt"], case["question"], prompt_set)
    prefix = prompts.draft_messages(user, case["kept"], case["draft"], ctx.thinking_opener or "",
                                    ctx.step_delimiter)
    client.chat.completions.create(  # the prefix into the cache, as the run's earlier calls put it
        model=ctx.base_model, messages=openai_messages(prefix), max_tokens=1,
        temperature=0.0, extra_body={"continue_final_message": True,
                                     "add_generation_prompt": False})
    messages = prompts.judge_messages(user, case["kept"], case["draft"], ctx.thinking_opener or "",
                                      ctx.step_delimiter, prompt_set=prompt_set)
    started = time.perf_counter()
    reply = client.chat.completions.create(
        model=ctx.base_model, messages=openai_messages(messages), max_tokens=1,
        temperature=0.0, logprobs=True, top_logprobs=ctx.judge_top_logprobs,
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    ms = (time.perf_counter() - started) * 1000
    usage = reply.usage
    assert usage is not None, "the server reports a request's usage"
    details = getattr(usage, "prompt_tokens_details", None)
    cached = getattr(details, "cached_tokens", None) or 0
    logprobs = reply.choices[0].logprobs
    token = logprobs.content[0].token if logprobs and logprobs.content is not None else None
    return {"set": prompt_set or "ours", "id": case["id"], "prompt_tokens": usage.prompt_tokens,
            "prefilled": usage.prompt_tokens - cached, "ms": ms, "token": token,
            "score": rules.greedy_score(token)}


def summarise(rows: Sequence[dict[str, Any]], sets: Sequence[str]) -> list[dict[str, Any]]:
    names = [s or "ours" for s in sets]
    by = {name: [r for r in rows if r["set"] == name] for name in names}
    first = by[names[0]]
    table = []
    for name in names:
        mine = by[name]
        table.append({
            "set": name, "judge calls": len(mine),
            "prompt tokens": statistics.fmean(r["prompt_tokens"] for r in mine),
            "prefilled tokens": statistics.fmean(r["prefilled"] for r in mine),
            "judge ms (median)": statistics.median(r["ms"] for r in mine),
            "time vs ours (median of pairs)": statistics.median(
                r["ms"] / o["ms"] for r, o in zip(mine, first, strict=True)),
            "score ≥ 7": sum(r["score"] >= 7 for r in mine) / len(mine),
            "same greedy score as ours": sum(
                r["score"] == o["score"] for r, o in zip(mine, first, strict=True)) / len(mine)})
    return table


def markdown(table: Sequence[dict[str, Any]]) -> str:
    keys = list(table[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in table:
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--limit", type=int, default=40, help="drafts to judge (default 40)")
    parser.add_argument("--sets", nargs="+", default=["", "paper"],
                        help="prompt sets ('' ours, 'paper', or folders); the first is the reference")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prompt-sets"))
    args = parser.parse_args(argv)
    ctx = Context()
    ctx = dataclasses.replace(ctx, thinking_opener=Models().thinking_opener(ctx))  # the template's
    client = OpenAI(base_url=ctx.base_url, api_key=ctx.api_key or "none", max_retries=0,
                    timeout=ctx.request_timeout)
    cases = drafts(args.runs, args.limit)
    rows = []
    for n, case in enumerate(cases):
        order = args.sets if n % 2 == 0 else list(reversed(args.sets))
        found = {s or "ours": judge_once(client, ctx, case, s) for s in order}
        rows += [found[s or "ours"] for s in args.sets]
    table = summarise(rows, args.sets)
    text = markdown(table)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prompt_sets.json").write_text(json.dumps(
        {"base_model": ctx.base_model, "drafts": len(cases), "runs": str(args.runs),
         "table": table, "calls": rows}, indent=1) + "\n", encoding="utf-8")
    (args.out / "prompt_sets.md").write_text(
        f"{len(cases)} drafts from {args.runs}, judged by {ctx.base_model}\n\n{text}\n",
        encoding="utf-8")
    return table


if __name__ == "__main__":
    main()
