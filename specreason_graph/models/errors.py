"""How a model call fails: the two failures every call tells apart (a prompt that does not fit,
a reply that is not a completion), the server errors worth a retry, and the one :data:`RETRY`
policy every model-calling node uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import openai
from langgraph.types import RetryPolicy


class ContextFull(Exception):
    """The server refused the request: prompt (+ output) exceed the model's context length."""


class MalformedReply(Exception):
    """The server answered 200 with something that is not a chat completion (an HTML error page
    from a proxy, JSON of another shape, a truncated body)."""


def not_a_completion(exc: BaseException) -> bool:
    """``exc`` is what a chat model raises for a reply that is not a chat completion — and nothing
    else: a bug in our code or a library's must not pass for a bad reply.

    That is :class:`MalformedReply` (:class:`~specreason_graph.models.clients.VLLMChatOpenAI` checks
    the body's shape), what openai raises for a body it cannot read (``APIResponseValidationError``;
    ``JSONDecodeError`` for a non-JSON body sent as JSON), and the three errors langchain-openai's
    ``_create_chat_result`` raises for a body of the wrong kind, told by their messages (for a plain
    ``ChatOpenAI``)."""
    if isinstance(exc, MalformedReply | openai.APIResponseValidationError | json.JSONDecodeError):
        return True
    message = str(exc)
    return ((type(exc) is ValueError and message.startswith("Unexpected response type"))
            or (type(exc) is TypeError and "null value for 'choices'" in message)
            or (type(exc) is KeyError and "Response missing 'choices' key" in message))


def _malformed(exc: Exception) -> MalformedReply:
    return exc if isinstance(exc, MalformedReply) else MalformedReply(f"{type(exc).__name__}: {exc}")


@contextmanager
def told_apart() -> Iterator[None]:
    """The two failures every call tells apart: a prompt that does not fit the context
    (:class:`ContextFull`) and a reply that is not a completion (:class:`MalformedReply`); anything
    else propagates as it is."""
    try:
        yield
    except openai.BadRequestError as exc:
        _raise_if_context_full(exc)
        raise
    except Exception as exc:
        if not_a_completion(exc):
            raise _malformed(exc) from exc
        raise


_CONTEXT_FULL = ("maximum context length", "exceeds model's maximum context length")


def _raise_if_context_full(exc: openai.BadRequestError) -> None:
    message = str(exc)
    if any(marker in message for marker in _CONTEXT_FULL):
        raise ContextFull(message) from exc


# --- failures worth a retry, and the retry policy ----------------------------------------------

SERVER_ERRORS = (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError,
                 openai.RateLimitError, MalformedReply)
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


RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=transient)
"""The retry policy of every node that calls a model (SpecReason's and the example graphs')."""
