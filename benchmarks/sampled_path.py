"""Where a sampled speculative round spends its time against a greedy one, on the CPU default's base server.

    .venv/bin/python benchmarks/sampled_path.py                      # vLLM's top-p, then the plugin's
    .venv/bin/python benchmarks/sampled_path.py --variants plugin --prompts 2 --tokens 64
    .venv/bin/python benchmarks/sampled_path.py --report             # the table again, from the json

Each variant is the CPU default's speculating base server (servers/cpu.toml: the 1.5B with the 0.5B
drafting ``--k`` tokens a round, started on a scratch port by ``benchmarks/speculative.py``'s
``variant_spec``), with ``VLLM_PLUGINS`` choosing the top-p: ``stock`` loads only the plugin's
expand-kernel fix (without it sampled drafts are all rejected), so the sampler and the rejection
sampler run vLLM's own top-p, which sorts the vocabulary; ``plugin`` loads every plugin of
servers/vllm-cpu-fixes, the plugin's top-p included (what servers/setup-cpu.sh installs).

On each, the same GSM8K questions (``--offset``, default 1200: no other benchmark reads them), one
request at a time, **greedy and sampled alternating** (temperature 0.6, top-p 0.95, no seed, as the
bench samples), every request exactly ``--tokens`` long (``ignore_eos``) so the two kinds do the
same work. While each request runs, py-spy samples the worker (``VllmWorker-0``: the server's
process that runs both models and the samplers, the busiest of its group) ``--rate`` times a
second without stopping it (``--nonblocking``), from the request's first token to its last; each
sample's Python stack is put in one bucket (the first that matches, in the order of ``BUCKETS``).
Rounds are vLLM's own count of speculative steps (``vllm:spec_decode_num_drafts``); a bucket's
milliseconds per round are its share of the request's samples times the request's decode time
over its rounds. The difference sampled − greedy is taken per question (its two requests ran back
to back) and reported with its standard error over the questions.

Prints one table per variant (milliseconds per round by bucket, greedy against sampled, and the
difference) and writes ``benchmarks/results/sampled-path/sampled-path.{json,md}``. Needs py-spy
(the dev extra) and the CPU servers stopped (``specreason serve stop``): two 1.5B servers do not fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openai import OpenAI
from speculative import NEEDS_GIB, available_gib, counters, host, variant_spec  # type: ignore[import-not-found]

from specreason_graph.cli import terminate_as_interrupt
from specreason_graph.evaluation import datasets
from specreason_graph.serving import launcher

RESULTS = Path(__file__).resolve().parent / "results" / "sampled-path"
PY_SPY = Path(sys.executable).with_name("py-spy")
PLUGINS = {"stock": "specreason_cpu_expand_fix", "plugin": None}
"""``VLLM_PLUGINS`` per variant: None keeps every installed plugin (vLLM's default)."""

BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("top-k/top-p mask", ("apply_top_k_top_p", "top_k_top_p")),
    ("recovered tokens (noise over the vocabulary)", ("sample_recovered_tokens",)),
    ("rejection: softmax, accept/reject kernels", ("rejection_sample (",)),
    ("rejection sampler, other (bonus token, logprobs, copies)", ("rejection_sampler.py",)),
    ("sampler (prefill token)", ("sampler.py",)),
    ("draft model: prepare, forward, argmax", ("propose", "draft_model.py", "llm_base_proposer.py")),
    ("target model: forward", ("_model_forward", "model_executor/models/")),
    ("engine, scheduler, inputs, outputs", ("",)),
]
"""Stack buckets, most specific first; a frame matches a needle when ``function (file:line)`` contains
it (``"rejection_sample ("`` is the function, not the module)."""


def worker(leader: int) -> int:
    """The process of the server's group that runs the models: the one with the most CPU time once
    the server is ready (it loaded and warmed up both models); on vllm-cpu 0.32 with one worker
    that is ``VllmWorker-0``, beside the API server and the engine core."""
    busiest: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == leader:
                    fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
                    busiest[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, ProcessLookupError, ValueError):
                continue
    if not busiest:
        raise SystemExit(f"no process in the group of {leader}")
    return max(busiest, key=lambda pid: busiest[pid])


def bucket(stack: str) -> str:
    frames = stack.split(";")
    for name, needles in BUCKETS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    return BUCKETS[-1][0]


def read_raw(path: Path) -> Counter[str]:
    """py-spy's ``--format raw`` (collapsed stacks, ``frame;frame;... count``) into samples per bucket."""
    found: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            found[bucket(stack)] += int(count)
    return found


def one_request(client: OpenAI, model: str, question: str, sampled: bool, tokens: int,
                pid: int, rate: int) -> dict[str, Any]:
    """One request of exactly ``tokens`` tokens; py-spy samples the worker from its first token
    to its last, so the prefill is left out as it is from the decode time."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        spy: subprocess.Popen[bytes] | None = None
        stamps: list[float] = []
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=tokens,
            temperature=0.6 if sampled else 0.0, top_p=0.95 if sampled else 1.0, stream=True,
            extra_body={"ignore_eos": True, "min_tokens": tokens})
        for chunk in stream:
            if any(choice.delta.content for choice in chunk.choices):
                stamps.append(time.monotonic())
                if spy is None:
                    spy = subprocess.Popen(
                        [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(rate),
                         "--nonblocking", "--format", "raw", "--output", str(raw)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert spy is not None, "the request returned no token"
        spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded and exits
        spy.wait(timeout=60)
        samples = read_raw(raw) if raw.exists() else Counter()
    return {"sampled": sampled, "decode_s": stamps[-1] - stamps[0], "samples": dict(samples)}


def measure(variant: str, questions: list[str], tokens: int, k: int, rate: int,
            port: int) -> dict[str, Any]:
    spec = variant_spec(f"draft:{k}", port)
    env = dict(spec.env)
    if PLUGINS[variant] is not None:
        env["VLLM_PLUGINS"] = PLUGINS[variant]
    spec = dataclasses.replace(spec, env=env, role=f"bench-sampled-{variant}")
    if available_gib() < NEEDS_GIB:
        raise SystemExit(f"only {available_gib():.1f} GiB available, the server needs up to "
                         f"{NEEDS_GIB:.0f}: stop the CPU servers first (`specreason serve stop`)")
    leader = launcher.start_one(spec)
    runs = []
    try:
        assert leader is not None
        pid = worker(leader)
        client = OpenAI(base_url=spec.url, api_key="none", max_retries=0, timeout=3600)
        for i, question in enumerate(questions):
            for sampled in (False, True) if i % 2 == 0 else (True, False):
                before = counters(spec)
                run = one_request(client, spec.served_model_name, question, sampled, tokens, pid,
                                  rate)
                after = counters(spec)
                run.update({"question": i, **{c: after[c] - before[c] for c in after}})
                runs.append(run)
                print(f"  {variant:<6} {'sampled' if sampled else 'greedy ':<7} q{i}: "
                      f"{tokens / run['decode_s']:.2f} tok/s, {run['num_drafts']:.0f} rounds, "
                      f"{run['num_accepted_tokens'] / max(run['num_draft_tokens'], 1):.0%} accepted, "
                      f"{sum(run['samples'].values())} stack samples", flush=True)
    finally:
        launcher.stop_one(spec)
    return {"variant": variant, "k": k, "tokens": tokens, "rate": rate, "runs": runs}


def per_round(run: dict[str, Any]) -> dict[str, float]:
    """One request's milliseconds per round, by bucket: each bucket's share of the request's stack
    samples times the round's time by the clock (py-spy's attach lag and its own pace cancel)."""
    round_ms = run["decode_s"] / run["num_drafts"] * 1000
    total = sum(run["samples"].values()) or 1
    return {"round": round_ms, **{name: run["samples"].get(name, 0) / total * round_ms
                                  for name, _ in BUCKETS}}


def split(result: dict[str, Any], sampled: bool) -> dict[str, Any]:
    """Milliseconds per round, by bucket, over a variant's greedy or sampled requests (means over
    the requests), and the sampled − greedy difference per question with its standard error."""
    runs = [r for r in result["runs"] if r["sampled"] == sampled]
    rows = [per_round(r) for r in runs]
    decode = sum(r["decode_s"] for r in runs)
    rounds = sum(r["num_drafts"] for r in runs)
    return {"ms": {key: statistics.fmean(row[key] for row in rows) for key in rows[0]},
            "profiled": sum(sum(r["samples"].values()) for r in runs) / result["rate"] / decode,
            "tok_per_s": len(runs) * (result["tokens"] - 1) / decode,
            "accepted": sum(r["num_accepted_tokens"] for r in runs)
            / sum(r["num_draft_tokens"] for r in runs),
            "tokens_per_round": len(runs) * result["tokens"] / rounds}


def paired(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Sampled − greedy per question (the two requests of one question ran back to back), by bucket:
    the mean and its standard error."""
    by_question: dict[int, dict[bool, dict[str, float]]] = {}
    for run in result["runs"]:
        by_question.setdefault(run["question"], {})[run["sampled"]] = per_round(run)
    pairs = [q for q in by_question.values() if len(q) == 2]
    out = {}
    for key in pairs[0][True]:
        diffs = [q[True][key] - q[False][key] for q in pairs]
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
        out[key] = (statistics.fmean(diffs), se)
    return out


def markdown(data: dict[str, Any]) -> str:
    out = [f"{data['header']}", ""]
    for result in data["results"]:
        greedy, sampled, diff = split(result, False), split(result, True), paired(result)
        out += [f"**{result['variant']}** (top-p: "
                f"{'vLLM' if result['variant'] == 'stock' else 'the plugin'}'s), "
                f"{len(result['runs']) // 2} questions, each greedy and sampled, "
                f"{result['tokens']} tokens a request",
                "", "| ms per round | greedy | sampled | sampled − greedy (± s.e., paired) |",
                "|---|---:|---:|---:|"]
        for key in [name for name, _ in BUCKETS] + ["round"]:
            label = "**round, by the clock**" if key == "round" else key
            out.append(f"| {label} | {greedy['ms'][key]:.1f} | {sampled['ms'][key]:.1f} | "
                       f"{diff[key][0]:+.1f} ± {diff[key][1]:.1f} |")
        out += [f"| drafted tokens accepted | {greedy['accepted']:.0%} | {sampled['accepted']:.0%} | |",
                f"| tokens per round | {greedy['tokens_per_round']:.2f} | "
                f"{sampled['tokens_per_round']:.2f} | |",
                f"| decode tokens/s | {greedy['tok_per_s']:.2f} | {sampled['tok_per_s']:.2f} | "
                f"{sampled['tok_per_s'] / greedy['tok_per_s']:.3f}× |",
                f"| stack samples / (decode s × rate) | {greedy['profiled']:.2f} | "
                f"{sampled['profiled']:.2f} | |", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(PLUGINS), default=["stock", "plugin"])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--offset", type=int, default=1200)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--k", type=int, default=3, help="speculative tokens per round (cpu.toml: 3)")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--port", type=int, default=8109)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="re-render the saved json")
    args = parser.parse_args()
    path = args.out / "sampled-path.json"
    if args.report:
        data = json.loads(path.read_text())
    else:
        if not PY_SPY.exists():
            raise SystemExit(f"{PY_SPY} not found: install the dev extra (make install)")
        questions = [p.question for p in datasets.select("gsm8k", offset=args.offset,
                                                         limit=args.prompts)]
        started = datetime.now(UTC).isoformat(timespec="seconds")
        with terminate_as_interrupt():
            results = [measure(v, questions, args.tokens, args.k, args.rate, args.port)
                       for v in args.variants]
        data = {"started": started, "ended": datetime.now(UTC).isoformat(timespec="seconds"),
                "args": {k: str(v) for k, v in vars(args).items()}, "results": results,
                "header": f"GSM8K {args.offset}-{args.offset + args.prompts - 1}, draft:{args.k}, "
                          f"{args.tokens} tokens a request (ignore_eos), one at a time, greedy and "
                          f"sampled alternating, py-spy at {args.rate} Hz on the worker; "
                          f"{started} on {platform.node()}, {host()} ({os.cpu_count()} cores)"}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n")
    table = markdown(data)
    print(table)
    (args.out / "sampled-path.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
