# A vLLM tool-call parser for the Qwen2.5-Coder instruct models (the CPU pair's base model), loaded
# by the CPU server configs with `--tool-parser-plugin <this file> --tool-call-parser qwen_coder`.
#
# Their chat template asks for Hermes-style calls (`<tool_call>{"name": ..., "arguments": ...}
# </tool_call>`), which vLLM's `hermes` parser reads. At temperature 0 the 1.5B coder model mostly
# writes the call some other way (measured: docs/serving.md, "Tool calls"):
#   - as JSON in a Markdown code fence (```json\n{"name": ..., "arguments": {...}}\n```),
#   - as bare JSON, sometimes with the template's doubled braces copied ({{"name": ...}}),
#   - as several such objects (one call each), or a JSON list of them.
# This parser is hermes's wherever a `<tool_call>` tag appears; otherwise it takes a reply that
# *is* one or more such objects (in fences or bare, nothing else but whitespace around them) and
# names only tools the request offered, with a JSON object of arguments. Anything else stays
# text: prose that merely contains JSON is never turned into a call.
#
# Streaming keeps hermes's behaviour (tags only); SpecReason asks for the reply without streaming.

from __future__ import annotations

import json
import re
from typing import Any

from vllm.entrypoints.generate.base.protocol import (
    ExtractedToolCallInformation,
    FunctionCall,
    ToolCall,
)
from vllm.tool_parsers.abstract_tool_parser import ToolParserManager
from vllm.tool_parsers.hermes_tool_parser import Hermes2ProToolParser

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)


def _undouble(text: str) -> str:
    """``{{"name": ...}}`` (the template's own escaping, copied) → ``{"name": ...}``."""
    text = text.strip()
    while text.startswith("{{") and text.endswith("}}"):
        text = text[1:-1].strip()
    return text


def _objects(text: str) -> list[Any] | None:
    """The JSON values ``text`` consists of (whitespace between them), or None if anything else
    is there."""
    decoder = json.JSONDecoder()
    found, at, text = [], 0, text.strip()
    while at < len(text):
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            break
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return None
        found.append(value)
    return found


def calls_in(output: str, offered: set[str]) -> list[tuple[str, dict[str, Any]]] | None:
    """The calls a reply consists of, as (name, arguments), or None when it is not only calls of
    offered tools (then it is text)."""
    body = output.strip()
    if not body:
        return None
    fenced = _FENCE.findall(body)
    if fenced:
        if _FENCE.sub("", body).strip():  # prose around the fences: an answer that shows code
            return None
        parts: list[Any] = []
        for block in fenced:
            values = _objects(_undouble(block))
            if values is None:
                return None
            parts += values
    else:
        values = _objects(_undouble(body))
        if values is None:
            return None
        parts = values
    flat = [item for part in parts for item in (part if isinstance(part, list) else [part])]
    calls = []
    for item in flat:
        if not isinstance(item, dict) or set(item) - {"name", "arguments", "parameters"}:
            return None
        name = item.get("name")
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                return None
        if name not in offered or not isinstance(arguments, dict):
            return None
        calls.append((name, arguments))
    return calls or None


@ToolParserManager.register_module("qwen_coder")
class QwenCoderToolParser(Hermes2ProToolParser):
    """Hermes tags, else a reply made only of JSON calls to the offered tools (fenced or bare)."""

    def extract_tool_calls(self, model_output: str, request: Any) -> ExtractedToolCallInformation:
        if self.tool_call_start_token in model_output:
            return super().extract_tool_calls(model_output, request)
        offered = {tool.function.name for tool in (getattr(request, "tools", None) or [])
                   if getattr(tool, "function", None) is not None}
        calls = calls_in(model_output, offered)
        if not calls:
            return ExtractedToolCallInformation(tools_called=False, tool_calls=[],
                                                content=model_output)
        return ExtractedToolCallInformation(
            tools_called=True, content=None,
            tool_calls=[ToolCall(type="function", function=FunctionCall(
                name=name, arguments=json.dumps(arguments, ensure_ascii=False)))
                for name, arguments in calls])
