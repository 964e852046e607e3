"""What ``ChatSpecReason`` adds to a run: one ``ChatSpecReason.invoke`` against the same conversation
through the compiled graph's own ``invoke`` (what the chat model runs inside), against the stand-in
server (benchmarks/stand_in.py: canned replies at once, so only the client's own time shows), the
two alternated call by call in one process.

    .venv/bin/python -m benchmarks.chat_overhead [--calls 40] [--steps 4]

Prints a table (milliseconds per call: median and best, wall and this process's CPU) and writes
benchmarks/results/chat-overhead/results.json. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage

from benchmarks.overhead import context
from benchmarks.stand_in import Stub
from specreason_graph import ChatSpecReason, compile_graph

QUESTION: list[AnyMessage] = [HumanMessage("What is 17 + 25?")]


def timed(call: Callable[[], Any]) -> tuple[float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    call()
    return 1000 * (time.perf_counter() - started), 1000 * (time.process_time() - cpu)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40, help="calls of each (default 40)")
    parser.add_argument("--steps", type=int, default=4, help="reasoning steps per call")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/chat-overhead"))
    args = parser.parse_args(argv)
    with Stub() as stub:
        ctx = context(stub.url, args.steps)
        graph, model = compile_graph(), ChatSpecReason(context=ctx)
        paths: dict[str, Callable[[], Any]] = {
            "graph.invoke": lambda: graph.invoke({"messages": QUESTION}, context=ctx),
            "ChatSpecReason.invoke": lambda: model.invoke(QUESTION)}
        for call in paths.values():  # warm: clients, imports, the opener lookup
            call()
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
        for _ in range(args.calls):
            for name, call in paths.items():
                found[name].append(timed(call))
    rows: list[dict[str, Any]] = [{"path": name, "calls": len(times),
             "wall_ms_median": round(statistics.median(w for w, _ in times), 2),
             "wall_ms_best": round(min(w for w, _ in times), 2),
             "cpu_ms_median": round(statistics.median(c for _, c in times), 2)}
            for name, times in found.items()]
    base, chat = rows
    extra = {"wall_ms": round(chat["wall_ms_median"] - base["wall_ms_median"], 2),
             "cpu_ms": round(chat["cpu_ms_median"] - base["cpu_ms_median"], 2)}
    print(f"{'path':<24} {'calls':>5} {'wall ms (median)':>17} {'wall ms (best)':>15} "
          f"{'CPU ms (median)':>16}")
    for row in rows:
        print(f"{row['path']:<24} {row['calls']:>5} {row['wall_ms_median']:>17.2f} "
              f"{row['wall_ms_best']:>15.2f} {row['cpu_ms_median']:>16.2f}")
    print(f"ChatSpecReason adds {extra['wall_ms']:+.2f} ms wall, {extra['cpu_ms']:+.2f} ms CPU per "
          f"call ({args.steps} steps and a reply each)")
    result = {"steps": args.steps, "rows": rows, "chat_minus_graph": extra}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
