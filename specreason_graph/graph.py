"""SpecReason as a LangGraph graph: the small model drafts each step, the base model judges it with
one token, a step below the threshold is rewritten by the base model from the same prefix.

    START → setup → next_step ─┬→ base_step ───────────────────────────→ commit → next_step …
                               └→ draft → judge → by_score ─┬→ commit
                                    │                       └→ regenerate → commit
                                    └→ commit  (small_only: the small-model baseline, unjudged)
    next_step → END once commit recorded a stop reason; a model whose context is full ends the
    run from where it is (stop reason ``context_full``).

Reads top to bottom: the nodes, the two routers, the wiring. Model calls go through ``client``,
message layouts through ``prompts``, pure decisions through ``rules``.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import openai
from langchain_core.language_models import BaseChatModel
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Overwrite, RetryPolicy

from specreason_graph import client, context, prompts, rules
from specreason_graph.context import Context
from specreason_graph.state import InputState, OutputState, State, StepRecord


class Models:
    """The two chat models: given ones (tests, custom clients) or one per endpoint in the Context."""

    def __init__(self, small: BaseChatModel | None = None, base: BaseChatModel | None = None):
        self._small, self._base = small, base

    def small(self, ctx: Context) -> BaseChatModel:
        return self._small or client.chat_model(ctx.small_url, ctx.small_model, ctx.api_key,
                                                ctx.request_timeout)

    def base(self, ctx: Context) -> BaseChatModel:
        return self._base or client.chat_model(ctx.base_url, ctx.base_model, ctx.api_key,
                                               ctx.request_timeout)


def _ctx(runtime: Runtime[Context]) -> Context:
    return context.current(runtime.context)


def _write(chat: BaseChatModel, state: State, ctx: Context) -> client.StepReply:
    """The next step from ``chat``, continuing the kept steps (the same call for both models)."""
    messages, continue_final = prompts.step_messages(
        state["user_prompt"], state["steps"], ctx.thinking_opener, ctx.step_delimiter)
    return client.write_step(
        chat, messages, continue_final=continue_final, delimiter=ctx.step_delimiter,
        max_tokens=ctx.max_step_tokens, temperature=ctx.temperature, top_p=ctx.top_p, seed=ctx.seed)


def _record(state: State, **fields: object) -> StepRecord:
    record: StepRecord = {
        "index": len(state["steps"]), "writer": "small", "text": "", "tokens": 0,
        "truncated": False, "ended_turn": False, "forced": False,
        "draft": None, "draft_tokens": 0, "draft_ms": 0.0,
        "score": None, "judge_token": None, "judge_alternatives": [], "judge_error": None,
        "accepted": None,
        "judge_prompt_tokens": 0, "judge_cached_tokens": None, "judge_ms": 0.0,
        "base_tokens": 0, "base_ms": 0.0, "ms": 0.0,
    }
    record.update(fields)  # type: ignore[typeddict-item]
    return record


# --- nodes -------------------------------------------------------------------------------------

def setup(state: InputState, runtime: Runtime[Context]) -> dict:
    """Check the problem and render it into the prompt once; start a fresh trace."""
    problem = state.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("the problem is empty: give the question as a non-empty string")
    threshold = state.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 10):
        raise ValueError(f"threshold must be a number from 0 to 10, got {threshold!r}")
    return {"user_prompt": prompts.render_problem(_ctx(runtime).prompt, problem),
            "steps": Overwrite([]), "trace": Overwrite([]), "kept_tokens": 0,
            "pending": None, "stop_reason": None, "answer": None}


def _model_node(role: Literal["small", "base"]):
    """Wrap a node that calls a model: a full context ends the run (stop reason ``context_full``);
    a server error becomes a ``ModelCallError`` naming the server, the node and the step."""
    def wrap(body):
        def node(state: State, runtime: Runtime[Context], models: Models) -> dict:
            ctx = _ctx(runtime)
            url = ctx.small_url if role == "small" else ctx.base_url
            try:
                return body(state, ctx, models)
            except client.ContextFull as exc:
                if not state["steps"]:  # nothing fits: bad input, not a stop
                    raise ValueError(f"the problem does not fit the {role} model's context at "
                                     f"{url}: {exc}") from None
                runtime.stream_writer({"event": "stop", "stop_reason": "context_full",
                                       "detail": str(exc)})
                return {"stop_reason": "context_full", "pending": None,
                        "answer": rules.extract_answer(state["steps"][-1])}
            except (openai.APIError, client.MalformedReply) as exc:
                raise ModelCallError(role, url, body.__name__, len(state["steps"]), exc) from exc
        node.__name__, node.__doc__ = body.__name__, body.__doc__
        return node
    return wrap


@_model_node("small")
def draft(state: State, ctx: Context, models: Models) -> dict:
    """The small model proposes the next step."""
    reply = _write(models.small(ctx), state, ctx)
    return {"pending": _record(
        state, writer="small", text=reply.text, tokens=reply.tokens, truncated=reply.truncated,
        ended_turn=reply.ended_turn, draft=reply.text, draft_tokens=reply.tokens,
        draft_ms=reply.ms)}


@_model_node("base")
def judge(state: State, ctx: Context, models: Models) -> dict:
    """The base model scores the draft with one token; the score decides the next edge."""
    pending = state["pending"]
    assert pending is not None and pending["draft"] is not None
    reply = client.judge(
        models.base(ctx),
        prompts.judge_messages(state["user_prompt"], state["steps"], pending["draft"],
                               ctx.thinking_opener, ctx.step_delimiter),
        top_logprobs=ctx.judge_top_logprobs)
    score = (rules.greedy_score(reply.token) if ctx.score_method == "greedy"
             else rules.expected_score(reply.top_logprobs))
    threshold = state.get("threshold")
    threshold = ctx.threshold if threshold is None else threshold
    return {"pending": {**pending, "score": score, "judge_token": reply.token,
                        "judge_alternatives": reply.top_logprobs, "judge_error": reply.error,
                        "accepted": score >= threshold, "judge_ms": reply.ms,
                        "judge_prompt_tokens": reply.prompt_tokens,
                        "judge_cached_tokens": reply.cached_tokens}}


@_model_node("base")
def regenerate(state: State, ctx: Context, models: Models) -> dict:
    """The base model rewrites a rejected step from the same prefix (it never sees the draft)."""
    pending = state["pending"]
    assert pending is not None
    reply = _write(models.base(ctx), state, ctx)
    return {"pending": {**pending, "writer": "base", "text": reply.text,
                        "tokens": reply.tokens, "truncated": reply.truncated,
                        "ended_turn": reply.ended_turn, "base_tokens": reply.tokens,
                        "base_ms": reply.ms}}


@_model_node("base")
def base_step(state: State, ctx: Context, models: Models) -> dict:
    """One of the first_n_base steps: the base model writes it, no draft, no judge."""
    reply = _write(models.base(ctx), state, ctx)
    return {"pending": _record(
        state, writer="base", forced=True, text=reply.text, tokens=reply.tokens,
        truncated=reply.truncated, ended_turn=reply.ended_turn, base_tokens=reply.tokens,
        base_ms=reply.ms)}


def commit(state: State, runtime: Runtime[Context]) -> dict:
    """Keep the decided step, emit it on the custom stream, and check the stop rules."""
    ctx = _ctx(runtime)
    pending = state["pending"]
    assert pending is not None
    text = rules.close_think(pending["text"])
    ms = pending["draft_ms"] + pending["judge_ms"] + pending["base_ms"]
    record: StepRecord = {**pending, "text": text, "ms": ms}
    steps = [*state["steps"], text]
    kept_tokens = state.get("kept_tokens", 0) + record["tokens"]
    stop = rules.stop_reason(steps, kept_tokens, ctx.token_budget, record["ended_turn"])
    runtime.stream_writer({
        "event": "step", "index": record["index"], "writer": record["writer"],
        "score": record["score"], "accepted": record["accepted"], "forced": record["forced"],
        "tokens": record["tokens"], "ms": round(ms, 1), "text": text, "stop_reason": stop})
    return {"steps": [text], "trace": [record], "kept_tokens": kept_tokens, "pending": None,
            "stop_reason": stop, "answer": rules.extract_answer(text) if stop else None}


# --- routers -----------------------------------------------------------------------------------

def next_step(state: State, runtime: Runtime[Context]) -> Literal["base_step", "draft", "__end__"]:
    """Stop once a stop reason is recorded; else the base model writes the first N, the small the rest."""
    if state.get("stop_reason"):
        return "__end__"
    return "base_step" if len(state["steps"]) < _ctx(runtime).first_n_base else "draft"


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
    return "commit" if _ctx(runtime).small_only else "judge"


def after_base(state: State) -> Literal["commit", "__end__"]:
    """A step the base model wrote is kept, unless its context is full."""
    return "__end__" if state.get("stop_reason") else "commit"


# --- wiring ------------------------------------------------------------------------------------

SERVER_ERRORS = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                 openai.RateLimitError, client.MalformedReply)
"""Transient failures worth another try: refused/dropped connections, timeouts, 5xx, 429, and a
200 reply that is not a completion (typically a proxy's error page)."""


class ModelCallError(RuntimeError):
    """A model server failed; the message names the server, the node and the step."""

    def __init__(self, role: str, url: str, node: str, step: int, cause: Exception):
        self.role, self.url, self.node, self.step = role, url, node, step
        super().__init__(f"the {role} server at {url} failed in {node} of step {step}: "
                         f"{type(cause).__name__}: {cause}")


def transient(exc: Exception) -> bool:
    """RetryPolicy.retry_on: retry what a server may get over (see SERVER_ERRORS)."""
    cause = exc.__cause__ if isinstance(exc, ModelCallError) else exc
    return isinstance(cause, SERVER_ERRORS)


def build_graph(*, small: BaseChatModel | None = None, base: BaseChatModel | None = None,
                retry: RetryPolicy | None = None) -> StateGraph[State, Context, InputState, OutputState]:
    """The uncompiled SpecReason graph. Pass chat models to use them instead of the Context's
    endpoints; compile it with your own checkpointer (``builder.compile(checkpointer=...)``)."""
    models = Models(small, base)
    retry = retry or RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=transient)
    builder = StateGraph(State, input_schema=InputState, output_schema=OutputState,
                         context_schema=Context)
    builder.add_node("setup", setup)
    builder.add_node("draft", partial(draft, models=models), retry_policy=retry)
    builder.add_node("judge", partial(judge, models=models), retry_policy=retry)
    builder.add_node("regenerate", partial(regenerate, models=models), retry_policy=retry)
    builder.add_node("base_step", partial(base_step, models=models), retry_policy=retry)
    builder.add_node("commit", commit)

    builder.add_edge(START, "setup")
    builder.add_conditional_edges("setup", next_step)
    builder.add_conditional_edges("draft", after_draft)
    builder.add_conditional_edges("judge", by_score)
    builder.add_conditional_edges("regenerate", after_base)
    builder.add_conditional_edges("base_step", after_base)
    builder.add_conditional_edges("commit", next_step)
    return builder


def compile_graph(
    *, small: BaseChatModel | None = None, base: BaseChatModel | None = None,
) -> CompiledStateGraph[State, Context, InputState, OutputState]:
    """``build_graph(...)`` compiled without a checkpointer, named for Studio and tracing."""
    return build_graph(small=small, base=base).compile(name="specreason")


graph = compile_graph()
