"""What the project promises about secrets, addresses and commands."""

from __future__ import annotations

import logging

import pytest

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
    """Every server and router binds 127.0.0.1; one of a config spread over hosts binds its host's
    private-network address, never every interface."""
    import ipaddress

    for path in sorted(resource_dir("servers").glob("*.toml")):
        members = config.load_config(path).servers
        spread = any(spec.host != "127.0.0.1" for spec in members)
        for spec in members:
            if spread:
                assert "multihost" in path.stem, path
                address = ipaddress.ip_address(spec.host)
                assert address.is_private and not address.is_unspecified, (path, spec.host)
            else:
                assert spec.host == "127.0.0.1", path
            argv = spec.argv()
            assert argv[argv.index("--host") + 1] == spec.host, path
            assert [a for a in argv if a.startswith("--") and " " in a] == [], path


def test_the_launcher_hands_the_argv_to_the_kernel_with_no_shell(monkeypatch, tmp_path):
    """An option's value with shell syntax in it stays one inert argument."""
    import subprocess

    from specreason_graph.serving import launcher

    monkeypatch.setenv("SPECREASON_HOME", str(tmp_path))
    seen: dict = {}

    class Refused(Exception):
        pass

    def popen(args, **kwargs):
        seen.update(args=args, **kwargs)
        raise Refused

    monkeypatch.setattr(launcher, "healthy", lambda spec, timeout=2.0: False)
    monkeypatch.setattr(subprocess, "Popen", popen)
    spec = config.ServerSpec(role="base", model="m; touch pwned", served_model_name="$(id)",
                             host="127.0.0.1", port=1, python="python3",
                             options={"chat-template": "`id` && echo x | cat > y"})
    with pytest.raises(Refused):
        launcher.start_one(spec, echo=lambda *_: None)
    assert seen["args"] == spec.argv() and not seen.get("shell", False)
    assert "`id` && echo x | cat > y" in seen["args"] and "m; touch pwned" in seen["args"]
