"""The server configs in ``servers/*.toml`` (``specreason_graph.serving.config``): loading, the
command line each server gets, placeholders, validation errors, the order the launcher takes them in.
The launcher's process handling against stand-in servers is tests/system_tests/test_launcher.py;
whether real vLLM accepts the command lines, tests/serverenv_tests/test_server_configs_vllm.py.

Every test here runs with ``SPECREASON_HOME`` pointing into ``tmp_path``: pid files and logs of the
servers that may be running on this machine (ports 8101/8102) are never read or touched.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from specreason_graph.context import Context
from specreason_graph.resources import resource_dir
from specreason_graph.serving import config, launcher
from specreason_graph.serving.config import (
    ENTRYPOINT,
    RouterSpec,
    ServerSpec,
    config_path,
    load_config,
)
from specreason_graph.serving.launcher import start, stop

SERVERS_DIR = resource_dir("servers")
CONFIG_FILES = sorted(SERVERS_DIR.glob("*.toml"))
CONFIG_NAMES = [p.stem for p in CONFIG_FILES]


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own SPECREASON_HOME: never the real pid files of running servers."""
    home = tmp_path / "home"
    monkeypatch.setenv("SPECREASON_HOME", str(home))
    return home


def test_there_are_the_expected_configs():
    assert {"cpu", "cpu-plain", "cpu-specdecode", "gpu-qwq32b-r1-1.5b",
            "gpu-qwq32b-r1-1.5b-specdecode"} <= set(CONFIG_NAMES)


# --- configs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_loads_with_one_base_and_one_small(name):
    """One endpoint per role (a server, or the router of a role's replicas; one router may serve
    both), every member on a port of its own."""
    servers_ = load_config(name)
    assert servers_.name == name
    endpoints = [s for s in servers_.servers if servers_.kind(s) != "replica"]
    assert sorted(r for s in endpoints for r in s.roles) == ["base", "small"]
    addresses = [(s.host, s.port) for s in servers_.servers]
    assert len(set(addresses)) == len(addresses) >= 2
    assert all(s.health_timeout > 0 for s in servers_.servers)


def _private(host: str) -> bool:
    import ipaddress
    try:
        return ipaddress.ip_address(host).is_private
    except ValueError:
        return False


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_binds_loopback_only(name):
    """Every member binds 127.0.0.1; a config spread over hosts binds the private-network address
    of each member's host, never every interface (0.0.0.0)."""
    servers_ = load_config(name)
    local = all(s.host == "127.0.0.1" for s in servers_.servers)
    assert local or (not name.startswith("cpu") and all(
        _private(s.host) and s.host not in ("0.0.0.0", "::") for s in servers_.servers))
    for spec in servers_.servers:
        argv = spec.argv()
        assert argv[argv.index("--host") + 1] == spec.host
        assert spec.origin == f"http://{spec.host}:{spec.port}"
        assert spec.url == f"http://{spec.host}:{spec.port}/v1"


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_argv_starts_the_openai_entrypoint_and_has_no_shell_strings(name):
    for spec in load_config(name).servers:
        if isinstance(spec, RouterSpec):
            continue  # test_every_router_argv_starts_vllm_router
        argv = spec.argv()
        assert argv[:3] == [spec.python, "-m", "vllm.entrypoints.openai.api_server"]
        assert ENTRYPOINT == "vllm.entrypoints.openai.api_server"
        # a flag and its value are two elements, never one "--flag value" string for a shell
        assert [a for a in argv if a.startswith("--") and (" " in a or "=" in a)] == []
        assert argv[3:11] == ["--model", spec.model, "--served-model-name", spec.served_model_name,
                              "--host", spec.host, "--port", str(spec.port)]
        # every flag appears once; options never repeat the fixed ones
        flags = [a for a in argv[3:] if a.startswith("--")]
        assert len(flags) == len(set(flags)), flags


def test_cpu_plain_base_argv_exactly(isolated_home):
    base = load_config("cpu-plain").role("base")
    assert base.argv() == [
        f"{isolated_home}/vllm-cpu/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", f"{isolated_home}/models/qwen2.5-coder-1.5b-instruct",
        "--served-model-name", "qwen2.5-coder-1.5b-instruct",
        "--host", "127.0.0.1", "--port", "8101",
        "--dtype", "float32",
        "--enforce-eager",
        "--max-model-len", "10240",
        "--enable-prefix-caching",
        "--block-size", "32",
        "--enable-prompt-tokens-details",
        "--seed", "0",
        # the reply's tool calls (ChatSpecReason): the plugin parser that reads what the 1.5B writes
        "--enable-auto-tool-choice", "--tool-call-parser", "qwen_coder",
        "--tool-parser-plugin", str(resource_dir("servers") / "tool_parsers" / "qwen_coder.py"),
    ]


@pytest.mark.parametrize("name", ["cpu", "cpu-plain"])
def test_cpu_small_argv_exactly(isolated_home, name):
    small = load_config(name).role("small")
    assert small.argv() == [
        f"{isolated_home}/vllm-cpu/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", f"{isolated_home}/models/qwen2.5-coder-0.5b-instruct",
        "--served-model-name", "qwen2.5-coder-0.5b-instruct",
        "--host", "127.0.0.1", "--port", "8102",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "10240",
        "--enable-prefix-caching", "--block-size", "32", "--enable-prompt-tokens-details",
        "--seed", "0",
    ]


@pytest.mark.parametrize("name", ["cpu", "cpu-plain"])
def test_cpu_environment_of_both_servers(name):
    for spec in load_config(name).servers:
        assert spec.env == {
            "VLLM_TARGET_DEVICE": "cpu",
            "VLLM_CPU_OMP_THREADS_BIND": "0-1",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        assert spec.health_timeout == 900.0
        env = spec.environment()
        assert env["VLLM_TARGET_DEVICE"] == "cpu"
        assert env["PATH"] == os.environ["PATH"]  # the caller's environment is kept


def _value_after(argv: list[str], flag: str) -> str:
    assert argv.count(flag) == 1, (flag, argv)
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize("name", ["gpu-qwq32b-r1-1.5b", "gpu-qwq32b-r1-1.5b-specdecode"])
def test_gpu_configs(name, isolated_home):
    s = load_config(name)
    base, small = s.role("base"), s.role("small")
    assert (base.model, base.served_model_name, base.port) == ("Qwen/QwQ-32B", "qwq-32b", 8101)
    assert (small.model, small.served_model_name, small.port) == (
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "r1-distill-qwen-1.5b", 8102)
    assert base.python == small.python == f"{isolated_home}/vllm-gpu/bin/python"  # setup-gpu.sh
    assert base.env == {"VLLM_NO_USAGE_STATS": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert small.env == {"VLLM_NO_USAGE_STATS": "1", "CUDA_VISIBLE_DEVICES": "0"}
    assert base.health_timeout == small.health_timeout == 1800.0
    b, sm = base.argv(), small.argv()
    for argv in (b, sm):
        assert _value_after(argv, "--dtype") == "bfloat16"
        assert _value_after(argv, "--max-model-len") == "16384"
        assert _value_after(argv, "--seed") == "0"
        assert "--enable-prefix-caching" in argv
        assert "--enable-prompt-tokens-details" in argv
        assert "--enforce-eager" not in argv
    assert _value_after(b, "--tensor-parallel-size") == "2"
    assert "--tensor-parallel-size" not in sm
    # both servers share GPU 0: each claims its fraction of the GPU's *total* memory
    shared = float(_value_after(b, "--gpu-memory-utilization")) + float(
        _value_after(sm, "--gpu-memory-utilization"))
    assert shared <= 0.95


def test_the_cpu_default_is_the_plain_pair_with_a_speculating_base(isolated_home):
    plain, default = load_config("cpu-plain"), load_config("cpu")
    assert default.role("small") == plain.role("small")  # the same server: shared, never restarted
    base, plain_base = default.role("base"), plain.role("base")
    assert base.port == 8103 != plain_base.port == 8101  # a client never takes one for the other
    assert (base.model, base.served_model_name, base.env) == (
        plain_base.model, plain_base.served_model_name, plain_base.env)
    options = dict(base.options)
    speculative = options.pop("speculative-config")
    assert options == plain_base.options
    assert speculative == {"method": "draft_model", "num_speculative_tokens": 3,
                           "model": f"{isolated_home}/models/qwen2.5-coder-0.5b-instruct"}
    raw = _value_after(base.argv(), "--speculative-config")
    assert json.loads(raw) == speculative and "{models}" not in raw
    assert "--speculative-config" not in plain_base.argv()
    # the name the SpecDecode results were recorded under: the same servers
    assert load_config("cpu-specdecode").servers == default.servers


def test_cpu_ngram_speculates_without_a_draft_model():
    plain, ngram = load_config("cpu-plain"), load_config("cpu-ngram")
    assert ngram.role("small") == plain.role("small")
    assert ngram.role("base").port == 8104
    assert ngram.role("base").options["speculative-config"] == {
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2,
        "prompt_lookup_max": 5}


def test_extends_merges_tables_and_servers_by_role(tmp_path, isolated_home):
    parent = tmp_path / "parent.toml"
    parent.write_text(textwrap.dedent("""
        [defaults]
        python = "python3"
        [defaults.env]
        A = "1"
        [defaults.options]
        dtype = "float32"
        seed = 0
        [[server]]
        role = "base"
        model = "{models}/big"
        served-model-name = "big"
        port = 9001
        [[server]]
        role = "small"
        model = "small"
        served-model-name = "small"
        port = 9002
        [graph]
        judge = "score"
    """))
    child = tmp_path / "child.toml"
    child.write_text(textwrap.dedent("""
        extends = "parent.toml"
        [defaults.env]
        B = "2"
        [[server]]
        role = "base"
        port = 9003
        options = { seed = 1, speculative-config = { method = "ngram", num_speculative_tokens = 4 } }
    """))
    servers_ = load_config(child)
    base, small = servers_.role("base"), servers_.role("small")
    assert (base.model, base.port, small.port) == (f"{isolated_home}/models/big", 9003, 9002)
    assert base.env == small.env == {"A": "1", "B": "2"}
    assert base.options == {"dtype": "float32", "seed": 1,
                            "speculative-config": {"method": "ngram", "num_speculative_tokens": 4}}
    assert small.options == {"dtype": "float32", "seed": 0}
    assert config.read_config(child)["graph"] == {"judge": "score"}


def test_extends_in_a_circle_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ValueError, match="circle"):
        load_config(tmp_path / "a.toml")


def test_gpu_memory_fractions():
    plain = load_config("gpu-qwq32b-r1-1.5b")
    assert plain.role("base").options["gpu-memory-utilization"] == 0.82
    assert plain.role("small").options["gpu-memory-utilization"] == 0.12
    spec = load_config("gpu-qwq32b-r1-1.5b-specdecode")
    assert spec.role("base").options["gpu-memory-utilization"] == 0.84
    assert spec.role("small").options["gpu-memory-utilization"] == 0.1


def test_specdecode_speculative_config_is_compact_json():
    base = load_config("gpu-qwq32b-r1-1.5b-specdecode").role("base")
    argv = base.argv()
    raw = _value_after(argv, "--speculative-config")
    assert raw == ('{"model":"deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",'
                   '"num_speculative_tokens":5,"method":"draft_model"}')
    assert json.loads(raw) == {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                               "num_speculative_tokens": 5, "method": "draft_model"}
    assert " " not in raw
    # the draft is the small server's model; the small server itself does not speculate
    small = load_config("gpu-qwq32b-r1-1.5b-specdecode").role("small")
    assert json.loads(raw)["model"] == small.model
    assert "--speculative-config" not in small.argv()
    assert "--speculative-config" not in load_config("gpu-qwq32b-r1-1.5b").role("base").argv()


def test_option_mapping():
    spec = ServerSpec(role="base", model="m", served_model_name="n", host="127.0.0.1", port=1,
                      python="py", options={
                          "on": True, "off": False, "none": None, "snake_case_name": 3,
                          "ratio": 0.5, "text": "a b", "table": {"k": [1, 2], "s": "x"},
                      })
    assert spec.argv()[11:] == [
        "--on",
        "--snake-case-name", "3",
        "--ratio", "0.5",
        "--text", "a b",  # one argv element: no shell involved
        "--table", '{"k":[1,2],"s":"x"}',
    ]
    assert "--off" not in spec.argv() and "--none" not in spec.argv()


def test_placeholders_follow_specreason_home(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    monkeypatch.setenv("SPECREASON_HOME", str(elsewhere))
    base = load_config("cpu").role("base")
    assert base.python == f"{elsewhere}/vllm-cpu/bin/python"
    assert base.model == f"{elsewhere}/models/qwen2.5-coder-1.5b-instruct"
    assert launcher.log_path(base) == elsewhere / "logs" / "base-8103.log"


def test_home_default_without_specreason_home(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECREASON_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config.home() == tmp_path / "xdg" / "specreason-graph"
    assert load_config("cpu").role("small").model == str(
        tmp_path / "xdg" / "specreason-graph" / "models" / "qwen2.5-coder-0.5b-instruct")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert config.home() == Path.home() / ".cache" / "specreason-graph"


def test_home_expands_tilde(monkeypatch):
    monkeypatch.setenv("SPECREASON_HOME", "~/somewhere")
    assert config.home() == Path.home() / "somewhere"


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_servers_keep_the_files_order(name):
    """start() goes through ``servers`` in order, and that order is the file's (after ``extends``):
    a table's replicas in their order, then their router."""
    raw = config.read_config(SERVERS_DIR / f"{name}.toml")
    expected = []
    for table in raw["server"]:
        role = table.get("role") or "+".join(table["roles"])
        expected += [(role, "server")] * len(table.get("replicas", [None])) \
            + ([(role, "router")] if table.get("replicas") else [])
    assert [(s.role, "router" if isinstance(s, RouterSpec) else "server")
            for s in load_config(name).servers] == expected


def test_order_cpu_base_first_gpu_small_first():
    assert [s.role for s in load_config("cpu").servers] == ["base", "small"]
    # on the GPU host the small server must claim its share of GPU 0 first
    for name in ("gpu-qwq32b-r1-1.5b", "gpu-qwq32b-r1-1.5b-specdecode"):
        assert [s.role for s in load_config(name).servers] == ["small", "base"]


def test_start_follows_the_servers_order(monkeypatch):
    calls = []
    monkeypatch.setattr(launcher, "start_one", lambda spec, echo: calls.append(spec.role) or 1)
    monkeypatch.setattr(launcher, "check_all", lambda *_: None)
    s = load_config("gpu-qwq32b-r1-1.5b")
    assert [x.role for x in start(s, echo=lambda *_: None)] == ["small", "base"]
    assert calls == ["small", "base"]


def test_the_reasoning_config_serves_its_template():
    """cpu-reasoning: the CPU pair on ports of its own, both with the shipped chat template."""
    s = load_config("cpu-reasoning")
    template = resource_dir("servers") / "templates" / "reasoning.jinja"
    for spec in s.servers:
        assert spec.options["chat-template"] == str(template) and template.is_file()
        assert spec.model == load_config("cpu").role(spec.role).model
    assert "{servers}" not in " ".join(s.role("base").argv())


def test_stop_goes_in_reverse_order(monkeypatch):
    calls = []
    monkeypatch.setattr(launcher, "stop_one", lambda spec, echo: calls.append(spec.role))
    stop(load_config("cpu"), echo=lambda *_: None)
    assert calls == ["small", "base"]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_context_points_at_the_servers(name):
    s = load_config(name)
    ctx = s.context()
    assert isinstance(ctx, Context)
    assert ctx.base_url == s.role("base").url
    assert ctx.small_url == s.role("small").url
    if "multihost" not in name:  # a config over several hosts: its own addresses (serverenv tier)
        base, small = {"cpu": (8103, 8102), "cpu-specdecode": (8103, 8102),
                       "cpu-ngram": (8104, 8102), "cpu-reasoning": (8105, 8106),
                       "cpu-replicas": (8110, 8110)}.get(name, (8101, 8102))
        assert ctx.base_url == f"http://127.0.0.1:{base}/v1"
        assert ctx.small_url == f"http://127.0.0.1:{small}/v1"
    assert ctx.base_model == s.role("base").served_model_name
    assert ctx.small_model == s.role("small").served_model_name


def test_cpu_context_matches_the_context_defaults_and_takes_settings():
    ctx = load_config("cpu").context(threshold=5.0)
    assert (ctx.base_model, ctx.small_model) == ("qwen2.5-coder-1.5b-instruct",
                                                  "qwen2.5-coder-0.5b-instruct")
    assert ctx.threshold == 5.0


def test_role_lookup_unknown_role():
    with pytest.raises(KeyError, match="judge"):
        load_config("cpu").role("judge")


# --- config errors -----------------------------------------------------------------------------

_GOOD = """
[defaults]
host = "127.0.0.1"
[defaults.options]
dtype = "float32"
[[server]]
role = "base"
model = "{models}/b"
served-model-name = "b"
port = 1
[[server]]
role = "small"
model = "{models}/s"
served-model-name = "s"
port = 2
"""


def _write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_config_path_is_taken_as_is(tmp_path, isolated_home):
    path = _write(tmp_path, _GOOD)
    s = load_config(path)
    assert s.name == "custom"
    assert s.role("base").model == f"{isolated_home}/models/b"
    assert s.role("base").python == sys.executable  # no python: the caller's interpreter
    assert s.role("base").health_timeout == 900.0
    assert load_config(str(path)).servers == s.servers


@pytest.mark.parametrize("where", ["server", "defaults"])
def test_unknown_key_raises_naming_the_file(tmp_path, where):
    text = _GOOD.replace('port = 2', 'port = 2\ngpu = 0') if where == "server" else \
        _GOOD.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\nhealth-timeout = 5')
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="unknown keys") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert ("gpu" if where == "server" else "health-timeout") in str(info.value)


def test_unknown_top_level_table_raises_naming_the_file(tmp_path):
    path = _write(tmp_path, _GOOD.replace("[defaults]\n", "[default]\n", 1))
    with pytest.raises(ValueError, match="default") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("text", [
    _GOOD.split("[[server]]\nrole = \"small\"")[0],  # only base
    _GOOD.replace('role = "small"', 'role = "base"'),  # two bases
    _GOOD + '[[server]]\nrole = "extra"\nmodel = "x"\nserved-model-name = "x"\nport = 3\n',
    "[defaults]\nhost = '127.0.0.1'\n",  # no servers at all
], ids=["only-base", "two-bases", "three-roles", "no-servers"])
def test_without_both_roles_raises_naming_the_file(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match="needs one 'base' and one 'small'") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("key", ["role", "model", "served-model-name", "port"])
def test_missing_required_key_raises_naming_the_file(tmp_path, key):
    head, small = _GOOD.rsplit("[[server]]", 1)  # drop the key from the small server only
    small = "\n".join(ln for ln in small.splitlines() if not ln.startswith(f"{key} ="))
    path = _write(tmp_path, head + "[[server]]" + small + "\n")
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_path_unknown_name_lists_known_configs():
    with pytest.raises(FileNotFoundError) as info:
        config_path("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in CONFIG_NAMES:
        assert name in message
    with pytest.raises(FileNotFoundError):
        load_config("nope")


def test_config_path_names_and_paths(tmp_path):
    assert config_path("cpu") == SERVERS_DIR / "cpu.toml"
    assert config_path(tmp_path / "x.toml") == tmp_path / "x.toml"  # a .toml path, even missing
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "x.toml")
