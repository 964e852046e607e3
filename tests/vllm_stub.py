"""A stand-in for a vLLM OpenAI-compatible server on 127.0.0.1 (stdlib only, no model): the
endpoints the command line's preflight and the graph use, with canned replies, recording every
request. Its "chat template" is Qwen's (``<|im_start|>role\\ncontent<|im_end|>\\n``), with or
without a think block in the generation prompt (QwQ / R1 distills open one); it tokenizes one token
per character.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THINK = "<think>\n"


class VLLMStub:
    """``with VLLMStub(model="m") as stub:`` serves at ``stub.url`` (``…/v1``)."""

    def __init__(self, model: str | None = "m", *, max_model_len: int | None = 10240,
                 think: bool = False, answer: str = r"So the answer is \boxed{2}.",
                 detokenize: bool = True, tokenize: bool = True, tokens: list[int] | None = None,
                 status: int = 200, delay: float = 0.0,
                 acceptance: Callable[[float], float] | None = None):
        """``model=None`` serves no model; ``max_model_len=None`` leaves it out of /v1/models (not
        every OpenAI-compatible server says it); ``tokenize=False`` has no /tokenize (not vLLM);
        ``tokens`` is what /tokenize answers for any text (one token per character by default);
        ``status`` other than 200 answers every GET with that error. ``acceptance``: the server
        speculates: /metrics publishes vLLM's speculative-decoding counters, and each chat request
        drafts ``max_tokens`` tokens of which it accepts ``acceptance(temperature)``."""
        self.model, self.max_model_len, self.think, self.delay = model, max_model_len, think, delay
        self.answer, self.detokenize, self.tokenize, self.tokens = answer, detokenize, tokenize, tokens
        self.status, self.acceptance = status, acceptance
        self.drafted = self.accepted = 0
        self.requests: list[tuple[str, dict[str, Any]]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                stub.requests.append((self.path, {}))
                if stub.status != 200:
                    return self._send(stub.status, {"error": "nope"})
                if self.path == "/health":
                    return self._send(200, {})
                if self.path == "/v1/models":
                    served = {"id": stub.model, "object": "model"}
                    if stub.max_model_len is not None:
                        served["max_model_len"] = stub.max_model_len
                    return self._send(200, {"object": "list",
                                            "data": [served] if stub.model is not None else []})
                if self.path == "/metrics" and stub.acceptance is not None:
                    text = ("# TYPE vllm:spec_decode_num_draft_tokens_total counter\n"
                            f'vllm:spec_decode_num_draft_tokens_total{{engine="0"}} {stub.drafted}.0\n'
                            f'vllm:spec_decode_num_accepted_tokens_total{{engine="0"}} {stub.accepted}.0\n')
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    return self.wfile.write(text.encode())
                self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                stub.requests.append((self.path, body))
                if self.path == "/tokenize" and stub.tokenize:
                    text = body["prompt"] if "prompt" in body else stub.render(body)
                    tokens = stub.tokens if stub.tokens is not None else [ord(c) for c in text]
                    return self._send(200, {"count": len(tokens), "tokens": tokens,
                                            "max_model_len": stub.max_model_len})
                if self.path == "/detokenize" and stub.detokenize:
                    return self._send(200, {"prompt": "".join(chr(t) for t in body["tokens"])})
                if self.path == "/v1/chat/completions":
                    time.sleep(stub.delay)  # a model that takes its time (``delay`` seconds)
                    if stub.acceptance is not None:
                        drafted = int(body.get("max_tokens") or 16)
                        stub.drafted += drafted
                        stub.accepted += round(drafted * stub.acceptance(body.get("temperature", 1.0)))
                    return self._send(200, stub.complete(body))
                self._send(404, {"error": "not found"})

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def render(self, body: dict[str, Any]) -> str:
        """The chat template: one turn per message; the last continued or a generation prompt."""
        text = ""
        messages = body["messages"]
        for i, message in enumerate(messages):
            text += f"<|im_start|>{message['role']}\n{message['content']}"
            if not (body.get("continue_final_message") and i == len(messages) - 1):
                text += "<|im_end|>\n"
        if body.get("add_generation_prompt", True) and not body.get("continue_final_message"):
            text += "<|im_start|>assistant\n" + (THINK if self.think else "")
        return text

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        judge = body.get("max_completion_tokens", body.get("max_tokens")) == 1
        content = "9" if judge else self.answer
        logprobs = {"content": [{"token": "9", "logprob": 0.0, "bytes": None,
                                 "top_logprobs": [{"token": "9", "logprob": 0.0, "bytes": None}]}]}
        return {"id": "stub", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "finish_reason": "length" if judge else "stop",
                             "logprobs": logprobs if judge else None,
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1 if judge else 8,
                          "total_tokens": 11 if judge else 18}}

    def chat_requests(self) -> list[dict[str, Any]]:
        return [body for path, body in self.requests if path == "/v1/chat/completions"]

    def __enter__(self) -> VLLMStub:
        # a short poll: shutdown() returns within it (the default 0.5 s, per test, adds up)
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
