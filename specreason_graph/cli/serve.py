"""``specreason serve start | stop | status``: the local vLLM servers of a server config
(``servers/<name>.toml``); ``start --dry-run`` prints what start would run."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from specreason_graph.cli.common import console, err
from specreason_graph.serving import launcher
from specreason_graph.serving.config import load_config


def add_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="start, stop or check the local vLLM servers")
    serve.add_argument("action", choices=["start", "stop", "status"])
    serve.add_argument("--config", default="cpu", help="servers/<name>.toml or a path")
    serve.add_argument("--dry-run", action="store_true",
                       help="with start: print each server's environment and command line, start "
                            "nothing")
    serve.set_defaults(func=cmd_serve)


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
