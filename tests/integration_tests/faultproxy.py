"""A small fault-injecting HTTP proxy for the integration tests (stdlib only, 127.0.0.1 only).

It sits in front of one real vLLM server and forwards every request unchanged, unless a rule says
otherwise for that request. Requests are numbered per kind, from 0:

- ``judge``: a completion POST whose JSON body asks for one token with logprobs (``max_tokens``
  or ``max_completion_tokens`` 1, and ``logprobs`` true), i.e. the SpecReason judge call;
- ``step``: any other completion POST (drafting / regenerating a step);
- ``other``: everything else (``GET /v1/models``, ``POST /tokenize``, ``/health``, ...).

A rule matches a kind (``"judge"``, ``"step"``, ``"model"`` for both, ``"other"``, ``"any"``) and a
set of call numbers within that kind (``None``: all of them), and does one of:

- ``forward``: pass through (the default when no rule matches);
- ``delay``: wait ``seconds``, then forward — unless the client hung up meanwhile (it timed out),
  in which case nothing is sent upstream (the server is not kept busy with an orphan request);
- ``drop``: read the request, then close the socket without any response;
- ``status``: answer ``status`` (500, 503, ...) with a vLLM-like JSON error body;
- ``garbage``: answer 200 with a body that is not JSON (``content_type`` chooses the header);
- ``no_logprobs``: answer 200 with a well-formed chat completion whose ``logprobs`` is null and
  whose message content is ``content``.

Every request is logged (kind, number, rule applied, status sent or ``None`` for a drop/hang-up;
its JSON body, and the upstream's JSON answer when forwarded).
The proxy reads whole bodies (``Content-Length``) and relays whole responses (chunked upstream
bodies are read to the end and sent with a length), so streaming requests work too, just not
incrementally. The number of requests is capped so a runaway retry loop cannot spin forever.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from collections.abc import Container
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailer", "transfer-encoding", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class Rule:
    action: str  # forward | delay | drop | status | garbage | no_logprobs
    kind: str = "model"  # judge | step | model (judge or step) | other | any
    calls: Container[int] | None = None  # call numbers within the kind; None: every call
    seconds: float = 0.0
    status: int = 500
    content_type: str = "application/json"
    content: str = "7"
    body: bytes = b"<html><body>502 Bad Gateway?</body>"  # the garbage

    def matches(self, kind: str, number: int) -> bool:
        kinds = {"any": {"judge", "step", "other"}, "model": {"judge", "step"}}.get(
            self.kind, {self.kind})
        return kind in kinds and (self.calls is None or number in self.calls)


def fail(status: int, **kw: Any) -> Rule:
    return Rule("status", status=status, **kw)


@dataclass
class Entry:
    kind: str
    number: int
    method: str
    path: str
    action: str
    status: int | None = None  # what the client got; None: no response (dropped / hung up)
    note: str = ""
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    reply: Any = field(default=None, repr=False)
    """The upstream's JSON answer to a forwarded request (None: not forwarded, or not JSON)."""
    started: float = field(default_factory=time.monotonic, repr=False)
    ended: float | None = field(default=None, repr=False)

    def settle(self, status: int | None, note: str = "") -> None:
        self.status, self.note, self.ended = status, note or self.note, time.monotonic()


class FaultProxy:
    """``with FaultProxy("http://127.0.0.1:8102") as proxy: ... proxy.url`` (ends in ``/v1``)."""

    def __init__(self, upstream: str, *, max_requests: int = 200, upstream_timeout: float = 600.0):
        parts = urlsplit(upstream)
        assert parts.hostname == "127.0.0.1", "the proxy only talks to local servers"
        self.upstream_host, self.upstream_port = parts.hostname, parts.port or 80
        self.max_requests = max_requests
        self.upstream_timeout = upstream_timeout
        self.log: list[Entry] = []
        self._rules: list[Rule] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, daemon=True)

    # --- control ---------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.origin}/v1"

    def set(self, *rules: Rule) -> None:
        """Replace the rules (first match wins; no rules: forward everything). Counters go on."""
        with self._lock:
            self._rules = list(rules)

    def entries(self, kind: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self.log if kind is None or e.kind == kind]

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # --- the handler -----------------------------------------------------------------------

    def _classify(self, method: str, path: str, body: bytes) -> tuple[str, dict[str, Any]]:
        if method != "POST" or not path.split("?")[0].endswith("/completions"):
            return "other", {}
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return "step", {}
        if not isinstance(payload, dict):
            return "step", {}
        # langchain-openai sends max_tokens as max_completion_tokens; accept either spelling.
        one_token = 1 in (payload.get("max_tokens"), payload.get("max_completion_tokens"))
        judge = one_token and payload.get("logprobs") is True
        return ("judge" if judge else "step"), payload

    def _admit(self, method: str, path: str, body: bytes) -> tuple[Entry, Rule | None]:
        kind, payload = self._classify(method, path, body)
        with self._lock:
            number = self._counts.get(kind, 0)
            self._counts[kind] = number + 1
            rule = next((r for r in self._rules if r.matches(kind, number)), None)
            if len(self.log) >= self.max_requests:
                rule = Rule("status", status=503, body=b"fault proxy: request cap reached")
            entry = Entry(kind, number, method, path, rule.action if rule else "forward",
                          body=payload)
            self.log.append(entry)
        return entry, rule

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: simple and bounded
            timeout = 60  # a client that stalls mid-request does not hold a thread for ever

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                entry, rule = proxy._admit(self.command, self.path, body)
                try:
                    self._apply(entry, rule, body)
                except (BrokenPipeError, ConnectionResetError) as exc:
                    entry.settle(None, f"client gone: {type(exc).__name__}")

            def _apply(self, entry: Entry, rule: Rule | None, body: bytes) -> None:
                if rule is None or rule.action == "forward":
                    return self._forward(entry, body)
                if rule.action == "delay":
                    if self._client_left_within(rule.seconds):
                        entry.settle(None, "client hung up during the delay")
                        self.close_connection = True
                        return None
                    return self._forward(entry, body)
                if rule.action == "drop":
                    entry.settle(None, "dropped")
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    self.connection.close()
                    return None
                if rule.action == "status":
                    error = {"error": {"message": "injected fault", "type": "InternalServerError",
                                       "code": rule.status}}
                    if rule.body.startswith(b"fault proxy"):
                        error["error"]["message"] = rule.body.decode()
                    return self._send(entry, rule.status, json.dumps(error).encode(),
                                      "application/json")
                if rule.action == "garbage":
                    return self._send(entry, 200, rule.body, rule.content_type)
                if rule.action == "no_logprobs":
                    reply = {
                        "id": "chatcmpl-fault", "object": "chat.completion",
                        "created": int(time.time()), "model": entry.body.get("model", "model"),
                        "choices": [{"index": 0, "logprobs": None, "finish_reason": "length",
                                     "message": {"role": "assistant", "content": rule.content}}],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 1,
                                  "total_tokens": 101},
                    }
                    return self._send(entry, 200, json.dumps(reply).encode(), "application/json")
                raise ValueError(f"unknown fault action {rule.action!r}")

            def _client_left_within(self, seconds: float) -> bool:
                """Wait ``seconds``; True as soon as the client closes its end."""
                deadline = time.monotonic() + seconds
                while (left := deadline - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.1))
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                return True
                        except OSError:
                            return True
                        time.sleep(min(left, 0.1))  # unexpected extra bytes: keep waiting
                return False

            def _forward(self, entry: Entry, body: bytes) -> None:
                upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                                      timeout=proxy.upstream_timeout)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body if body else None,
                                     headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    relayed = [(k, v) for k, v in response.getheaders()
                               if k.lower() not in HOP_BY_HOP | {"date", "server"}]
                finally:
                    upstream.close()
                try:
                    entry.reply = json.loads(data)
                except ValueError:
                    pass
                self._send(entry, response.status, data, None, relayed)

            def _send(self, entry: Entry, status: int, data: bytes, content_type: str | None,
                      headers: list[tuple[str, str]] | None = None) -> None:
                self.send_response(status)
                for key, value in headers or []:
                    self.send_header(key, value)
                if content_type is not None:
                    self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                # Settle before the body goes out: once the client has read it, the run may end
                # and the test read the log before this thread runs again. A failed write
                # re-settles the entry as "client gone" (see _handle).
                entry.settle(status)
                self.wfile.write(data)
                self.wfile.flush()

        return Handler
