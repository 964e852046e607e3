"""What a served chat template opens the assistant turn with, read from the vLLM server itself.

Reasoning models (QwQ, the R1 distills) have chat templates whose generation prompt opens a think
block (``<|im_start|>assistant\\n<think>\\n``). A run's first step request gets it from the template,
but every later one continues a pre-filled assistant turn, which the template renders without it, so
the graph pre-fills it itself (the *thinking opener*). vLLM's ``/tokenize`` renders one user turn with
and without the generation prompt, ``/detokenize`` turns the difference back into text, and the
opener is that text from ``<think>`` on ("" when there is none).

:func:`served_opener` is what the graph asks when ``Context.thinking_opener`` is not set: once per
endpoint and process (a server that answered is remembered; one that could not be reached is asked
again next run). The checks before a command (``serving.preflight``) read the same.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

THINK_OPEN = "<think>"


class Unreachable(Exception):
    """The server did not answer at all (not running, refused): nothing to remember."""


def request(url: str, api_key: str | None, body: dict[str, Any] | None = None,
            timeout: float = 10) -> Any:
    """One JSON request to a vLLM server's own API (GET without ``body``, else POST)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(req, timeout=timeout) as response:
        return json.load(response)


def generation_prompt(root: str, model: str, api_key: str | None) -> str | None:
    """The text the served chat template appends to a user turn to open the assistant's; None when
    the server answered but cannot say (no ``/tokenize`` with messages, or no ``/detokenize``: not
    vLLM). Raises :class:`Unreachable` when nothing answered at ``root``."""
    turn = [{"role": "user", "content": "What is 1 + 1?"}]
    try:
        bare, opened = (request(f"{root}/tokenize", api_key, {
            "model": model, "messages": turn, "add_generation_prompt": flag})["tokens"]
            for flag in (False, True))
        if not isinstance(bare, list) or not isinstance(opened, list) \
                or opened[:len(bare)] != bare:
            return None
        added = opened[len(bare):]
        if not added:
            return ""
        text = request(f"{root}/detokenize", api_key, {"model": model, "tokens": added})["prompt"]
        return text if isinstance(text, str) else None
    except urllib.error.HTTPError:
        return None  # it answered: not vLLM's tokenizer API, or not for this model
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"{root}: {getattr(exc, 'reason', exc)}") from None
    except (ValueError, KeyError, TypeError):
        return None


def opener_in(prompt: str | None) -> str | None:
    """The thinking opener in a generation prompt: from ``<think>`` on, "" without one (None: the
    server could not say)."""
    if prompt is None:
        return None
    at = prompt.find(THINK_OPEN)
    return prompt[at:] if at >= 0 else ""


_known: dict[tuple[str, str], str | None] = {}
_lock = threading.Lock()


def served_opener(root: str, model: str, api_key: str | None) -> str | None:
    """The thinking opener of ``model``'s template at the server ``root`` (``http://host:port``),
    remembered per endpoint; None when the server answered but cannot say; Unreachable when it did
    not answer (not remembered)."""
    key = (root, model)
    with _lock:
        if key in _known:
            return _known[key]
    found = opener_in(generation_prompt(root, model, api_key))
    with _lock:
        _known[key] = found
    return found


def remembered(root: str, model: str) -> bool:
    """Whether :func:`served_opener` would answer without asking the server."""
    with _lock:
        return (root, model) in _known
