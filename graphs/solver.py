"""A math solver agent with SpecReason inside it: easy questions get one direct answer from the small
model, hard ones (and failed answers) go through SpecReason as a subgraph.

    START → prepare → route ─┬→ direct ─────┬→ check ─┬→ END
                             └→ specreason ─┘         └→ specreason (retry, threshold 9, once)

- ``route``: the small model reads ``prompts/route.txt`` and replies easy or hard in at most two
  tokens (``max_tokens=2``, greedy). Anything that does not start with the word "easy" is hard.
- ``direct``: the small model answers the problem prompt (``Context.prompt``, math by default) in one
  call, up to ``Context.token_budget`` tokens; no judge, no base model.
- ``specreason``: the compiled SpecReason graph added as a node, so ``get_graph(xray=1)`` draws its
  nodes inside this graph (``specreason:draft``, ``specreason:judge``, ...).
- ``check``: the answer ``rules.extract_answer`` finds in the last kept step (a ``\\boxed{}`` or an
  ``Answer:`` line) must exist and math-verify must parse it. A failed check retries through
  ``specreason`` with ``threshold`` 9 (more drafts rewritten by the base model) until two attempts
  have run; then the run finishes with whatever the last attempt gave (``verified`` False).

How the parent state meets the subgraph's. LangGraph hands a subgraph node the parent state and keeps
only the keys of the subgraph's input schema, and writes the subgraph's output keys back into the
parent's channels of the same name, through the *parent's* reducers:

    parent key     subgraph key                   parent reducer
    problem     →  InputState.problem (written by ``prepare`` from ``question``)   none
    threshold   →  InputState.threshold (None on the first attempt: Context.threshold applies;
                   ``check`` sets 9 before a retry)                                none
    steps, trace, answer, stop_reason, kept_tokens  ←  OutputState                 none

The output keys deliberately have no reducer here even though SpecReason's own ``State`` appends to
``steps`` and ``trace`` with ``operator.add``: the subgraph returns its *whole* final lists, so an
appending parent would hold the first attempt's steps followed by the retry's. Plain keys make a retry
replace the previous attempt's steps; the history of attempts is ``attempts`` (which does append).
``direct`` writes the same keys (one step, an empty trace), so ``check`` reads one shape either way.

Streaming: SpecReason's ``commit`` emits one custom event per kept step. They reach the caller of this
graph with ``graph.stream(..., stream_mode="custom", subgraphs=True)``, which yields
``(namespace, event)`` pairs; the namespace (``("specreason:<task id>",)``) says which attempt's
subgraph run emitted it. Without ``subgraphs=True`` the parent stream leaves subgraph output out.

Settings are SpecReason's ``Context`` (the endpoints, the threshold of the first attempt, the budget,
the prompt), passed with ``context=`` and shared by the subgraph.
"""

import operator
import re
from typing import Annotated, Literal, NotRequired

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from typing_extensions import TypedDict

from specreason_graph import context, models, prompts, rules
from specreason_graph.context import Context
from specreason_graph.evaluation import grading
from specreason_graph.graph import calls_model, compile_graph
from specreason_graph.models import RETRY, Calls, Models, reply_to
from specreason_graph.state import StepRecord, StopReason

RETRY_THRESHOLD = 9
"""Threshold of a retry: only drafts the base model scores 9 are kept, the rest it rewrites."""
MAX_ATTEMPTS = 2
ROUTE_MAX_TOKENS = 2
"""The route call's cap: one word ('easy', 'hard') is one or two tokens for Qwen tokenizers."""

Route = Literal["easy", "hard"]
Mode = Literal["direct", "specreason"]


# --- state -------------------------------------------------------------------------------------

class Attempt(TypedDict):
    """One try at the question, as ``check`` saw it."""

    mode: Mode
    threshold: float | None  # SpecReason's threshold (the override, else Context's); None: direct
    answer: str | None
    stop_reason: StopReason | None
    steps: int  # kept steps (1 for a direct answer)
    verified: bool  # the answer exists and math-verify parses it


class SolverInput(TypedDict):
    question: str  # the question, as plain text


class SolverOutput(TypedDict):
    question: str
    route: Route
    attempts: list[Attempt]
    final_answer: str | None  # the last attempt's answer (None if it found none)
    verified: bool  # final_answer passed the check (False after two failed attempts)
    steps: list[str]  # the last attempt's kept steps
    trace: list[StepRecord]  # the last attempt's SpecReason trace (empty for a direct answer)
    stop_reason: StopReason | None
    kept_tokens: int


class SolverState(TypedDict):
    question: str
    route: NotRequired[Route]
    attempts: Annotated[list[Attempt], operator.add]  # this run's attempts (reset by prepare)
    final_answer: NotRequired[str | None]
    verified: NotRequired[bool]
    # shared with the SpecReason subgraph, without reducers (see the module docstring)
    problem: NotRequired[str]
    threshold: NotRequired[float | None]
    steps: NotRequired[list[str]]
    trace: NotRequired[list[StepRecord]]
    answer: NotRequired[str | None]
    stop_reason: NotRequired[StopReason | None]
    kept_tokens: NotRequired[int]


# --- pure helpers ------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+")


def parse_route(text: str) -> Route:
    """'easy' only when the reply's first word is easy ('Easy.', '**easy**'); anything else is hard."""
    words = _WORD.findall(text.lower())
    return "easy" if words[:1] == ["easy"] else "hard"


def parseable(answer: str | None) -> bool:
    """math-verify reads ``answer`` (the contents of a boxed answer) as an expression."""
    return grading.parses(answer)


# --- nodes -------------------------------------------------------------------------------------

def prepare(state: SolverInput) -> dict:
    """Check the question, hand it to SpecReason as ``problem`` and clear a previous run's fields
    (a reused thread must not start with the last run's attempts or its retry threshold)."""
    question = rules.checked_problem(state.get("question"), "the question")
    return {"problem": question, "threshold": None, "attempts": Overwrite([]),
            "final_answer": None, "verified": False, "steps": [], "trace": [], "answer": None,
            "stop_reason": None, "kept_tokens": 0}


def route(state: SolverState, runtime: Runtime[Context]) -> Calls[dict]:
    """The small model calls the question easy or hard (one short greedy call)."""
    reply = yield from reply_to(models.Completion(
        "small", [HumanMessage(prompts.render_problem("route", state["problem"]))],
        max_tokens=ROUTE_MAX_TOKENS, temperature=0.0))
    return {"route": parse_route(reply.text)}


def direct(state: SolverState, runtime: Runtime[Context]) -> Calls[dict]:
    """The small model answers in one call with the problem prompt (its whole answer is one step)."""
    ctx = context.of(runtime)
    reply = yield from reply_to(models.Completion(
        "small", [HumanMessage(prompts.render_problem(ctx.prompt, state["problem"], ctx.prompt_set))],
        max_tokens=ctx.token_budget, temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed))
    text = reply.text.strip()
    stop = rules.one_request_stop(text, reply.tokens, ctx.token_budget,
                                  truncated=reply.finish_reason == "length")
    return {"steps": [text], "trace": [], "answer": rules.extract_answer(text), "stop_reason": stop,
            "kept_tokens": reply.tokens}


def check(state: SolverState, runtime: Runtime[Context]) -> dict:
    """Record the attempt; a missing or unparseable answer sets the stricter threshold for a retry."""
    attempts = state.get("attempts") or []
    steps = state.get("steps") or []
    # the first attempt follows the route; every retry goes through SpecReason
    mode: Mode = "direct" if state.get("route") == "easy" and not attempts else "specreason"
    threshold = state.get("threshold")
    answer = rules.extract_answer(steps[-1]) if steps else None
    verified = parseable(answer)
    attempt: Attempt = {
        "mode": mode,
        "threshold": None if mode == "direct" else
        rules.threshold_for(threshold, context.of(runtime).threshold),
        "answer": answer, "stop_reason": state.get("stop_reason"), "steps": len(steps),
        "verified": verified}
    update: dict = {"attempts": [attempt], "final_answer": answer, "verified": verified}
    if not verified and len(attempts) + 1 < MAX_ATTEMPTS:
        update["threshold"] = RETRY_THRESHOLD
    return update


# --- routers -----------------------------------------------------------------------------------

def by_route(state: SolverState) -> Literal["direct", "specreason"]:
    """Easy questions are answered directly; hard ones (and unclear routes) go through SpecReason."""
    return "direct" if state.get("route") == "easy" else "specreason"


def after_check(state: SolverState) -> Literal["specreason", "__end__"]:
    """Done once an answer passes; else retry through SpecReason until MAX_ATTEMPTS have run."""
    if state.get("verified") or len(state.get("attempts") or []) >= MAX_ATTEMPTS:
        return "__end__"
    return "specreason"


# --- wiring ------------------------------------------------------------------------------------

def build_solver(*, small: BaseChatModel | None = None, base: BaseChatModel | None = None
                 ) -> StateGraph[SolverState, Context, SolverInput, SolverOutput]:
    """The uncompiled solver. ``small``/``base`` replace the Context's endpoints for every call
    (``route`` and ``direct`` use the small model, SpecReason both); compile it with your own
    checkpointer if you want threads."""
    pair = Models(small, base)
    specreason = compile_graph(small=small, base=base)

    builder = StateGraph(SolverState, input_schema=SolverInput, output_schema=SolverOutput,
                         context_schema=Context)
    builder.add_node("prepare", prepare)
    builder.add_node("route", calls_model(pair, "small", route), retry_policy=RETRY)
    builder.add_node("direct", calls_model(pair, "small", direct), retry_policy=RETRY)
    builder.add_node("specreason", specreason)
    builder.add_node("check", check)

    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "route")
    builder.add_conditional_edges("route", by_route)
    builder.add_edge("direct", "check")
    builder.add_edge("specreason", "check")
    builder.add_conditional_edges("check", after_check)
    return builder


graph = build_solver().compile(name="solver")
