"""``specreason serve start | stop | status``: the local vLLM servers of a server config
(``servers/<name>.toml``); ``start --dry-run`` prints what start would run. A config with replicas
behind a router has more members than roles: each is started, stopped and listed; on a config
spread over several hosts each host starts and stops its own members."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from rich.markup import escape

from specreason_graph.cli.common import console, err
from specreason_graph.serving import launcher
from specreason_graph.serving.config import RouterSpec, load_config


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="start, stop or check the local vLLM servers")
    serve.add_argument("action", choices=["start", "stop", "status"])
    serve.add_argument("--config", default="cpu", help="servers/<name>.toml or a path")
    serve.add_argument("--dry-run", action="store_true",
                       help="with start: print each server's environment and command line, start "
                            "nothing")
    serve.set_defaults(func=cmd_serve)


def _plain(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def cmd_serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.dry_run:
        if args.action != "start":
            err.print("[red]--dry-run goes with start[/]: it prints what start would run")
            return 2
        for spec in config.servers:  # what start would run, to read before renting GPUs
            where = "this machine" if launcher.runs_here(spec.host) else \
                f"{spec.host} (not this machine: `specreason serve start --config {args.config}` there)"
            what = (f"router ({spec.policy}) over {' '.join(spec.worker_urls)}"
                    if isinstance(spec, RouterSpec) else config.kind(spec))
            _plain(f"# {spec.role} {what}: {spec.served_model_name} at {spec.url}, runs on {where}")
            _plain(" ".join([*(f"{k}={shlex.quote(v)}" for k, v in spec.env.items()),
                             *map(shlex.quote, spec.argv())]))
        return 0
    if args.action == "start":
        launcher.start(config, echo=err.print)
        for role in ("base", "small"):
            spec = config.role(role)
            console.print(f"{role}: {spec.url}  model {spec.served_model_name}"
                          + (f"  (router over {len(spec.worker_urls)} replicas)"
                             if isinstance(spec, RouterSpec) else ""))
    elif args.action == "stop":
        stopped: list[str] = []

        def said(message: str) -> None:
            stopped.append(message)
            err.print(message)

        left = launcher.stop(config, echo=said)
        for spec in left:
            pids = launcher.server_pids(spec)
            err.print(f"[red]{spec.role}: still answering at {spec.url}[/] — "
                      + (f"processes {', '.join(map(str, pids))} on port {spec.port} did not "
                         "stop" if pids else "not a server this launcher can find on its port "
                         "(started by hand with another command line?)"))
        for spec in config.servers:
            if not launcher.runs_here(spec.host):
                err.print(f"{spec.role}: the {config.kind(spec)} at {spec.url} runs on {spec.host}: "
                          f"`specreason serve stop --config {escape(args.config)}` there stops it")
        if left:
            return 1
        if not stopped:
            err.print(f"no '{config.name}' server was running here")
    else:
        rows = launcher.status(config)
        for row in rows:
            state = "[green]up[/]" if row["healthy"] else "[red]down[/]"
            note = ""
            if row["kind"] == "router":
                workers = row["workers"]
                if workers is None:
                    note = "  not running"
                elif not any(workers.values()):
                    state = "[red]up, no healthy replica left[/]"
                    note = f"  replicas down: {', '.join(workers)}"
                else:
                    note = f"  {sum(workers.values())} of {len(workers)} replicas healthy" + (
                        f" (down: {', '.join(u for u, ok in workers.items() if not ok)})"
                        if not all(workers.values()) else "")
            where = f"log {row['log']}" if row["here"] else f"on {row['host']}"
            console.print(f"{row['role']:<5} {row['kind']:<7} {state}  {row['url']}  "
                          f"{escape(row['model'])}{note}  {where}", highlight=False)
        return 0 if all(r["healthy"] for r in rows) else 1
    return 0
