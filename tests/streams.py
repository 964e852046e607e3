"""What a test reads from one streamed run: its final state and SpecReason's custom step events."""

from __future__ import annotations

from typing import Any


def run_streamed(graph: Any, state: dict[str, Any], context: Any) -> tuple[dict, list[dict]]:
    """``graph`` streamed on ``state`` with ``stream_mode=["custom", "values"]``: the last values
    (the final state) and every custom event, in order."""
    final: dict = {}
    events: list[dict] = []
    for mode, chunk in graph.stream(state, context=context, stream_mode=["custom", "values"]):
        if mode == "custom":
            events.append(chunk)
        else:
            final = chunk
    return final, events
