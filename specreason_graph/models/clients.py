"""The chat models the graphs talk to: ``ChatOpenAI`` that checks a reply's shape and keeps vLLM's
``prompt_logprobs`` (:class:`VLLMChatOpenAI`), one shared per endpoint for ``invoke``
(:func:`chat_model`) and one per endpoint and event loop for ``ainvoke`` (:func:`async_chat_model`).
Retries belong to the graph's RetryPolicy, not to the clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import openai
from langchain_openai import ChatOpenAI

from specreason_graph.models.errors import MalformedReply


def _shape_error(response: Any) -> str | None:
    """Why a parsed reply body is not a chat completion langchain-openai can read (None: it is)."""
    if isinstance(response, dict):
        error, choices = response.get("error"), response.get("choices")
    elif isinstance(response, openai.BaseModel):
        error = (response.model_extra or {}).get("error")
        choices = getattr(response, "choices", None)
    else:
        return None  # not JSON at all: langchain-openai says so ("Unexpected response type")
    if error:
        return f"the reply is an error: {error}"
    if not isinstance(choices, list) or not choices:
        return f"the reply has no choices: {str(response)[:200]}"
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else getattr(choice, "message", None)
        if not isinstance(message, dict | openai.BaseModel):
            return f"a choice of the reply has no message: {str(choice)[:200]}"
    return None


class VLLMChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` that checks a reply is a chat completion before reading it (else
    :class:`MalformedReply`: a proxy's error page, an error body sent with 200, no choices) and
    also keeps vLLM's ``prompt_logprobs`` (a reply field OpenAI's API does not have) in each
    message's ``response_metadata``."""

    def _create_chat_result(self, response: Any, generation_info: dict | None = None) -> Any:
        if (why := _shape_error(response)) is not None:
            raise MalformedReply(why)
        result = super()._create_chat_result(response, generation_info)
        extra = (response.get("prompt_logprobs") if isinstance(response, dict)
                 else (getattr(response, "model_extra", None) or {}).get("prompt_logprobs"))
        if extra is not None:
            for generation in result.generations:
                generation.message.response_metadata["prompt_logprobs"] = extra
        return result


def _new_chat(url: str, model: str, api_key: str | None, timeout: float,
              **clients: Any) -> ChatOpenAI:
    """A client for one endpoint. Retries belong to the graph's RetryPolicy, not here."""
    return VLLMChatOpenAI(
        base_url=url,
        model=model,
        api_key=api_key or "EMPTY",  # type: ignore[arg-type]  # vLLM without --api-key takes any
        timeout=timeout,
        max_retries=0,
        stream_usage=True,
        **clients,
    )


@lru_cache(maxsize=32)
def chat_model(url: str, model: str, api_key: str | None, timeout: float) -> ChatOpenAI:
    """The shared client for one endpoint (for ``invoke``)."""
    return _new_chat(url, model, api_key, timeout)


@dataclass
class _LoopClients:
    """The chat models of one event loop, and the async generator that closes them when the loop
    shuts down (``asyncio.run`` closes every async generator of its loop before closing it)."""

    chats: dict[tuple[str, str, str | None, float], ChatOpenAI]
    closer: Any = None


_per_loop: dict[asyncio.AbstractEventLoop, _LoopClients] = {}
_per_loop_lock = threading.Lock()


def async_chat_model(url: str, model: str, api_key: str | None, timeout: float) -> ChatOpenAI:
    """The shared client for one endpoint on the running event loop (for ``ainvoke``).

    An HTTP client's connections belong to the loop that opened them, and langchain-openai shares
    one per URL across every loop (langchain-ai/langchain#35783): after one ``asyncio.run``, the
    next would fail with "Event loop is closed". So each loop gets its own chat model with its own
    client; a closed loop's are dropped at the next lookup.

    The client is openai's aiohttp one (``DefaultAioHttpClient``): with many runs in flight it
    spends a quarter less CPU per call than the default httpx pool, which scans every pooled
    connection on each request (BENCHMARKS.md, many runs in flight). It is closed on its loop when
    the loop shuts down (:func:`_closer`)."""
    loop = asyncio.get_running_loop()
    key = (url, model, api_key, timeout)
    with _per_loop_lock:
        for gone in [other for other in _per_loop if other.is_closed()]:
            del _per_loop[gone]
        clients = _per_loop.setdefault(loop, _LoopClients({}))
        if key not in clients.chats:
            clients.chats[key] = _new_chat(*key, http_async_client=openai.DefaultAioHttpClient(
                timeout=timeout))
        if clients.closer is None:
            clients.closer = _closer(clients)
            loop.create_task(_start(clients.closer))
        return clients.chats[key]


async def _start(closer: AsyncIterator[None]) -> None:
    await anext(closer)  # the loop's asyncgen hooks now track it


async def _closer(clients: _LoopClients) -> AsyncIterator[None]:
    """Suspended for the life of its loop; ``loop.shutdown_asyncgens()`` (the end of
    ``asyncio.run``) resumes it to close the loop's HTTP clients there, so no connection or aiohttp
    session outlives its loop unclosed."""
    try:
        yield
    finally:
        for chat in list(clients.chats.values()):
            if chat.http_async_client is not None:
                await chat.http_async_client.aclose()
