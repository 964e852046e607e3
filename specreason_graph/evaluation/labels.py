"""Step labels for calibrating judges, by rollouts (Math-Shepherd, Wang et al., 2024).

A calibration run keeps every draft (threshold 0) and asks every judge about it, so its trace holds
each draft and every judge's score. For each prefix of kept steps (none, the first, the first two,
...) the small model finishes the solution ``k`` times in one request (vLLM batches them), and each
finish is graded against the gold answer: ``reach[i]`` is the share of finishes from the first ``i``
steps that reach it. Draft ``i`` (0-based) is then judged by what it did to that share:

- ``rollout`` = 0 (bad) when no finish after it reaches the gold answer (``reach[i + 1] == 0``)
  although finishes from the prefix alone still could (``reach[i] > 0``);
- ``rollout`` = 1 (good) when some finish after it reaches the gold answer;
- ``rollout`` = None (no label) when neither the prefix nor the draft leads anywhere: the step is
  not blamed for a problem the model could not solve anyway.

The share after the last kept step of a run that answered is the grade of that answer. Beside the
rollout label every row keeps two more: ``arithmetic`` (False when the draft states a false
equation, True when its equations hold, None without one) and ``problem`` (the run's final answer
was right — the weak label the old calibration used).

Rollouts are appended to ``OUT/rollouts.jsonl`` as they finish, so an interrupted labelling resumes;
the labelled set is ``OUT/labels.jsonl``, one row per draft with every judge's score, so any judge
can be re-scored offline.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specreason_graph import prompts, rules
from specreason_graph.context import Context
from specreason_graph.evaluation import grading
from specreason_graph.evaluation.datasets import Problem
from specreason_graph.evaluation.records import Record, RunsFile
from specreason_graph.judges.arithmetic import check_step
from specreason_graph.models import Models, finish

ROLLOUTS_FILE = "rollouts.jsonl"
LABELS_FILE = "labels.jsonl"


@dataclass(frozen=True)
class Prefix:
    """The first ``len(steps)`` kept steps of one calibration run."""

    problem: Problem
    run: str
    """The run's record key."""
    steps: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.run}|{len(self.steps)}"


def prefixes(runs: Iterable[Record], problems: dict[str, Problem]) -> list[Prefix]:
    """Every prefix whose finishes a label needs: all but the full trace of a run that answered
    (its last share is its grade)."""
    found = []
    for run in runs:
        if run.get("error") is not None:
            continue
        steps = tuple(step["text"] for step in run["trace"])
        last = len(steps) if run.get("answer") is not None else len(steps) + 1
        found += [Prefix(problems[run["id"]], run["key"], steps[:i]) for i in range(last)]
    return found


def roll_out(models: Models, ctx: Context, prefix: Prefix, k: int,
             max_tokens: int | None = None) -> list[str]:
    """``k`` finishes of the solution from ``prefix`` by the small model (the run's sampling; up to
    ``max_tokens`` new tokens, the token budget by default)."""
    messages, continue_final = prompts.step_messages(
        prompts.render_problem(prefix.problem.prompt, prefix.problem.question, ctx.prompt_set),
        list(prefix.steps),
        ctx.thinking_opener or "", ctx.step_delimiter)
    return finish(models.chat("small", ctx), messages, n=k, continue_final=continue_final,
                  max_tokens=max_tokens or ctx.token_budget, temperature=ctx.temperature,
                  top_p=ctx.top_p)


def load_rollouts(out: Path) -> dict[str, Record]:
    path = Path(out) / ROLLOUTS_FILE
    found: dict[str, Record] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line
            found[row["key"]] = row
    return found


def run_rollouts(models: Models, ctx: Context, todo: Sequence[Prefix], out: Path, *, k: int,
                 concurrency: int = 4, max_tokens: int | None = None,
                 on_done: Callable[[int, int], None] | None = None) -> dict[str, Record]:
    """Roll out every prefix not yet in ``OUT/rollouts.jsonl`` on ``concurrency`` threads; grade in
    this (the main) thread and append each prefix's finishes as soon as they are graded."""
    done = load_rollouts(out)
    left = [p for p in todo if p.key not in done or len(done[p.key]["reached"]) < k]
    work: queue.Queue[Prefix] = queue.Queue()
    for prefix in left:
        work.put(prefix)
    results: queue.Queue[tuple[Prefix, list[str] | Exception]] = queue.Queue()

    def worker() -> None:
        while True:
            try:
                prefix = work.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((prefix, roll_out(models, ctx, prefix, k, max_tokens)))
            except Exception as exc:  # recorded as missing; the others go on
                results.put((prefix, exc))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(concurrency, len(left)))]
    for thread in threads:
        thread.start()
    with RunsFile(out, ROLLOUTS_FILE) as sink:
        for n in range(len(left)):
            prefix, texts = results.get()
            if isinstance(texts, Exception):
                continue
            joined = [prompts.thinking("", list(prefix.steps), ctx.step_delimiter) + text
                      for text in texts]
            row = {"key": prefix.key, "run": prefix.run, "id": prefix.problem.id,
                   "prefix_steps": len(prefix.steps),
                   "reached": [grading.grade(prefix.problem, text).correct for text in joined]}
            sink.append(row)
            done[prefix.key] = row
            if on_done:
                on_done(n + 1, len(left))
    return done


def label(runs: Iterable[Record], rollouts: dict[str, Record]) -> list[Record]:
    """One row per judged draft: its labels, every judge's score and cost (see the module doc)."""
    rows = []
    for run in runs:
        if run.get("error") is not None:
            continue
        trace = run["trace"]
        reach: list[float | None] = []
        for i in range(len(trace) + 1):
            row = rollouts.get(f"{run['key']}|{i}")
            if row is not None:
                reach.append(sum(row["reached"]) / len(row["reached"]))
            elif i == len(trace) and run.get("answer") is not None:
                reach.append(1.0 if run["correct"] else 0.0)
            else:
                reach.append(None)
        for i, step in enumerate(trace):
            if step["draft"] is None or not step.get("judges"):
                continue
            before, after = reach[i], reach[i + 1]
            rollout = None
            if before is not None and after is not None:
                rollout = 1 if after > 0 else (0 if before > 0 else None)
            rows.append({
                "run": run["key"], "id": run["id"], "index": i, "draft": step["draft"],
                "labels": {"rollout": rollout, "reach_before": before, "reach_after": after,
                           "arithmetic": check_step(step["draft"]).verdict,
                           "problem": bool(run["correct"])},
                "signals": signals(step),
                "costs": {name: {"ms": j["ms"], "prompt_tokens": j["prompt_tokens"],
                                 "cached_tokens": j["cached_tokens"]}
                          for name, j in step["judges"].items()},
                "draft_ms": step["draft_ms"], "draft_tokens": step["draft_tokens"]})
    return rows


def signals(step: Record) -> dict[str, float | None]:
    """Every score a recorded step allows on the 0–9 scale, recomputed from what the judges read:
    the paper's digit both ways, P(Yes), and mean / min token probability of both logprob judges
    (None where the judge did not run or failed)."""
    judges: dict[str, Any] = step.get("judges") or {}
    found: dict[str, float | None] = {}
    score = judges.get("score")
    if score and not score["error"]:
        alternatives = [tuple(a) for a in score["reads"].get("alternatives", [])]
        found["score:greedy"] = rules.greedy_score(score["reads"].get("token"))
        found["score:expected"] = rules.expected_score(alternatives)  # type: ignore[arg-type]
    yes_no = judges.get("yes_no")
    if yes_no and not yes_no["error"]:
        found["yes_no"] = yes_no["score"]
    for name in ("confidence", "likelihood"):
        j = judges.get(name)
        if j and not j["error"]:
            found[f"{name}:mean"] = j["score"]
            found[f"{name}:min"] = rules.probability_score([j["reads"]["min_logprob"]])
    check = judges.get("check")
    if check and not check["error"]:
        found["check"] = check["score"]
    return found


def write(out: Path, rows: Sequence[Record]) -> Path:
    path = Path(out) / LABELS_FILE
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
