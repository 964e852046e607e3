"""LangChain's standard integration tests for chat models (langchain-tests' ChatModelIntegrationTests),
run on ChatSpecReason against the real CPU servers: invoke, stream, batch and their async forms,
conversations, usage metadata, stop sequences, tool calling (the base server's tool-call parser),
tool choice, structured output, an agent loop. Short reasoning (one short step) and replies keep the
1.5B's share small; greedy, so a run is repeatable.

What the pair cannot do is declared, and the library skips those tests with its own one-line reason:
images, audio and PDF input (the Qwen2.5-Coder pair reads text only), JSON mode (not offered: vLLM's
guided decoding is reached through tool calling), Anthropic-style inputs, and a per-call ``model``
(each server serves one model).

About 12 minutes (the structured-output tests write whole JSON replies on the 1.5B): not part of
``make test`` (``-m 'not langchain_standard'`` in pyproject.toml) but ``make standard``, which CI runs
as a step of its own after it.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests

from specreason_graph import ChatSpecReason, Context


@pytest.mark.langchain_standard
class TestChatSpecReasonOnTheCpuServers(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True, scope="class")
    def _servers(self, server_pool):
        """The session's CPU servers up (tests/servers.py) before a model is built (class-wide: before
        any test's own fixtures, such as a VCR cassette that would intercept the health check)."""
        server_pool.use("cpu")

    @property
    def chat_model_class(self) -> type[ChatSpecReason]:
        return ChatSpecReason

    @property
    def chat_model_params(self) -> dict:
        context = Context.for_servers("cpu", temperature=0.0, seed=0, token_budget=16,
                                      max_step_tokens=16)
        return {"context": context, "max_tokens": 48}

    @property
    def supports_model_override(self) -> bool:
        return False
