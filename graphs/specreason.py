"""The SpecReason graph as LangGraph Studio / ``langgraph dev`` loads it (see langgraph.json).

Compiled without a checkpointer: the LangGraph server supplies its own persistence. Its settings
appear in Studio as the context schema (``specreason_graph.Context``), so assistants such as
"strict" (threshold 9) and "fast" (threshold 3) are just saved contexts.
"""

from specreason_graph.graph import compile_graph

graph = compile_graph()
