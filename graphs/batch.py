"""Many questions through SpecReason at once: one ``solve`` task per question, results in input order.

    START → prepare → fan_out ─┬→ solve (question 0) ─┐
                               ├→ solve (question 1) ─┼→ collect → END
                               └→ …                   ─┘

``fan_out`` returns one ``Send("solve", {"problem": q, "index": i})`` per question: the ``solve``
tasks run in the same superstep (in parallel threads for ``invoke``, concurrently for ``ainvoke``;
cap them with ``config={"max_concurrency": n}``). Each invokes the compiled SpecReason graph for its
question with the run's ``Context`` and returns one result; ``results`` appends them with
``operator.add`` in completion order, and ``collect`` sorts them by index.

Streaming: SpecReason's custom step events reach ``stream(..., stream_mode="custom", subgraphs=True)``
under the namespace ``("solve:<task id>",)`` of the question's task. The events themselves do not say
which question they belong to; stream ``["custom", "tasks"]`` as well and map the task id to the
``index`` in that task's input (the root-level ``tasks`` event of each ``solve``).

A bad question (not a non-empty string) fails the whole batch in ``prepare``, before any model call;
a model error in one ``solve`` task (after SpecReason's own retries) fails the batch too.
"""

import operator
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Overwrite, Send
from typing_extensions import TypedDict

from specreason_graph import context, rules
from specreason_graph.context import Context
from specreason_graph.graph import compile_graph
from specreason_graph.state import InputState, OutputState, State, StopReason
from specreason_graph.trace import summarize


class Result(TypedDict):
    index: int  # position of the question in the input list
    question: str
    answer: str | None
    stop_reason: StopReason | None
    steps: int  # kept steps of the SpecReason run
    summary: dict[str, Any]  # specreason_graph.trace.summarize of the run's trace


class BatchInput(TypedDict):
    questions: list[str]


class BatchOutput(TypedDict):
    results: list[Result]  # one per question, in input order


class BatchState(TypedDict):
    questions: list[str]
    results: Annotated[list[Result], operator.add]


class SolveInput(TypedDict):
    """What one ``Send`` carries to ``solve``."""

    problem: str
    index: int


# --- nodes -------------------------------------------------------------------------------------

def prepare(state: BatchInput) -> dict:
    """Refuse a bad question before any model call; clear the results of a previous run on the thread."""
    questions = state.get("questions")
    if not isinstance(questions, list):
        raise ValueError("questions must be a list of strings")
    for index, question in enumerate(questions):
        rules.checked_problem(question, f"question {index}")
    return {"results": Overwrite([])}


class Solve:
    """The ``solve`` node over one compiled SpecReason graph: ``invoke`` on the sync path,
    ``ainvoke`` on the async one (:meth:`node` gives both to LangGraph)."""

    def __init__(self, specreason: CompiledStateGraph[State, Context, InputState, OutputState]):
        self.specreason = specreason

    @staticmethod
    def _result(state: SolveInput, out: dict[str, Any]) -> dict:
        return {"results": [{
            "index": state["index"], "question": state["problem"], "answer": out.get("answer"),
            "stop_reason": out.get("stop_reason"), "steps": len(out["steps"]),
            "summary": summarize(out["trace"])}]}

    def __call__(self, state: SolveInput) -> dict:
        """One question through SpecReason, with the run's Context; the result is one entry of
        ``results``."""
        out = self.specreason.invoke({"problem": state["problem"]}, context=_context())
        return self._result(state, out)

    async def asolve(self, state: SolveInput) -> dict:
        """:meth:`__call__` for the async path."""
        out = await self.specreason.ainvoke({"problem": state["problem"]}, context=_context())
        return self._result(state, out)

    def node(self) -> RunnableLambda:
        """The node: a ``RunnableLambda`` of the two paths (LangGraph would run a plain function
        in a thread pool under ``ainvoke``)."""
        return RunnableLambda(self.__call__, self.asolve, name="solve")


def _context() -> Context:
    """The Context of the batch run a node is part of."""
    return context.of(get_runtime(Context))


def collect(state: BatchState) -> dict:
    """Results in the order of the questions (they arrive in completion order)."""
    return {"results": Overwrite(sorted(state["results"], key=lambda r: r["index"]))}


# --- router ------------------------------------------------------------------------------------

def fan_out(state: BatchState) -> list[Send]:
    """One ``solve`` task per question (none for an empty list: the run ends with no results)."""
    return [Send("solve", {"problem": q, "index": i}) for i, q in enumerate(state["questions"])]


# --- wiring ------------------------------------------------------------------------------------

def build_batch(*, small: BaseChatModel | None = None, base: BaseChatModel | None = None
                ) -> StateGraph[BatchState, Context, BatchInput, BatchOutput]:
    """The uncompiled batch graph; ``small``/``base`` replace the Context's endpoints."""
    specreason = compile_graph(small=small, base=base)
    builder = StateGraph(BatchState, input_schema=BatchInput, output_schema=BatchOutput,
                         context_schema=Context)
    builder.add_node("prepare", prepare)
    builder.add_node("solve", Solve(specreason).node(), input_schema=SolveInput)
    builder.add_node("collect", collect)

    builder.add_edge(START, "prepare")
    builder.add_conditional_edges("prepare", fan_out, ["solve"])
    builder.add_edge("solve", "collect")
    builder.add_edge("collect", END)
    return builder


graph = build_batch().compile(name="batch")
