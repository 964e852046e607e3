"""SpecReason as a LangGraph graph: the small model drafts each step, a judge scores it (the paper's
judge: the base model, one token), a step below the threshold is rewritten by the base model from
the same prefix. The drawing is ``tests/unit_tests/snapshots/graph.mermaid`` (and the README's).

Reads top to bottom: the nodes, the routers, the wiring. Model calls go through ``models``, judges
through ``judges``, message layouts through ``prompts``, pure decisions through ``rules``. Nodes take
``(state, runtime)``. The ones that call a model yield each call and get its reply back, typed by
the call (``reply = yield from reply_to(Step.of(...))``: a ``StepReply``), and return their update;
:func:`calls_model` makes each a node with a sync and an async path over the graph's one
:class:`~specreason_graph.models.Models`, so ``invoke`` and ``ainvoke``/``astream`` run the same
code, the async one with no thread in between. :func:`inline` gives the other nodes and the routers
the same two paths. Both are an :class:`InRun`, a ``RunnableLambda`` of a sync and an async function
that runs in the node's own run, and hand a node its ``Runtime`` with LangGraph's ``get_runtime``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.runnables.config import ensure_config, set_config_context
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime, get_runtime
from langgraph.types import Overwrite, RetryPolicy

from specreason_graph import context, judges, models, prompts, rules, trace
from specreason_graph.context import Context
from specreason_graph.models import (
    RETRY,
    Calls,
    ContextFull,
    MalformedReply,
    ModelCallError,
    Models,
    Step,
    reply_to,
)
from specreason_graph.state import InputState, OutputState, Role, State, StepRecord


def _record(state: State, **fields: object) -> StepRecord:
    record: StepRecord = {
        "index": len(state["steps"]), "writer": "small", "text": "", "tokens": 0,
        "truncated": False, "ended_turn": False, "forced": False,
        "draft": None, "draft_tokens": 0, "draft_ms": 0.0, "draft_logprobs": None,
        "judge": None, "judges": {}, "score": None, "judge_error": None,
        "accepted": None,
        "judge_prompt_tokens": 0, "judge_cached_tokens": None, "judge_ms": 0.0,
        "base_tokens": 0, "base_ms": 0.0, "ms": 0.0,
    }
    record.update(fields)  # type: ignore[typeddict-item]
    return record


# --- nodes -------------------------------------------------------------------------------------

def setup(state: InputState, runtime: Runtime[Context], opener: str) -> dict:
    """Check the input and render it once, so every call sends identical bytes: a problem into its
    prompt, or a conversation into the messages every call starts with (``prompts.conversation``);
    note the thinking opener every step pre-fills (``Context.thinking_opener``, else the served
    chat template's); start a fresh trace."""
    ctx = context.of(runtime)
    threshold = state.get("threshold")
    if threshold is not None and not rules.is_threshold(threshold):
        raise ValueError(f"threshold must be a number from {rules.THRESHOLD_MIN:g} to "
                         f"{rules.THRESHOLD_MAX:g}, got {threshold!r}")
    if state.get("messages") is None:
        problem = rules.checked_problem(state.get("problem"))
        if state.get("tools") or state.get("stop"):
            raise ValueError("tools and stop go with messages (a conversation to reply to), "
                             "not with a problem")
        head: dict = {"user_prompt": prompts.render_problem(ctx.prompt, problem, ctx.prompt_set),
                      "conversation": None}
    else:
        if state.get("problem") is not None:
            raise ValueError("give a problem or messages, not both")
        if ctx.one_request:
            raise ValueError("one_request is a baseline for problems; to reply to a conversation "
                             "with one model alone, call that model directly")
        head = {"user_prompt": "", "conversation": prompts.conversation(state["messages"],
                                                                         ctx.prompt_set)}
    return {**head, "thinking_opener": opener, "steps": Overwrite([]), "trace": Overwrite([]),
            "kept_tokens": 0, "pending": None, "stop_reason": None, "answer": None, "reply": None}


def _head(state: State) -> prompts.Head:
    """What every call of the run starts with: the conversation, else the problem's prompt."""
    return state.get("conversation") or state["user_prompt"]


def _tools(state: State) -> models.Tools:
    """The conversation's tools, sent with every call (rendered into the shared prefix)."""
    return tuple(state.get("tools") or ()) if state.get("conversation") else ()


def _opener(state: State, ctx: Context) -> str:
    """The run's thinking opener, as ``setup`` found it (a checkpoint from before it was kept in the
    state: the Context's)."""
    return state.get("thinking_opener", ctx.thinking_opener or "")


def _write(role: Role, state: State, ctx: Context) -> Step:
    """The next step from ``role``, continuing the kept steps (the same call for both models)."""
    messages, continue_final = prompts.step_messages(
        _head(state), state["steps"], _opener(state, ctx), ctx.step_delimiter)
    return Step.of(role, ctx, messages, continue_final=continue_final, tools=_tools(state))


def draft(state: State, runtime: Runtime[Context]) -> Calls[dict]:
    """The small model proposes the next step."""
    reply = yield from reply_to(_write("small", state, context.of(runtime)))
    return {"pending": _record(
        state, writer="small", text=reply.text, tokens=reply.tokens, truncated=reply.truncated,
        ended_turn=reply.ended_turn, draft=reply.text, draft_tokens=reply.tokens,
        draft_ms=reply.ms, draft_logprobs=None if reply.logprobs is None else list(reply.logprobs))}


def judge(state: State, runtime: Runtime[Context]) -> Calls[dict]:
    """The run's judge scores the draft (``Context.also_judge`` are asked too, for the record);
    the score decides the next edge."""
    ctx = context.of(runtime)
    pending = state["pending"]
    assert pending is not None and pending["draft"] is not None
    case = judges.Case(_head(state), state["steps"], pending["draft"],
                       pending["draft_logprobs"], _opener(state, ctx), _tools(state))
    verdict = yield from judges.ask(ctx.judge, case, ctx)
    seen = {ctx.judge: verdict.record()}
    for name in ctx.also_judge:
        if name not in seen:
            seen[name] = (yield from judges.ask(name, case, ctx, aside=True)).record()
    threshold = rules.threshold_for(state.get("threshold"), ctx.threshold)
    return {"pending": {**pending, "judge": ctx.judge, "judges": seen,
                        "score": verdict.score, "judge_error": verdict.error,
                        "accepted": verdict.score >= threshold, "judge_ms": verdict.ms,
                        "judge_prompt_tokens": verdict.prompt_tokens,
                        "judge_cached_tokens": verdict.cached_tokens}}


def regenerate(state: State, runtime: Runtime[Context]) -> Calls[dict]:
    """The base model rewrites a rejected step from the same prefix (it never sees the draft)."""
    pending = state["pending"]
    assert pending is not None
    reply = yield from reply_to(_write("base", state, context.of(runtime)))
    return {"pending": {**pending, "writer": "base", "text": reply.text,
                        "tokens": reply.tokens, "truncated": reply.truncated,
                        "ended_turn": reply.ended_turn, "base_tokens": reply.tokens,
                        "base_ms": reply.ms}}


def one_request(state: State, runtime: Runtime[Context]) -> Calls[dict]:
    """The paper's baselines: one model writes the whole solution in one request."""
    ctx = context.of(runtime)
    role: Role = ctx.one_request or "base"
    reply = yield from reply_to(models.Completion(
        role, [HumanMessage(state["user_prompt"])], max_tokens=ctx.token_budget,
        temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed, tokens_required=True))
    text = reply.text.strip()
    truncated = reply.finish_reason == "length"
    record = _record(state, writer=role, text=text, tokens=reply.tokens,
                     truncated=truncated, ended_turn=True, ms=reply.ms,
                     **({"base_tokens": reply.tokens, "base_ms": reply.ms} if role == "base"
                        else {"draft": text, "draft_tokens": reply.tokens, "draft_ms": reply.ms}))
    stop = rules.one_request_stop(text, reply.tokens, ctx.token_budget, truncated)
    return {"steps": [text], "trace": [record], "kept_tokens": reply.tokens,
            "stop_reason": stop, "answer": rules.extract_answer(text)}


def base_step(state: State, runtime: Runtime[Context]) -> Calls[dict]:
    """One of the first_n_base steps: the base model writes it, no draft, no judge."""
    reply = yield from reply_to(_write("base", state, context.of(runtime)))
    return {"pending": _record(
        state, writer="base", forced=True, text=reply.text, tokens=reply.tokens,
        truncated=reply.truncated, ended_turn=reply.ended_turn, base_tokens=reply.tokens,
        base_ms=reply.ms)}


def reply(state: State, runtime: Runtime[Context]) -> Calls[dict]:
    """A conversation's reply, once the reasoning has stopped: the base model, given the kept
    steps as its thinking, answers or calls the offered tools (``tool_choice``)."""
    ctx = context.of(runtime)
    conversation = state.get("conversation")
    assert conversation is not None
    answer = yield from reply_to(models.Respond(
        prompts.reply_messages(conversation, state["steps"], _opener(state, ctx),
                               ctx.step_delimiter, ctx.prompt_set),
        max_tokens=ctx.reply_tokens, temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed,
        tools=_tools(state), tool_choice=state.get("tool_choice"),
        stop=tuple(state.get("stop") or ())))
    runtime.stream_writer({"event": "reply", "text": answer.message.text,
                           "tool_calls": answer.message.tool_calls, "tokens": answer.tokens,
                           "ms": round(answer.ms, 1)})
    return {"reply": answer.message}


class InRun(RunnableLambda):
    """A ``RunnableLambda`` of a sync and an async function that runs in its caller's run instead of
    opening one of its own, as LangGraph's nodes and routers made of plain functions do: a node
    shows once in a trace (its model calls under it), and a step opens no callback run per node and
    router (about 2 ms of CPU a step, BENCHMARKS.md). The function sees the caller's config, so
    ``get_runtime`` and the chat models' callbacks work as in any node."""

    def __init__(self, func: Callable[[Any], Any],
                 afunc: Callable[[Any], Coroutine[Any, Any, Any]], *, name: str):
        super().__init__(func, afunc, name=name)
        self.sync_path, self.async_path = func, afunc

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        with set_config_context(ensure_config(config)) as run_context:
            return run_context.run(self.sync_path, input)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None,
                      **kwargs: Any) -> Any:
        with set_config_context(ensure_config(config)) as run_context:
            return await asyncio.create_task(self.async_path(input), context=run_context)


def calls_model(pair: Models, role: Role | Callable[[Context], Role],
                node: Callable[[Any, Runtime[Context]], Calls[dict]]) -> InRun:
    """The graph node for ``node``, whose model calls (to the ``role`` model, or the one ``role(ctx)``
    names) ``pair`` sends: with ``invoke`` when the graph runs sync, with ``ainvoke`` under
    ``ainvoke``/``astream``/``abatch`` (no thread pool; a cancelled run cancels its request), the
    two paths LangGraph's prebuilt agents give their model node (``get_runtime`` hands ``node`` its
    run's Runtime on both). A full context ends the run (stop reason ``context_full``); a server
    error becomes a ``ModelCallError`` naming the server, the node and the step."""
    def failed(exc: Exception, state: State, runtime: Runtime[Context]) -> dict:
        ctx = context.of(runtime)
        who: Role = role(ctx) if callable(role) else role
        url, _ = ctx.endpoint(who)
        steps = state.get("steps") or []
        if isinstance(exc, ContextFull):
            if not steps:  # nothing fits: bad input, not a stop
                what = "conversation" if state.get("conversation") else "problem"
                raise ValueError(f"the {what} does not fit the {who} model's context at "
                                 f"{url}: {exc}") from None
            runtime.stream_writer({"event": "stop", "stop_reason": "context_full",
                                   "detail": str(exc)})
            return {"stop_reason": "context_full", "pending": None,
                    "answer": rules.extract_answer(steps[-1])}
        raise ModelCallError(who, url, node.__name__, len(steps), exc) from exc

    def model_node(state: State) -> dict:
        runtime = get_runtime(Context)
        try:
            return pair.drive(node(state, runtime), context.of(runtime))
        except (ContextFull, openai.APIError, MalformedReply) as exc:
            return failed(exc, state, runtime)

    async def amodel_node(state: State) -> dict:
        runtime = get_runtime(Context)
        try:
            return await pair.adrive(node(state, runtime), context.of(runtime))
        except (ContextFull, openai.APIError, MalformedReply) as exc:
            return failed(exc, state, runtime)

    return InRun(model_node, amodel_node, name=node.__name__)


def commit(state: State, runtime: Runtime[Context]) -> dict:
    """Keep the decided step with the line on what decided it (``trace.explain``), emit it on the
    custom stream, and check the stop rules."""
    ctx = context.of(runtime)
    pending = state["pending"]
    assert pending is not None
    text = rules.close_think(pending["text"])
    ms = pending["draft_ms"] + pending["judge_ms"] + pending["base_ms"]
    threshold = rules.threshold_for(state.get("threshold"), ctx.threshold)
    record: StepRecord = {**pending, "text": text, "ms": ms,
                          "decision": trace.explain(pending, threshold)}
    steps = [*state["steps"], text]
    kept_tokens = state.get("kept_tokens", 0) + record["tokens"]
    stop = rules.stop_reason(steps, kept_tokens, ctx.token_budget, record["ended_turn"])
    runtime.stream_writer({
        "event": "step", "index": record["index"], "writer": record["writer"],
        "score": record["score"], "accepted": record["accepted"], "forced": record["forced"],
        "decision": record["decision"], "tokens": record["tokens"], "ms": round(ms, 1),
        "text": text, "stop_reason": stop})
    return {"steps": [text], "trace": [record], "kept_tokens": kept_tokens, "pending": None,
            "stop_reason": stop, "answer": rules.extract_answer(text) if stop else None}


# --- routers -----------------------------------------------------------------------------------

def next_step(state: State, runtime: Runtime[Context]
              ) -> Literal["base_step", "draft", "reply", "__end__"]:
    """Once a stop reason is recorded, a conversation gets its reply and a problem ends; else the
    base model writes the first N steps, the small one the rest."""
    if state.get("stop_reason"):
        return "reply" if state.get("conversation") else "__end__"
    return "base_step" if len(state["steps"]) < context.of(runtime).first_n_base else "draft"


def first_step(state: State, runtime: Runtime[Context]
               ) -> Literal["one_request", "base_step", "draft"]:
    """The first step as any other (no stop reason yet), except for the one-request baselines: one
    model writes it all."""
    if context.of(runtime).one_request:
        return "one_request"
    return "base_step" if len(state["steps"]) < context.of(runtime).first_n_base else "draft"


def by_score(state: State) -> Literal["commit", "regenerate", "__end__"]:
    """Accepted drafts are kept; rejected ones are rewritten by the base model."""
    pending = state["pending"]
    if pending is None:  # the judge found the context full
        return "__end__"
    return "commit" if pending["accepted"] else "regenerate"


def after_draft(state: State, runtime: Runtime[Context]) -> Literal["judge", "commit", "__end__"]:
    """A draft goes to the judge, unless the small model's context is full; the small-only
    baseline keeps it unjudged."""
    if state.get("stop_reason"):
        return "__end__"
    return "commit" if context.of(runtime).small_only else "judge"


def after_base(state: State) -> Literal["commit", "__end__"]:
    """A step the base model wrote is kept, unless its context is full."""
    return "__end__" if state.get("stop_reason") else "commit"


def prepares(pair: Models) -> InRun:
    """The ``setup`` node: it asks ``pair`` for the thinking opener (the first time per endpoint a
    few requests to the base server, on a worker thread under ``ainvoke``; then remembered)."""
    def on_the_thread(state: InputState) -> dict:
        runtime = get_runtime(Context)
        return setup(state, runtime, pair.thinking_opener(context.of(runtime)))

    async def on_the_loop(state: InputState) -> dict:
        runtime = get_runtime(Context)
        return setup(state, runtime, await pair.athinking_opener(context.of(runtime)))

    return InRun(on_the_thread, on_the_loop, name="setup")


def inline(fn: Callable[..., Any]) -> InRun:
    """A node that calls no model, or a router, taking ``(state)`` or ``(state, runtime)``, on both
    paths: under ``ainvoke`` LangGraph hands a plain function to the event loop's thread pool, one
    hop per step; this one does no I/O, so it runs on the loop itself. The wrapper keeps ``fn``'s
    name and annotations: a router's ``Literal`` return type is where the drawing's edges come from,
    and its first parameter's type makes LangGraph hand it the state after the node's update."""
    takes_runtime = len(inspect.signature(fn).parameters) > 1

    @functools.wraps(fn)
    def on_the_thread(state: Any) -> Any:
        return fn(state, get_runtime(Context)) if takes_runtime else fn(state)

    async def on_the_loop(state: Any) -> Any:
        return on_the_thread(state)

    return InRun(on_the_thread, on_the_loop, name=fn.__name__)


# --- the first request, for checks before a run -----------------------------------------------

@dataclass(frozen=True)
class FirstRequest:
    """What a run's first model call sends for a problem (nothing is called here)."""

    messages: list[BaseMessage]
    continue_final: bool
    max_tokens: int
    roles: tuple[Role, ...]
    """The models that may be sent it (a rejected step is rewritten from the same prefix)."""


def first_request(problem: str, ctx: Context) -> FirstRequest:
    """The messages and ``max_tokens`` of a run's first model call for ``problem``, built as the
    nodes build them: a caller can check the problem fits the models' context before a run."""
    user_prompt = prompts.render_problem(ctx.prompt, problem, ctx.prompt_set)
    if ctx.one_request:
        return FirstRequest([HumanMessage(user_prompt)], False, ctx.token_budget, (ctx.one_request,))
    messages, continue_final = prompts.step_messages(user_prompt, [], ctx.thinking_opener or "",
                                                     ctx.step_delimiter)
    roles: tuple[Role, ...] = ("small",) if ctx.small_only else ("base", "small")
    return FirstRequest(messages, continue_final, ctx.max_step_tokens, roles)


# --- wiring ------------------------------------------------------------------------------------

def build_graph(*, small: BaseChatModel | None = None, base: BaseChatModel | None = None,
                retry: RetryPolicy = RETRY) -> StateGraph[State, Context, InputState, OutputState]:
    """The uncompiled SpecReason graph. Pass chat models to use them instead of the Context's
    endpoints; compile it with your own checkpointer (``builder.compile(checkpointer=...)``)."""
    pair = Models(small, base)
    builder = StateGraph(State, input_schema=InputState, output_schema=OutputState,
                         context_schema=Context)
    builder.add_node("setup", prepares(pair), input_schema=InputState)
    builder.add_node("draft", calls_model(pair, "small", draft), retry_policy=retry)
    builder.add_node("judge", calls_model(pair, "base", judge), retry_policy=retry)
    builder.add_node("regenerate", calls_model(pair, "base", regenerate), retry_policy=retry)
    builder.add_node("base_step", calls_model(pair, "base", base_step), retry_policy=retry)
    builder.add_node("one_request", calls_model(pair, lambda ctx: ctx.one_request or "base",
                                                one_request), retry_policy=retry)
    builder.add_node("commit", inline(commit))
    builder.add_node("reply", calls_model(pair, "base", reply), retry_policy=retry)

    builder.add_edge(START, "setup")
    builder.add_conditional_edges("setup", inline(first_step))
    builder.add_conditional_edges("draft", inline(after_draft))
    builder.add_conditional_edges("judge", inline(by_score))
    builder.add_conditional_edges("regenerate", inline(after_base))
    builder.add_conditional_edges("base_step", inline(after_base))
    builder.add_edge("one_request", END)
    builder.add_conditional_edges("commit", inline(next_step))
    builder.add_edge("reply", END)
    return builder


def compile_graph(
    *, small: BaseChatModel | None = None, base: BaseChatModel | None = None,
) -> CompiledStateGraph[State, Context, InputState, OutputState]:
    """``build_graph(...)`` compiled without a checkpointer, named for Studio and tracing (the one
    place the graph is compiled under its name)."""
    return build_graph(small=small, base=base).compile(name="specreason")


graph = compile_graph()
