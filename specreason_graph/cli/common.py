"""What the commands share: the consoles and how a table is printed, the one-line error, the
run-settings flags (one per Context field) and the Context they make, the endpoints to use, and
starting and checking the servers before a command spends their time."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import typing
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from specreason_graph.context import Context
from specreason_graph.graph import first_request
from specreason_graph.serving import launcher, preflight
from specreason_graph.serving.config import load_config

console = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    """A one-line message for the user, no traceback."""


def print_table(table: Table, out: Console | None = None) -> None:
    """Every table a command prints. On a terminal, rich's table in the terminal's width; anywhere
    else (a pipe, a log file, CI) at the table's full width, so no figure is cut to fit the 80
    columns rich assumes there."""
    out = out or console
    if out.is_terminal:
        out.print(table)
        return
    width = Measurement.get(out, out.options.update_width(100_000), table).maximum
    wide = Console(file=out.file, width=max(width, out.width), highlight=False, color_system=None)
    wide.print(table)


# --- settings ------------------------------------------------------------------------------------

def add_context_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Context field (``threshold`` → ``--threshold``), help from its description."""
    group = parser.add_argument_group("run settings (default: $SPECREASON_<NAME>, else the "
                                      "--servers config's [graph] profile, else the paper's)")
    hints = typing.get_type_hints(Context)
    for f in dataclasses.fields(Context):
        if f.name == "servers":  # each command's own --servers (the config it starts) sets it
            continue
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
             if f.name != "servers" and getattr(args, f.name, None) is not None}
    if "step_delimiter" in given or "thinking_opener" in given:  # let shells pass "\n" escapes
        for key in ("step_delimiter", "thinking_opener"):
            if key in given:
                given[key] = given[key].encode().decode("unicode_escape")
    try:
        return Context(**{"servers": _profile(args), **given, **override})
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


def user_set(args: argparse.Namespace, name: str) -> bool:
    """The user chose ``name`` (its flag, or its environment variable), so nothing detects it."""
    return getattr(args, name, None) is not None or f"SPECREASON_{name.upper()}" in os.environ


# --- endpoints -----------------------------------------------------------------------------------

def user_named_endpoints(args: argparse.Namespace) -> bool:
    return bool(args.base_url or args.small_url or os.environ.get("SPECREASON_BASE_URL")
                or os.environ.get("SPECREASON_SMALL_URL"))


def _profile(args: argparse.Namespace) -> str | None:
    """The server config whose endpoints and judge profile (its ``[graph]`` table) the Context
    takes: ``--servers`` (each command's default config) unless the user named endpoints, whose
    pair no config describes (the paper's judge then, unless set)."""
    return None if user_named_endpoints(args) else getattr(args, "servers", None)


def servers_for(args: argparse.Namespace, ctx: Context, stack: ExitStack,
                question: str | None = None, base_url: str | None = None) -> Context:
    """Start the local servers (for the ``with`` block of ``stack``) if the user named none and
    none answer; then check the pair, and that ``question`` fits their context. Returns ``ctx``
    with the thinking opener the served chat templates call for, unless the user set one.

    ``base_url``: the base server the runs will use when it is not ``ctx``'s (a benchmark segment
    whose modes all go to the speculating server): that config is started, and that pair checked."""
    checked = ctx if base_url is None else dataclasses.replace(ctx, base_url=base_url)
    if not user_named_endpoints(args) and not args.no_serve:
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
        if opener is not None and not user_set(args, "thinking_opener") \
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


# --- signals -------------------------------------------------------------------------------------

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
