"""specreason_graph.evaluation.datasets: the offline loaders, their ids and golds, and the GPQA shuffle.

GPQA questions stay out of plain text: the raw rows are decrypted in memory only, and every
assertion names problems by id or compares digests, so a failure never prints a question.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import pytest

from specreason_graph.evaluation import datasets
from specreason_graph.resources import resource_dir

ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30, "gpqa": 198}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _fingerprint(problems) -> list[tuple[str, str, str, str]]:
    return [(p.dataset, p.id, _digest(p.question), p.answer) for p in problems]


@pytest.fixture(scope="module")
def gpqa_rows() -> dict[str, dict]:
    """The raw GPQA rows by Record ID, decrypted in memory."""
    with zipfile.ZipFile(resource_dir("data") / "gpqa_diamond.zip") as archive:
        raw = archive.read("gpqa_diamond.jsonl", pwd=datasets.GPQA_PASSWORD).decode("utf-8")
    rows = [json.loads(line) for line in raw.split("\n") if line.strip()]
    return {row["Record ID"]: row for row in rows}


# --- every dataset ------------------------------------------------------------------------------

def test_datasets_constant_lists_every_loader():
    assert set(datasets.DATASETS) == set(COUNTS)


@pytest.mark.parametrize(("dataset", "count"), COUNTS.items())
def test_counts(dataset, count):
    assert len(datasets.load(dataset)) == count


@pytest.mark.parametrize("dataset", COUNTS)
def test_ids_unique_and_problems_well_formed(dataset):
    problems = datasets.load(dataset)
    ids = [p.id for p in problems]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and i for i in ids)
    assert all(p.dataset == dataset for p in problems)
    assert [p.id for p in problems if not p.question.strip() or not p.answer.strip()] == []
    expected_prompt = "multiple_choice" if dataset == "gpqa" else "math"
    assert {p.prompt for p in problems} == {expected_prompt}


@pytest.mark.parametrize("dataset", COUNTS)
def test_load_is_cached_and_immutable(dataset):
    assert datasets.load(dataset) is datasets.load(dataset)
    assert isinstance(datasets.load(dataset), tuple)


@pytest.mark.parametrize("dataset", COUNTS)
def test_get_finds_every_problem(dataset):
    problems = datasets.load(dataset)
    for problem in (problems[0], problems[len(problems) // 2], problems[-1]):
        assert datasets.get(dataset, problem.id) is problem


def test_get_accepts_an_int_id_for_gsm8k():
    assert datasets.get("gsm8k", 0) is datasets.load("gsm8k")[0]  # type: ignore[arg-type]


@pytest.mark.parametrize("dataset", COUNTS)
def test_get_unknown_id_raises_key_error_listing_example_ids(dataset):
    with pytest.raises(KeyError) as caught:
        datasets.get(dataset, "no-such-id")
    message = str(caught.value)
    assert "no-such-id" in message and dataset in message
    assert all(p.id in message for p in datasets.load(dataset)[:3])


@pytest.mark.parametrize("call", [lambda: datasets.load("gsm9k"), lambda: datasets.get("gsm9k", "0"),
                                  lambda: datasets.load("GSM8K")])
def test_unknown_dataset_raises_value_error(call):
    with pytest.raises(ValueError, match="unknown dataset") as caught:
        call()
    assert all(name in str(caught.value) for name in datasets.DATASETS)


# --- the math datasets ---------------------------------------------------------------------------

def test_gsm8k_golds_are_plain_numbers():
    problems = datasets.load("gsm8k")
    assert [p.id for p in problems if "," in p.answer] == []
    assert [p.id for p in problems if not re.fullmatch(r"-?\d+(\.\d+)?", p.answer)] == []
    for p in problems:
        float(p.answer)


def test_gsm8k_ids_are_line_numbers_and_golds_come_from_after_the_hashes():
    problems = datasets.load("gsm8k")
    assert [p.id for p in problems] == [str(i) for i in range(len(problems))]
    assert problems[0].answer == "18"
    lines = (ROOT / "data" / "gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines()
    with_commas = [i for i, line in enumerate(lines) if "," in json.loads(line)["answer"].split("####")[-1]]
    assert with_commas, "expected some GSM8K golds written with thousands commas"
    for i in with_commas:
        assert problems[i].answer == json.loads(lines[i])["answer"].split("####")[-1].strip().replace(",", "")


@pytest.mark.parametrize(("dataset", "first", "last"), [("aime24", 60, 89), ("aime25", 90, 119)])
def test_aime_ids_and_integer_golds(dataset, first, last):
    problems = datasets.load(dataset)
    assert [p.id for p in problems] == [str(i) for i in range(first, last + 1)]
    assert [p.id for p in problems if not (p.answer.isdigit() and 0 <= int(p.answer) <= 999)] == []


def test_aime24_keeps_leading_zeros_in_golds():
    assert any(p.answer.startswith("0") for p in datasets.load("aime24"))


def test_math500_ids_look_like_paths():
    assert all(re.fullmatch(r"test/[a-z_]+/\d+\.json", p.id) for p in datasets.load("math500"))


# --- GPQA -------------------------------------------------------------------------------------------

def test_gpqa_zip_holds_only_the_encrypted_jsonl():
    with zipfile.ZipFile(resource_dir("data") / "gpqa_diamond.zip") as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == ["gpqa_diamond.jsonl"]
    assert all(info.flag_bits & 0x1 for info in infos), "the GPQA file must stay encrypted"


def test_gpqa_is_not_unzipped_in_the_repository():
    stray = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "node_modules"]
        stray += [os.path.join(folder, f) for f in files if f.lower().startswith("gpqa")
                  and f.lower().endswith((".jsonl", ".csv", ".json", ".parquet"))]
    assert stray == []


def test_gpqa_ids_are_the_record_ids_in_file_order(gpqa_rows):
    assert [p.id for p in datasets.load("gpqa")] == list(gpqa_rows)


def test_gpqa_shuffle_is_deterministic():
    first = _fingerprint(datasets.load("gpqa"))
    datasets.load.cache_clear()
    second = _fingerprint(datasets.load("gpqa"))
    assert first == second


def test_gpqa_gold_letter_in_every_position_roughly_balanced():
    counts = collections.Counter(p.answer for p in datasets.load("gpqa"))
    assert set(counts) == set("ABCD")
    assert min(counts.values()) >= 30, dict(counts)


def _option_block(problem, row) -> list[tuple[str, str]] | None:
    """The (letter, text) options after the question's stem, or None if the layout is not stem + options."""
    stem = row["Question"].strip() + "\n\n"
    if not problem.question.startswith(stem):
        return None
    parts = re.split(r"\n(?=\([BCD]\) )", problem.question[len(stem):])
    options = []
    for part in parts:
        match = re.fullmatch(r"\(([A-D])\) (.*)", part, re.S)
        if not match:
            return None
        options.append((match.group(1), match.group(2)))
    return options


def test_gpqa_question_lists_the_four_options_once_each_under_letters_a_to_d(gpqa_rows):
    bad_layout, bad_options, bad_gold = [], [], []
    for problem in datasets.load("gpqa"):
        row = gpqa_rows[problem.id]
        options = _option_block(problem, row)
        if options is None or [letter for letter, _ in options] != list("ABCD"):
            bad_layout.append(problem.id)
            continue
        originals = [row[key].strip() for key in
                     ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")]
        if sorted(_digest(text) for _, text in options) != sorted(_digest(text) for text in originals):
            bad_options.append(problem.id)
        if dict(options)[problem.answer] != row["Correct Answer"].strip():
            bad_gold.append(problem.id)
    assert bad_layout == []
    assert bad_options == []
    assert bad_gold == []


def test_gpqa_correct_answer_appears_once_as_an_option(gpqa_rows):
    """The right option's labelled line occurs exactly once, so exactly one letter is right."""
    ambiguous = []
    for problem in datasets.load("gpqa"):
        correct = gpqa_rows[problem.id]["Correct Answer"].strip()
        labelled = sum(problem.question.count(f"({letter}) {correct}\n") + problem.question.endswith(
            f"({letter}) {correct}") for letter in "ABCD")
        incorrect = {gpqa_rows[problem.id][f"Incorrect Answer {i}"].strip() for i in (1, 2, 3)}
        if labelled != 1 or correct in incorrect:
            ambiguous.append(problem.id)
    assert ambiguous == []


def test_gpqa_question_does_not_carry_the_canary(gpqa_rows):
    carrying = [p.id for p in datasets.load("gpqa")
                if gpqa_rows[p.id]["Canary String"].strip() in p.question or "canary" in p.question.lower()]
    assert carrying == []


def test_gpqa_answer_is_not_always_the_first_option():
    letters = [p.answer for p in datasets.load("gpqa")]
    assert letters.count("A") < len(letters) / 2
