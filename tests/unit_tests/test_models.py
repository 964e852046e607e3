"""Model I/O against a stand-in OpenAI-style server on loopback (``VLLMChatOpenAI`` as the graph
uses it): which replies are "not a completion" (a step call raises MalformedReply, the judge scores
0) and which errors are not; a reply without usage. The real servers behind a fault proxy are the
integration tests' (tests/integration_tests/test_faults.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langchain_core.messages import HumanMessage

from specreason_graph import models
from specreason_graph.models import (
    Completion,
    JudgeToken,
    MalformedReply,
    Step,
    not_a_completion,
    send,
)

COMPLETION = {"id": "x", "object": "chat.completion", "created": 1, "model": "m"}
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def choice(content: str = "a step\n\n", logprobs: object = None) -> dict:
    return {"index": 0, "finish_reason": "stop", "logprobs": logprobs,
            "message": {"role": "assistant", "content": content}}


BODIES: dict[str, tuple[bytes, str]] = {
    "non-JSON body sent as JSON": (b"<html>502</html>", "application/json"),
    "HTML page": (b"<html><body>502 Bad Gateway?</body>", "text/html"),
    "JSON that is no completion": (b'{"unexpected": true}', "application/json"),
    "an error sent with 200": (b'{"error": {"message": "engine dead"}}', "application/json"),
    "null choices": (json.dumps({**COMPLETION, "choices": None}).encode(), "application/json"),
    "no choices": (json.dumps({**COMPLETION, "choices": []}).encode(), "application/json"),
    "a choice without a message": (json.dumps({**COMPLETION, "choices": [
        {"index": 0, "finish_reason": "stop"}]}).encode(), "application/json"),
    "a JSON list": (b"[1, 2]", "application/json"),
    "an empty body": (b"", "application/json"),
}


@pytest.fixture
def server():
    """A stand-in that answers every POST with ``reply["body"]`` (bytes, content type)."""
    reply: dict[str, tuple[bytes, str]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body, kind = reply["body"]
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    def answer(body: bytes | dict, kind: str = "application/json"):
        reply["body"] = (json.dumps(body).encode() if isinstance(body, dict) else body, kind)
        return models.chat_model(url, "m", None, 5.0)

    yield answer
    httpd.shutdown()
    httpd.server_close()


def write(chat):
    return send(chat, Step("base", [HumanMessage("q")], continue_final=False, delimiter="\n\n",
                           max_tokens=8, temperature=0.0, top_p=1.0))


@pytest.mark.parametrize("garbage", BODIES)
def test_a_reply_that_is_not_a_completion(server, garbage):
    chat = server(*BODIES[garbage])
    with pytest.raises(MalformedReply):
        write(chat)
    verdict = send(chat, JudgeToken([HumanMessage("q")], top_logprobs=5))
    assert verdict.token is None and verdict.top_logprobs == [] and verdict.error


def test_a_completion_is_read(server):
    reply = write(server({**COMPLETION, "choices": [choice()], "usage": USAGE}))
    assert (reply.text, reply.tokens, reply.ended_turn) == ("a step", 3, False)


def test_a_reply_without_usage_counts_its_logprobs_or_is_refused(server):
    logprobs = {"content": [{"token": t, "logprob": -0.5, "top_logprobs": []}
                            for t in ("a", " step", "\n\n")]}
    assert write(server({**COMPLETION, "choices": [choice(logprobs=logprobs)]})).tokens == 3
    with pytest.raises(MalformedReply, match="no token usage"):
        write(server({**COMPLETION, "choices": [choice()]}))
    with pytest.raises(MalformedReply, match="no token usage"):
        send(server({**COMPLETION, "choices": [choice()]}),
             Completion("base", [HumanMessage("q")], max_tokens=8, temperature=0.0,
                        tokens_required=True))


@pytest.mark.parametrize(("error", "malformed"), [
    (ValueError("Unexpected response type from OpenAI-compatible endpoint. Expected a dict"), True),
    (TypeError("Received response with null value for 'choices'. This can happen"), True),
    (KeyError("Response missing 'choices' key: dict_keys(['x'])"), True),
    (MalformedReply("the reply has no choices"), True),
    (json.JSONDecodeError("Expecting value", "<html>", 0), True),
    (ValueError("invalid literal for int() with base 10: 'x'"), False),
    (TypeError("unsupported operand type(s) for +: 'int' and 'str'"), False),
    (KeyError("choices"), False),
    (IndexError("list index out of range"), False),
    (AttributeError("'NoneType' object has no attribute 'get'"), False),
])
def test_not_a_completion_is_only_what_a_bad_reply_raises(error, malformed):
    assert not_a_completion(error) is malformed
