"""LangChain's standard unit tests for chat models (langchain-tests), run on ChatSpecReason: what
every LangChain chat-model integration passes without a server (construction, tool binding,
structured output, the LangSmith parameters, initialisation time)."""

from __future__ import annotations

from langchain_tests.unit_tests import ChatModelUnitTests

from specreason_graph import ChatSpecReason


class TestChatSpecReasonStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatSpecReason]:
        return ChatSpecReason

    @property
    def chat_model_params(self) -> dict:
        return {}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        """The settings come from the Context, which reads ``SPECREASON_*`` when it is built."""
        return ({"SPECREASON_BASE_MODEL": "base-from-env"}, {}, {"model_name": "base-from-env"})
