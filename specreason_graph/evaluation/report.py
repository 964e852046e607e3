"""What a benchmark's ``runs.jsonl`` says, written next to it: ``summary.md/csv/json`` and two plots.

Everything is computed from the recorded runs (never from new model calls), so a report can be
rebuilt any time with ``specreason bench-report OUT``: the figures come from :mod:`.stats`, the cost
model from :mod:`.cost_model`, the prefix-cache rates from :mod:`.metrics`, the text from
:mod:`.render`, the pictures from :mod:`.plots`; the runs are read through :mod:`.records`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from specreason_graph.evaluation import records
from specreason_graph.evaluation.cost_model import (
    GPU_PROFILES,
    GpuProfile,
    cost_model,
    one_in_flight_check,
)
from specreason_graph.evaluation.metrics import prefix_cache
from specreason_graph.evaluation.plots import pareto, plot_accuracy_latency, plot_threshold_sweep
from specreason_graph.evaluation.render import csv_text, markdown
from specreason_graph.evaluation.stats import (
    REFERENCE,
    above_frontier,
    comparable,
    identical_outputs,
    mode_rows,
    non_judging,
    paired,
    segment_drift,
)


def build(out: Path, reference: str = REFERENCE, gpu: GpuProfile | None = None,
          title: str | None = None, cost_check: Path | None = None,
          check_speeds: GpuProfile | None = None) -> dict[str, Any]:
    """Write summary.md / summary.csv / summary.json and the two plots into ``out``; return them.

    Beside the per-mode rows: the judging modes against the frontier of the one-request modes,
    SpecDecode's solutions against base-only's (at temperature 0), the machine's drift between
    segments of different modes, and the cost model with its speculative-decoding term.

    ``cost_check``: another results folder, taken under load, whose calls the cost model predicts
    one run in flight from (at ``check_speeds``, default this CPU's single-stream speeds), set
    beside this folder's measured times (:func:`.cost_model.one_in_flight_check`)."""
    out = Path(out)
    runs = records.load_records(out)
    if not runs:
        raise ValueError(f"{out} has no recorded runs yet")
    load = comparable(runs, str(out))
    meta = records.read_meta(out)
    modes = meta.get("settings", {}).get("modes", {})
    rows = mode_rows(runs, reference, order=list(modes))
    comparisons = [c for r in rows if (c := paired(runs, r["mode"], reference))]
    frontier = non_judging(modes, [r["mode"] for r in rows], reference)
    above = [c for r in rows if (c := above_frontier(runs, r["mode"], frontier))]
    greedy = meta.get("settings", {}).get("context", {}).get("temperature") == 0
    same = identical_outputs(runs, modes, reference) if greedy else {}
    for row in rows:
        row["same_output"] = same.get(row["mode"])
    model = cost_model(runs, rows, reference, gpu)
    cache = prefix_cache(meta)
    check = None
    if cost_check is not None:
        loaded = records.load_records(Path(cost_check))
        if not loaded:
            raise ValueError(f"{cost_check} has no recorded runs to fit the cost model on")
        check = one_in_flight_check(
            loaded, records.read_meta(Path(cost_check)).get("settings", {}).get("modes", {}),
            runs, modes, rows, check_speeds or GPU_PROFILES["cpu-1-in-flight"], reference)
        check["fitted_on"] = str(cost_check)
    concurrency = [load["concurrency"]]
    datasets = ", ".join(meta.get("settings", {}).get("dataset", [])) or "?"
    problems = len({r["id"] for r in runs.values()})
    levels = "/".join(str(c) for c in concurrency) or "?"
    title = title or f"{datasets}, {problems} problems, concurrency {levels}"
    plot_accuracy_latency(rows, out / "accuracy_latency.png", title, frontier)
    plot_threshold_sweep(rows, modes, out / "threshold_sweep.png", "Threshold sweep — " + title)

    summary = {"title": title, "concurrency": concurrency, "load": load, "rows": rows,
               "paired": comparisons, "frontier": frontier, "above_frontier": above,
               "cost_model": model, "drift": segment_drift(runs, meta.get("segments", []), modes, reference),
               "cost_check": check, "prefix_cache": cache,
               "pareto": pareto(rows), "machine": meta.get("machine"),
               "settings": meta.get("settings"),
               "segments": [{k: v for k, v in s.items() if not k.startswith("metrics")}
                            for s in meta.get("segments", [])]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (out / "summary.csv").write_text(csv_text(rows))
    (out / "summary.md").write_text(markdown(summary) + "\n")
    return summary


