"""Token-level speculative decoding inside the CPU base server: which draft length, at what memory.

    .venv/bin/python benchmarks/speculative.py                    # plain, draft k=2..5, ngram, plain
    .venv/bin/python benchmarks/speculative.py --variants plain draft:3 plain --prompts 2

Each variant is the plain CPU base server (servers/cpu-plain.toml: Qwen2.5-Coder-1.5B, float32) with
one ``--speculative-config`` added: ``draft:K`` is vLLM's draft-model method with the 0.5B proposing
K tokens per step (what the CPU default, servers/cpu.toml, runs with K = 3), ``ngram:K`` vLLM's
prompt-lookup method (no draft model), ``plain`` none. Variants run **one after the other on one
scratch port**, each started, measured and stopped before the next (two 1.5B servers do not fit in
24 GiB beside anything else), so the list starts and ends with ``plain``: the two plain runs bound
the machine's drift over the benchmark, and every ratio is taken against their mean.

Per variant and temperature: the same GSM8K problems (``--offset``, default 1100: a slice neither
the evaluation, 0-39, nor calibration, 1000-1019, touches), one streamed chat request at a time,
sent as ``specreason bench``'s base-only mode sends them (``--prompt bench``, the default: the
problem in prompts/math.txt, ``--max-tokens`` 1024 = the bench's budget, top-p 0.95 when sampled,
no seed), or as this script first did (``--prompt question --max-tokens 128 --seed 0``: the bare
question); decode speed = (tokens - 1) / (last token - first token), so the prefill is left out,
and wall speed = tokens / the request's whole time, prefill included (what the bench's per-token
figure measures); draft acceptance from the server's ``/metrics``
(``vllm:spec_decode_num_accepted_tokens`` over ``..._num_draft_tokens``); at temperature 0 whether
the text equals the first plain run's (speculative decoding is lossless: it must). Memory: the
server's process group (API server, engine core, worker), summed proportional set size read every
0.5 s from ``/proc``, at its peak while starting and once ready, and the machine's
``MemAvailable`` at its lowest.

Stop the CPU servers first (``specreason serve stop``): the benchmark refuses to start a variant
when less memory is available than the largest variant needs. Prints a table and writes
``benchmarks/results/speculative/speculative.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openai import OpenAI

from specreason_graph.cli import terminate_as_interrupt
from specreason_graph.context import Context
from specreason_graph.evaluation import datasets
from specreason_graph.graph import first_request
from specreason_graph.serving import launcher
from specreason_graph.serving.config import ServerSpec, home, load_config

RESULTS = Path(__file__).resolve().parent / "results" / "speculative"
PORT = 8109
COUNTERS = ("num_drafts", "num_draft_tokens", "num_accepted_tokens")
NEEDS_GIB = 16.0
"""What the largest variant (draft model inside the base server) was seen to take while starting."""


# --- the servers ----------------------------------------------------------------------------------

def variant_spec(name: str, port: int = PORT) -> ServerSpec:
    """The plain CPU base server (cpu-plain.toml) with ``name``'s speculative config, on the
    scratch port."""
    base = load_config("cpu-plain").role("base")
    assert isinstance(base, ServerSpec)  # a plain server, not a router
    options = dict(base.options)
    method, _, k = name.partition(":")
    if method == "draft":
        options["speculative-config"] = {"method": "draft_model", "num_speculative_tokens": int(k),
                                         "model": str(home() / "models" / "qwen2.5-coder-0.5b-instruct")}
    elif method == "ngram":
        options["speculative-config"] = {"method": "ngram", "num_speculative_tokens": int(k),
                                         "prompt_lookup_min": 2, "prompt_lookup_max": 5}
    elif method != "plain":
        raise ValueError(f"unknown variant {name!r}: plain, draft:K or ngram:K")
    return dataclasses.replace(base, role=f"bench-{name.replace(':', '-')}", port=port,
                               options=options)


def group_pss_gb(leader: int) -> float:
    """Proportional set size of every process in ``leader``'s process group, in GB."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != leader:
                continue
            for line in Path(entry.path, "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, ProcessLookupError):
            continue
    return total / 1e6


def host() -> str:
    """The CPU the figures were measured on: model name, family/model, and whether it has AVX-512
    (torch and oneDNN pick wider kernels at run time, which moves speculative ratios between hosts)."""
    fields: dict[str, str] = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
        if key.strip() == "flags":
            break
    avx512 = "avx512f" in fields.get("flags", "").split()
    return (f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family')}, "
            f"model {fields.get('model')}, {'AVX-512' if avx512 else 'no AVX-512'})")


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


class MemoryWatch:
    """Samples the server's group PSS and the machine's MemAvailable every ``interval`` s."""

    def __init__(self, spec: ServerSpec | None = None, interval: float = 0.5):
        self.interval, self.spec = interval, spec
        self.leader: int | None = None  # the server's pid, once known
        self.samples: list[tuple[float, float, float]] = []  # (time, pss GB, available GiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.leader is None and self.spec is not None:  # the server being started
                self.leader = next(iter(launcher.server_pids(self.spec)), None)
            pss = group_pss_gb(self.leader) if self.leader else 0.0
            self.samples.append((time.monotonic(), pss, available_gib()))


# --- the measurements -----------------------------------------------------------------------------

def counters(spec: ServerSpec) -> dict[str, float]:
    with urllib.request.urlopen(f"{spec.origin}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {name: sum(float(v) for v in re.findall(
        rf"^vllm:spec_decode_{name}_total(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))
        for name in COUNTERS}


def one_request(client: OpenAI, model: str, question: str, temperature: float,
                max_tokens: int, seed: int | None = None) -> dict[str, Any]:
    started = time.monotonic()
    stamps: list[float] = []
    parts: list[str] = []
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], max_tokens=max_tokens,
        temperature=temperature, top_p=0.95 if temperature else 1.0, stream=True,
        stream_options={"include_usage": True}, seed=seed)
    tokens = None
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta.content:
                stamps.append(time.monotonic())
                parts.append(choice.delta.content)
    tokens = tokens or len(stamps)
    decode = (stamps[-1] - stamps[0]) if len(stamps) > 1 else float("nan")
    return {"tokens": tokens, "text": "".join(parts), "wall_s": time.monotonic() - started,
            "first_token_s": stamps[0] - started if stamps else None,
            "decode_tps": (tokens - 1) / decode if decode and decode > 0 else None}


def measure(name: str, questions: list[str], temperatures: list[float], max_tokens: int,
            port: int, seed: int | None = None) -> dict[str, Any]:
    spec = variant_spec(name, port)
    if available_gib() < NEEDS_GIB:
        raise SystemExit(f"only {available_gib():.1f} GiB available, a variant needs up to "
                         f"{NEEDS_GIB:.0f}: stop the CPU servers first (`specreason serve stop`)")
    with MemoryWatch(spec) as watch:
        started = time.monotonic()
        pid = launcher.start_one(spec)
        watch.leader = pid
        ready = time.monotonic()
        try:
            client = OpenAI(base_url=spec.url, api_key="none", max_retries=0, timeout=3600)
            runs = []
            for temperature in temperatures:
                for i, question in enumerate(questions):
                    before = counters(spec)
                    run = one_request(client, spec.served_model_name, question, temperature,
                                      max_tokens, seed)
                    after = counters(spec)
                    run.update({"temperature": temperature, "question": i,
                                **{k: after[k] - before[k] for k in COUNTERS}})
                    runs.append(run)
                    print(f"  {name:<9} T={temperature:<4} q{i}: {run['tokens']} tokens, "
                          f"{run['decode_tps'] or float('nan'):.2f} tok/s, accepted "
                          f"{_rate(run['num_accepted_tokens'], run['num_draft_tokens'])}",
                          flush=True)
            steady = group_pss_gb(pid) if pid else None
        finally:
            launcher.stop_one(spec)
    during = [s for s in watch.samples if started <= s[0] <= ready]
    return {"variant": name, "speculative_config": spec.options.get("speculative-config"),
            "start_s": round(ready - started, 1), "runs": runs,
            "peak_pss_gb": max((s[1] for s in during), default=None), "steady_pss_gb": steady,
            "min_available_gib": min((s[2] for s in watch.samples), default=None)}


def _rate(accepted: float, drafted: float) -> str:
    return f"{accepted / drafted:.0%}" if drafted else "–"


# --- the table ------------------------------------------------------------------------------------

def summarize(results: list[dict[str, Any]], temperatures: list[float]) -> list[dict[str, Any]]:
    plains = [r for r in results if r["variant"] == "plain"]
    reference = {t: statistics.fmean(_tps(p, t) for p in plains) for t in temperatures} \
        if plains else {}
    greedy_texts = {run["question"]: run["text"] for run in (plains[0]["runs"] if plains else [])
                    if run["temperature"] == 0}
    rows = []
    for r in results:
        row: dict[str, Any] = {"variant": r["variant"], "start_s": r["start_s"],
                               "peak_pss_gb": r["peak_pss_gb"], "steady_pss_gb": r["steady_pss_gb"],
                               "min_available_gib": r["min_available_gib"]}
        for t in temperatures:
            runs = [x for x in r["runs"] if x["temperature"] == t]
            row[f"tps@{t:g}"] = _tps(r, t)
            row[f"wall_tps@{t:g}"] = sum(x["tokens"] for x in runs) / sum(x["wall_s"] for x in runs) \
                if runs else None
            plain_wall = statistics.fmean(_wall_tps(p, t) for p in plains) if plains else None
            row[f"wall_speedup@{t:g}"] = row[f"wall_tps@{t:g}"] / plain_wall \
                if plain_wall and row[f"wall_tps@{t:g}"] else None
            row[f"speedup@{t:g}"] = _tps(r, t) / reference[t] if reference.get(t) else None
            drafted = sum(x["num_draft_tokens"] for x in runs)
            row[f"accepted@{t:g}"] = sum(x["num_accepted_tokens"] for x in runs) / drafted \
                if drafted else None
        greedy = [x for x in r["runs"] if x["temperature"] == 0 and x["question"] in greedy_texts]
        row["identical@0"] = (f"{sum(x['text'] == greedy_texts[x['question']] for x in greedy)} "
                              f"of {len(greedy)}") if greedy else None
        rows.append(row)
    return rows


def _wall_tps(result: dict[str, Any], temperature: float) -> float:
    """Tokens per second of whole requests (prefill and first token included) at ``temperature``."""
    runs = [x for x in result["runs"] if x["temperature"] == temperature]
    return sum(x["tokens"] for x in runs) / sum(x["wall_s"] for x in runs)


def _tps(result: dict[str, Any], temperature: float) -> float:
    """Decode tokens per second over all of a variant's requests at ``temperature``."""
    runs = [x for x in result["runs"] if x["temperature"] == temperature and x["decode_tps"]]
    return sum(x["tokens"] - 1 for x in runs) / sum((x["tokens"] - 1) / x["decode_tps"] for x in runs)


def markdown(rows: list[dict[str, Any]], temperatures: list[float], header: str) -> str:
    cols = ["variant", "start s", "peak GB", "steady GB", "min avail GiB"]
    for t in temperatures:
        cols += [f"tok/s T={t:g}", f"× plain T={t:g}", f"wall × plain T={t:g}", f"accepted T={t:g}"]
    cols.append("same text T=0")
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = [row["variant"], f"{row['start_s']:.0f}", _f(row["peak_pss_gb"]),
                 _f(row["steady_pss_gb"]), _f(row["min_available_gib"])]
        for t in temperatures:
            cells += [_f(row[f"tps@{t:g}"], 2), _f(row[f"speedup@{t:g}"], 2, "×"),
                      _f(row.get(f"wall_speedup@{t:g}"), 2, "×"),
                      "–" if row[f"accepted@{t:g}"] is None else f"{row[f'accepted@{t:g}']:.0%}"]
        cells.append(row["identical@0"] or "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _f(value: float | None, digits: int = 1, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+",
                        default=["plain", "draft:2", "draft:3", "draft:4", "draft:5", "ngram:3",
                                 "plain"])
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--offset", type=int, default=1100)
    parser.add_argument("--prompt", choices=["bench", "question"], default="bench",
                        help="bench: the problem in prompts/math.txt, as the bench's base-only "
                             "sends it; question: the bare question (this script's first figures)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--temperatures", default="0,0.6")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    temperatures = [float(t) for t in args.temperatures.split(",")]
    problems = datasets.select("gsm8k", offset=args.offset, limit=args.prompts)
    questions = [p.question if args.prompt == "question" else
                 first_request(p.question, Context(one_request="base")).messages[0].text
                 for p in problems]
    started = datetime.now(UTC).isoformat(timespec="seconds")
    results = []
    with terminate_as_interrupt():  # `kill` stops the server being measured, as Ctrl-C does
        for name in args.variants:
            print(f"{name}: starting", flush=True)
            results.append(measure(name, questions, temperatures, args.max_tokens, args.port,
                                   args.seed))
    rows = summarize(results, temperatures)
    header = (f"GSM8K {args.offset}-{args.offset + args.prompts - 1}, prompt: {args.prompt}, at most "
              f"{args.max_tokens} tokens per request, seed {args.seed}, one request at a time, "
              f"{started} on {platform.node()}, {host()} "
              f"({os.cpu_count()} cores); × plain against the mean of the plain runs")
    table = markdown(rows, temperatures, header)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speculative.json").write_text(json.dumps(
        {"started": started, "ended": datetime.now(UTC).isoformat(timespec="seconds"),
         "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "results": results},
        indent=1) + "\n")
    (args.out / "speculative.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
