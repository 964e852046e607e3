"""The Context's defaults come from servers/cpu.toml: the endpoints of the servers the launcher
starts, and the judge settings its [graph] table holds (the paper's where it holds none)."""

from __future__ import annotations

import pytest

from specreason_graph import Context, context
from specreason_graph.resources import config_path, read_config
from specreason_graph.serving.config import load_config

pytestmark = pytest.mark.cpu_defaults

CPU = read_config(config_path("cpu"))  # cpu.toml, its extends = "cpu-plain" resolved



def test_the_endpoints_are_the_launchers():
    servers = load_config("cpu")
    ctx = Context()
    assert (ctx.base_url, ctx.base_model) == (servers.role("base").url,
                                              servers.role("base").served_model_name)
    assert (ctx.small_url, ctx.small_model) == (servers.role("small").url,
                                                servers.role("small").served_model_name)


def test_the_judge_is_what_the_cpu_config_chose():
    ctx = Context()
    chosen = {**context.PAPER_JUDGE, **CPU.get("graph", {})}
    assert (ctx.judge, ctx.threshold, ctx.score_method, ctx.cascade) == (
        chosen["judge"], chosen["threshold"], chosen["score_method"], chosen["cascade"])


def test_an_environment_variable_still_wins(monkeypatch):
    monkeypatch.setenv("SPECREASON_JUDGE", "check")
    monkeypatch.setenv("SPECREASON_THRESHOLD", "5")
    ctx = Context()
    assert (ctx.judge, ctx.threshold) == ("check", 5.0)
