"""The command line's error paths: one clear line, exit code 2, no traceback, no server time."""

from __future__ import annotations

import socket

import pytest

from specreason_graph import cli


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ask(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["ask", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in ("SPECREASON_BASE_URL", "SPECREASON_SMALL_URL", "SPECREASON_THRESHOLD"):
        monkeypatch.delenv(name, raising=False)


def test_unreachable_server_is_one_line_naming_the_url(capsys):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    code, _, err = ask(capsys, "What is 2+2?", "--no-serve", "--base-url", url,
                       "--small-url", url)
    assert code == 2
    assert f"cannot reach the base server at {url}" in err
    assert "specreason serve start" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_invalid_setting_names_the_flag(capsys):
    code, _, err = ask(capsys, "q", "--no-serve", "--threshold", "11")
    assert code == 2 and "--threshold" in err and "less than or equal to 10" in err
    code, _, err = ask(capsys, "q", "--no-serve", "--max-step-tokens", "0")
    assert code == 2 and "--max-step-tokens" in err


def test_bad_setting_in_the_environment_names_the_field(capsys, monkeypatch):
    monkeypatch.setenv("SPECREASON_THRESHOLD", "high")
    code, _, err = ask(capsys, "q", "--no-serve")
    assert code == 2 and "--threshold" in err


@pytest.mark.parametrize("args, message", [
    (["   "], "the question is empty"),
    ([], "give exactly one of"),
    (["q", "--dataset", "gsm8k", "--id", "0"], "give exactly one of"),
    (["--dataset", "gsm8k"], "--dataset needs --id"),
    (["--dataset", "gsm8k", "--id", "99999"], "gsm8k has no problem with id '99999'"),
    (["--file", "/nonexistent/question.txt"], "cannot read /nonexistent/question.txt"),
])
def test_bad_input_is_refused_before_any_server_is_contacted(capsys, args, message):
    code, _, err = ask(capsys, *args, "--no-serve", "--base-url", "http://127.0.0.1:9/v1")
    assert code == 2 and message in err and "Traceback" not in err


def test_every_context_field_is_a_flag():
    import dataclasses

    from specreason_graph import Context

    help_text = cli.parser()._subparsers._group_actions[0].choices["ask"].format_help()
    for f in dataclasses.fields(Context):
        assert "--" + f.name.replace("_", "-") in help_text


def test_context_from_flags_and_escapes():
    args = cli.parser().parse_args(["ask", "q", "--threshold", "9", "--score-method", "expected",
                                    "--thinking-opener", "<think>\\n", "--step-delimiter", "\\n\\n"])
    ctx = cli.context_from_args(args)
    assert ctx.threshold == 9 and ctx.score_method == "expected"
    assert ctx.thinking_opener == "<think>\n" and ctx.step_delimiter == "\n\n"
