"""Model I/O: every call the graphs make, over any LangChain chat model (vLLM via ``ChatOpenAI``).

``ChatOpenAI`` gives LangChain callbacks, tracing and Studio's token stream for free. vLLM's own
request fields travel in ``extra_body``: ``continue_final_message``/``add_generation_prompt`` (continue
a pre-filled assistant turn) and ``include_stop_str_in_output`` (tells a step that ended at the
delimiter from one where the model ended its turn). Logprobs come back in ``response_metadata``.
Nothing here needs the raw ``openai`` client.

Sync and async from one definition: a model call is a small object that says what to send and how to
read the reply (:class:`Step`, :class:`JudgeToken`, :class:`PromptLogprobs`, :class:`Completion`), with
no I/O. Nodes and judges are generators that yield such calls through :func:`reply_to` and get the
replies back, typed by the call; :meth:`Models.drive` sends them with ``invoke`` (the graph's
``invoke``/``stream``/``batch``) and :meth:`Models.adrive` with ``ainvoke`` (``ainvoke``/``astream``/
``abatch``: the chat model's own async client, no thread pool, and a cancelled run cancels its HTTP
request).

The package, by where a reader would look:

- :mod:`.clients`: the chat models, one per endpoint (cached) for ``invoke`` and one per endpoint
  and event loop for ``ainvoke``; the served name is a setting, no model-name lookup per request.
- :mod:`.calls`: the calls and their replies, how each request is built and each reply read.
- :mod:`.driver`: sending a call, and :class:`Models`, the one object nodes reach the two models
  through, which runs a generator of calls sync or async.
- :mod:`.errors`: the failures a call tells apart, the server errors worth a retry and the one
  :data:`RETRY` policy every model-calling node uses.
"""

from specreason_graph.models.calls import (
    Answer,
    Call,
    Calls,
    Completion,
    JudgeReply,
    JudgeToken,
    PromptLogprobs,
    Reply,
    Respond,
    Step,
    StepReply,
    TextLogprobs,
    Tools,
    reply_to,
)
from specreason_graph.models.clients import VLLMChatOpenAI, async_chat_model, chat_model
from specreason_graph.models.driver import Models, asend, finish, send
from specreason_graph.models.errors import (
    RETRY,
    SERVER_ERRORS,
    ContextFull,
    MalformedReply,
    ModelCallError,
    not_a_completion,
    transient,
)
from specreason_graph.state import Role

__all__ = [
    "RETRY", "SERVER_ERRORS", "Answer", "Call", "Calls", "Completion", "ContextFull", "JudgeReply",
    "JudgeToken", "MalformedReply", "ModelCallError", "Models", "PromptLogprobs", "Reply", "Respond", "Role",
    "Step", "StepReply", "TextLogprobs", "Tools", "VLLMChatOpenAI", "async_chat_model", "asend", "chat_model",
    "finish", "not_a_completion", "reply_to", "send", "transient",
]
