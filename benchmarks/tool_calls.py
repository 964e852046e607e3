"""Tool calls on the real CPU servers: how often the base model's reply to a tool question is a call
the server's tool-call parser reads, through ``ChatSpecReason`` (SpecReason reasons first, then the
base model replies), with ``tool_choice="auto"`` and ``"required"``, at temperature 0; and how often
it calls a tool for a question that needs none. ``--model plain`` asks the base model alone instead
(``ChatOpenAI`` to the base server, the same tools and parser): what SpecReason's reasoning changes.

    .venv/bin/python -m benchmarks.tool_calls        # servers up: `specreason serve start`

Prints a table and writes benchmarks/results/tool-calls/<model>.json. One question at a time
(nothing else on the servers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_openai import ChatOpenAI

from graphs.agent import calculator, convert_units
from specreason_graph import ChatSpecReason, Context

NEEDS_A_TOOL = [
    ("What is 1234 * 5678?", "calculator"),
    ("Use the calculator to compute 98765 - 4321 * 7.", "calculator"),
    ("How many meters are 26.2 miles?", "convert_units"),
    ("Convert 3 pounds to kilograms.", "convert_units"),
    ("What is 2 ** 40? Compute it exactly.", "calculator"),
    ("How many seconds are there in 3.5 days?", "convert_units"),
]
NEEDS_NONE = ["What is the capital of France?", "Say hello in Spanish."]


def ask(model: BaseChatModel, question: str, choice: str) -> dict[str, Any]:
    started = time.perf_counter()
    out = model.bind_tools([calculator, convert_units], tool_choice=choice).invoke(question)
    return {"question": question, "tool_choice": choice, "s": round(time.perf_counter() - started, 1),
            "calls": [[c["name"], c["args"]] for c in out.tool_calls],
            "invalid": len(out.invalid_tool_calls), "text": out.text[:300]}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="cpu")
    parser.add_argument("--model", choices=["specreason", "plain"], default="specreason")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tool-calls"))
    args = parser.parse_args(argv)
    ctx = Context.for_servers(args.servers, temperature=0.0, seed=0, token_budget=48,
                              max_step_tokens=48)
    model: BaseChatModel = ChatSpecReason(context=ctx, max_tokens=64)
    if args.model == "plain":
        model = ChatOpenAI(base_url=ctx.base_url, model=ctx.base_model, api_key="EMPTY",  # type: ignore[arg-type]
                           temperature=0.0, seed=0, max_completion_tokens=64)
    rows = [ask(model, q, choice) for choice in ("auto", "required") for q, _ in NEEDS_A_TOOL]
    rows += [ask(model, q, "auto") for q in NEEDS_NONE]
    expected = dict(NEEDS_A_TOOL)
    print(f"{'tool_choice':<12} {'questions':<22} {'called':>7} {'right tool':>11} {'mean s':>7}")
    for choice, kind in (("auto", "need a tool"), ("required", "need a tool"), ("auto", "need none")):
        mine = [r for r in rows if r["tool_choice"] == choice
                and (r["question"] in expected) == (kind == "need a tool")]
        called = sum(1 for r in mine if r["calls"])
        right = sum(1 for r in mine if r["calls"] and r["calls"][0][0] == expected.get(r["question"]))
        mean = sum(r["s"] for r in mine) / len(mine)
        print(f"{choice:<12} {kind + f' ({len(mine)})':<22} {called:>7} {right:>11} {mean:>7.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.model}.json").write_text(json.dumps({
        "servers": args.servers, "model": args.model, "base_model": ctx.base_model, "judge": ctx.judge,
        "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
