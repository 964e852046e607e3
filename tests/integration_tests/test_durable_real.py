"""A real reasoning run killed mid-way (SIGKILL, no clean-up) resumes from its SQLite checkpoint
on the real servers with the same thread id, keeping every step committed before the kill."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from langgraph.checkpoint.sqlite import SqliteSaver

from specreason_graph import build_graph
from specreason_graph.evaluation import datasets
from tests.processes import events_then_kill

WORKER = """
import json, sqlite3, sys
from langgraph.checkpoint.sqlite import SqliteSaver
from specreason_graph import build_graph
from specreason_graph.serving.config import load_config
db, problem = sys.argv[1], sys.argv[2]
settings = json.loads(sys.argv[3])
with sqlite3.connect(db, check_same_thread=False) as conn:
    graph = build_graph().compile(checkpointer=SqliteSaver(conn))
    ctx = load_config("cpu").context(**settings)
    config = {"configurable": {"thread_id": "killed"}}
    for event in graph.stream({"problem": problem}, config, context=ctx, stream_mode="custom"):
        print(json.dumps(event), flush=True)
"""


def test_killed_run_resumes_without_losing_a_step(local_servers, tmp_path):
    settings = {"seed": 0, "threshold": 0, "token_budget": 160, "max_step_tokens": 48}
    db = tmp_path / "runs.sqlite"
    problem = datasets.get("gsm8k", "0").question
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(db), problem, json.dumps(settings)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    seen = events_then_kill(worker, 2, 600)

    config = {"configurable": {"thread_id": "killed"}}
    with sqlite3.connect(db, check_same_thread=False) as conn:
        graph = build_graph().compile(checkpointer=SqliteSaver(conn))
        saved = graph.get_state(config).values
        kept_before = saved["steps"]
        assert kept_before, "nothing was checkpointed before the kill"
        assert saved.get("stop_reason") is None, "the run must have been cut short"

        final = graph.invoke(None, config, context=local_servers.context(**settings))

    assert final["stop_reason"] is not None
    # What the checkpoint held is kept as it was, and so is every step the killed run streamed
    # (a step streamed just before the kill was already decided: its commit re-runs on resume).
    assert final["steps"][: len(kept_before)] == kept_before
    assert final["steps"][: len(seen)] == [e["text"] for e in seen]
    assert [r["index"] for r in final["trace"]] == list(range(len(final["steps"])))
    assert len(final["steps"]) > len(kept_before)
