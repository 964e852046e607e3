"""The benchmark harness: every mode through the same graph, one JSON line per finished run.

    modes = [parse_mode("base"), parse_mode("small"), parse_mode("spec"),
             parse_mode("spec:t=5,score=expected")]
    run_bench(compile_graph(), datasets.select("gsm8k", limit=30), modes, ctx, Path("out"),
              concurrency=4)

Fairness: base-only (``first_n_base`` above any run's step count), small-only (``small_only``) and
SpecReason at any threshold / score method / first-N are the same graph with different Context
fields, so they share prompts, budget, sampling and servers. A mode may point the base model at
another server (``url=``): a vLLM launched with token-level speculative decoding gives the paper's
SpecDecode and SpecReason + SpecDecode rows.

The runs of all modes are interleaved (problem by problem) in one queue served by ``concurrency``
worker threads, so every mode sees the same load over the run; the timings are taken at that
concurrency and the results say so. Each finished run is graded in the main thread (math-verify's
signal timeouts work there) and appended to ``runs.jsonl`` at once, so an interrupted benchmark
(Ctrl-C, a crash) keeps every finished run and the same command resumes with the rest. Runs that
failed are recorded with their error and run again on resume.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import queue
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from specreason_graph import grading
from specreason_graph.context import Context
from specreason_graph.datasets import Problem
from specreason_graph.summary import summarize

ALL_STEPS_BY_BASE = 1_000_000
"""first_n_base for the base-only mode: above any run's step count, so the base writes every step."""

RUNS_FILE = "runs.jsonl"
META_FILE = "meta.json"


# --- modes ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mode:
    """One row of the comparison: which Context fields change for it."""

    name: str
    kind: Literal["base", "small", "spec"]
    threshold: float | None = None
    score_method: Literal["greedy", "expected"] | None = None
    first_n_base: int | None = None
    base_url: str | None = None
    """Another base server for this mode (e.g. one launched with speculative decoding)."""
    base_model: str | None = None

    def context(self, ctx: Context, **extra: Any) -> Context:
        change: dict[str, Any] = {"small_only": False, **extra}
        if self.kind == "base":
            change["first_n_base"] = ALL_STEPS_BY_BASE
        elif self.kind == "small":
            change["small_only"] = True
        else:
            for key in ("threshold", "score_method", "first_n_base"):
                if getattr(self, key) is not None:
                    change[key] = getattr(self, key)
        if self.base_url:
            change["base_url"] = self.base_url
        if self.base_model:
            change["base_model"] = self.base_model
        return dataclasses.replace(ctx, **change)

    def settings(self, ctx: Context) -> dict[str, Any]:
        """The Context fields of this mode that decide its behaviour (for the record)."""
        c = self.context(ctx)
        return {"kind": self.kind, "threshold": c.threshold, "score_method": c.score_method,
                "first_n_base": c.first_n_base, "small_only": c.small_only,
                "base_url": c.base_url, "base_model": c.base_model}


_KEYS = {"t": "threshold", "threshold": "threshold", "score": "score_method",
         "score_method": "score_method", "n": "first_n_base", "first_n": "first_n_base",
         "first_n_base": "first_n_base", "url": "base_url", "model": "base_model", "name": "name"}


def parse_mode(text: str) -> Mode:
    """``base`` | ``small`` | ``spec[:t=7,score=greedy,n=0]``, plus ``url=``/``model=`` (another
    base server) and ``name=`` (the row's label) on any of them."""
    kind, _, rest = text.strip().partition(":")
    if kind not in ("base", "small", "spec"):
        raise ValueError(f"unknown mode {text!r}: start with base, small or spec "
                         "(e.g. spec:t=5,score=expected)")
    fields: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _KEYS:
            raise ValueError(f"mode {text!r}: cannot read {item!r}; use "
                             "t=, score=, n=, url=, model=, name=")
        fields[_KEYS[key.strip()]] = value.strip()
    if kind != "spec" and set(fields) & {"threshold", "score_method", "first_n_base"}:
        raise ValueError(f"mode {text!r}: t=, score= and n= only apply to spec")
    try:
        threshold = float(fields["threshold"]) if "threshold" in fields else None
        first_n = int(fields["first_n_base"]) if "first_n_base" in fields else None
    except ValueError:
        raise ValueError(f"mode {text!r}: t= takes a number, n= a whole number") from None
    if threshold is not None and not 0 <= threshold <= 10:
        raise ValueError(f"mode {text!r}: the threshold must be from 0 to 10")
    if fields.get("score_method") not in (None, "greedy", "expected"):
        raise ValueError(f"mode {text!r}: score= is greedy or expected")
    name = fields.get("name") or _default_name(kind, threshold, fields.get("score_method"),
                                               first_n, fields.get("base_url"))
    return Mode(name, kind, threshold, fields.get("score_method"), first_n,  # type: ignore[arg-type]
                fields.get("base_url"), fields.get("base_model"))


def _default_name(kind: str, threshold: float | None, score: str | None, first_n: int | None,
                  url: str | None) -> str:
    if kind != "spec":
        name = f"{kind}-only"
    else:
        parts = ["specreason"]
        if threshold is not None:
            parts.append(f"t={threshold:g}")
        if score:
            parts.append(score)
        if first_n:
            parts.append(f"n={first_n}")
        name = " ".join(parts)
    return f"{name} @{url}" if url else name


# --- the server's counters -----------------------------------------------------------------------

PREFIX_COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)$")


def scrape(base_url: str, names: Sequence[str] = PREFIX_COUNTERS,
           timeout: float = 10.0) -> dict[str, float] | None:
    """Counters from a vLLM server's Prometheus ``/metrics`` (summed over labels); None if the
    server does not answer or is not a vLLM server."""
    origin = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{origin}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1) in totals:
            totals[match.group(1)] += float(match.group(3))
    return totals


# --- records -------------------------------------------------------------------------------------

def key(mode: str, problem_id: str, sample: int) -> str:
    return f"{mode}|{problem_id}|{sample}"


def load_records(out: Path) -> dict[str, dict[str, Any]]:
    """The last record of every (mode, problem, sample) in ``out/runs.jsonl``; a torn last line
    (the process was killed while writing) is skipped."""
    path = Path(out) / RUNS_FILE
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "key" in record:
            records[record["key"]] = record
    return records


def _meta_settings(problems: Sequence[Problem], modes: Sequence[Mode], ctx: Context,
                   samples: int) -> dict[str, Any]:
    settings = {f.name: getattr(ctx, f.name) for f in dataclasses.fields(Context)
                if f.name not in ("api_key", "threshold", "score_method", "first_n_base",
                                  "small_only", "request_timeout")}
    return {"dataset": sorted({p.dataset for p in problems}), "context": settings,
            "samples": samples, "modes": {m.name: m.settings(ctx) for m in modes}}


def _check_resumable(meta: dict[str, Any], settings: dict[str, Any], out: Path) -> None:
    old = meta.get("settings", {})
    differ = [k for k in ("dataset", "context", "samples") if old.get(k) != settings[k]]
    clash = [name for name, s in settings["modes"].items()
             if name in old.get("modes", {}) and old["modes"][name] != s]
    if differ or clash:
        detail = ", ".join(differ + [f"mode {n!r}" for n in clash])
        raise ValueError(f"{out} holds results made with other settings ({detail}); "
                         "give another --out, or the same settings to resume")


# --- the run -------------------------------------------------------------------------------------

@dataclass
class Progress:
    """What the runner reports after each finished run (for a progress bar)."""

    done: int
    total: int
    record: dict[str, Any]
    correct_by_mode: dict[str, tuple[int, int]]


@dataclass
class BenchResult:
    out: Path
    records: dict[str, dict[str, Any]]
    interrupted: bool
    abandoned: int
    """Runs still in flight when the benchmark was interrupted (not recorded; run on resume)."""


Task = tuple[Problem, int, Mode]


def run_bench(graph: Any, problems: Sequence[Problem], modes: Sequence[Mode], ctx: Context,
              out: Path, *, samples: int = 1, concurrency: int = 1, seed: int | None = None,
              on_progress: Callable[[Progress], None] | None = None,
              stop: threading.Event | None = None) -> BenchResult:
    """Run every (problem, sample, mode) not yet in ``out/runs.jsonl``; see the module docstring.

    ``seed``: sample k of a problem sends seed + k with every step request (None: no seed).
    ``stop``: set it to stop taking new runs (what Ctrl-C does), as KeyboardInterrupt would.
    """
    if not problems:
        raise ValueError("no problems to run: check --limit / --ids")
    if not modes:
        raise ValueError("no modes to run")
    names = [m.name for m in modes]
    if len(set(names)) != len(names):
        raise ValueError(f"two modes share a name: {names}; tell them apart with name=")
    if samples < 1 or concurrency < 1:
        raise ValueError("samples and concurrency must be at least 1")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = _meta_settings(problems, modes, ctx, samples)
    meta_path = out / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta:
        _check_resumable(meta, settings, out)
        settings["modes"] = {**meta["settings"]["modes"], **settings["modes"]}
    meta = {"settings": settings, "machine": meta.get("machine") or _machine(),
            "segments": meta.get("segments", [])}

    records = load_records(out)
    tasks: list[Task] = [(p, s, m) for p in problems for s in range(samples) for m in modes
                         if records.get(key(m.name, p.id, s), {}).get("error", "x") is not None]
    segment: dict[str, Any] = {
        "started": _now(), "concurrency": concurrency, "seed": seed, "runs": len(tasks),
        "problems": [p.id for p in problems], "modes": names,
        "metrics_before": _scrape_all(ctx, modes)}
    meta["segments"].append(segment)
    _write_meta(meta_path, meta)

    stop = stop or threading.Event()
    todo: queue.Queue[Task] = queue.Queue()
    for task in tasks:
        todo.put(task)
    finished: queue.Queue[tuple[Task, Any, float]] = queue.Queue()

    def worker() -> None:
        while not stop.is_set():
            try:
                task = todo.get_nowait()
            except queue.Empty:
                return
            problem, sample, mode = task
            run_ctx = mode.context(ctx, prompt=problem.prompt,
                                   seed=None if seed is None else seed + sample)
            started = time.perf_counter()
            try:
                result: Any = graph.invoke(
                    {"problem": problem.question}, context=run_ctx,
                    config={"run_name": f"bench {mode.name}",
                            "tags": ["bench", mode.name, f"{problem.dataset}:{problem.id}"]})
            except Exception as exc:  # recorded as a failed run; the others go on
                result = exc
            finished.put((task, result, time.perf_counter() - started))

    threads = [threading.Thread(target=worker, daemon=True, name=f"bench-{i}")
               for i in range(min(concurrency, len(tasks)))]
    for thread in threads:
        thread.start()

    correct: dict[str, tuple[int, int]] = {}
    for r in records.values():
        if r.get("error") is None and r["mode"] in names:
            right, total = correct.get(r["mode"], (0, 0))
            correct[r["mode"]] = (right + bool(r["correct"]), total + 1)
    done, interrupted = 0, False
    runs_path = out / RUNS_FILE
    if runs_path.exists() and runs_path.stat().st_size:
        with runs_path.open("rb") as tail:  # a torn last line (killed mid-write): end it
            tail.seek(-1, 2)
            torn = tail.read(1) != b"\n"
        if torn:
            with runs_path.open("a", encoding="utf-8") as sink:
                sink.write("\n")
    with runs_path.open("a", encoding="utf-8") as sink:
        try:
            while done < len(tasks):
                if stop.is_set():
                    raise KeyboardInterrupt
                try:
                    task, result, wall = finished.get(timeout=0.25)
                except queue.Empty:
                    if not any(t.is_alive() for t in threads) and finished.empty():
                        break
                    continue
                record = _record(task, result, wall, concurrency)
                sink.write(json.dumps(record, default=str) + "\n")
                sink.flush()
                records[record["key"]] = record
                done += 1
                if record["error"] is None:
                    right, total = correct.get(record["mode"], (0, 0))
                    correct[record["mode"]] = (right + bool(record["correct"]), total + 1)
                if on_progress:
                    on_progress(Progress(done, len(tasks), record, dict(correct)))
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
    segment.update({"ended": _now(), "completed": done, "interrupted": interrupted,
                    "metrics_after": _scrape_all(ctx, modes)})
    _write_meta(meta_path, meta)
    abandoned = len(tasks) - done - todo.qsize() if interrupted else 0
    return BenchResult(out, records, interrupted, max(0, abandoned))


def _record(task: Task, result: Any, wall: float, concurrency: int) -> dict[str, Any]:
    problem, sample, mode = task
    record: dict[str, Any] = {
        "key": key(mode.name, problem.id, sample), "mode": mode.name, "dataset": problem.dataset,
        "id": problem.id, "sample": sample, "gold": problem.answer, "wall_s": round(wall, 3),
        "concurrency": concurrency, "finished_at": _now()}
    if isinstance(result, BaseException):
        return {**record, "error": f"{type(result).__name__}: {result}", "correct": None}
    trace = list(result.get("trace") or [])
    steps = result.get("steps") or []
    grade = grading.grade(problem, steps[-1] if steps else None)
    return {**record, "error": None, "correct": grade.correct, "predicted": grade.predicted,
            "answer": result.get("answer"), "stop_reason": result.get("stop_reason"),
            "summary": summarize(trace), "trace": trace}


def _scrape_all(ctx: Context, modes: Sequence[Mode]) -> dict[str, dict[str, float] | None]:
    urls = {ctx.small_url, ctx.base_url} | {m.base_url for m in modes if m.base_url}
    return {url: scrape(url) for url in sorted(urls)}


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def _machine() -> dict[str, Any]:
    import os

    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "memory_gib": memory,
            "platform": platform.platform(), "python": platform.python_version()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
