"""The SpecReason graph as LangGraph Studio / ``langgraph dev`` loads it (see langgraph.json).

Compiled without a checkpointer: the LangGraph server supplies its own persistence. Its settings
appear in Studio as the context schema (``specreason_graph.Context``), so assistants such as
"strict" (threshold 9) and "fast" (threshold 3) are just saved contexts.

Which judge: an empty context is ``Context()``, the paper's judge (``score``, threshold 7) over the
local CPU servers' endpoints (``SPECREASON_*`` in the server's environment override them). The CPU
pair's calibrated judge is one field away: ``{"servers": "cpu"}`` takes servers/cpu.toml's endpoints
and its ``[graph]`` profile, as ``specreason ask`` does by default (or start ``langgraph dev`` with
``SPECREASON_SERVERS=cpu``). The ``solver`` and ``batch`` graphs hand their context to this one.
"""

from specreason_graph.graph import compile_graph

graph = compile_graph()
