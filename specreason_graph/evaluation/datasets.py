"""Benchmark problems from the offline copies in ``data/`` (see data/README.md for sources and licences).

GPQA-Diamond stays in its password-protected zip, as its authors ask: it is decrypted in memory only
and never written out. Its four options are shuffled per question with a fixed seed (the original
SpecReason prompt always listed the right answer first).
"""

from __future__ import annotations

import json
import random
import zipfile
from dataclasses import dataclass
from functools import cache
from typing import Literal

from specreason_graph.resources import resource_dir

DATASETS = ("gsm8k", "math500", "aime24", "aime25", "gpqa")
GPQA_PASSWORD = b"deserted-untie-orchid"  # public; published by the GPQA authors
GPQA_SEED = 20250410


@dataclass(frozen=True)
class Problem:
    dataset: str
    id: str
    question: str
    """The text given to the graph (GPQA: question and the four lettered options)."""
    answer: str
    """Gold answer: a number/expression, or a letter for GPQA."""
    prompt: Literal["math", "multiple_choice"] = "math"
    level: int | None = None
    """Difficulty level where the dataset gives one (MATH500: 1-5)."""


def _jsonl(name: str) -> list[dict]:
    path = resource_dir("data") / name
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@cache
def load(dataset: str) -> tuple[Problem, ...]:
    """All problems of ``dataset``, in file order, with stable ids."""
    if dataset == "gsm8k":
        return tuple(Problem("gsm8k", str(i), row["question"],
                             row["answer"].split("####")[-1].strip().replace(",", ""))
                     for i, row in enumerate(_jsonl("gsm8k_test.jsonl")))
    if dataset == "math500":
        return tuple(Problem("math500", row["unique_id"], row["problem"], row["answer"],
                             level=int(row["level"])) for row in _jsonl("math500_test.jsonl"))
    if dataset in ("aime24", "aime25"):
        return tuple(Problem(dataset, str(row["id"]), row["problem"], str(row["answer"]))
                     for row in _jsonl(f"{dataset}.jsonl"))
    if dataset == "gpqa":
        return tuple(_gpqa())
    raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


def _gpqa() -> list[Problem]:
    with zipfile.ZipFile(resource_dir("data") / "gpqa_diamond.zip") as archive:
        raw = archive.read("gpqa_diamond.jsonl", pwd=GPQA_PASSWORD).decode("utf-8")
    problems = []
    for row in (json.loads(line) for line in raw.split("\n") if line.strip()):
        options = [row["Correct Answer"], row["Incorrect Answer 1"], row["Incorrect Answer 2"],
                   row["Incorrect Answer 3"]]
        order = list(range(4))
        random.Random(f"{GPQA_SEED}:{row['Record ID']}").shuffle(order)
        letters = "ABCD"
        lines = [f"({letters[pos]}) {options[i].strip()}" for pos, i in enumerate(order)]
        question = row["Question"].strip() + "\n\n" + "\n".join(lines)
        problems.append(Problem("gpqa", row["Record ID"], question, letters[order.index(0)],
                                prompt="multiple_choice"))
    return problems


def get(dataset: str, problem_id: str) -> Problem:
    """One problem by id (GSM8K: its 0-based line number)."""
    for problem in load(dataset):
        if problem.id == str(problem_id):
            return problem
    sample = ", ".join(p.id for p in load(dataset)[:3])
    raise KeyError(f"{dataset} has no problem with id {problem_id!r} (ids look like: {sample}, ...)")


def select(dataset: str, *, limit: int | None = None, ids: str | None = None,
           offset: int = 0, levels: str | None = None) -> list[Problem]:
    """A slice of ``dataset``: the problems named in ``ids`` (comma-separated, ``a-b`` ranges of
    GSM8K/AIME's numeric ids allowed), else ``limit`` problems from position ``offset``, in file order.
    ``levels`` ("1,2" or "1-2", MATH500) keeps only problems of those difficulty levels first."""
    problems = load(dataset)
    if levels:
        if ids:
            raise ValueError("give --ids or --levels, not both")
        wanted = _levels(levels)
        if all(p.level is None for p in problems):
            raise ValueError(f"{dataset} has no difficulty levels; --levels is for math500")
        problems = tuple(p for p in problems if p.level in wanted)
        if not problems:
            raise ValueError(f"{dataset} has no problems at --levels {levels}")
    if ids:
        chosen: list[Problem] = []
        for part in (p.strip() for p in ids.split(",")):
            if not part:
                continue
            first, dash, last = part.partition("-")
            if dash and first.isdigit() and last.isdigit():
                if int(last) < int(first):
                    raise ValueError(f"--ids range {part!r} runs backwards")
                chosen += [get(dataset, str(i)) for i in range(int(first), int(last) + 1)]
            else:
                chosen.append(get(dataset, part))
        twice = sorted({p.id for p in chosen if sum(q.id == p.id for q in chosen) > 1})
        if twice:
            raise ValueError(f"--ids names {', '.join(twice)} more than once")
        problems = tuple(chosen)
    else:
        if offset < 0 or offset >= len(problems):
            raise ValueError(f"--offset {offset} is outside {dataset}'s {len(problems)} problems"
                             + (f" at --levels {levels}" if levels else ""))
        problems = problems[offset:]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        problems = problems[:limit]
    return list(problems)


def _levels(text: str) -> set[int]:
    wanted: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        first, dash, last = part.partition("-")
        try:
            wanted |= set(range(int(first), int(last) + 1)) if dash else {int(part)}
        except ValueError:
            raise ValueError(f"--levels takes numbers and ranges like 1,2 or 1-2, got {text!r}") from None
    return wanted
