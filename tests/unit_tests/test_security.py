"""What the project promises about secrets, addresses and commands."""

from __future__ import annotations

import logging

from specreason_graph import Context
from specreason_graph.models import chat_model
from specreason_graph.resources import resource_dir
from specreason_graph.serving import config
from tests.fakes import ScriptedModel, by_kind, score, step


def test_api_key_is_never_in_reprs_or_logs(caplog):
    ctx = Context(api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(ctx) and "sk-very-secret" not in str(ctx)
    chat = chat_model(ctx.base_url, ctx.base_model, ctx.api_key, ctx.request_timeout)
    assert "sk-very-secret" not in repr(chat)
    assert chat.openai_api_key.get_secret_value() == "sk-very-secret"  # but it is sent

    from specreason_graph import build_graph

    with caplog.at_level(logging.DEBUG):
        build_graph(small=ScriptedModel(script=[step(r"\boxed{1}")]),
                    base=ScriptedModel(script=by_kind([], [score("9")]))).compile().invoke(
            {"problem": "q"}, context=ctx)
    assert "sk-very-secret" not in caplog.text


def test_every_server_config_binds_loopback_and_builds_an_argv_not_a_shell_string():
    for path in sorted(resource_dir("servers").glob("*.toml")):
        for spec in config.load_config(path).servers:
            assert spec.host == "127.0.0.1", path
            argv = spec.argv()
            assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
