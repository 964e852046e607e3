"""What the graph itself costs per step: SpecReason through LangGraph (langchain-openai, our nodes,
the checkpointer) against a plain loop of ``openai`` calls making the same requests, both against an
instant local stand-in for a vLLM server (no model: canned replies), so the difference is the
graph's own time.

    .venv/bin/python benchmarks/overhead.py [--runs 64] [--steps 8] [--levels 1 32]
    .venv/bin/python benchmarks/overhead.py --latency 0.2 --runs 64 --levels 64   # a GPU server's pace
    .venv/bin/python benchmarks/overhead.py --quick            # two runs (the unit test's size)
    .venv/bin/python benchmarks/overhead.py --profile sqlite    # where a configuration's time goes

The stand-in (``stand_in.py``) runs in a process of its own (its work does not take the client's
interpreter lock): a threaded HTTP/1.1 server on 127.0.0.1 answering ``/v1/chat/completions`` with a
step that ends at the delimiter (logprobs and usage included) or, for a one-token request, a judge
reply of "9" with its top-10 logprobs, after ``--latency`` seconds (0: at once; 0.2 is a GPU
server's pace). Every step is drafted, judged (score 9, kept) and committed; a run stops at its
token budget after ``--steps`` steps. Each configuration — no checkpointer, ``InMemorySaver``,
SQLite on a temporary file, Postgres with ``--postgres DSN`` — runs at every level of concurrency on
both paths, after a warm-up: ``sync`` (``runs.run_many``/``graph.batch`` with a thread id per run,
the plain loop on a thread pool of the same size) and ``async``
(``runs.arun_many``/``graph.abatch``, the plain loop with ``openai.AsyncOpenAI`` and a semaphore of
the same size). With a latency, each row also gives the wall time of all runs against the ideal:
every run in flight, ``steps × 2 × latency`` per wave of ``in flight`` runs. Per step: wall time
over all runs / steps (at concurrency > 1 that is the inverse of throughput, so the difference is
the graph's added CPU time per step), and the client process's CPU time over all its threads / steps
(less at the mercy of a busy machine: the wall time of a step includes waiting for a core).

Prints a table and writes ``benchmarks/results/overhead/overhead.{json,md}`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import multiprocessing
import os
import platform
import pstats
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.stand_in import DELIMITER, MODEL, TOKENS_PER_STEP, Stub

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver

RESULTS = Path(__file__).resolve().parent / "results" / "overhead"
TARGET_MS = 5.0
CHECKPOINTERS = ("none", "memory", "sqlite")
"""Measured by default; ``postgres`` too when ``--postgres DSN`` is given."""
PATHS = ("sync", "async")
POOL = 64  # Postgres connections: one per run in flight
PG_KWARGS = {"autocommit": True, "prepare_threshold": 0}  # what langgraph-checkpoint-postgres needs


# --- the two clients -------------------------------------------------------------------------------

def context(url: str, steps: int) -> Any:
    from specreason_graph import Context

    return Context(base_url=url, small_url=url, base_model=MODEL, small_model=MODEL,
                   judge="score", threshold=7, score_method="greedy", cascade="check:1-10,score",
                   also_judge=[], calibration=None, first_n_base=0, one_request=None,
                   small_only=False, token_budget=steps * TOKENS_PER_STEP, max_step_tokens=64,
                   seed=None, thinking_opener="", step_delimiter=DELIMITER, prompt="math",
                   request_timeout=60)


def plain_calls(ctx: Any, problem: str) -> Generator[dict[str, Any], Any, int]:
    """SpecReason's calls for one problem as plain ``chat.completions.create`` arguments, and nothing
    else: the draft and the judge of every step, the same messages the graph sends. Yields each
    call's arguments, is sent its reply; returns the steps kept."""
    from specreason_graph import prompts

    user = prompts.render_problem(ctx.prompt, problem, ctx.prompt_set)
    judge_text = prompts.load("judge", ctx.prompt_set)
    judge_prefill = prompts.load("judge_prefill", ctx.prompt_set)
    steps: list[str] = []
    kept = 0
    while kept < ctx.token_budget:
        prefill = ctx.thinking_opener + "".join(s + ctx.step_delimiter for s in steps)
        messages = [{"role": "user", "content": user}]
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        draft = yield dict(
            model=ctx.small_model, messages=messages, stop=[ctx.step_delimiter],
            max_tokens=ctx.max_step_tokens, temperature=ctx.temperature, top_p=ctx.top_p,
            logprobs=True, extra_body={"continue_final_message": bool(prefill),
                                       "add_generation_prompt": not prefill,
                                       "include_stop_str_in_output": True})
        text = draft.choices[0].message.content.removesuffix(ctx.step_delimiter)
        verdict = yield dict(
            model=ctx.base_model, max_tokens=1, temperature=0.0, logprobs=True,
            top_logprobs=ctx.judge_top_logprobs,
            messages=[messages[0], {"role": "assistant", "content": prefill + text},
                      {"role": "user", "content": judge_text},
                      {"role": "assistant", "content": judge_prefill}],
            extra_body={"continue_final_message": True, "add_generation_prompt": False})
        score = int(verdict.choices[0].logprobs.content[0].token)
        assert score >= ctx.threshold, "the stand-in always scores 9"
        steps.append(text)
        kept += draft.usage.completion_tokens
    return len(steps)


def plain_run(client: Any, ctx: Any, problem: str) -> int:
    calls = plain_calls(ctx, problem)
    reply = None
    try:
        while True:
            reply = client.chat.completions.create(**calls.send(reply))
    except StopIteration as done:
        return int(done.value)


async def aplain_run(client: Any, ctx: Any, problem: str) -> int:
    calls = plain_calls(ctx, problem)
    reply = None
    try:
        while True:
            reply = await client.chat.completions.create(**calls.send(reply))
    except StopIteration as done:
        return int(done.value)


def plain_many(url: str, ctx: Any, problems: Sequence[str], concurrency: int) -> int:
    import openai

    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=60)
    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(lambda p: plain_run(client, ctx, p), problems))


async def aplain_many(url: str, ctx: Any, problems: Sequence[str], concurrency: int) -> int:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=60)
    gate = asyncio.Semaphore(concurrency)

    async def one(problem: str) -> int:
        async with gate:
            return await aplain_run(client, ctx, problem)

    try:
        return sum(await asyncio.gather(*(one(p) for p in problems)))
    finally:
        await client.close()


@contextmanager
def compiled(checkpointer: str, folder: Path, postgres: str | None = None) -> Iterator[Any]:
    """The graph with ``checkpointer`` for the sync path."""
    from specreason_graph import build_graph

    with ExitStack() as stack:
        saver: BaseCheckpointSaver[str] | None = None
        if checkpointer == "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            saver = InMemorySaver()
        elif checkpointer == "sqlite":
            from langgraph.checkpoint.sqlite import SqliteSaver

            path = folder / f"checkpoints-{time.monotonic_ns()}.sqlite"
            saver = stack.enter_context(SqliteSaver.from_conn_string(str(path)))
        elif checkpointer != "none":
            from langgraph.checkpoint.postgres import PostgresSaver
            from psycopg_pool import ConnectionPool

            assert postgres, "the postgres checkpointer needs --postgres DSN"
            pool = stack.enter_context(ConnectionPool(postgres, max_size=POOL, kwargs=PG_KWARGS))
            # langgraph's type asks for a pool of ``Connection[DictRow]``, but it opens every cursor
            # with ``row_factory=dict_row`` itself: default connections (as its docs build the
            # pool) work, the annotation is stricter than the code
            postgres_saver = PostgresSaver(pool)  # type: ignore[arg-type]
            postgres_saver.setup()
            saver = postgres_saver
        yield build_graph().compile(checkpointer=saver)


@asynccontextmanager
async def acompiled(checkpointer: str, folder: Path, postgres: str | None = None
                    ) -> AsyncIterator[Any]:
    """The graph with ``checkpointer`` for the async path (the async savers)."""
    from specreason_graph import build_graph

    async with AsyncExitStack() as stack:
        saver: BaseCheckpointSaver[str] | None = None
        if checkpointer == "memory":
            from langgraph.checkpoint.memory import InMemorySaver

            saver = InMemorySaver()
        elif checkpointer == "sqlite":
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            path = folder / f"checkpoints-{time.monotonic_ns()}.sqlite"
            saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
        elif checkpointer != "none":
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg_pool import AsyncConnectionPool

            assert postgres, "the postgres checkpointer needs --postgres DSN"
            pool = await stack.enter_async_context(
                AsyncConnectionPool(postgres, max_size=POOL, kwargs=PG_KWARGS))
            # as in ``compiled``: langgraph's type asks for ``AsyncConnection[DictRow]``, its
            # cursors set ``row_factory=dict_row`` themselves
            postgres_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await postgres_saver.setup()
            saver = postgres_saver
        yield build_graph().compile(checkpointer=saver)


def _configs(ctx: Any, n: int, concurrency: int) -> list[dict[str, Any]]:
    """A thread per run: what a checkpointer keys its checkpoints by."""
    from specreason_graph.runs import recursion_limit

    return [{"configurable": {"thread_id": f"run-{time.monotonic_ns()}-{i}"},
             "max_concurrency": concurrency, "recursion_limit": recursion_limit(ctx)}
            for i in range(n)]


def _steps(results: Sequence[Any]) -> int:
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise failed[0]
    return sum(len(r["steps"]) for r in results)


def graph_many(graph: Any, ctx: Any, problems: Sequence[str], concurrency: int,
               checkpointer: str) -> int:
    from specreason_graph.runs import run_many

    if checkpointer == "none":
        return _steps(run_many(graph, problems, ctx, concurrency=concurrency))
    return _steps(graph.batch([{"problem": p} for p in problems],
                              config=_configs(ctx, len(problems), concurrency), context=ctx,
                              return_exceptions=True))


async def agraph_many(graph: Any, ctx: Any, problems: Sequence[str], concurrency: int,
                      checkpointer: str) -> int:
    from specreason_graph.runs import arun_many

    if checkpointer == "none":
        return _steps(await arun_many(graph, problems, ctx, concurrency=concurrency))
    return _steps(await graph.abatch([{"problem": p} for p in problems],
                                     config=_configs(ctx, len(problems), concurrency),
                                     context=ctx, return_exceptions=True))


# --- measuring -------------------------------------------------------------------------------------

def timed(call: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds over all its threads, steps)."""
    started, cpu = time.perf_counter(), time.process_time()
    steps = call()
    return time.perf_counter() - started, time.process_time() - cpu, steps


def measure(url: str, *, runs: int, steps: int, levels: Sequence[int],
            checkpointers: Sequence[str] = CHECKPOINTERS, paths: Sequence[str] = PATHS,
            repeats: int = 1, latency: float = 0.0, postgres: str | None = None,
            echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One row per (concurrency, path, checkpointer): plain and graph milliseconds per step and the
    difference. Each side takes the best of ``repeats`` (the machine's noise only adds time)."""
    ctx = context(url, steps)
    problems = [f"Problem {i}: what is {i} + {i}?" for i in range(runs)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for level in levels:
            warm = problems[: max(2, min(level, runs))]
            for path in paths:
                if path == "sync":
                    plain_many(url, ctx, warm, level)
                    plain = best_of(repeats, partial(plain_many, url, ctx, problems, level))
                else:
                    plain = asyncio.run(_aseries(
                        None, lambda n=level: aplain_many(url, ctx, problems, n),
                        lambda n=level, w=warm: aplain_many(url, ctx, w, n), repeats))
                for checkpointer in checkpointers:
                    if path == "sync":
                        with compiled(checkpointer, folder, postgres) as graph:
                            graph_many(graph, ctx, warm, level, checkpointer)
                            mine = best_of(repeats, partial(graph_many, graph, ctx, problems, level,
                                                           checkpointer))
                    else:
                        mine = asyncio.run(_aseries(
                            acompiled(checkpointer, folder, postgres),
                            lambda g, n=level, c=checkpointer: agraph_many(g, ctx, problems, n, c),
                            lambda g, n=level, c=checkpointer, w=warm: agraph_many(g, ctx, w, n, c),
                            repeats))
                    assert mine["steps"] == plain["steps"] == runs * steps, (mine, plain)
                    rows.append(row := _row(path, checkpointer, level, runs, steps, latency,
                                            plain, mine))
                    echo(f"  {path:<5} {checkpointer:<8} x{level:<3} wall: plain "
                         f"{plain['wall']:6.2f} graph {mine['wall']:6.2f} added "
                         f"{row['added_ms_per_step']:6.2f}; cpu: plain {plain['cpu']:6.2f} graph "
                         f"{mine['cpu']:6.2f} added {row['added_cpu_ms_per_step']:6.2f} ms/step"
                         + (f"; all runs {mine['seconds']:.2f} s, ideal {row['ideal_s']:.2f} s"
                            if latency else ""))
    return rows


def _row(path: str, checkpointer: str, level: int, runs: int, steps: int, latency: float,
         plain: dict[str, float], mine: dict[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "path": path, "checkpointer": checkpointer, "concurrency": level, "runs": runs,
        "steps": mine["steps"], "calls_per_step": 2,
        "plain_ms_per_step": plain["wall"], "graph_ms_per_step": mine["wall"],
        "added_ms_per_step": mine["wall"] - plain["wall"],
        "plain_cpu_ms_per_step": plain["cpu"], "graph_cpu_ms_per_step": mine["cpu"],
        "added_cpu_ms_per_step": mine["cpu"] - plain["cpu"], "latency_s": latency}
    row["within_target"] = row["added_ms_per_step"] <= TARGET_MS
    if latency:
        # every run in flight: each wave of `level` runs takes steps × 2 calls × latency
        ideal = math.ceil(runs / level) * steps * 2 * latency
        row.update(ideal_s=ideal, plain_s=plain["seconds"], graph_s=mine["seconds"],
                   plain_vs_ideal=plain["seconds"] / ideal, graph_vs_ideal=mine["seconds"] / ideal)
    return row


def best_of(repeats: int, call: Callable[[], int]) -> dict[str, float]:
    """Milliseconds per step, wall and CPU, each the least of ``repeats`` timings."""
    return _best([timed(call) for _ in range(repeats)])


def _best(found: Sequence[tuple[float, float, int]]) -> dict[str, float]:
    steps = found[0][2]
    wall = min(f[0] for f in found)
    return {"wall": 1000 * wall / steps, "cpu": 1000 * min(f[1] for f in found) / steps,
            "steps": steps, "seconds": wall}


async def _aseries(setup: Any, call: Callable[..., Awaitable[int]],
                   warm: Callable[..., Awaitable[int]], repeats: int) -> dict[str, float]:
    """``best_of`` on the event loop: ``setup`` (an async context giving the graph, None for the
    plain loop), a warm-up, then ``repeats`` timings."""
    async def series(*graph: Any) -> dict[str, float]:
        await warm(*graph)
        found = []
        for _ in range(repeats):
            started, cpu = time.perf_counter(), time.process_time()
            steps = await call(*graph)
            found.append((time.perf_counter() - started, time.process_time() - cpu, steps))
        return _best(found)

    if setup is None:
        return await series()
    async with setup as graph:
        return await series(graph)


COLUMNS = [("path", "path", "{}"), ("checkpointer", "checkpointer", "{}"),
           ("concurrency", "in flight", "{}"), ("runs", "runs", "{}"), ("steps", "steps", "{}"),
           ("plain_ms_per_step", "plain loop ms/step", "{:.2f}"),
           ("graph_ms_per_step", "graph ms/step", "{:.2f}"),
           ("added_ms_per_step", "added ms/step", "{:+.2f}"),
           ("plain_cpu_ms_per_step", "plain CPU ms/step", "{:.2f}"),
           ("graph_cpu_ms_per_step", "graph CPU ms/step", "{:.2f}"),
           ("added_cpu_ms_per_step", "added CPU ms/step", "{:+.2f}"),
           ("within_target", f"added ≤ {TARGET_MS:g} ms", "{}")]
LATENCY_COLUMNS = [("ideal_s", "ideal s", "{:.2f}"), ("plain_s", "plain loop s", "{:.2f}"),
                   ("graph_s", "graph s", "{:.2f}"), ("graph_vs_ideal", "graph / ideal", "{:.2f}×")]


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    columns = COLUMNS + (LATENCY_COLUMNS if any(r.get("latency_s") for r in rows) else [])
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join(":---" if k in ("path", "checkpointer") else "---:"
                            for k, _, _ in columns) + "|"]
    for row in rows:
        cells = [("yes" if row[k] else "**no**") if k == "within_target" else f.format(row[k])
                 for k, _, f in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cumulative(stats: pstats.Stats, path_part: str, function: str) -> float:
    """Seconds spent in (and under) ``function`` of a file whose path holds ``path_part``; for a
    recursive function, its outermost calls."""
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    return max((entry[3] for (path, _, name), entry in raw.items()
                if path_part in path and name == function), default=0.0)


LAYERS = [  # (what, path part, function): each one's time less the next one's
    ("LangGraph (Pregel loop, channels, checkpoints, retries)", "pregel/main.py", "invoke"),
    ("SpecReason's nodes and routers", "specreason_graph/graph.py", "*nodes*"),
    ("langchain-core chat model (callbacks, run managers)", "language_models/chat_models.py",
     "invoke"),
    ("langchain-openai (messages to a request, the reply to a result)",
     "langchain_openai/chat_models/base.py", "_generate"),
    ("openai client (as the plain loop: request, HTTP, parsing)",
     "openai/resources/chat/completions/completions.py", "create"),
]


def profile(url: str, checkpointer: str, *, runs: int, steps: int, top: int = 25,
            postgres: str | None = None) -> str:
    """Where a step's time goes with ``checkpointer``: cProfile of the runs one after the other
    with ``graph.invoke`` in this thread (LangGraph runs a superstep's only task in the calling
    thread; checkpoints are written by background threads cProfile does not see), split by layer,
    then the functions by own time. The profiler slows Python calls, so read shares, not ms."""
    from specreason_graph.runs import recursion_limit

    ctx = context(url, steps)
    problems = [f"Problem {i}: what is {i} + {i}?" for i in range(runs)]

    def run_all(graph: Any, tag: str) -> None:
        for i, problem in enumerate(problems):
            graph.invoke({"problem": problem}, context=ctx, config={
                "configurable": {"thread_id": f"{tag}-{i}"},
                "recursion_limit": recursion_limit(ctx)})

    with tempfile.TemporaryDirectory() as folder, compiled(checkpointer, Path(folder),
                                                             postgres) as graph:
        run_all(graph, "warm")
        profiler = cProfile.Profile()
        profiler.enable()
        run_all(graph, "measured")
        profiler.disable()
    import io

    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    total_steps = runs * steps
    spent = []
    for _, path, function in LAYERS:
        if function == "*nodes*":
            names = ("model_node", "commit", "setup", "next_step", "first_step", "by_score",
                     "after_draft")
            spent.append(sum(_cumulative(stats, path, name) for name in names))
        else:
            spent.append(_cumulative(stats, path, function))
    # each layer's own share: its time less the time of the layer it calls (the nodes call the
    # chat model; LangGraph's share is the whole run less the nodes)
    own = [spent[0] - spent[1], spent[1] - spent[2], spent[2] - spent[3], spent[3] - spent[4],
           spent[4]]
    out.write(f"{checkpointer}: {total_steps} steps, ms per step under cProfile\n")
    for (what, _, _), seconds in zip(LAYERS, own, strict=True):
        out.write(f"  {what:<66} {1000 * seconds / total_steps:7.2f}  "
                  f"({seconds / spent[0]:.0%})\n")
    out.write("\n")
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=64, help="runs per configuration")
    parser.add_argument("--steps", type=int, default=8, help="steps per run")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 32], help="runs in flight")
    parser.add_argument("--repeats", type=int, default=2, help="best of this many timings")
    parser.add_argument("--quick", action="store_true",
                        help="two runs of two steps, 1 and 2 in flight (a check, not a measurement)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds the stand-in takes per reply (0: at once)")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--checkpointers", nargs="+", choices=(*CHECKPOINTERS, "postgres"),
                        help="default: none memory sqlite, and postgres with --postgres")
    parser.add_argument("--postgres", metavar="DSN",
                        help="a PostgreSQL database for the postgres checkpointer "
                             "(postgresql://user@host:port/db)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--profile", choices=(*CHECKPOINTERS, "postgres"),
                        help="print where the graph's time goes with this checkpointer instead")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.steps, args.levels, args.repeats = 2, 2, [1, 2], 1
    checkpointers = args.checkpointers or [*CHECKPOINTERS, *(["postgres"] if args.postgres else [])]
    if "postgres" in checkpointers + [args.profile] and not args.postgres:
        parser.error("the postgres checkpointer needs --postgres DSN")

    load_before = os.getloadavg()
    with Stub(args.latency) as stub:
        if args.profile:
            print(profile(stub.url, args.profile, runs=args.runs, steps=args.steps,
                          postgres=args.postgres))
            return {}
        print(f"{args.runs} runs × {args.steps} steps per configuration, 2 calls a step, "
              f"against {stub.url}" + (f", {args.latency:g} s per reply" if args.latency else ""))
        rows = measure(stub.url, runs=args.runs, steps=args.steps, levels=args.levels,
                       checkpointers=checkpointers, paths=args.paths, repeats=args.repeats,
                       latency=args.latency, postgres=args.postgres)
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"host": platform.node(), "python": platform.python_version(),
                          "platform": platform.platform(), "cpus": multiprocessing.cpu_count()},
              "conditions": conditions(load_before),
              "settings": {"runs": args.runs, "steps": args.steps, "levels": args.levels,
                           "repeats": args.repeats, "tokens_per_step": TOKENS_PER_STEP,
                           "target_ms": TARGET_MS, "latency_s": args.latency,
                           "paths": args.paths, "checkpointers": checkpointers},
              "rows": rows}
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "overhead.md").write_text(
        f"Graph overhead per step against a plain `openai` loop, {args.runs} runs × {args.steps} "
        f"steps, best of {args.repeats}"
        + (f", the stand-in answering after {args.latency:g} s" if args.latency else "")
        + f" ({conditions_text(result)}):\n\n{table}\n")
    return result


def conditions(load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What else the machine was doing: load average before and after, vLLM servers up."""
    return {"load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "vllm_servers_running": _vllm_running()}


def conditions_text(result: dict[str, Any]) -> str:
    found = result["conditions"]
    return (f"{result['when']}, {platform.node()}, {multiprocessing.cpu_count()} CPUs; load average "
            f"{found['load_before'][0]:.2f} before, {found['load_after'][0]:.2f} after; vLLM servers "
            f"running: {'yes' if found['vllm_servers_running'] else 'no'}")


def _vllm_running() -> bool:
    """Whether a vLLM server process is on this machine (its CPU use would be in the timings)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"vllm" in cmdline.read_bytes():
                return True
        except OSError:
            continue
    return False


if __name__ == "__main__":
    main()
