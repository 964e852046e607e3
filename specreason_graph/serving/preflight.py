"""Checks made before a run spends server time: are the endpoints vLLM OpenAI servers serving the named
models, do the two share a tokenizer family, does the budget fit their context.

Each endpoint costs two small requests (``GET /v1/models``, ``POST /tokenize``), once per run — not
per model call.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from specreason_graph.context import Context

# Digits, words, whitespace runs and a CJK character: tokenizers of different families split
# this differently, while models of one family (Qwen2.5 0.5B/1.5B, QwQ and R1-Distill-Qwen) agree.
PROBE = "SpecReason 12345 checks\n\n  tokenizers: 你好, naïve café ∑x²!"


class EndpointError(Exception):
    """An endpoint is unusable; the message is one line naming the URL and what to do."""


@dataclass(frozen=True)
class Endpoint:
    role: str
    url: str
    model: str
    max_model_len: int | None
    """From vLLM's model card (None when the server does not say: not vLLM)."""
    probe_tokens: list[int] | None
    """The probe string's token ids (None when the server has no /tokenize: not vLLM)."""


def _request(url: str, api_key: str | None, body: dict[str, Any] | None = None,
             timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if body is not None else "GET")
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.load(response)


def check_endpoint(role: str, url: str, model: str, api_key: str | None = None) -> Endpoint:
    """Fail with one line unless ``url`` is an OpenAI-compatible server that serves ``model``."""
    try:
        cards = _request(url.rstrip("/") + "/models", api_key)["data"]
    except urllib.error.HTTPError as exc:
        raise EndpointError(f"the {role} server at {url} answered {exc.code} to /models: is it an "
                            "OpenAI-compatible vLLM endpoint (and is the API key right)?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise EndpointError(f"cannot reach the {role} server at {url} ({reason}). Start the local "
                            f"servers with `specreason serve start`, or pass --{role}-url with a "
                            "running vLLM server.") from None
    except (ValueError, KeyError, TypeError):
        raise EndpointError(f"{url}/models did not return an OpenAI model list: is the {role} URL "
                            "a vLLM OpenAI-compatible endpoint (ending in /v1)?") from None
    served = {card.get("id"): card for card in cards if isinstance(card, dict)}
    if model not in served:
        served_names = sorted(str(k) for k in served)
        raise EndpointError(f"the {role} server at {url} serves {served_names}, not {model!r}: "
                            f"pass --{role}-model")
    max_len = served[model].get("max_model_len")
    origin = url.rstrip("/").removesuffix("/v1")
    try:
        tokens = _request(f"{origin}/tokenize", api_key,
                          {"model": model, "prompt": PROBE, "add_special_tokens": False})["tokens"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        tokens = None
    return Endpoint(role, url, model, max_len if isinstance(max_len, int) else None, tokens)


def check_pair(ctx: Context) -> list[str]:
    """Check both endpoints (raises EndpointError) and return warnings worth showing the user."""
    base = check_endpoint("base", ctx.base_url, ctx.base_model, ctx.api_key)
    small = check_endpoint("small", ctx.small_url, ctx.small_model, ctx.api_key)
    warnings = []
    for end in (base, small):
        if end.probe_tokens is None:
            warnings.append(f"the {end.role} server at {end.url} has no vLLM /tokenize endpoint: "
                            "if it is not vLLM, pre-filled turns (continue_final_message) and "
                            "logprobs may not work as SpecReason needs")
    if base.probe_tokens is not None and small.probe_tokens is not None \
            and base.probe_tokens != small.probe_tokens:
        warnings.append(f"{base.model} and {small.model} tokenize text differently (different "
                        "tokenizer families): SpecReason passes only text between them, so it "
                        "runs, but the paper's pairs share one and token counts are not comparable")
    need = ctx.token_budget + ctx.max_step_tokens
    for end in (base, small):
        if end.max_model_len is not None and end.max_model_len < need:
            warnings.append(f"the {end.role} model's context ({end.max_model_len} tokens) is "
                            f"smaller than token_budget + max_step_tokens ({need}): a long run "
                            "will stop with stop reason context_full")
    return warnings
