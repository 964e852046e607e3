"""SpecReason speculative reasoning as a LangGraph graph over OpenAI-compatible (vLLM) servers."""

from specreason_graph.chat import ChatSpecReason
from specreason_graph.context import Context
from specreason_graph.graph import build_graph, compile_graph
from specreason_graph.state import InputState, OutputState, State, StepRecord

__all__ = ["ChatSpecReason", "Context", "InputState", "OutputState", "State", "StepRecord", "build_graph",
           "compile_graph"]
