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

One module per command (``ask``, ``bench``, ``bench_report``, ``calibrate``, ``serve``: its flags,
then its code); ``common`` holds what they share (the run-settings flags and their Context, the
one-line error, starting and checking the servers); this module, the parser and ``main``.
"""

from __future__ import annotations

import argparse

from rich.markup import escape

from specreason_graph.cli import ask, bench, bench_report, calibrate, serve
from specreason_graph.cli.common import CliError, context_from_args, err, terminate_as_interrupt
from specreason_graph.serving.config import ServerError

__all__ = ["CliError", "context_from_args", "main", "parser", "terminate_as_interrupt"]


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="specreason", description=__doc__.split("\n\n")[0])
    sub = top.add_subparsers(dest="command", required=True)
    for command in (ask, bench, calibrate, bench_report, serve):
        command.add_parser(sub)
    return top


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
