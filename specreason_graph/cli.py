"""``specreason``: ask a question with SpecReason, or run the local vLLM servers.

    specreason ask "What is 17 * 23?"            # live steps, answer, summary
    specreason ask --dataset gsm8k --id 0        # a benchmark problem (gold answer shown)
    specreason serve start | stop | status       # the CPU default servers (servers/cpu.toml)

Endpoints: --base-url/--small-url (and --base-model/--small-model), else SPECREASON_BASE_URL /
SPECREASON_SMALL_URL, else the launcher's local servers — which ``ask`` starts itself when nothing
answers there (say --no-serve to forbid that) and stops again when it is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import typing
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from specreason_graph import datasets, preflight, servers
from specreason_graph.context import Context
from specreason_graph.graph import ModelCallError
from specreason_graph.summary import summarize

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A one-line message for the user, no traceback."""


# --- settings ------------------------------------------------------------------------------------

def _add_context_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Context field (``threshold`` → ``--threshold``), help from its description."""
    group = parser.add_argument_group("run settings (default: $SPECREASON_<NAME>, else the paper's)")
    hints = typing.get_type_hints(Context)
    for f in dataclasses.fields(Context):
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": _description(f)}
        choices = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None
        if choices:
            kwargs["choices"] = choices
        else:
            base = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
            kwargs["type"] = base[0] if base[0] in (int, float) else str
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _description(f: dataclasses.Field) -> str:
    info = f.default if hasattr(f.default, "description") else None
    text = getattr(info, "description", None) or ""
    return text.replace("%", "%%")


def context_from_args(args: argparse.Namespace, **override: Any) -> Context:
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Context)
             if getattr(args, f.name, None) is not None}
    if "step_delimiter" in given or "thinking_opener" in given:  # let shells pass "\n" escapes
        for key in ("step_delimiter", "thinking_opener"):
            if key in given:
                given[key] = given[key].encode().decode("unicode_escape")
    try:
        return Context(**{**given, **override})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        raise CliError(f"invalid setting: {problems}") from None


# --- endpoints -----------------------------------------------------------------------------------

def _user_named_endpoints(args: argparse.Namespace) -> bool:
    return bool(args.base_url or args.small_url or os.environ.get("SPECREASON_BASE_URL")
                or os.environ.get("SPECREASON_SMALL_URL"))


# --- ask -----------------------------------------------------------------------------------------

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
    from specreason_graph.graph import compile_graph

    question, gold, prompt = _question(args)
    if not question.strip():
        raise CliError("the question is empty")
    ctx = context_from_args(args, **({"prompt": prompt} if prompt and not args.prompt else {}))

    with ExitStack() as stack:
        if not _user_named_endpoints(args) and not args.no_serve:
            local = servers.load_config(args.servers)
            if not all(servers.healthy(s) for s in local.servers):
                err.print(f"[yellow]No servers answer at {ctx.base_url} and {ctx.small_url}: "
                          f"starting the '{local.name}' servers (about 2 minutes; stopped again "
                          "at the end — `specreason serve start` keeps them up).[/]")
                stack.enter_context(servers.launch(local, echo=lambda m: err.print(f"  {m}")))
        try:
            for warning in preflight.check_pair(ctx):
                err.print(f"[yellow]warning:[/] {escape(warning)}")
        except preflight.EndpointError as exc:
            raise CliError(str(exc)) from None
        return _run(compile_graph(), question, gold, ctx, args.json)
    return 0  # pragma: no cover  (ExitStack does not swallow)


def _run(graph, question: str, gold: str | None, ctx: Context, as_json: bool) -> int:
    (err if as_json else console).print(f"[bold]Question:[/] {question.strip()}\n")
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
    if event["forced"]:
        verdict = "[blue]base (forced)[/]"
    elif event["accepted"]:
        verdict = f"[green]small ✓ score {event['score']:.1f}[/]"
    else:
        verdict = f"[red]small ✗ score {event['score']:.1f}[/] → [blue]base rewrote[/]"
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
    console.print(table)


# --- serve ---------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    config = servers.load_config(args.config)
    if args.action == "start":
        servers.start(config, echo=err.print)
        for spec in config.servers:
            console.print(f"{spec.role}: {spec.url}  model {spec.served_model_name}")
    elif args.action == "stop":
        servers.stop(config, echo=err.print)
    else:
        rows = servers.status(config)
        for row in rows:
            state = "[green]up[/]" if row["healthy"] else "[red]down[/]"
            console.print(f"{row['role']:<5} {state}  {row['url']}  {row['model']}  log {row['log']}")
        return 0 if all(r["healthy"] for r in rows) else 1
    return 0


# --- entry point ---------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="specreason", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer one question with SpecReason, showing every step")
    ask.add_argument("question", nargs="?", help="the question (or use --file / --dataset)")
    ask.add_argument("--file", help="read the question from this file")
    ask.add_argument("--dataset", choices=datasets.DATASETS, help="take a benchmark problem")
    ask.add_argument("--id", help="the problem's id in --dataset")
    ask.add_argument("--servers", default="cpu", help="server config to start when none answer")
    ask.add_argument("--no-serve", action="store_true", help="never start servers")
    ask.add_argument("--json", action="store_true", help="print the final state as JSON")
    _add_context_flags(ask)
    ask.set_defaults(func=cmd_ask)

    serve = sub.add_parser("serve", help="start, stop or check the local vLLM servers")
    serve.add_argument("action", choices=["start", "stop", "status"])
    serve.add_argument("--config", default="cpu", help="servers/<name>.toml or a path")
    serve.set_defaults(func=cmd_serve)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    except (servers.ServerError, FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
