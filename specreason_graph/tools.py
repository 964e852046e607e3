"""SpecReason as a LangChain tool, for agents that decide themselves when a problem needs reasoning.

    from langgraph.prebuilt import create_react_agent
    from specreason_graph.tools import specreason_tool

    agent = create_react_agent(chat_model, [specreason_tool(context=Context(threshold=9))])

The tool takes ``{"problem": str}``, runs the SpecReason graph on it and returns one line the calling
model can read, e.g. ``answer: 42 (stop: answer, 7 steps, 5 by the small model)``. It works with
``langgraph.prebuilt.create_react_agent``, langchain's ``create_agent`` and a bare ``tool.invoke``.

The run's settings are the ``context`` given here, never the agent's: a graph invoked inside another
graph's node inherits that run's context when it is given none, and an agent's context is not a
SpecReason ``Context``. With ``context=None`` each call builds ``Context()`` (the defaults and the
``SPECREASON_*`` environment at call time). Callbacks and tracing do follow the agent's run, and so
do SpecReason's custom step events: an agent streamed with ``stream_mode="custom"`` and
``subgraphs=True`` shows each kept step while the tool runs.
"""

from __future__ import annotations

from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from langgraph.pregel import Pregel
from pydantic import BaseModel, Field

from specreason_graph.context import Context
from specreason_graph.graph import compile_graph
from specreason_graph.trace import summarize

DESCRIPTION = (
    "Solve a math or reasoning problem carefully, step by step: a small model drafts each step and "
    "a large model checks it. Give the complete problem text, with every number and condition it "
    "needs. Returns the final answer and how the reasoning ended."
)


class SpecReasonArgs(BaseModel):
    """What the calling model fills in."""

    problem: str = Field(description="The complete problem to solve, as plain text.")


def format_result(out: dict[str, Any]) -> str:
    """One line from the graph's output: ``answer: X (stop: answer, 7 steps, 5 by the small model)``."""
    figures = summarize(out.get("trace") or [])
    answer = out.get("answer")
    return (f"answer: {answer if answer is not None else 'none found'} "
            f"(stop: {out.get('stop_reason')}, {len(out.get('steps') or [])} steps, "
            f"{figures['steps_small']} by the small model)")


def specreason_tool(graph: Pregel[Any, Context, Any, Any] | None = None, *, context: Context | None = None,
                    name: str = "specreason", description: str = DESCRIPTION) -> BaseTool:
    """SpecReason as a tool. ``graph`` is a compiled SpecReason graph, e.g. ``compile_graph(small=...,
    base=...)``; None compiles the default one, which talks to the Context's endpoints."""
    runner = graph if graph is not None else compile_graph()

    def run(problem: str) -> str:
        out = runner.invoke({"problem": problem}, context=context if context is not None else Context())
        return format_result(out)

    async def arun(problem: str) -> str:
        out = await runner.ainvoke({"problem": problem},
                                   context=context if context is not None else Context())
        return format_result(out)

    return StructuredTool.from_function(func=run, coroutine=arun, name=name, description=description,
                                        args_schema=SpecReasonArgs)
