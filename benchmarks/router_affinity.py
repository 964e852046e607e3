"""Cache affinity behind vLLM's router: several SpecReason runs in flight through ``vllm-router`` in
front of two replicas (servers/cpu-replicas.toml), under each routing policy, side by side.

    .venv/bin/python benchmarks/router_affinity.py [--ids 520-543] [--in-flight 4] [--rounds 2]

SpecReason's judge and rewrite calls extend the prefix the run's earlier calls sent; the prefix is
cached only on the replica that served them. For every policy this measures, per judge call, the
prompt tokens the replica read from its prefix cache (``usage.prompt_tokens_details``), and per run
the replicas its calls reached (each replica logs the id of every request it serves,
``--enable-log-requests``; the reply carries the same id). The replicas stay up; only the router is
restarted with each policy (its prefix tree starts empty). Policies alternate segment by segment
(A B C A B C), each segment on problems of its own, so no segment finds another's prefixes in a
replica's cache. The graph's base and small are the same 0.5B model here: accuracy means nothing.
Prints a table and writes benchmarks/results/router-affinity/affinity.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import statistics
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from rich.console import Console
from rich.table import Table

from specreason_graph import compile_graph
from specreason_graph.evaluation import datasets
from specreason_graph.runs import recursion_limit
from specreason_graph.serving import launcher
from specreason_graph.serving.config import RouterSpec

RESULTS = Path(__file__).resolve().parent / "results" / "router-affinity"
POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "round_robin": ("round_robin", {}),
    "cache_aware": ("cache_aware", {}),
    "cache_aware, threshold 0.8": ("cache_aware", {"cache-threshold": 0.8}),
}
"""The router variants measured: name → (policy, extra router options). vllm-router's cache_aware
sends a request to the replica whose tree shares the longest prefix with it when that match covers
at least ``cache-threshold`` (default 0.3) of the request's text, else to the replica with the
smallest tree; a run's first call shares only the template and instructions with other runs."""
LOGGED = re.compile(r"Received request (chatcmpl-[0-9A-Za-z_-]+)")


class Calls(BaseCallbackHandler):
    """Every chat-model call of the runs, from LangChain's callbacks (they reach the graph's model
    calls through the run's config): which problem, judge or not, its reply id and token usage."""

    def __init__(self) -> None:
        self.started: dict[UUID, dict[str, Any]] = {}
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def on_chat_model_start(self, serialized: dict, messages: list, *, run_id: UUID,
                            metadata: dict | None = None, **kwargs: Any) -> None:
        params = kwargs.get("invocation_params") or {}
        with self.lock:
            self.started[run_id] = {"problem": (metadata or {}).get("problem"),
                                    "judge": params.get("max_tokens") == 1}

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        output = response.llm_output or {}
        usage = output.get("token_usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        with self.lock:
            call = self.started.pop(run_id, {})
            self.calls.append({**call, "id": output.get("id"),
                               "prompt_tokens": usage.get("prompt_tokens") or 0,
                               "cached_tokens": details.get("cached_tokens") or 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="520-543", help="GSM8K ids, split among the segments")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="segments per policy (alternating)")
    parser.add_argument("--token-budget", type=int, default=256)
    parser.add_argument("--max-step-tokens", type=int, default=64)
    parser.add_argument("--config", default="cpu-replicas")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true",
                        help="only print the table again from --out's affinity.json")
    args = parser.parse_args()

    console = Console()
    if args.report:
        saved = json.loads((args.out / "affinity.json").read_text())
        _report(console, args, saved["segments"], saved["calls"], saved["date"])
        return
    problems = datasets.select("gsm8k", ids=args.ids)
    order = [name for _ in range(args.rounds) for name in POLICIES]
    per = len(problems) // len(order)
    if per < 1:
        raise SystemExit(f"{len(problems)} problems for {len(order)} segments: give more --ids")
    graph = compile_graph()
    segments = []
    with launcher.launch(args.config, echo=console.print) as servers:
        router = servers.role("base")
        assert isinstance(router, RouterSpec), f"{args.config}: the base role has no router"
        replicas = servers.replicas(router)
        ctx = servers.context(token_budget=args.token_budget,
                              max_step_tokens=args.max_step_tokens, seed=None)
        current = router
        try:
            for i, name in enumerate(order):
                policy, extra = POLICIES[name]
                variant = dataclasses.replace(router, policy=policy,
                                              options={**router.options, **extra})
                launcher.stop_one(current)
                launcher.start_one(variant, echo=console.print)
                current = variant
                batch = problems[i * per:(i + 1) * per]
                segments.append({"policy": name, **_segment(graph, batch, ctx, replicas,
                                                            args.in_flight)})
                console.print(segments[-1]["row"])
        finally:  # the configured router again, as the launcher started it
            if current is not router:
                launcher.stop_one(current)
                launcher.start_one(router, echo=console.print)
    _report(console, args, [{"policy": s["policy"], **s["row"]} for s in segments],
            [{"policy": s["policy"], **c} for s in segments for c in s["calls"]])


class ReplicaLogs:
    """Which replica served each request from here on: every replica logs the id of each request it
    serves (``--enable-log-requests``), and the reply's ``id`` is that id."""

    def __init__(self, replicas: list) -> None:
        self.paths = {spec.port: launcher.log_path(spec) for spec in replicas}
        self.offsets = {port: path.stat().st_size if path.exists() else 0
                        for port, path in self.paths.items()}

    def served(self) -> dict[str, int]:
        """Request id → the port of the replica whose log names it (since this object was made)."""
        served: dict[str, int] = {}
        for port, path in self.paths.items():
            with open(path, "rb") as log:
                log.seek(self.offsets[port])
                for match in LOGGED.finditer(log.read().decode(errors="replace")):
                    served[match.group(1)] = port
        return served


def _segment(graph: Any, batch: list, ctx: Any, replicas: list, in_flight: int) -> dict[str, Any]:
    calls = Calls()
    logs = ReplicaLogs(replicas)
    started = time.perf_counter()
    results = graph.batch(
        [{"problem": p.question} for p in batch],
        config=[{"callbacks": [calls], "metadata": {"problem": p.id}, "max_concurrency": in_flight,
                 "recursion_limit": recursion_limit(ctx)} for p in batch],
        context=ctx, return_exceptions=True)
    wall = time.perf_counter() - started
    time.sleep(1.0)  # the replicas' log lines of the last calls
    return _summary(calls.calls, logs.served(), results, wall, batch)


def served_by(call_id: str | None, served: dict[str, int]) -> int | None:
    if call_id is None:
        return None
    if call_id in served:
        return served[call_id]
    # vLLM may log its internal id (the external one plus a suffix)
    return next((port for logged, port in served.items() if logged.startswith(call_id)), None)


def prefix_hits(calls: list[dict], block: int = 32) -> tuple[int, int]:
    """(judge calls that read from cache the whole prompt their step's draft call sent just before
    them, judge calls that follow a draft call): the judge's prompt extends the draft's, so on the
    draft's replica all of it but a last partial block is cached (allowing one block more)."""
    runs: dict[Any, list[dict]] = defaultdict(list)
    for call in calls:  # a run's calls end one after the other: in call order per run
        runs[call["problem"]].append(call)
    hits = judged = 0
    for run in runs.values():
        for before, call in zip(run, run[1:], strict=False):
            if call["judge"] and not before["judge"]:
                judged += 1
                hits += call["cached_tokens"] >= (before["prompt_tokens"] // block - 1) * block
    return hits, judged


def _summary(calls: list[dict], served: dict[str, int], results: list, wall: float,
             batch: list) -> dict[str, Any]:
    judge = [c for c in calls if c["judge"]]
    touched: dict[str, set[int]] = defaultdict(set)
    per_replica: Counter[int] = Counter()
    unmatched = 0
    for call in calls:
        port = served_by(call["id"], served)
        if port is None:
            unmatched += 1
            continue
        touched[call["problem"]].add(port)
        per_replica[port] += 1
    prompt = sum(c["prompt_tokens"] for c in judge)
    cached = sum(c["cached_tokens"] for c in judge)
    hits, after_draft = prefix_hits(calls)
    failed = sum(isinstance(r, Exception) for r in results)
    counts = [len(touched[p.id]) for p in batch if p.id in touched]
    row = {
        "runs": len(batch), "failed": failed, "wall_s": round(wall, 1), "calls": len(calls),
        "judge_calls": len(judge), "judge_prompt_tokens": prompt, "judge_cached_tokens": cached,
        "judge_cached_share": round(cached / prompt, 3) if prompt else None,
        "judge_prefix_hits": hits, "judge_after_draft": after_draft,
        "judge_uncached_per_call": round((prompt - cached) / len(judge), 1) if judge else None,
        "replicas_per_run_mean": round(statistics.mean(counts), 2) if counts else None,
        "runs_on_one_replica": sum(n == 1 for n in counts),
        "calls_per_replica": dict(sorted(per_replica.items())), "unmatched_calls": unmatched}
    return {"row": row, "calls": calls}


def _report(console: Console, args: argparse.Namespace, segments: list[dict],
            calls: list[dict], date: str | None = None) -> None:
    """The table per policy (its segments added up) and the results files. ``calls``: every call
    with its ``policy``."""
    header = ["policy", "runs", "judge calls", "judge prompt tokens from cache",
              "judge calls that read their prefix from cache", "judge tokens prefilled per call",
              "replicas per run", "runs on one replica", "calls per replica", "wall (s)", "failed"]
    table = Table(title=f"{args.in_flight} runs in flight through vllm-router, 2 replicas")
    for column in header:
        table.add_column(column, justify="right")
    md = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    totals: dict[str, Counter] = {}
    for seg in segments:
        t = totals.setdefault(seg["policy"], Counter())
        for key in ("runs", "judge_calls", "judge_prompt_tokens", "judge_cached_tokens",
                    "runs_on_one_replica", "failed", "wall_s"):
            t[key] += seg[key]
        t["replica_counts"] += (seg["replicas_per_run_mean"] or 0) * seg["runs"]
        for port, n in seg["calls_per_replica"].items():
            t[f"port {port}"] += n
    for name, t in totals.items():
        hits, judged = prefix_hits([c for c in calls if c["policy"] == name])
        per_replica = " / ".join(str(v) for k, v in sorted(t.items()) if k.startswith("port "))
        prompt, cached = t["judge_prompt_tokens"], t["judge_cached_tokens"]
        cells = [name, str(t["runs"]), str(t["judge_calls"]),
                 f"{cached / prompt:.0%}" if prompt else "–", f"{hits} of {judged}",
                 f"{(prompt - cached) / t['judge_calls']:.0f}" if t["judge_calls"] else "–",
                 f"{t['replica_counts'] / t['runs']:.2f}", f"{t['runs_on_one_replica']} of {t['runs']}",
                 per_replica, f"{t['wall_s']:.0f}", str(t["failed"])]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": date or datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": platform.node(),
            "settings": {k: str(v) for k, v in vars(args).items() if k != "report"},
            "segments": segments, "calls": calls}
    (args.out / "affinity.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.out / "affinity.md").write_text("\n".join(md) + "\n")
    console.print(f"wrote {args.out / 'affinity.json'} and affinity.md")


if __name__ == "__main__":
    main()
