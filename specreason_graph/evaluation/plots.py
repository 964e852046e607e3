"""The benchmark's two plots: accuracy against latency (with the Pareto front and the frontier of
the modes that do not judge), and the threshold sweep. Drawn off-screen with matplotlib."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from specreason_graph.evaluation.stats import envelope

# --- the front --------------------------------------------------------------------------------------

def pareto(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Modes no other mode beats on both accuracy and mean latency."""
    points = [r for r in rows if r["accuracy"] is not None and r["mean_s"] is not None]
    return [r["mode"] for r in points if not any(
        o["accuracy"] >= r["accuracy"] and o["mean_s"] <= r["mean_s"]
        and (o["accuracy"], o["mean_s"]) != (r["accuracy"], r["mean_s"]) for o in points)]


def _figure() -> tuple[Any, Any]:
    """A latency (x) / accuracy (y) figure, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4.5))


def _save(fig: Any, ax: Any, path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel("mean wall time per problem (s)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_accuracy_latency(rows: Sequence[dict[str, Any]], path: Path, title: str,
                          frontier: Sequence[str] = ("small-only", "base-only")) -> Path:
    """Every mode's mean latency and accuracy, the Pareto front, and the frontier of the modes that
    do not judge (``frontier``: :func:`.stats.envelope` of their points, drawn flat to the right
    edge after the most accurate one)."""
    front = set(pareto(rows))
    fig, ax = _figure()
    for r in rows:
        if r["accuracy"] is None or r["mean_s"] is None:
            continue
        ax.scatter(r["mean_s"], 100 * r["accuracy"], s=60,
                   marker="*" if r["mode"] in front else "o",
                   color="tab:red" if r["mode"] in front else "tab:blue")
        ax.annotate(r["mode"], (r["mean_s"], 100 * r["accuracy"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=8)
    pts = sorted((r["mean_s"], 100 * r["accuracy"]) for r in rows if r["mode"] in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts, strict=True), color="tab:red", linewidth=1, alpha=0.5,
                label="Pareto front")
    corners = envelope((r["mean_s"], 100 * r["accuracy"]) for r in rows if r["mode"] in frontier
                       and r["accuracy"] is not None and r["mean_s"] is not None)
    if corners:  # what sending whole problems at random among the modes that do not judge gives
        right = max(r["mean_s"] for r in rows if r["mean_s"] is not None)
        xs, ys = [x for x, _ in corners], [y for _, y in corners]
        if right > xs[-1]:
            xs, ys = [*xs, right], [*ys, ys[-1]]
        ax.plot(xs, ys, color="gray", linestyle="--", linewidth=1,
                label="frontier of the modes that do not judge")
    if len(pts) > 1 or corners:
        ax.legend(loc="lower right", fontsize=8)
    return _save(fig, ax, path, title)


def plot_threshold_sweep(rows: Sequence[dict[str, Any]], modes: dict[str, dict[str, Any]],
                         path: Path, title: str) -> Path:
    """SpecReason modes by threshold, one line per score method, base/small-only as references."""
    fig, ax = _figure()
    series: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for r in rows:
        s = modes.get(r["mode"], {})
        if r["accuracy"] is None or r["mean_s"] is None:
            continue
        if s.get("kind") == "spec":
            series[f"{s['score_method']} score"].append(
                (s["threshold"], r["mean_s"], 100 * r["accuracy"]))
        else:
            ax.scatter(r["mean_s"], 100 * r["accuracy"], marker="s", color="gray")
            ax.annotate(r["mode"], (r["mean_s"], 100 * r["accuracy"]),
                        textcoords="offset points", xytext=(5, -10), fontsize=8, color="gray")
    for label, points in series.items():
        points.sort()
        ax.plot([p[1] for p in points], [p[2] for p in points], marker="o", label=label)
        for i, (t, x, y) in enumerate(points):  # alternate heights: close points stay legible
            ax.annotate(f"t={t:g}", (x, y), textcoords="offset points",
                        xytext=(5, 5 if i % 2 == 0 else -12), fontsize=8)
    if not series:
        ax.text(0.5, 0.5, "no SpecReason modes in this run", transform=ax.transAxes, ha="center")
    else:
        ax.legend(fontsize=8)
    return _save(fig, ax, path, title)
