"""One agent question on the CPU pair, two models side by side: LangChain's ``create_agent`` with
``ChatSpecReason`` (SpecReason reasons before every model turn) against the same agent over the base
model alone (``ChatOpenAI`` to the same base server), same tools, temperature 0, one run in flight,
the two alternated.

    .venv/bin/python -m benchmarks.agent_cost [--rounds 2]      # servers up: `specreason serve start`

Prints wall time, model turns, tool calls and the answer of each run, and writes
benchmarks/results/agent-cost/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_openai import ChatOpenAI

from graphs.agent import calculator, convert_units
from specreason_graph import ChatSpecReason, Context

QUESTION = "Use the calculator to compute 1234 * 5678, then tell me the result."
RIGHT = "7006652"


def run(agent: Any) -> dict[str, Any]:
    started = time.perf_counter()
    messages = agent.invoke({"messages": [("user", QUESTION)]})["messages"]
    wall = time.perf_counter() - started
    final = messages[-1]
    return {"s": round(wall, 1), "model_turns": sum(isinstance(m, AIMessage) for m in messages),
            "tool_calls": [c["name"] for m in messages if isinstance(m, AIMessage)
                           for c in m.tool_calls],
            "tool_results": [m.text for m in messages if isinstance(m, ToolMessage)],
            "answer": final.text[:300], "right": RIGHT in final.text.replace(",", "")}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/agent-cost"))
    args = parser.parse_args(argv)
    ctx = Context.for_servers("cpu", temperature=0.0, seed=0, token_budget=48, max_step_tokens=48)
    agents = {
        "ChatSpecReason": create_agent(ChatSpecReason(context=ctx, max_tokens=64),
                                       [calculator, convert_units]),
        "base model alone": create_agent(ChatOpenAI(
            base_url=ctx.base_url, model=ctx.base_model, api_key="EMPTY",  # type: ignore[arg-type]
            temperature=0.0, seed=0, max_completion_tokens=64), [calculator, convert_units])}
    rows = []
    for n in range(args.rounds):
        for name, agent in agents.items():
            rows.append({"model": name, "round": n, **run(agent)})
            row = rows[-1]
            print(f"{name:<18} round {n}: {row['s']:6.1f} s, {row['model_turns']} model turns, "
                  f"calls {row['tool_calls']}, right {row['right']}: {row['answer'][:80]!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"question": QUESTION, "rows": rows},
                                                      indent=1) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
