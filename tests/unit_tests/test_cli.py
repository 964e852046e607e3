"""The command line's error paths: one clear line, exit code 2, no traceback, no server time."""

from __future__ import annotations

import os
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
    """No setting from the developer's shell; and a command that gets past its checks reaches no
    real server (the local pair on 8101/8102 may be busy with a benchmark): the default endpoints
    are a closed port."""
    for name in list(os.environ):
        if name.startswith("SPECREASON_"):
            monkeypatch.delenv(name)
    nowhere = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("SPECREASON_BASE_URL", nowhere)
    monkeypatch.setenv("SPECREASON_SMALL_URL", nowhere)


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


# --- settings named where they came from ---------------------------------------------------------

def test_a_bad_setting_from_the_environment_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("SPECREASON_THRESHOLD", "abc")
    code, _, err = ask(capsys, "q", "--no-serve")
    assert code == 2 and "SPECREASON_THRESHOLD" in err and "Input should be a valid number" in err
    args = cli.parser().parse_args(["ask", "q", "--threshold", "5"])
    assert cli.context_from_args(args).threshold == 5  # the flag wins: no error


def test_a_bad_url_names_the_flag_in_plain_words(capsys):
    code, _, err = ask(capsys, "q", "--no-serve", "--base-url", "ftp://x")
    assert code == 2
    assert "--base-url: must be an http(s) URL, got 'ftp://x'" in err
    assert "Value error" not in err and "--:" not in err


def test_a_bad_url_from_the_environment_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("SPECREASON_SMALL_URL", "localhost:8102")
    code, _, err = ask(capsys, "q", "--no-serve")
    assert code == 2 and "SPECREASON_SMALL_URL='localhost:8102' (from the environment" in err
    assert "must be an http(s) URL" in err


def test_a_file_that_is_not_utf8_is_named(capsys, tmp_path):
    path = tmp_path / "question.txt"
    path.write_bytes(b"What is 2 + 2?\n\xff\xfe caf\xe9")
    code, _, err = ask(capsys, "--file", str(path), "--no-serve", "--base-url", "http://127.0.0.1:9/v1")
    assert code == 2 and str(path) in err and "not UTF-8" in err and "Traceback" not in err


# --- against a stand-in vLLM server --------------------------------------------------------------

LONG = "Count the words of this question. " + "word " * 36_000  # about 180 KB


def ask_stub(capsys, stub, *args: str) -> tuple[int, str, str]:
    return ask(capsys, *args, "--no-serve", "--base-url", stub.url, "--small-url", stub.url,
               "--base-model", stub.model, "--small-model", stub.model)


def test_a_question_longer_than_the_context_is_refused_before_any_model_call(capsys):
    from tests.vllm_stub import VLLMStub

    with VLLMStub(max_model_len=4096) as stub:
        code, out, err = ask_stub(capsys, stub, LONG)
    assert code == 2, err
    assert "does not fit the base model's context" in err and "takes 4096" in err
    assert stub.chat_requests() == []  # no model call
    assert len(out) + len(err) < 2_000  # and the question is not echoed in full


def test_a_long_question_is_echoed_as_a_bounded_preview(capsys):
    from tests.vllm_stub import VLLMStub

    with VLLMStub(max_model_len=1_000_000) as stub:
        code, out, err = ask_stub(capsys, stub, LONG)
    assert code == 0, err
    assert out.startswith("Question: Count the words of this question. word word")
    assert f"({len(LONG.strip()):,} characters)" in out
    assert len(out) < 5_000
    assert len(stub.chat_requests()) == 2  # the draft and its judge: the run went on


@pytest.mark.parametrize(("think", "flag", "env", "opener"), [
    (True, None, None, "<think>\n"),       # a reasoning model's template: detected
    (False, None, None, ""),               # an instruct model's
    (True, "", None, ""),                  # the flag overrides the template
    (True, None, "", ""),                  # so does the environment
    (False, "<think>\\n", None, "<think>\n"),
])
def test_the_thinking_opener_comes_from_the_chat_template_unless_set(capsys, monkeypatch, think,
                                                                     flag, env, opener):
    from tests.vllm_stub import VLLMStub

    if env is not None:
        monkeypatch.setenv("SPECREASON_THINKING_OPENER", env)
    else:
        monkeypatch.delenv("SPECREASON_THINKING_OPENER", raising=False)
    with VLLMStub(think=think) as stub:
        flags = [] if flag is None else ["--thinking-opener", flag]
        code, _, err = ask_stub(capsys, stub, "What is 1 + 1?", *flags)
    assert code == 0, err
    first = stub.chat_requests()[0]
    if opener:
        assert first["messages"][-1] == {"role": "assistant", "content": opener}
        assert first["continue_final_message"] is True
    else:
        assert [m["role"] for m in first["messages"]] == ["user"]
        assert first["add_generation_prompt"] is True
    assert ("opens a think block" in err) == (think and flag is None and env is None)


def test_a_bench_with_nothing_left_starts_no_server_and_opens_no_segment(tmp_path, monkeypatch):
    """Resuming a finished request (make benchmarks-specdecode's earlier blocks) costs nothing: no
    servers started (minutes on the CPU), no empty segment in meta.json, the report as before."""
    import json

    from specreason_graph.evaluation.records import META_FILE
    from tests.vllm_stub import VLLMStub

    out = tmp_path / "bench"
    with VLLMStub() as stub:
        argv = ["bench", "--dataset", "gsm8k", "--limit", "2", "--modes", "base", "--out", str(out),
                "--base-url", stub.url, "--small-url", stub.url,
                "--base-model", stub.model, "--small-model", stub.model]
        assert cli.main(argv) == 0
    segments = json.loads((out / META_FILE).read_text())["segments"]
    monkeypatch.setattr(cli.bench, "servers_for", lambda *a, **k: pytest.fail("servers started"))
    assert cli.main(argv) == 0  # the stub is gone: nothing may be asked of it
    assert json.loads((out / META_FILE).read_text())["segments"] == segments


def test_the_sigterm_handler_is_put_back_after_the_command():
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), cli.terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here, in the main thread
    assert signal.getsignal(signal.SIGTERM) == before


def test_ask_with_another_server_config_talks_to_its_servers(monkeypatch):
    """`ask --servers cpu-plain`: the run goes to that config's base server (port 8101), not to
    the default's speculating one (8103), and the pair checked is that one."""
    from contextlib import ExitStack

    from specreason_graph.serving import launcher, preflight

    monkeypatch.delenv("SPECREASON_BASE_URL")
    monkeypatch.delenv("SPECREASON_SMALL_URL")
    monkeypatch.setattr(launcher, "healthy", lambda spec, timeout=2.0: True)
    checked = []

    class Pair:
        warnings: list[str] = []
        thinking_opener = ""

    monkeypatch.setattr(preflight, "check", lambda ctx: checked.append(ctx.base_url) or Pair())
    monkeypatch.setattr(preflight, "check_speculation", lambda ctx: None)
    args = cli.parser().parse_args(["ask", "q", "--servers", "cpu-plain"])
    with ExitStack() as stack:
        ctx = cli.common.servers_for(args, cli.context_from_args(args), stack)
    assert ctx.base_url == checked[0] == "http://127.0.0.1:8101/v1"
    assert ctx.small_url == "http://127.0.0.1:8102/v1"
    default = cli.context_from_args(cli.parser().parse_args(["ask", "q"]))
    assert default.base_url == "http://127.0.0.1:8103/v1"  # the CPU default speculates


def test_bench_measures_the_plain_rows_on_the_plain_pair(monkeypatch):
    """The CPU default's base server speculates; `bench`'s base-only and other plain rows run on
    cpu-plain (8101) unless told otherwise, and its specdecode modes on the default's (8103). An
    endpoint the user names, by flag or environment, wins over both."""
    from specreason_graph.evaluation.modes import parse_mode

    monkeypatch.delenv("SPECREASON_BASE_URL")
    monkeypatch.delenv("SPECREASON_SMALL_URL")
    args = cli.parser().parse_args(["bench", "--modes", "base", "specdecode"])
    ctx = cli.context_from_args(args)
    assert (ctx.base_url, ctx.small_url) == ("http://127.0.0.1:8101/v1", "http://127.0.0.1:8102/v1")
    speculating = cli.common.load_config(args.specdecode_servers).role("base").url
    assert speculating == "http://127.0.0.1:8103/v1"
    base, sd = (parse_mode(m, specdecode_url=speculating) for m in args.modes)
    assert cli.bench.one_base_server(args, [base], ctx) is None
    assert cli.bench.one_base_server(args, [sd], ctx) == speculating
    monkeypatch.setenv("SPECREASON_BASE_URL", "http://elsewhere:9/v1")
    assert cli.context_from_args(args).base_url == "http://elsewhere:9/v1"
    assert cli.context_from_args(args).small_url == "http://127.0.0.1:8102/v1"  # the default's
    with pytest.raises(cli.CliError, match="--servers: cannot read the server configuration 'nope'"):
        monkeypatch.delenv("SPECREASON_BASE_URL")
        cli.context_from_args(cli.parser().parse_args(["bench", "--servers", "nope"]))


@pytest.mark.parametrize("name", ["cpu", "cpu-plain", "gpu-qwq32b-r1-1.5b",
                                  "gpu-qwq32b-r1-1.5b-specdecode"])
def test_serve_start_dry_run_prints_each_command_line_and_starts_nothing(capsys, monkeypatch, name):
    """What a user reads before renting GPUs: the exact argv the launcher would run (the same
    ``ServerSpec.argv`` test_server_configs_vllm.py has vLLM's own parser check), with the env."""
    import shlex

    from specreason_graph.serving import launcher
    from specreason_graph.serving.config import load_config

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run started a server")

    monkeypatch.setattr(launcher, "start", refuse)
    monkeypatch.setattr(launcher, "start_one", refuse)
    assert cli.main(["serve", "start", "--dry-run", "--config", name]) == 0
    out = capsys.readouterr().out.splitlines()
    config = load_config(name)
    commands = [line for line in out if not line.startswith("#")]
    assert len(commands) == len(config.servers)
    for spec, line in zip(config.servers, commands, strict=True):
        words = shlex.split(line)
        env = [w for w in words if "=" in w and not w.startswith("-")][: len(spec.env)]
        assert words[len(env):] == spec.argv()
        assert dict(w.split("=", 1) for w in env) == spec.env


def test_dry_run_goes_with_start_only(capsys):
    assert cli.main(["serve", "stop", "--dry-run"]) == 2
    assert "--dry-run goes with start" in capsys.readouterr().err


def test_the_servers_config_brings_its_pairs_judge_and_named_endpoints_the_papers(monkeypatch):
    """`--servers` (default cpu) is a configuration chosen, so its [graph] profile applies; a flag
    still wins over it; endpoints the user names belong to no configuration: the paper's judge."""
    from specreason_graph.context import CHOSEN, PAPER_JUDGE, Context

    monkeypatch.delenv("SPECREASON_BASE_URL")
    monkeypatch.delenv("SPECREASON_SMALL_URL")

    def judge(*argv: str) -> dict:
        ctx = cli.context_from_args(cli.parser().parse_args(["ask", "q", *argv]))
        return {k: getattr(ctx, k) for k in CHOSEN}

    cpu = {k: getattr(Context.for_servers("cpu"), k) for k in CHOSEN}
    assert judge() == cpu != PAPER_JUDGE
    assert judge("--threshold", "5") == {**cpu, "threshold": 5.0}
    assert judge("--servers", "cpu-plain") == cpu  # the same pair, the same profile
    assert judge("--base-url", "http://127.0.0.1:9/v1") == PAPER_JUDGE
