"""benchmarks/overhead.py in its quick mode: it runs the graph and the plain loop against its
stand-in server and writes a table of the right shape (timings are not asserted: they are the
machine's)."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks import overhead


@pytest.fixture(autouse=True)
def _no_specreason_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SPECREASON_"):
            monkeypatch.delenv(name)


def test_quick_run_writes_one_row_per_checkpointer_and_level(tmp_path, capsys):
    result = overhead.main(["--quick", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [(r["checkpointer"], r["concurrency"]) for r in rows] == [
        (c, n) for n in (1, 2) for c in ("none", "memory", "sqlite")]
    for row in rows:
        assert row["steps"] == 2 * 2 and row["calls_per_step"] == 2
        assert row["plain_ms_per_step"] > 0 and row["graph_ms_per_step"] > 0
        assert row["added_ms_per_step"] == pytest.approx(
            row["graph_ms_per_step"] - row["plain_ms_per_step"])
        assert row["within_target"] == (row["added_ms_per_step"] <= overhead.TARGET_MS)
    assert json.loads((tmp_path / "overhead.json").read_text())["rows"] == rows
    table = [line for line in (tmp_path / "overhead.md").read_text().splitlines()
             if line.startswith("|")]
    assert len(table) == 2 + len(rows)
    assert all(line.count("|") == len(overhead.COLUMNS) + 1 for line in table)
    assert table[0].startswith("| checkpointer | in flight |")
    assert "| sqlite | 2 | 2 | 4 |" in "\n".join(table)
    assert "| checkpointer | in flight |" in capsys.readouterr().out


def test_the_stand_in_answers_a_step_and_a_judge_call():
    step, judge = overhead._step_reply(3), overhead._judge_reply()
    assert step["choices"][0]["message"]["content"].endswith(overhead.DELIMITER)
    assert len(step["choices"][0]["logprobs"]["content"]) == step["usage"]["completion_tokens"]
    top = judge["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert judge["choices"][0]["message"]["content"] == "9" and len(top) == 10
