"""vLLM's Prometheus ``/metrics``: the counters a benchmark reads from each server before and after
a segment of runs, and the prefix-cache hit rate they give."""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

# --- reading the counters -------------------------------------------------------------------------

PREFIX_COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)$")


def scrape(base_url: str, names: Sequence[str] = PREFIX_COUNTERS,
           timeout: float = 10.0) -> dict[str, float] | None:
    """Counters from a vLLM server's Prometheus ``/metrics`` (summed over labels); None if the
    server does not answer or is not a vLLM server."""
    origin = base_url.rstrip("/").removesuffix("/v1")
    try:
        with urllib.request.urlopen(f"{origin}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    totals = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1) in totals:
            totals[match.group(1)] += float(match.group(3))
    return totals


# --- prefix cache from /metrics ------------------------------------------------------------------

def prefix_cache(meta: dict[str, Any]) -> dict[str, float | None]:
    """Hit rate of each server's prefix cache over the benchmark's segments (counter deltas)."""
    queries_name, hits_name = PREFIX_COUNTERS
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for seg in meta.get("segments", []):
        before, after = seg.get("metrics_before") or {}, seg.get("metrics_after") or {}
        for url, b in before.items():
            a = after.get(url)
            if not a or not b:
                continue
            totals[url][0] += a[queries_name] - b[queries_name]
            totals[url][1] += a[hits_name] - b[hits_name]
    return {url: (hits / queries if queries else None) for url, (queries, hits) in totals.items()}
