"""The stand-in for a vLLM server that ``overhead.py`` and ``studio_load.py`` measure against: no
model, canned replies, in a process of its own (its work does not take the client's interpreter
lock). A threaded HTTP/1.1 server on 127.0.0.1 answers ``/v1/chat/completions`` with a step of
``TOKENS_PER_STEP`` tokens that ends at the delimiter (logprobs and usage included) or, for a
one-token request, a judge reply of "9" with its top-10 logprobs, after ``latency`` seconds (0: at
once; 0.2 is a GPU server's pace).

    with Stub(latency=0.2) as stub:
        ...  # an OpenAI client at stub.url, model MODEL
"""

from __future__ import annotations

import json
import multiprocessing
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKENS_PER_STEP = 10
DELIMITER = "\n\n"
MODEL = "stub"


def step_reply(n: int) -> dict[str, Any]:
    words = f"Step {n}: we add {n} and {n} to get {2 * n} here.".split(" ")
    tokens = [w if i == 0 else " " + w for i, w in enumerate(words)][: TOKENS_PER_STEP - 1]
    content = "".join(tokens) + DELIMITER
    entries = [{"token": t, "logprob": -0.1, "bytes": list(t.encode()), "top_logprobs": []}
               for t in [*tokens, DELIMITER]]
    return {"id": f"stub-{n}", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": {"content": entries},
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100 + 12 * n, "completion_tokens": TOKENS_PER_STEP,
                      "total_tokens": 110 + 12 * n,
                      "prompt_tokens_details": {"cached_tokens": 96}}}


def judge_reply() -> dict[str, Any]:
    top = [{"token": str(d), "logprob": -0.01 if d == 9 else -5.0 - d, "bytes": [48 + d]}
           for d in (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)]
    return {"id": "stub-judge", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "finish_reason": "length", "logprobs": {"content": [
                {"token": "9", "logprob": -0.01, "bytes": [57], "top_logprobs": top}]},
                "message": {"role": "assistant", "content": "9"}}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 1, "total_tokens": 201,
                      "prompt_tokens_details": {"cached_tokens": 160}}}


def serve(port_out: Any, latency: float = 0.0) -> None:
    """The stand-in's process: answer until killed, each reply ``latency`` seconds after its
    request."""
    judge = json.dumps(judge_reply()).encode()
    steps: dict[int, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as vLLM's server
        disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms delayed ACK)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if (body.get("max_completion_tokens") or body.get("max_tokens")) == 1:
                reply = judge
            else:  # the step number: how many steps the pre-filled assistant turn holds
                messages = body["messages"]
                n = str(messages[-1]["content"]).count(DELIMITER) if len(messages) > 1 else 0
                reply = steps.get(n) or steps.setdefault(n, json.dumps(step_reply(n)).encode())
            if latency:
                time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


class Stub:
    """The stand-in in a process of its own, for a ``with`` block."""

    def __init__(self, latency: float = 0.0):
        self.latency = latency

    def __enter__(self) -> Stub:
        mp = multiprocessing.get_context("spawn")
        ports = mp.Queue()
        self.process = mp.Process(target=serve, args=(ports, self.latency), daemon=True)
        self.process.start()
        self.url = f"http://127.0.0.1:{ports.get(timeout=60)}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(10)
