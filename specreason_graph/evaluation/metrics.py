"""vLLM's Prometheus ``/metrics``: the counters a benchmark reads from each server before and after
a segment of runs, the prefix-cache hit rate they give, and :class:`LoadWatch`, which samples the
servers' queues while runs are in flight so that each run records the load it was measured under."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Any

from specreason_graph.context import origin

# --- reading the counters -------------------------------------------------------------------------

PREFIX_COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")
_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([-+0-9.eEinfa]+)$")


def scrape(base_url: str, names: Sequence[str] = PREFIX_COUNTERS,
           timeout: float = 10.0, present_only: bool = False) -> dict[str, float] | None:
    """Counters from a vLLM server's Prometheus ``/metrics`` (summed over labels); None if the
    server does not answer or is not a vLLM server. A name the server does not publish reads 0,
    or is left out with ``present_only``."""
    try:
        with urllib.request.urlopen(f"{origin(base_url)}/metrics", timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    totals = dict.fromkeys(names, 0.0)
    seen: set[str] = set()
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(1) in totals:
            totals[match.group(1)] += float(match.group(3))
            seen.add(match.group(1))
    return {k: v for k, v in totals.items() if k in seen} if present_only else totals


SPEC_DECODE_METRICS = {"drafts": "vllm:spec_decode_num_drafts_total",
                       "draft_tokens": "vllm:spec_decode_num_draft_tokens_total",
                       "accepted_tokens": "vllm:spec_decode_num_accepted_tokens_total"}
"""A speculating vLLM server's counters, by the names a record's ``spec_decode`` gives them."""


def spec_decode(base_url: str, timeout: float = 10.0) -> dict[str, float] | None:
    """The speculative-decoding counters of the server at ``base_url``; None when it does not
    speculate (vLLM publishes them only with a ``--speculative-config``) or does not answer."""
    names = tuple(SPEC_DECODE_METRICS.values())
    found = scrape(base_url, names, timeout, present_only=True)
    if not found or SPEC_DECODE_METRICS["draft_tokens"] not in found:
        return None
    return {key: found.get(name, 0.0) for key, name in SPEC_DECODE_METRICS.items()}


def delta(before: dict[str, float] | None, after: dict[str, float] | None) -> dict[str, float] | None:
    """``after - before`` per counter; None unless both were read."""
    if not before or not after:
        return None
    return {k: round(after[k] - before.get(k, 0.0), 3) for k in after}


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


# --- load seen by each run -----------------------------------------------------------------------

LOAD_GAUGES = ("vllm:num_requests_running", "vllm:num_requests_waiting")
ACTIVITY_COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")


class LoadWatch:
    """Sample, every ``interval`` seconds on a daemon thread, how many requests all the servers hold
    (vLLM's ``num_requests_running`` + ``num_requests_waiting``, summed over ``urls``), and say for a
    window of time what a run saw there.

        with LoadWatch(urls) as watch:
            started = time.monotonic(); ...; load = watch.window(started, time.monotonic(), 1)

    vLLM does not say whose requests they are. A benchmark with ``c`` runs in flight holds at most
    ``c`` requests at once (a run makes one call at a time), so anything above ``c`` is another
    client's, once the gauge is read right:

    - **A gauge on a server that served nothing is not believed.** vLLM publishes its gauges with
      the engine's outputs. A reply that ends at a stop string (every step does) is finished by the
      API server; the engine drops the request a step later and, idle, may publish nothing more, so
      the gauge goes on counting it. Polled at one run in flight with nothing else on the servers,
      the base server counted one request for seconds after its rewrite of a step had returned,
      while its prompt and generation token counters stood still. So a server counts in a sample
      only when its token counters moved since the previous sample (or cannot be read);
      ``stale_samples`` says how many samples a gauge alone would have put above ``c``.
    - **A short excess is not another client.** ``others`` counts an excess seen in ``sustain``
      samples in a row; ``excess_samples`` any excess at all.
    """

    def __init__(self, urls: Sequence[str], interval: float = 1.0,
                 read: Callable[[str], dict[str, float] | None] | None = None,
                 keep_s: float = 6 * 3600, sustain: int = 10):
        self.urls, self.interval, self.sustain = list(urls), interval, sustain
        self.read = read or (lambda url: scrape(url, LOAD_GAUGES + ACTIVITY_COUNTERS,
                                                timeout=max(interval, 1.0)))
        # (time, requests on servers that moved, requests by the gauges alone)
        self.samples: deque[tuple[float, float, float]] = deque(
            maxlen=max(1, int(keep_s / interval)))
        self._activity: dict[str, tuple[float, ...] | None] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True, name="load-watch")

    def __enter__(self) -> LoadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 15)

    def sample(self) -> None:
        """Read every server once; a sample is kept only when every server answered."""
        readings = [(url, self.read(url)) for url in self.urls]
        if not readings or any(r is None for _, r in readings):
            return
        active = total = 0.0
        for url, reading in readings:
            assert reading is not None
            gauges = sum(v for k, v in reading.items() if k not in ACTIVITY_COUNTERS)
            activity = (tuple(reading[k] for k in ACTIVITY_COUNTERS)
                        if all(k in reading for k in ACTIVITY_COUNTERS) else None)
            before = self._activity.get(url)
            self._activity[url] = activity
            idle = activity is not None and before is not None and activity == before
            total += gauges
            active += 0.0 if idle else gauges
        self.samples.append((time.monotonic(), active, total))

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def window(self, start: float, end: float, ours: int) -> dict[str, Any]:
        """What the servers held between ``start`` and ``end`` (``time.monotonic()``) while this
        benchmark had at most ``ours`` requests in flight."""
        seen = [(n, raw) for t, n, raw in list(self.samples) if start <= t <= end]
        excess = [max(0.0, n - ours) for n, _ in seen]
        sustained = [min(excess[i:i + self.sustain])
                     for i in range(len(excess) - self.sustain + 1)]
        return {"samples": len(seen), "peak_requests": max((n for n, _ in seen), default=None),
                "others": max(sustained, default=0.0) if seen else None,
                "excess_samples": sum(1 for e in excess if e > 0),
                "stale_samples": sum(1 for (n, raw) in seen if raw > ours >= n)}
