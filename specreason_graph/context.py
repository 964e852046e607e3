"""Run settings: what a caller passes with ``graph.invoke(..., context=Context(...))``.

Every field falls back to an environment variable ``SPECREASON_<FIELD>`` when the caller leaves it
at its default, so a shell or a ``langgraph dev`` process can be pointed at other servers without
code. The class is a pydantic dataclass: a bad value fails at construction with the field named,
before any server time is spent; LangGraph builds it from a plain dict (Studio, the SDK) the same way.
"""

from __future__ import annotations

import json
import os
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal

from langgraph.runtime import Runtime
from pydantic import Field, field_validator, model_validator
from pydantic.dataclasses import dataclass
from pydantic_core import ArgsKwargs

from specreason_graph.resources import config_path, prompt_set_dir, read_config
from specreason_graph.rules import THRESHOLD_MAX, THRESHOLD_MIN, is_threshold, parse_cascade
from specreason_graph.state import Role

ScoreMethod = Literal["greedy", "expected"]
JudgeName = Literal["score", "yes_no", "confidence", "likelihood", "check", "cascade"]
JUDGE_NAMES: tuple[str, ...] = typing.get_args(JudgeName)
PAPER_JUDGE = {"judge": "score", "threshold": 7.0, "score_method": "greedy",
               "cascade": "check:1-10,score"}
"""The paper's judge and threshold: ``Context()``'s, and any pair's whose configuration chose none."""
CHOSEN = ("judge", "threshold", "score_method", "cascade")
"""The fields a calibration chooses (``calibration`` loads them; a server configuration's ``[graph]``
table holds those chosen for its pair, e.g. servers/cpu-plain.toml's for the CPU pair)."""
PromptName = Literal["math", "multiple_choice"]
LOCAL_SERVERS = "cpu"
"""The server config (``servers/cpu.toml``) whose endpoints are the defaults: the servers that
``specreason serve`` and ``make demo`` start on this machine (the CPU pair, its base server
speculating with the small model as its draft model)."""


@cache
def server_defaults(servers: str | None = None) -> dict[str, Any]:
    """The defaults a Context gets from a server configuration (``servers/<name>.toml`` or a path):
    ``{base,small}_{url,model}`` of its servers (a role with replicas: their router's; one source
    for the launcher and the Context) and the judge settings its ``[graph]`` table holds for that
    pair, over the paper's judge.
    ``None``: the local servers' endpoints (``LOCAL_SERVERS``) with the paper's judge."""
    data = read_config(config_path(servers or LOCAL_SERVERS))  # extends = "cpu-plain" resolved
    host = data.get("defaults", {}).get("host", "127.0.0.1")
    found: dict[str, Any] = dict(PAPER_JUDGE)
    if servers is not None:
        found.update({k: v for k, v in data.get("graph", {}).items() if k in CHOSEN})
    for server in data.get("server", []):
        # with replicas the endpoint is their router: the server's host and port unless the
        # router table names its own (serving.config); ``roles``: one endpoint for both
        router = server.get("router", {}) if server.get("replicas") else {}
        where = (router.get("host", server.get("host", host)), router.get("port", server.get("port")))
        for role in server.get("roles") or [server["role"]]:
            found[f"{role}_url"] = f"http://{where[0]}:{where[1]}/v1"
            found[f"{role}_model"] = server["served-model-name"]
    return found


def origin(url: str) -> str:
    """The server an OpenAI-compatible endpoint URL is on, without the API's ``/v1``
    (``http://127.0.0.1:8101/v1`` → ``http://127.0.0.1:8101``): where vLLM serves ``/metrics``,
    ``/tokenize`` and ``/detokenize``."""
    return url.rstrip("/").removesuffix("/v1")


_DECLARED: dict[str, Any] = {}
"""Each field's default as :func:`_env` declares it (what the environment may replace)."""


def _env(field: str, default: Any) -> Any:
    """Default for ``field``: ``$SPECREASON_<FIELD>`` if set, else ``default`` (pydantic coerces)."""
    _DECLARED[field] = default
    return lambda: os.environ.get(f"SPECREASON_{field.upper()}", default)


def _profiled(field: str) -> Any:
    """Default for an endpoint or judge field: ``$SPECREASON_<FIELD>``, else ``Context()``'s (the
    local servers' endpoints, the paper's judge). A Context that names ``servers`` gets that
    configuration's values before defaults apply (``Context._profile``)."""
    return lambda: os.environ.get(f"SPECREASON_{field.upper()}") or server_defaults()[field]


def declared_default(name: str) -> Any:
    """The value of the Context field ``name`` when neither the caller nor the environment sets it:
    its declared default, or for an endpoint or judge field ``Context()``'s (the local servers'
    endpoints, the paper's judge). KeyError when it has neither (``also_judge``, built by a
    function of its own)."""
    if name in _DECLARED:
        return _DECLARED[name]
    return server_defaults()[name]


def load_choice(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The judge settings a ``specreason calibrate`` choice file holds (``choice.json``)."""
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
        return {key: found["choice"][key] for key in CHOSEN if key in found["choice"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read the calibration {path}: {exc}") from None


@dataclass(kw_only=True, config={"extra": "forbid", "validate_default": True})
class Context:
    """Settings of one SpecReason run: the paper's defaults unless noted, over the local servers'
    endpoints. ``Context.for_servers("cpu")`` (or ``servers="cpu"``) takes a server
    configuration's endpoints and the judge its ``[graph]`` table chose for that pair instead."""

    servers: str | None = Field(default_factory=_env("servers", None), description=(
        "A server configuration (servers/<name>.toml, or a path) whose endpoints and [graph] judge "
        "settings are this Context's defaults for the fields not given: the profile of that model "
        "pair (cpu, cpu-plain: the judge calibrated for the CPU pair). None: the local CPU "
        "servers' endpoints with the paper's judge."))
    base_url: str = Field(default_factory=_profiled("base_url"), description=(
        "OpenAI-compatible endpoint of the base model (judges steps, writes rejected ones)."))
    base_model: str = Field(default_factory=_profiled("base_model"), description=(
        "Model name served at base_url (as in vLLM's --served-model-name)."))
    small_url: str = Field(default_factory=_profiled("small_url"), description=(
        "OpenAI-compatible endpoint of the small model (drafts every step)."))
    small_model: str = Field(default_factory=_profiled("small_model"), description=(
        "Model name served at small_url."))
    api_key: str | None = Field(default_factory=_env("api_key", None), repr=False, description=(
        "API key sent to both servers (vLLM --api-key); never logged."))

    judge: JudgeName = Field(default_factory=_profiled("judge"), description=(
        "What scores a draft, on a 0-9 scale: score (the paper's: the base model's digit), yes_no "
        "(the base model's P(Yes) that the step is correct), confidence (the small model's own "
        "token probabilities, free), likelihood (the base model's probability of the draft, a "
        "full prefill), check (the step's arithmetic, checked with sympy, free), cascade "
        "(several in turn, see cascade). Default: the servers' [graph] profile, else score (paper)."))
    threshold: float = Field(default_factory=_profiled("threshold"), ge=THRESHOLD_MIN, le=THRESHOLD_MAX,
                             description=("Accept a draft when its score is >= this (0 keeps every "
                                          "draft, 10 none). Paper: 7."))
    cascade: str = Field(default_factory=_profiled("cascade"), description=(
        "The cascade judge's stages: judge:LOW-HIGH,... then one judge; a stage rejects below LOW, "
        "accepts at HIGH or above, else asks the next; the last one's score meets the threshold."))
    also_judge: list[JudgeName] = Field(default_factory=lambda: [  # type: ignore[arg-type]
        j for j in os.environ.get("SPECREASON_ALSO_JUDGE", "").split(",") if j], description=(
        "Judges run beside the deciding one and recorded in the trace, without a say "
        "(calibration runs every judge on every draft)."))
    calibration: str | None = Field(default_factory=_env("calibration", None), description=(
        "A choice file from `specreason calibrate`: its judge, threshold, score_method and cascade "
        "replace those fields."))
    score_method: ScoreMethod = Field(default_factory=_profiled("score_method"), description=(
        "greedy: the judge's generated digit (paper). expected: probability-weighted mean of the "
        "digit tokens among the judge's top logprobs."))
    first_n_base: int = Field(default_factory=_env("first_n_base", 0), ge=0, description=(
        "The first N steps are written by the base model without drafting."))
    one_request: Role | None = Field(
        default_factory=_env("one_request", None), description=(
            "Baseline, as the paper's: this model writes the whole solution in one request (the "
            "same prompt and sampling, token_budget as max_tokens); no steps, no judge."))
    small_only: bool = Field(default_factory=_env("small_only", False), description=(
        "Baseline: the small model writes every step and nothing is judged (the benchmark's "
        "small-only mode; base-only is first_n_base larger than any run)."))
    token_budget: int = Field(default_factory=_env("token_budget", 8192), gt=0, description=(
        "Stop once the kept steps hold this many tokens (drafts rejected and judge calls "
        "do not count)."))
    max_step_tokens: int = Field(default_factory=_env("max_step_tokens", 512), gt=0, description=(
        "Cap on new tokens per step; a step cut by the cap is kept and marked."))
    reply_tokens: int = Field(default_factory=_env("reply_tokens", 1024), gt=0, description=(
        "Cap on the base model's reply to a conversation (messages in, the reply after the "
        "reasoning): its max_tokens."))
    temperature: float = Field(default_factory=_env("temperature", 0.6), ge=0, le=2, description=(
        "Sampling temperature for drafting and regenerating steps (the judge is always greedy)."))
    top_p: float = Field(default_factory=_env("top_p", 0.95), gt=0, le=1, description=(
        "Nucleus sampling for drafting and regenerating steps."))
    seed: int | None = Field(default_factory=_env("seed", None), description=(
        "Sampling seed sent with every step request (None: the server's randomness)."))
    judge_top_logprobs: int = Field(default_factory=_env("judge_top_logprobs", 10), ge=1, le=20,
                                    description="Alternatives read at the judge's score position.")
    step_delimiter: str = Field(default_factory=_env("step_delimiter", "\n\n"), min_length=1,
                                description="Ends a step (a stop string); kept steps are joined by it.")
    thinking_opener: str | None = Field(default_factory=_env("thinking_opener", None), description=(
        "Pre-filled at the start of the assistant turn: '<think>\\n' for reasoning models "
        "(QwQ, R1 distills), empty for instruct models such as the CPU default pair. None: read "
        "from the base server's chat template (once per endpoint and process)."))
    prompt: PromptName = Field(default_factory=_env("prompt", "math"), description=(
        "Problem prompt from prompts/: math (boxed answer) or multiple_choice (boxed letter)."))
    prompt_set: str = Field(default_factory=_env("prompt_set", ""), description=(
        "Where the problem and judge prompts come from: '' ours (prompts/); 'paper' the original "
        "code's layout in our words (prompts/paper/, docs/algorithm.md); or a folder of .txt "
        "files named as in prompts/ (a file it lacks comes from prompts/)."))
    request_timeout: float = Field(default_factory=_env("request_timeout", 900.0), gt=0,
                                   description="Seconds to wait for one model call.")

    @classmethod
    def for_servers(cls, servers: str, **fields: Any) -> Context:
        """The Context a server configuration implies: its endpoints and its pair's judge profile
        (``[graph]``), under ``fields`` and the environment's ``SPECREASON_*``."""
        return cls(servers=servers, **fields)

    def endpoint(self, role: Role) -> tuple[str, str]:
        """(URL, served model name) of the ``role`` model."""
        return (self.small_url, self.small_model) if role == "small" else (self.base_url, self.base_model)

    @field_validator("base_url", "small_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {url!r}")
        return url

    @field_validator("servers")
    @classmethod
    def _config(cls, servers: str | None) -> str | None:
        if servers is not None:
            try:
                server_defaults(servers)
            except (OSError, ValueError, KeyError) as exc:  # unknown name, unreadable or bad TOML
                raise ValueError(f"cannot read the server configuration {servers!r}: "
                                 f"{str(exc).strip(chr(34) + chr(39))}") from None
        return servers

    @field_validator("prompt_set")
    @classmethod
    def _prompt_folder(cls, prompt_set: str) -> str:
        prompt_set_dir(prompt_set)
        return prompt_set

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, given: Any) -> Any:
        """``servers`` named (or ``$SPECREASON_SERVERS``): its endpoints and judge profile fill the
        fields neither given nor set in the environment. An unknown configuration is left to the
        ``servers`` field's own check (one error, naming the known ones)."""
        kwargs = (given.kwargs or {}) if isinstance(given, ArgsKwargs) else given
        if not isinstance(kwargs, dict):
            return given
        servers = kwargs.get("servers", os.environ.get("SPECREASON_SERVERS"))
        try:
            profile = server_defaults(servers) if isinstance(servers, str) and servers else {}
        except (OSError, ValueError, KeyError):
            return given
        filled = {**{k: v for k, v in profile.items()
                     if f"SPECREASON_{k.upper()}" not in os.environ}, **kwargs}
        return ArgsKwargs(given.args, filled) if isinstance(given, ArgsKwargs) else filled

    @model_validator(mode="after")
    def _check(self) -> Context:
        if self.calibration:
            for key, value in load_choice(self.calibration).items():
                setattr(self, key, value)
            if not (self.judge in JUDGE_NAMES and is_threshold(self.threshold)):
                raise ValueError(f"calibration {self.calibration} chose an unknown judge or threshold")
        parse_cascade(self.cascade, JUDGE_NAMES)
        return self


def current(context: object) -> Context:
    """The Context of a run: ``runtime.context`` when it is ours, else the defaults.

    A graph invoked inside another graph's node inherits that graph's context; when the outer
    graph has a context of its own (an agent's), SpecReason falls back to its defaults (and the
    environment) rather than reading fields the outer context does not have.
    """
    return context if isinstance(context, Context) else Context()


def of(runtime: Runtime[Any]) -> Context:
    """The Context of the run a node is part of (see :func:`current`)."""
    return current(runtime.context)
