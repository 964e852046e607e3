"""``specreason ask``: answer one question with SpecReason, showing every kept step as it comes,
then the answer and a summary of the run (or the final state as JSON)."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from specreason_graph.cli.common import (
    CliError,
    add_context_flags,
    console,
    context_from_args,
    err,
    print_table,
    servers_for,
)
from specreason_graph.context import Context
from specreason_graph.evaluation import datasets
from specreason_graph.graph import compile_graph
from specreason_graph.models import ModelCallError
from specreason_graph.trace import summarize


def add_parser(sub: Any) -> None:
    ask = sub.add_parser("ask", help="answer one question with SpecReason, showing every step")
    ask.add_argument("question", nargs="?", help="the question (or use --file / --dataset)")
    ask.add_argument("--file", help="read the question from this file")
    ask.add_argument("--dataset", choices=datasets.DATASETS, help="take a benchmark problem")
    ask.add_argument("--id", help="the problem's id in --dataset")
    ask.add_argument("--servers", default="cpu", help="server config to start when none answer")
    ask.add_argument("--no-serve", action="store_true", help="never start servers")
    ask.add_argument("--json", action="store_true", help="print the final state as JSON")
    add_context_flags(ask)
    ask.set_defaults(func=cmd_ask)


def _question(args: argparse.Namespace) -> tuple[str, str | None, str | None]:
    """(question, gold answer, prompt name) from the argument, a file, or a dataset row."""
    sources = sum(x is not None for x in (args.question, args.file, args.dataset))
    if sources != 1:
        raise CliError("give exactly one of: a question, --file PATH, --dataset NAME --id ID")
    if args.file is not None:
        try:
            return Path(args.file).read_text(encoding="utf-8"), None, None
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise CliError(f"cannot read {args.file}: it is not UTF-8 text (byte "
                           f"{exc.object[exc.start]:#04x} at offset {exc.start}); save it as "
                           "UTF-8") from None
    if args.dataset is not None:
        if args.id is None:
            raise CliError("--dataset needs --id (GSM8K ids are 0-based line numbers)")
        try:
            problem = datasets.get(args.dataset, args.id)
        except (KeyError, ValueError) as exc:
            raise CliError(str(exc).strip("'\"")) from None
        return problem.question, problem.answer, problem.prompt
    return args.question, None, None


def cmd_ask(args: argparse.Namespace) -> int:
    question, gold, prompt = _question(args)
    if not question.strip():
        raise CliError("the question is empty")
    ctx = context_from_args(args, **({"prompt": prompt} if prompt and not args.prompt else {}))

    with ExitStack() as stack:
        ctx = servers_for(args, ctx, stack, question)
        return _run(compile_graph(), question, gold, ctx, args.json)
    return 0  # pragma: no cover  (ExitStack does not swallow)


PREVIEW = 600
"""Characters of a question echoed before the run (a long one is cut in the middle)."""


def preview(text: str, limit: int = PREVIEW) -> str:
    """``text`` if short, else its head and tail around a note of how long it is."""
    text = text.strip()
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half].rstrip()} … [{len(text) - 2 * half:,} characters left out] … " \
           f"{text[-half:].lstrip()}  ({len(text):,} characters)"


def _run(graph, question: str, gold: str | None, ctx: Context, as_json: bool) -> int:
    (err if as_json else console).print(f"[bold]Question:[/] {escape(preview(question))}\n")
    started = time.perf_counter()
    final: dict[str, Any] = {}
    trace: list[Any] = []
    try:
        for mode, chunk in graph.stream({"problem": question}, context=ctx,
                                        stream_mode=["custom", "values"]):
            if mode == "custom" and chunk.get("event") == "step":
                _print_step(chunk, err if as_json else console)
            elif mode == "values":
                final = chunk
                trace = list(chunk.get("trace") or trace)
    except KeyboardInterrupt:
        err.print(f"\n[yellow]Interrupted after {len(trace)} kept steps.[/]")
        _print_summary(final, trace, time.perf_counter() - started, gold)
        return 130
    except ModelCallError as exc:
        raise CliError(f"{exc} (after {len(trace)} kept steps; retries exhausted)") from None
    except openai.APIError as exc:
        raise CliError(f"a model server failed after {len(trace)} kept steps: "
                       f"{type(exc).__name__}: {exc}") from None
    wall = time.perf_counter() - started
    if as_json:
        print(json.dumps({**final, "summary": summarize(trace), "wall_s": wall}, default=str))
    else:
        _print_summary(final, trace, wall, gold)
    return 0


def _print_step(event: dict[str, Any], out: Console) -> None:
    """``step 3  small ✗ score 6 < 7 → base rewrote  41 tok, 2.3 s`` and the step's text: who wrote
    it and what decided it (the event's ``decision``, ``trace.explain``)."""
    why = escape(event.get("decision") or (f"score {event['score']:g}" if event["score"] is not None
                                            else ""))
    if event["forced"]:
        verdict = f"[blue]base[/] {why}"
    elif event["accepted"] is None:  # small-only: nobody judged it
        verdict = f"[green]small[/] {why}"
    elif event["accepted"]:
        verdict = f"[green]small ✓[/] {why}"
    else:
        verdict = f"[red]small ✗[/] {why} → [blue]base rewrote[/]"
    out.print(f"[bold]step {event['index']}[/]  {verdict}  "
              f"[dim]{event['tokens']} tok, {event['ms'] / 1000:.1f} s[/]")
    out.print(event["text"].strip() or "(empty)", markup=False, highlight=False)
    out.print()


def _print_summary(final: dict[str, Any], trace: list, wall: float, gold: str | None) -> None:
    s = summarize(trace)
    table = Table(show_header=False, box=None, pad_edge=False)
    answer = final.get("answer")
    table.add_row("answer", f"[bold]{answer}[/]" if answer is not None else "[dim](none)[/]")
    if gold is not None:
        table.add_row("gold answer", gold)
    table.add_row("stop reason", str(final.get("stop_reason")))
    rate = "n/a" if s["acceptance_rate"] is None else f"{s['acceptance_rate']:.0%}"
    table.add_row("steps", f"{s['steps']} kept: {s['steps_small']} by small, {s['steps_base']} "
                           f"by base ({s['steps_forced']} forced); acceptance {rate}")
    table.add_row("tokens", f"{s['kept_tokens']} kept; small drafted {s['draft_tokens']} "
                            f"({s['rejected_draft_tokens']} rejected), base wrote "
                            f"{s['base_tokens']}, judge read {s['judge_prompt_tokens']} "
                            f"({s['judge_cached_tokens']} from cache)")
    table.add_row("time", f"{wall:.1f} s wall: draft {s['draft_s']:.1f} s, judge "
                          f"{s['judge_s']:.1f} s, base {s['base_s']:.1f} s")
    print_table(table)
