"""A benchmark's modes: which Context fields change for each row of the comparison.

Fairness: base-only and small-only (one request, ``one_request``), their step-by-step variants
(``first_n_base`` above any run's step count; ``small_only``) and SpecReason at any judge /
threshold / score method / first-N are the same graph with different Context fields, so they
share prompts, budget, sampling and servers. A mode may point the base model at
another server (``url=``): a vLLM launched with token-level speculative decoding gives the paper's
SpecDecode and SpecReason + SpecDecode rows.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal

from specreason_graph import rules
from specreason_graph.context import JUDGE_NAMES, Context, ScoreMethod

KINDS = ("base", "small", "base-steps", "small-steps", "spec")
"""base / small: the paper's baselines, the whole solution in one request (``Context.one_request``);
base-steps / small-steps: the same model written step by step through the graph (what stepping
costs); spec: SpecReason."""

ALL_STEPS_BY_BASE = 1_000_000
"""first_n_base for the base-only mode: above any run's step count, so the base writes every step."""


@dataclass(frozen=True)
class Mode:
    """One row of the comparison: which Context fields change for it."""

    name: str
    kind: Literal["base", "small", "base-steps", "small-steps", "spec"]
    threshold: float | None = None
    score_method: Literal["greedy", "expected"] | None = None
    first_n_base: int | None = None
    base_url: str | None = None
    """Another base server for this mode (e.g. one launched with speculative decoding)."""
    base_model: str | None = None
    judge: str | None = None
    """Another judge for this mode (``Context.judge``)."""

    CHANGES: typing.ClassVar[tuple[str, ...]] = (
        "threshold", "score_method", "first_n_base", "small_only", "one_request", "judge",
        "cascade", "calibration", "also_judge")
    """The Context fields a mode sets (a results folder's shared settings leave them out)."""

    def context(self, ctx: Context, **extra: Any) -> Context:
        # the run's Context holds its calibration's choice already: do not apply it again
        change: dict[str, Any] = {"small_only": False, "one_request": None, "calibration": None,
                                  **extra}
        if self.kind in ("base", "small"):
            change["one_request"] = self.kind
        elif self.kind == "base-steps":
            change["first_n_base"] = ALL_STEPS_BY_BASE
        elif self.kind == "small-steps":  # no first-N either: the base model writes nothing
            change.update(small_only=True, first_n_base=0)
        else:
            for key in ("threshold", "score_method", "first_n_base", "judge"):
                if getattr(self, key) is not None:
                    change[key] = getattr(self, key)
        if self.base_url:
            change["base_url"] = self.base_url
        if self.base_model:
            change["base_model"] = self.base_model
        return dataclasses.replace(ctx, **change)

    def settings(self, ctx: Context) -> dict[str, Any]:
        """The Context fields of this mode that decide its behaviour (for the record)."""
        c = self.context(ctx)
        return {"kind": self.kind, "judge": c.judge, "cascade": c.cascade,
                "threshold": c.threshold, "score_method": c.score_method,
                "first_n_base": c.first_n_base, "small_only": c.small_only,
                "one_request": c.one_request,
                "base_url": c.base_url, "base_model": c.base_model}


_KEYS = {"t": "threshold", "threshold": "threshold", "score": "score_method",
         "score_method": "score_method", "n": "first_n_base", "first_n": "first_n_base",
         "first_n_base": "first_n_base", "url": "base_url", "model": "base_model", "name": "name",
         "judge": "judge"}


SPECDECODE_ALIASES = {"specdecode": "base", "specreason+specdecode": "spec"}
"""The paper's two SpecDecode rows: base-only in one request, and SpecReason, with every base-model
call going to a server that speculates token by token (``specdecode_url``)."""


def parse_mode(text: str, specdecode_url: str | None = None) -> Mode:
    """``base`` | ``small`` | ``spec[:judge=score,t=7,score=greedy,n=0]``, plus ``url=``/``model=``
    (another base server) and ``name=`` (the row's label) on any of them. What a spec mode does not
    set comes from the run's Context (and its ``calibration``, if any).

    ``specdecode`` and ``specreason+specdecode[:...]`` are ``base`` and ``spec`` with ``url=``
    ``specdecode_url`` (the speculating base server; the CLI takes it from
    ``--specdecode-servers``, servers/cpu.toml) and those names, unless the text gives its own."""
    kind, _, rest = text.strip().partition(":")
    if kind in SPECDECODE_ALIASES:
        given = {item.partition("=")[0].strip() for item in rest.split(",")}
        if "url" not in given and not specdecode_url:
            raise ValueError(f"mode {text!r}: which server speculates? give url=")
        extra = ([f"url={specdecode_url}"] if "url" not in given else []) + (
            [f"name={kind}"] if "name" not in given else [])
        kind, rest = SPECDECODE_ALIASES[kind], ",".join(filter(None, [rest, *extra]))
    if kind not in KINDS:
        raise ValueError(f"unknown mode {text!r}: start with base, small or spec "
                         "(e.g. spec:t=5,score=expected), base-steps / small-steps, or specdecode / "
                         "specreason+specdecode")
    fields: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _KEYS:
            raise ValueError(f"mode {text!r}: cannot read {item!r}; use "
                             "t=, score=, n=, url=, model=, name=, judge=")
        fields[_KEYS[key.strip()]] = value.strip()
    if kind != "spec" and set(fields) & {"threshold", "score_method", "first_n_base"}:
        raise ValueError(f"mode {text!r}: t=, score= and n= only apply to spec")
    if kind != "spec" and "judge" in fields:
        raise ValueError(f"mode {text!r}: judge= only applies to spec")
    if fields.get("judge") not in (None, *JUDGE_NAMES):
        raise ValueError(f"mode {text!r}: judge= is one of {', '.join(JUDGE_NAMES)}")
    try:
        threshold = float(fields["threshold"]) if "threshold" in fields else None
        first_n = int(fields["first_n_base"]) if "first_n_base" in fields else None
    except ValueError:
        raise ValueError(f"mode {text!r}: t= takes a number, n= a whole number") from None
    if threshold is not None and not rules.is_threshold(threshold):
        raise ValueError(f"mode {text!r}: the threshold must be from 0 to 10")
    if fields.get("score_method") not in (None, *typing.get_args(ScoreMethod)):
        raise ValueError(f"mode {text!r}: score= is greedy or expected")
    name = fields.get("name") or _default_name(kind, threshold, fields.get("score_method"),
                                               first_n, fields.get("base_url"), fields.get("judge"))
    return Mode(name, kind, threshold, fields.get("score_method"), first_n,  # type: ignore[arg-type]
                fields.get("base_url"), fields.get("base_model"), fields.get("judge"))


def _default_name(kind: str, threshold: float | None, score: str | None, first_n: int | None,
                  url: str | None, judge: str | None = None) -> str:
    if kind != "spec":
        name = f"{kind}-only" if kind in ("base", "small") else kind
    else:
        parts = ["specreason"] + ([judge] if judge else [])
        if threshold is not None:
            parts.append(f"t={threshold:g}")
        if score:
            parts.append(score)
        if first_n:
            parts.append(f"n={first_n}")
        name = " ".join(parts)
    return f"{name} @{url}" if url else name
