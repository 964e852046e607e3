"""``specreason bench-report``: rebuild a benchmark's tables and plots from its results folder (and,
with ``--into``, splice them into a Markdown file); the table ``bench`` prints too."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.table import Table

from specreason_graph.cli.common import CliError, console, print_table
from specreason_graph.evaluation import report
from specreason_graph.evaluation.cost_model import parse_gpu
from specreason_graph.evaluation.render import COLUMNS, cell, markdown, splice


def add_parser(sub: Any) -> None:
    report_cmd = sub.add_parser("bench-report", help="rebuild a benchmark's tables and plots")
    report_cmd.add_argument("out", help="the benchmark's results folder")
    report_cmd.add_argument("--gpu", default="paper-2xA6000")
    report_cmd.add_argument("--cost-check", metavar="LOADED", help="check the cost model: predict "
                            "one run in flight from the calls of this other results folder (taken "
                            "under load) and set it beside OUT's measured times")
    report_cmd.add_argument("--check-speeds", default="cpu-1-in-flight",
                            help="single-stream speeds for --cost-check: a preset or "
                                 "small_tps,base_tps,base_prefill_tps,overhead_s")
    report_cmd.add_argument("--into", help="also put the tables and plots into this Markdown file "
                                           "(between <!-- bench:NAME --> markers)")
    report_cmd.set_defaults(func=cmd_bench_report)


def cmd_bench_report(args: argparse.Namespace) -> int:
    try:
        gpu = parse_gpu(args.gpu) if args.gpu else None
        speeds = parse_gpu(args.check_speeds, "--check-speeds")
        loaded = Path(args.cost_check) if args.cost_check else None
        summary = report.build(Path(args.out), gpu=gpu, cost_check=loaded, check_speeds=speeds)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print_report(summary)
    if args.into:
        splice(Path(args.into), Path(args.out), markdown(summary))
        console.print(f"updated {args.into}")
    return 0


def print_report(summary: dict[str, Any]) -> None:
    table = Table(title=summary["title"])
    keys = ("mode", "runs", "accuracy", "mean_s", "p90_s", "speedup", "acceptance", "share_judge",
            "judge_cache_hit", "failed", "accuracy_problems", "judge_errors")
    for key, header, _fmt in COLUMNS:
        if key in keys:
            table.add_column(header, justify="left" if key == "mode" else "right")
    for row in summary["rows"]:
        table.add_row(*(cell(row.get(k), f) for k, _, f in COLUMNS if k in keys))
    print_table(table)
    for c in summary["paired"]:
        console.print(f"{c['mode']} vs {c['reference']}: accuracy {c['diff']:+.1%} "
                      f"[{c['ci_low']:+.1%}, {c['ci_high']:+.1%}] on {c['problems']} problems"
                      + (f", McNemar p = {c['mcnemar_p']:.3f}" if c["mcnemar_p"] is not None else ""))
