"""Where a Context's defaults come from: ``Context()`` is the paper's judge over the local servers'
endpoints (servers/cpu.toml, the servers ``specreason serve`` starts); a server configuration's
``[graph]`` table is its pair's judge profile, applied where that configuration is named
(``Context.for_servers``, ``Context(servers=...)``, ``$SPECREASON_SERVERS``, the command line's
``--servers``); an explicit value, then the environment, wins over either."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from specreason_graph import Context, context
from specreason_graph.resources import config_path, read_config
from specreason_graph.serving.config import load_config

CPU = read_config(config_path("cpu"))  # cpu.toml, its extends = "cpu-plain" resolved
CPU_PROFILE = {**context.PAPER_JUDGE, **CPU["graph"]}


def judge_of(ctx: Context) -> dict:
    return {k: getattr(ctx, k) for k in context.CHOSEN}


def test_the_endpoints_are_the_launchers():
    servers = load_config("cpu")
    ctx = Context()
    assert (ctx.base_url, ctx.base_model) == (servers.role("base").url,
                                              servers.role("base").served_model_name)
    assert (ctx.small_url, ctx.small_model) == (servers.role("small").url,
                                                servers.role("small").served_model_name)


def test_context_alone_is_the_papers_judge():
    assert judge_of(Context()) == context.PAPER_JUDGE
    assert context.PAPER_JUDGE["judge"] == "score" and context.PAPER_JUDGE["threshold"] == 7.0


def test_the_cpu_pair_has_a_profile_of_its_own():
    """The test would prove nothing if the CPU pair's calibrated judge were the paper's."""
    assert judge_of(Context.for_servers("cpu")) == CPU_PROFILE != context.PAPER_JUDGE


@pytest.mark.parametrize("name", ["cpu", "cpu-plain", "cpu-reasoning"])
def test_a_configuration_brings_its_endpoints_and_profile(name):
    servers = load_config(name)
    ctx = Context.for_servers(name)
    assert ctx == Context(servers=name) == servers.context()
    assert (ctx.base_url, ctx.small_url) == (servers.role("base").url, servers.role("small").url)
    graph = read_config(config_path(name)).get("graph", {})
    assert judge_of(ctx) == {**context.PAPER_JUDGE, **graph}


def test_a_configuration_without_a_profile_keeps_the_papers_judge():
    assert "graph" not in read_config(config_path("gpu-qwq32b-r1-1.5b"))
    ctx = Context.for_servers("gpu-qwq32b-r1-1.5b")
    assert judge_of(ctx) == context.PAPER_JUDGE
    assert ctx.base_model == "qwq-32b"


def test_given_fields_and_the_environment_win_over_the_profile(monkeypatch):
    assert Context.for_servers("cpu", threshold=5, judge="yes_no").threshold == 5.0
    monkeypatch.setenv("SPECREASON_JUDGE", "check")
    monkeypatch.setenv("SPECREASON_THRESHOLD", "5")
    ctx = Context.for_servers("cpu")
    assert (ctx.judge, ctx.threshold) == ("check", 5.0)
    assert ctx.cascade == CPU_PROFILE["cascade"]  # what the environment does not set still comes from it


def test_the_environment_can_name_the_servers(monkeypatch):
    monkeypatch.setenv("SPECREASON_SERVERS", "cpu")
    assert judge_of(Context()) == CPU_PROFILE
    assert judge_of(Context(servers=None)) == context.PAPER_JUDGE


def test_an_unknown_configuration_is_one_error_naming_the_known_ones():
    with pytest.raises(ValidationError) as info:
        Context(servers="nope")
    errors = info.value.errors()
    assert [e["loc"][0] for e in errors] == ["servers"]
    assert "cpu-plain" in errors[0]["msg"]


def test_a_dict_from_studio_or_the_sdk_takes_the_profile_too():
    from pydantic import TypeAdapter

    assert judge_of(TypeAdapter(Context).validate_python({"servers": "cpu"})) == CPU_PROFILE
