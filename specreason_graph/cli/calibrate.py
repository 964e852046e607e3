"""``specreason calibrate``: run a calibration slice with every judge scoring every draft, label
the drafts by rollouts, and choose the judge and threshold (``choice.json``, for ``--calibration``)."""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.table import Table

from specreason_graph.cli.bench import add_slice_flags, bench_run, finish
from specreason_graph.cli.common import (
    CliError,
    add_context_flags,
    console,
    context_from_args,
    err,
    print_table,
    servers_for,
)
from specreason_graph.context import JUDGE_NAMES, PAPER_JUDGE
from specreason_graph.evaluation import calibrate, datasets, labels
from specreason_graph.evaluation.cost_model import parse_gpu
from specreason_graph.evaluation.modes import parse_mode
from specreason_graph.evaluation.records import locked
from specreason_graph.evaluation.render import calibration_markdown, cell, splice
from specreason_graph.models import Models


def add_parser(sub: Any) -> None:
    p = sub.add_parser("calibrate", help="pick the judge threshold from the score distribution on "
                                         "a calibration slice")
    add_slice_flags(p)
    p.add_argument("--into", help="also put the calibration's tables into this Markdown "
                                  "file (between <!-- bench:NAME --> markers)")
    p.add_argument("--rollouts", type=int, default=4,
                   help="finishes per prefix that label a step (k)")
    p.add_argument("--rollout-tokens", type=int,
                   help="new tokens a finish may write (default: the token budget)")
    p.add_argument("--speeds", default="cpu-1-in-flight",
                   help="the speeds that price a step at one run in flight: a preset "
                        "(cpu-1-in-flight, paper-2xA6000) or "
                        "small_tps,base_tps,base_prefill_tps,overhead_s")
    p.set_defaults(func=cmd_calibrate)
    add_context_flags(p)


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.score_method or args.threshold is not None or args.judge or args.also_judge:
        raise CliError("calibrate judges every draft at threshold 0 and reads both score methods; "
                       "drop --threshold / --score-method (and --judge / --also-judge: it asks "
                       "every judge)")
    mode = parse_mode("spec:t=0,judge=score,name=calibration")
    try:
        speeds = parse_gpu(args.speeds, "--speeds")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out or f"benchmarks/results/calibration-{args.dataset}")
    others = [name for name in JUDGE_NAMES if name not in ("score", "cascade")]
    result = bench_run(args, [mode], out, also_judge=others)
    if result.interrupted or not result.records:
        return finish(result, 1)
    ctx = context_from_args(args, also_judge=others)
    problems = {p.id: p for p in datasets.load(args.dataset)}
    runs = [r for r in result.records.values() if r["mode"] == mode.name]
    todo = labels.prefixes(runs, problems)
    err.print(f"labelling {len(todo)} prefixes: {args.rollouts} rollouts each by the small model, "
              f"{args.concurrency} in flight → {out / labels.ROLLOUTS_FILE}")
    with ExitStack() as stack:
        stack.enter_context(locked(out))
        ctx = servers_for(args, ctx, stack)
        rollouts = labels.run_rollouts(
            Models(), ctx, todo, out, k=args.rollouts, concurrency=args.concurrency,
            max_tokens=args.rollout_tokens,
            on_done=lambda n, total: err.print(f"  rollouts {n}/{total}") if n % 10 == 0 else None)
    rows = labels.label(runs, rollouts)
    labels.write(out, rows)
    found = calibrate.calibrate(rows, speeds)
    (out / "calibration.json").write_text(json.dumps(found, indent=2, default=str) + "\n")
    if found["choice"] is None:  # nothing to choose on: the paper's judge, said so
        err.print(f"[yellow]warning:[/] no draft carries a rollout label and every judge's score "
                  f"(see {out / labels.LABELS_FILE}); the choice stays the paper's judge. More "
                  "problems, rollouts or budget give labels.")
        found["choice"] = {"candidate": "the paper's judge (nothing to choose on)",
                           "fields": {k: v for k, v in PAPER_JUDGE.items() if k != "cascade"},
                           "margin": None}
    choice = {"choice": found["choice"]["fields"], "margin": found["choice"]["margin"],
              "beats_random_routing": found["beats_random_routing"], "slice": {
                  "dataset": args.dataset, "problems": sorted({r["id"] for r in runs})}}
    (out / "choice.json").write_text(json.dumps(choice, indent=2) + "\n")
    text = calibration_markdown(found, f"{args.dataset} ids {', '.join(choice['slice']['problems'])}")
    (out / "calibration.md").write_text(text + "\n")
    if args.into:
        splice(Path(args.into), out, text, plots=False)
    _print_calibration(found, out)
    return 0


def _print_calibration(found: dict[str, Any], out: Path) -> None:
    table = Table(title=f"Judges on {found['labelled']} labelled drafts ({found['bad']} bad by "
                        f"rollouts; {found['drafts']} drafts in all)")
    for header in ("signal", "AUROC", "95% CI", "AUROC (problem label)", "mean good", "mean bad",
                   "s / call"):
        table.add_column(header, justify="left" if header == "signal" else "right")
    for row in found["table"]:
        ci = row["auroc_ci"]
        table.add_row(row["signal"], cell(row["auroc"], "{:.2f}"),
                      f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "–",
                      cell(row["auroc_problem_label"], "{:.2f}"), cell(row["mean_good"], "{:.2f}"),
                      cell(row["mean_bad"], "{:.2f}"), cell(row["seconds_per_call"], "{:.2f}"))
    print_table(table)
    for best in found["best_by_judge"]:
        console.print(f"  {best['candidate']}: accepts {best['acceptance']:.0%}, "
                      f"{best['seconds_per_step']:.1f} s/step, sound steps {best['sound_steps']:.0%}"
                      f", margin over random routing {best['margin']:+.1%}")
    choice = found["choice"]
    verdict = ("beats random routing" if found["beats_random_routing"]
               else "does NOT beat random routing: no judge carries enough signal on this slice")
    console.print(f"[bold]chosen:[/] {choice['candidate']} ({verdict}) → {out / 'choice.json'}; "
                  f"use it with --calibration {out / 'choice.json'}")
