"""benchmarks/overhead.py in its quick mode: it runs the graph and the plain loop against its
stand-in server (a process of its own, hence this tier) and writes a table of the right shape
(timings are not asserted: they are the machine's)."""

from __future__ import annotations

import json

import pytest

from benchmarks import overhead, stand_in


def test_quick_run_writes_one_row_per_path_checkpointer_and_level(tmp_path, capsys):
    result = overhead.main(["--quick", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [(r["concurrency"], r["path"], r["checkpointer"]) for r in rows] == [
        (n, p, c) for n in (1, 2) for p in ("sync", "async") for c in ("none", "memory", "sqlite")]
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
    assert table[0].startswith("| path | checkpointer | in flight |")
    assert "| async | sqlite | 2 | 2 | 4 |" in "\n".join(table)
    assert "| path | checkpointer | in flight |" in capsys.readouterr().out
    assert set(result["conditions"]) == {"load_before", "load_after", "vllm_servers_running"}


def test_with_a_latency_each_row_is_set_against_the_ideal(tmp_path):
    """Every run in flight: 4 runs of 2 steps, 2 calls a step, 0.05 s a reply: ideal 0.2 s."""
    result = overhead.main(["--latency", "0.05", "--runs", "4", "--steps", "2", "--levels", "4",
                            "--repeats", "1", "--checkpointers", "none", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [(r["path"], r["checkpointer"]) for r in rows] == [("sync", "none"), ("async", "none")]
    for row in rows:
        assert row["ideal_s"] == pytest.approx(0.2)
        assert row["graph_s"] >= row["ideal_s"] and row["plain_s"] >= row["ideal_s"]
        assert row["graph_vs_ideal"] == pytest.approx(row["graph_s"] / row["ideal_s"])
    md = (tmp_path / "overhead.md").read_text()
    assert "answering after 0.05 s" in md and "| graph / ideal |" in md


def test_postgres_needs_a_database(capsys):
    with pytest.raises(SystemExit):
        overhead.main(["--quick", "--checkpointers", "postgres"])
    assert "needs --postgres DSN" in capsys.readouterr().err


def test_the_stand_in_answers_a_step_and_a_judge_call():
    step, judge = stand_in.step_reply(3), stand_in.judge_reply()
    assert step["choices"][0]["message"]["content"].endswith(stand_in.DELIMITER)
    assert len(step["choices"][0]["logprobs"]["content"]) == step["usage"]["completion_tokens"]
    top = judge["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert judge["choices"][0]["message"]["content"] == "9" and len(top) == 10
