"""What a trace (LangSmith, Studio, any callback handler) shows of a run: each node once per
execution, with its model calls under it, and no run for a router, on both paths."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler

from specreason_graph import Context, build_graph
from tests.fakes import ScriptedModel, by_kind, score, step

ROUTERS = {"first_step", "after_draft", "by_score", "after_base", "next_step"}


class Runs(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: Counter[str] = Counter()
        self.models: list[str] = []
        self.names: dict[str, str] = {}

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None,
                       **kwargs: Any) -> None:
        name = kwargs.get("name") or ""
        self.chains[name] += 1
        self.names[str(run_id)] = name

    def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any,
                            parent_run_id: Any = None, **kwargs: Any) -> None:
        self.models.append(self.names.get(str(parent_run_id), "?"))


@pytest.mark.parametrize("path", ["sync", "async"])
def test_each_node_is_one_run_with_its_model_calls_under_it(path):
    # two drafts: the first rejected (rewritten), the second kept with the answer
    drafts = iter([step("a step"), step(r"so \boxed{4}")])
    small = ScriptedModel(script=lambda m, kw: next(drafts))
    base = ScriptedModel(script=by_kind([step("the base's step")], [score("2"), score("9")]))
    graph = build_graph(small=small, base=base).compile()
    runs = Runs()
    config = {"callbacks": [runs]}
    args = ({"problem": "What is 2 + 2?"},)
    ctx = Context(threshold=7, score_method="greedy", judge="score")
    if path == "sync":
        graph.invoke(*args, config, context=ctx)
    else:
        asyncio.run(graph.ainvoke(*args, config, context=ctx))
    assert runs.chains["draft"] == 2 and runs.chains["judge"] == 2
    assert runs.chains["regenerate"] == 1 and runs.chains["commit"] == 2
    assert not ROUTERS & set(runs.chains), runs.chains
    assert Counter(runs.models) == {"draft": 2, "judge": 2, "regenerate": 1}
