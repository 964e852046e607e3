"""The benchmark runner: every mode through the same graph, one JSON line per finished run.

    run_bench(compile_graph(), datasets.select("gsm8k", limit=30),
              [parse_mode("base"), parse_mode("small"), parse_mode("spec:t=5,score=expected")],
              ctx, Path("out"), concurrency=4)

Three parts. :func:`resume` reads the results folder (``records``) and plans the runs it does not
hold yet, refusing a folder made with other settings. :class:`Workers` interleaves those runs
(problem by problem, so every mode sees the same load) over ``concurrency`` daemon threads. The sink
(:func:`run_bench`'s loop) grades each finished run in the main thread (math-verify's signal timeouts
work there), appends it to ``runs.jsonl`` at once and keeps the tally, so an interrupted benchmark
(Ctrl-C, a crash) keeps every finished run and the same command resumes with the rest. Runs that
failed are recorded with their error and run again on resume, and so are runs taken while another
client's requests were on the servers.

Every record carries the concurrency it ran at and the load the servers held meanwhile
(:class:`.metrics.LoadWatch`: requests beyond this benchmark's own are another client's), and the
folder is locked while a benchmark writes to it (:func:`.records.locked`), so two benchmarks never
share a folder and the report can refuse figures measured alongside other traffic.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specreason_graph.context import Context, declared_default
from specreason_graph.evaluation import grading, records, stats
from specreason_graph.evaluation.datasets import Problem
from specreason_graph.evaluation.metrics import LoadWatch, delta, scrape, spec_decode
from specreason_graph.evaluation.modes import Mode
from specreason_graph.evaluation.records import Record
from specreason_graph.trace import summarize

Task = tuple[Problem, int, Mode]


@dataclass
class Progress:
    """What the runner reports after each finished run (for a progress bar)."""

    done: int
    total: int
    record: Record
    correct_by_mode: dict[str, tuple[int, int]]


@dataclass
class BenchResult:
    out: Path
    records: dict[str, Record]
    interrupted: bool
    abandoned: int
    """Runs still in flight when the benchmark was interrupted (not recorded; run on resume)."""


# --- resume --------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What is left to run in a results folder, and the meta.json that describes the folder."""

    tasks: list[Task]
    records: dict[str, Record]
    meta: dict[str, Any]
    segment: dict[str, Any]


def resume(out: Path, problems: Sequence[Problem], modes: Sequence[Mode], ctx: Context,
           samples: int, concurrency: int, seed: int | None, redo: Collection[str] = ()) -> Plan:
    """Read what ``out`` holds (the request passed :func:`check_request`), and open a new segment
    for the runs left, and for every run of the problems in ``redo`` again (their old records stay
    in runs.jsonl, above the new ones; the last line of a key wins)."""
    names = [m.name for m in modes]
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(problems, modes, ctx, samples)
    meta = records.read_meta(out)
    if meta:
        _check_resumable(meta, settings, out)
        settings["modes"] = {**meta["settings"]["modes"], **settings["modes"]}
    meta = {"settings": settings, "machine": meta.get("machine") or records.machine(),
            "segments": meta.get("segments", [])}
    done = records.load_records(out)
    tasks = [(p, s, m) for p in problems for s in range(samples) for m in modes
             if p.id in redo or _again(done.get(records.key(m.name, p.id, s)))]
    segment: dict[str, Any] = {
        "started": records.now(), "concurrency": concurrency, "seed": seed, "runs": len(tasks),
        "problems": [p.id for p in problems], "modes": names,
        **({"redo": sorted(redo)} if redo else {}),
        "metrics_before": _scrape_all(ctx, modes)}
    meta["segments"].append(segment)
    records.write_meta(out, meta)
    return Plan(tasks, done, meta, segment)


def left(out: Path, problems: Sequence[Problem], modes: Sequence[Mode], samples: int,
         redo: Collection[str] = ()) -> int:
    """How many runs :func:`run_bench` would make in ``out`` (reads, writes nothing): none left
    means no servers to start and no segment to open."""
    done = records.load_records(out) if out.is_dir() else {}
    return sum(1 for p in problems for s in range(samples) for m in modes
               if p.id in redo or _again(done.get(records.key(m.name, p.id, s))))


def check_request(problems: Sequence[Problem], modes: Sequence[Mode], samples: int,
                  concurrency: int, redo: Collection[str] = ()) -> None:
    """Refuse a request that cannot run, before anything is written."""
    if not problems:
        raise ValueError("no problems to run: check --limit / --ids")
    outside = sorted(set(redo) - {p.id for p in problems})
    if outside:
        raise ValueError(f"--redo names problems this slice does not hold: {', '.join(outside)}")
    if not modes:
        raise ValueError("no modes to run")
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise ValueError(f"two modes share a name: {names}; tell them apart with name=")
    if samples < 1 or concurrency < 1:
        raise ValueError("samples and concurrency must be at least 1")


def _again(record: Record | None) -> bool:
    """Run it (again): never run, failed, or taken alongside another client's requests."""
    return record is None or record.get("error") is not None or stats.with_others(record)


def _settings(problems: Sequence[Problem], modes: Sequence[Mode], ctx: Context,
              samples: int) -> dict[str, Any]:
    # servers: only where the other fields' defaults came from; the fields themselves are recorded
    context = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(Context)
               if f.name not in ("api_key", "request_timeout", "servers", *Mode.CHANGES)}
    return {"dataset": sorted({p.dataset for p in problems}), "context": context,
            "samples": samples, "modes": {m.name: m.settings(ctx) for m in modes}}


def _same_context(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """The run's shared settings are the folder's. A setting the folder never recorded (a Context
    field added after it was made) counts as that field's declared default, the value that behaves
    as before the field existed: the folder resumes when the run has that value, whatever field it
    is. A setting the folder recorded and the run no longer has (a field removed) refuses."""
    if old is None:
        return False
    unrecorded = {k: v for k, v in new.items() if k not in old}
    return all(_is_default(k, v) for k, v in unrecorded.items()) \
        and {k: v for k, v in new.items() if k in old} == old


def _is_default(name: str, value: Any) -> bool:
    try:
        return bool(declared_default(name) == value)
    except KeyError:  # no declared default: nothing says how the folder's runs behaved
        return False


def _check_resumable(meta: dict[str, Any], settings: dict[str, Any], out: Path) -> None:
    old = meta.get("settings", {})
    differ = [k for k in ("dataset", "context", "samples")
              if not (_same_context(old.get(k), settings[k]) if k == "context"
                      else old.get(k) == settings[k])]
    clash = [name for name, s in settings["modes"].items()
             if name in old.get("modes", {}) and old["modes"][name] != s]
    if differ or clash:
        detail = ", ".join(differ + [f"mode {n!r}" for n in clash])
        raise ValueError(f"{out} holds results made with other settings ({detail}); "
                         "give another --out, or the same settings to resume")


def _urls(ctx: Context, modes: Sequence[Mode]) -> list[str]:
    """The servers these modes talk to (and only those: the plain base server is down while a
    segment of SpecDecode modes runs, and a server that does not answer voids the load samples)."""
    return sorted({u for m in modes for c in (m.context(ctx),) for u in (c.small_url, c.base_url)})


def _scrape_all(ctx: Context, modes: Sequence[Mode]) -> dict[str, dict[str, float] | None]:
    return {url: scrape(url) for url in _urls(ctx, modes)}


# --- workers -------------------------------------------------------------------------------------

@dataclass
class Workers:
    """``concurrency`` daemon threads taking tasks from one queue; each finished run (its result or
    the exception it raised, with its base server's speculative-decoding counters over the run when
    that server speculates) lands in ``finished`` with its start and end (``time.monotonic()``)."""

    graph: Any
    ctx: Context
    seed: int | None
    stop: threading.Event
    todo: queue.Queue[Task] = field(default_factory=queue.Queue)
    finished: queue.Queue[tuple[Task, Any, float, float]] = field(default_factory=queue.Queue)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, tasks: Sequence[Task], concurrency: int) -> Workers:
        for task in tasks:
            self.todo.put(task)
        self.threads = [threading.Thread(target=self._work, daemon=True, name=f"bench-{i}")
                        for i in range(min(concurrency, len(tasks)))]
        for thread in self.threads:
            thread.start()
        return self

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads) or not self.finished.empty()

    def _work(self) -> None:
        while not self.stop.is_set():
            try:
                task = self.todo.get_nowait()
            except queue.Empty:
                return
            problem, sample, mode = task
            run_ctx = mode.context(self.ctx, prompt=problem.prompt,
                                   seed=None if self.seed is None else self.seed + sample)
            # a mode that never asks the base model says nothing about its speculation
            before = None if mode.kind in ("small", "small-steps") else spec_decode(run_ctx.base_url)
            started = time.monotonic()
            try:
                result: Any = self.graph.invoke(
                    {"problem": problem.question}, context=run_ctx,
                    config={"run_name": f"bench {mode.name}",
                            "tags": ["bench", mode.name, f"{problem.dataset}:{problem.id}"]})
            except Exception as exc:  # recorded as a failed run; the others go on
                result = exc
            ended = time.monotonic()
            counted = delta(before, spec_decode(run_ctx.base_url)) if before else None
            self.finished.put((task, (result, counted), started, ended))


# --- the sink ------------------------------------------------------------------------------------

def run_bench(graph: Any, problems: Sequence[Problem], modes: Sequence[Mode], ctx: Context,
              out: Path, *, samples: int = 1, concurrency: int = 1, seed: int | None = None,
              on_progress: Callable[[Progress], None] | None = None,
              stop: threading.Event | None = None, load_interval: float = 1.0,
              redo: Collection[str] = ()) -> BenchResult:
    """Run every (problem, sample, mode) not yet in ``out/runs.jsonl``; see the module docstring.

    ``seed``: sample k of a problem sends seed + k with every step request (None: no seed).
    ``stop``: set it to stop taking new runs (what Ctrl-C does), as KeyboardInterrupt would.
    ``load_interval``: seconds between two samples of the servers' queues.
    ``redo``: problem ids whose runs (of ``modes``) are measured again, recorded or not — runs a
    disturbance outside the servers' view slowed (the report keeps the last record of a key).
    Raises :class:`.records.FolderBusy` when another benchmark is writing to ``out``.
    """
    out = Path(out)
    check_request(problems, modes, samples, concurrency, redo)
    out.mkdir(parents=True, exist_ok=True)
    with records.locked(out), LoadWatch(_urls(ctx, modes), load_interval) as watch:
        return _run(graph, problems, modes, ctx, out, samples, concurrency, seed, on_progress,
                    stop or threading.Event(), watch, set(redo))


def _run(graph: Any, problems: Sequence[Problem], modes: Sequence[Mode], ctx: Context, out: Path,
         samples: int, concurrency: int, seed: int | None,
         on_progress: Callable[[Progress], None] | None, stop: threading.Event,
         watch: LoadWatch, redo: set[str]) -> BenchResult:
    plan = resume(out, problems, modes, ctx, samples, concurrency, seed, redo)
    workers = Workers(graph, ctx, seed, stop).start(plan.tasks, concurrency)
    correct = _tally(plan, {m.name for m in modes})
    done, interrupted = 0, False
    with records.RunsFile(out) as sink:
        try:
            while done < len(plan.tasks):
                if stop.is_set():
                    raise KeyboardInterrupt
                try:
                    task, outcome, started, ended = workers.finished.get(timeout=0.25)
                except queue.Empty:
                    if not workers.alive():
                        break
                    continue
                result, counted = outcome
                record = _record(task, result, ended - started, concurrency,
                                 watch.window(started, ended, concurrency), counted)
                sink.append(record)
                plan.records[record["key"]] = record
                done += 1
                _count(correct, record)
                if on_progress:
                    on_progress(Progress(done, len(plan.tasks), record, dict(correct)))
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
    plan.segment.update({"ended": records.now(), "completed": done, "interrupted": interrupted,
                         "metrics_after": _scrape_all(ctx, modes),
                         "load": watch.window(float("-inf"), float("inf"), concurrency)})
    records.write_meta(out, plan.meta)
    abandoned = len(plan.tasks) - done - workers.todo.qsize() if interrupted else 0
    return BenchResult(out, plan.records, interrupted, max(0, abandoned))


def _tally(plan: Plan, modes: set[str]) -> dict[str, tuple[int, int]]:
    """(right, finished) per mode over the runs a folder holds that this plan does not run again."""
    again = {records.key(m.name, p.id, s) for p, s, m in plan.tasks}
    correct: dict[str, tuple[int, int]] = {}
    for k, record in plan.records.items():
        if record["mode"] in modes and k not in again:
            _count(correct, record)
    return correct


def _count(correct: dict[str, tuple[int, int]], record: Record) -> None:
    if record.get("error") is None:
        right, total = correct.get(record["mode"], (0, 0))
        correct[record["mode"]] = (right + bool(record["correct"]), total + 1)


def _record(task: Task, result: Any, wall: float, concurrency: int,
            load: dict[str, Any], spec_decoded: dict[str, float] | None = None) -> Record:
    """One run's record. ``spec_decoded``: the run's base server speculates, and these are its
    counters over the run (``metrics.SPEC_DECODE_METRICS``; the run's own at one run in flight)."""
    problem, sample, mode = task
    record: Record = {
        "key": records.key(mode.name, problem.id, sample), "mode": mode.name,
        "dataset": problem.dataset, "id": problem.id, "sample": sample, "gold": problem.answer,
        "wall_s": round(wall, 3), "concurrency": concurrency, "load": load,
        "finished_at": records.now(), **({"spec_decode": spec_decoded} if spec_decoded else {})}
    if isinstance(result, BaseException):
        return {**record, "error": f"{type(result).__name__}: {result}", "correct": None}
    trace = list(result.get("trace") or [])
    steps = result.get("steps") or []
    grade = grading.grade(problem, steps[-1] if steps else None)
    return {**record, "error": None, "correct": grade.correct, "predicted": grade.predicted,
            "answer": result.get("answer"), "stop_reason": result.get("stop_reason"),
            "summary": summarize(trace), "trace": trace}
