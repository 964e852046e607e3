"""The parts of the command line and the data that only show across processes: a bench stopped
by SIGTERM from outside, the results folder's lock held by another process, the GPQA shuffle
under another hash seed. Each starts a Python process of the graph's environment (no vLLM)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from specreason_graph import cli
from specreason_graph.evaluation import datasets
from specreason_graph.evaluation.records import META_FILE, RUNS_FILE, locked
from tests.vllm_stub import VLLMStub

ROOT = Path(__file__).resolve().parents[2]
GPQA_QUESTIONS = 198


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NOWHERE = f"http://127.0.0.1:{_closed_port()}/v1"
"""Nothing listens here."""


def test_sigterm_stops_a_bench_as_ctrl_c_does_and_the_segment_is_closed(tmp_path):
    """``kill`` on a nohup'd bench: exit 130, the finished runs kept, the segment has an end."""
    out = tmp_path / "bench"
    with VLLMStub(delay=0.3) as stub:
        argv = [sys.executable, "-m", "specreason_graph.cli", "bench", "--dataset", "gsm8k",
                "--limit", "20", "--modes", "base", "--out", str(out), "--no-serve",
                "--base-url", stub.url, "--small-url", stub.url,
                "--base-model", stub.model, "--small-model", stub.model]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=os.getcwd())
        try:
            deadline = time.monotonic() + 60
            while not ((out / RUNS_FILE).exists() and (out / RUNS_FILE).read_text().strip()):
                assert child.poll() is None, child.communicate()[1][-2000:]
                assert time.monotonic() < deadline, "no run finished in 60 s"
                time.sleep(0.1)
            child.send_signal(signal.SIGTERM)
            _, err = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert child.returncode == 130, err[-2000:]
    assert "Interrupted: finished runs are in" in err
    kept = (out / RUNS_FILE).read_text().splitlines()
    assert 1 <= len(kept) < 20
    segment = json.loads((out / META_FILE).read_text())["segments"][-1]
    assert segment["interrupted"] is True and segment["ended"]
    assert segment["completed"] == len(kept)


def test_the_lock_is_held_by_another_process_too(capsys, tmp_path):
    """flock is per open file, so a second process is refused, and `specreason bench` says so
    before it looks for servers."""
    import sys
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from specreason_graph.evaluation.records import locked\n"
         f"with locked({str(out)!r}):\n    print('held', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = cli.main(["bench", "--dataset", "gsm8k", "--limit", "1", "--modes", "small",
                         "--out", str(out), "--no-serve", "--base-url", NOWHERE,
                         "--small-url", NOWHERE])
        err = " ".join(capsys.readouterr().err.split())
        assert code == 2 and f"{out} is being written by pid {holder.pid}" in err.replace("\n", "")
    finally:
        holder.kill()
        holder.wait()
    with locked(out):  # the kernel released it with the process
        pass


_GOLD_LETTERS = ("from specreason_graph.evaluation import datasets; "
                 "print(''.join(p.answer for p in datasets.load('gpqa')))")


def _gold_letters_with_hash_seed(seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run([sys.executable, "-c", _GOLD_LETTERS], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_gpqa_shuffle_does_not_depend_on_the_hash_seed():
    one, two = _gold_letters_with_hash_seed("1"), _gold_letters_with_hash_seed("2")
    assert len(one) == GPQA_QUESTIONS
    assert one == two
    assert one == "".join(p.answer for p in datasets.load("gpqa"))
