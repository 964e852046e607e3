"""Many SpecReason runs at once inside the real LangGraph server: ``langgraph dev`` (the in-memory
runtime Studio talks to) driven by the real ``langgraph-sdk`` async client, against the stand-in
server of ``overhead.py`` (``stand_in.py``) answering every model call after ``--latency`` seconds
(a GPU server's pace, no model on this CPU).

    .venv/bin/python benchmarks/studio_load.py [--runs 32] [--steps 8] [--latency 0.2]

Every run is created at once on a thread of its own (``runs.create``) and joined; the wall time from
the first create to the last join is set against the ideal, every run in flight: ``steps × 2 calls ×
latency``. The server runs ``--n-jobs-per-worker`` (default: as many as ``--runs``) runs at once —
``langgraph dev`` takes one at a time unless told — and keeps its blocking-call detector on: a
blocking call in a run fails that run, and the server log is searched for one. Prints a table and
writes ``benchmarks/results/studio/studio.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import overhead, stand_in

if TYPE_CHECKING:
    from langgraph_sdk.schema import ThreadState

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "studio"
BLOCKING = ("BlockingError", "Blocking call to")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def langgraph_dev(jobs: int, log: Path, env: dict[str, str] | None = None,
                  port: int | None = None) -> Iterator[str]:
    """``langgraph dev`` on a loopback port (a free one unless given), offline (no analytics,
    tracing or version check), ``jobs`` runs at once; its URL."""
    port = port or _free_port()
    environment = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false",
                   "LANGCHAIN_TRACING_V2": "false", "LANGGRAPH_NO_VERSION_CHECK": "1",
                   **(env or {})}
    with open(log, "wb") as sink:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "langgraph"), "dev", "--no-browser", "--no-reload",
             "--host", "127.0.0.1", "--port", str(port), "--n-jobs-per-worker", str(jobs)],
            cwd=ROOT, env=environment, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/ok", timeout=2):
                    break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f"langgraph dev exited: {log.read_text()[-3000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("langgraph dev did not come up in 180 s") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def run_context(url: str, steps: int) -> dict[str, Any]:
    """The runs' Context as the SDK sends it: overhead.py's settings (every step drafted, judged 9,
    kept; ``steps`` steps to the token budget)."""
    return json.loads(json.dumps(asdict(overhead.context(url, steps))))


async def many_runs(server: str, stub_url: str, *, runs: int, steps: int) -> dict[str, Any]:
    """``runs`` SpecReason runs created at once and joined; wall seconds and what each returned."""
    from langgraph_sdk import get_client

    client = get_client(url=server)
    context = run_context(stub_url, steps)
    threads = await asyncio.gather(*(client.threads.create() for _ in range(runs)))
    started = time.perf_counter()
    created = await asyncio.gather(*(
        client.runs.create(t["thread_id"], "specreason", input={"problem": f"What is {i} + {i}?"},
                           context=context) for i, t in enumerate(threads)))
    await asyncio.gather(*(client.runs.join(t["thread_id"], r["run_id"])
                           for t, r in zip(threads, created, strict=True)))
    seconds = time.perf_counter() - started
    finished = await asyncio.gather(*(client.runs.get(t["thread_id"], r["run_id"])
                                      for t, r in zip(threads, created, strict=True)))
    states = await asyncio.gather(*(client.threads.get_state(t["thread_id"]) for t in threads))
    return {"seconds": seconds,
            "statuses": [r["status"] for r in finished],
            "steps": [_steps_kept(s) for s in states]}


def _steps_kept(state: ThreadState) -> int:
    """The steps a run's thread holds. The SDK types ``values`` as a dict or a list (a graph whose
    state is a list); SpecReason's state is a dict."""
    values = state.get("values") or {}
    assert isinstance(values, dict), f"SpecReason's state is a dict, not {type(values).__name__}"
    return len(values.get("steps") or [])


def measure(*, runs: int, steps: int, latency: float, jobs: int | None = None,
            log: Path | None = None, server: str | None = None) -> dict[str, Any]:
    """One measurement: the stand-in, ``langgraph dev``, ``runs`` runs at once. ``server``: a
    ``langgraph dev`` already running ``jobs`` runs at once and writing ``log`` (the tests share
    one); else one is started for the measurement."""
    jobs = jobs or runs
    with tempfile.TemporaryDirectory() as tmp, stand_in.Stub(latency) as stub, ExitStack() as stack:
        log = log or Path(tmp) / "langgraph-dev.log"
        server = server or stack.enter_context(langgraph_dev(jobs, log))
        asyncio.run(many_runs(server, stub.url, runs=min(2, runs), steps=steps))  # warm-up
        found = asyncio.run(many_runs(server, stub.url, runs=runs, steps=steps))
        blocking = [line for line in log.read_text(errors="replace").splitlines()
                    if any(marker in line for marker in BLOCKING)]
    ideal = steps * 2 * latency * -(-runs // jobs)
    return {"runs": runs, "steps_per_run": steps, "latency_s": latency, "jobs_per_worker": jobs,
            "seconds": found["seconds"], "ideal_s": ideal,
            "vs_ideal": found["seconds"] / ideal if ideal else None,
            "succeeded": sum(s == "success" for s in found["statuses"]),
            "statuses": found["statuses"], "steps": found["steps"],
            "blocking_calls_logged": blocking}


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| runs at once | jobs per worker | steps a run | latency s | ideal s | langgraph dev s "
             "| / ideal | runs succeeded | blocking calls logged |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['runs']} | {row['jobs_per_worker']} | {row['steps_per_run']} | "
                     f"{row['latency_s']:g} | {row['ideal_s']:.2f} | {row['seconds']:.2f} | "
                     f"{row['vs_ideal']:.2f}× | {row['succeeded']} of {row['runs']} | "
                     f"{len(row['blocking_calls_logged'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[32], help="runs at once")
    parser.add_argument("--steps", type=int, default=8, help="steps per run")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per model reply")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    for runs in args.runs:
        row = measure(runs=runs, steps=args.steps, latency=args.latency)
        print(f"  {runs} runs at once: {row['seconds']:.2f} s, ideal {row['ideal_s']:.2f} s "
              f"({row['vs_ideal']:.2f}×), {row['succeeded']} succeeded, "
              f"{len(row['blocking_calls_logged'])} blocking calls logged")
        rows.append(row)
    result = {"when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"host": platform.node(), "python": platform.python_version(),
                          "cpus": multiprocessing.cpu_count()},
              "conditions": overhead.conditions(load_before),
              "rows": rows}
    table = markdown(rows)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "studio.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "studio.md").write_text(
        f"SpecReason runs inside `langgraph dev` (in-memory runtime, SDK client), the stand-in "
        f"answering every call after {args.latency:g} s ({overhead.conditions_text(result)})"
        f":\n\n{table}\n")
    return result


if __name__ == "__main__":
    main()
