"""Every member of a shipped config with replicas and routers is read as intended by the program
that will run it: each vLLM replica's command line by vLLM's own serve parser in the vLLM server
environment (as ``test_server_configs_vllm.py`` does), each router's by vllm-router's own parser,
``vllm_router.launch_router.parse_router_args``, in the router's environment
(``$SPECREASON_HOME/vllm-router``, made by ``servers/setup-cpu.sh``), and then handed to the Rust
router's constructor, which checks every setting's type and binds nothing (``start()`` would serve).

The configs are ``servers/*.toml`` with a ``[[server]]`` that has ``replicas`` or a ``router``
(``gpu-qwq32b-r1-1.5b-multihost`` among them). What the parsers read is checked against the TOML
file itself: the routers' worker URLs are the replicas' addresses, every option reaches its flag.

Without the vLLM environment the module is skipped (a failure under CI), as the tier's others;
without the router environment beside it the router tests fail, naming the script that makes it.
Two subprocesses (vLLM's ~15 s, the router's ~1 s); no server is started.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from specreason_graph import Context
from specreason_graph.resources import config_path, read_config, resource_dir
from specreason_graph.serving import config
from tests.serverenv_tests.conftest import require_server_environment, vllm_python

require_server_environment()

ROUTER_MODULE = "vllm_router.launch_router"
MULTIHOST = "gpu-qwq32b-r1-1.5b-multihost"


def router_python() -> Path:
    """The router's environment, as the configs' routers name it by default."""
    return config.home() / "vllm-router" / "bin" / "python"


def _raw(name: str) -> dict[str, Any]:
    return read_config(config_path(name))


def _has_router(name: str) -> bool:
    return any("replicas" in s or "router" in s for s in _raw(name).get("server", []))


ROUTED = sorted(p.stem for p in resource_dir("servers").glob("*.toml") if _has_router(p.stem))


def is_router(spec: Any) -> bool:
    router_type = getattr(config, "RouterSpec", None)
    return (router_type is not None and isinstance(spec, router_type)) or ROUTER_MODULE in spec.argv()


def module_args(spec: Any) -> list[str]:
    """The command line after ``python -m <module>``."""
    argv = spec.argv()
    assert argv[1] == "-m", argv
    return argv[3:]


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _key(name: str, spec: Any) -> str:
    argv = spec.argv()
    kind = "router" if is_router(spec) else "vllm"
    return f"{name}:{kind}:{getattr(spec, 'role', '?')}@{_flag(argv, '--host')}:{_flag(argv, '--port')}"


def _members() -> tuple[dict[str, tuple[str, Any]], dict[str, str]]:
    """Every member of every routed config by key; a config the loader rejects, with why."""
    members, broken = {}, {}
    for name in ROUTED:
        try:
            servers = config.load_config(name).servers
        except Exception as exc:  # noqa: BLE001 - reported by the test of that config
            broken[name] = f"{type(exc).__name__}: {exc}"
            continue
        for spec in servers:
            members[_key(name, spec)] = (name, spec)
    return members, broken


MEMBERS, BROKEN = _members()
VLLM_KEYS = sorted(k for k, (_, spec) in MEMBERS.items() if not is_router(spec))
ROUTER_KEYS = sorted(k for k, (_, spec) in MEMBERS.items() if is_router(spec))


def _routers_of(name: str) -> list[tuple[dict[str, Any], str, int, list[str]]]:
    """From the TOML file: each router table, its host and port, and its replicas' origins (a
    router's host and port default to its server's, a replica's to its server's)."""
    data = _raw(name)
    defaults = data.get("defaults", {})
    found = []
    for server in data.get("server", []):
        if "replicas" not in server and "router" not in server:
            continue
        host = server.get("host", defaults.get("host", "127.0.0.1"))
        port = server.get("port", defaults.get("port"))
        router = server.get("router", {})
        workers = [f"http://{r.get('host', host)}:{r.get('port', port)}"
                   for r in server.get("replicas", [])]
        found.append((router, router.get("host", host), int(router.get("port", port)), workers))
    return found


VLLM_HELPER = r'''
"""Parse command lines with vLLM's own serve parser; write what it made of them as JSON."""
import contextlib, io, json, sys, warnings

warnings.simplefilter("ignore")
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # a circular import seen with some import orders: go in through the server
    import vllm.entrypoints.openai.api_server  # noqa: F401
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
import huggingface_hub.constants
import vllm
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser


def parser():
    return make_arg_parser(FlexibleArgumentParser(prog="vllm-serve"))


def parse(argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser().parse_args(argv)
    except SystemExit as exc:
        return {"ok": False, "error": err.getvalue().strip() or f"exit {exc.code}"}
    out = {"ok": True, "fields": vars(args)}
    try:
        validate_parsed_serve_args(args)
        out["validated"] = True
    except Exception as exc:
        out["validated"] = f"{type(exc).__name__}: {exc}"
    try:
        # A hub id is swapped for its local snapshot when HF_HUB_OFFLINE is set (and fails without
        # one): turn that off for this call; HF_ENDPOINT is a closed port, nothing goes out.
        offline = huggingface_hub.constants.HF_HUB_OFFLINE
        huggingface_hub.constants.HF_HUB_OFFLINE = False
        try:
            engine = AsyncEngineArgs.from_cli_args(args)
        finally:
            huggingface_hub.constants.HF_HUB_OFFLINE = offline
        out["engine"] = {k: getattr(engine, k) for k in (
            "model", "served_model_name", "dtype", "max_model_len", "enable_prefix_caching", "seed",
            "tensor_parallel_size", "data_parallel_size", "gpu_memory_utilization")}
    except Exception as exc:
        out["engine"] = f"{type(exc).__name__}: {exc}"
    return out


argvs = json.load(open(sys.argv[1]))
dests = {s: a.dest for a in parser()._actions for s in a.option_strings}
result = {"version": vllm.__version__, "dests": dests,
          "parsed": {key: parse(argv) for key, argv in argvs.items()}}
with open(sys.argv[2], "w") as f:
    json.dump(result, f, default=repr)
'''

ROUTER_HELPER = r'''
"""Parse command lines with vllm-router's own parser, then build (not start) the Rust router."""
import argparse, contextlib, dataclasses, io, json, sys
from importlib import metadata

from vllm_router.launch_router import parse_router_args
from vllm_router.router import Router, policy_from_str
from vllm_router.router_args import RouterArgs

# parse_router_args's parser lets a flag be abbreviated (argparse's allow_abbrev): list the exact
# option strings, so that a misspelt flag that happens to be a prefix of a real one is caught.
exact = argparse.ArgumentParser()
RouterArgs.add_cli_args(exact, use_router_prefix=False)
DESTS = {s: a.dest for a in exact._actions for s in a.option_strings}


def parse(argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parse_router_args(argv)
    except SystemExit as exc:
        return {"ok": False, "error": err.getvalue().strip() or f"exit {exc.code}"}
    out = {"ok": True, "fields": dataclasses.asdict(args),
           "inexact_flags": [a for a in argv if a.startswith("--") and a not in DESTS]}
    try:
        args._validate_router_args()
        policy_from_str(args.policy)
        out["validated"] = True
    except Exception as exc:
        out["validated"] = f"{type(exc).__name__}: {exc}"
    try:
        Router.from_args(args)  # the Rust constructor: every setting's type; binds no port
        out["built"] = True
    except Exception as exc:
        out["built"] = f"{type(exc).__name__}: {exc}"
    return out


argvs = json.load(open(sys.argv[1]))
result = {"version": metadata.version("vllm-router"), "dests": DESTS,
          "parsed": {key: parse(argv) for key, argv in argvs.items()}}
with open(sys.argv[2], "w") as f:
    json.dump(result, f, default=repr)
'''

# Command lines that must NOT pass: the checks can fail.
BAD_VLLM = {"bad:vllm-typo": ["--model", "m", "--tensor-parallel-sise", "4"]}
BAD_ROUTER = {
    "bad:router-unknown-flag": ["--worker-urls", "http://10.0.0.11:8101", "--bogus-flag"],
    "bad:router-policy": ["--worker-urls", "http://10.0.0.11:8101", "--policy", "cache-aware"],
    "bad:router-int-given-text": ["--worker-urls", "http://10.0.0.11:8101", "--port", "eighty"],
    # argparse takes a prefix of a real flag for it: only the exact-flag check catches this one
    "bad:router-abbreviated": ["--worker-urls", "http://10.0.0.11:8101",
                               "--health-check-interval", "10"],
}


def _run(python: Path, helper: str, argvs: dict[str, list[str]], work: Path,
         env: dict[str, str]) -> dict[str, Any]:
    script, request, out = work / "helper.py", work / "argvs.json", work / "result.json"
    script.write_text(helper)
    request.write_text(json.dumps(argvs))
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(python), str(script), str(request), str(out)], env=env, cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the parse helper failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def vllm_says(tmp_path_factory):
    """What vLLM's parser made of every replica's argv (and of the bad ones). One subprocess."""
    argvs = {key: module_args(MEMBERS[key][1]) for key in VLLM_KEYS}
    env = {**os.environ, **config.load_config("cpu").role("base").env, "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9",
           "VLLM_NO_USAGE_STATS": "1", "VLLM_LOGGING_LEVEL": "ERROR"}
    return _run(vllm_python(), VLLM_HELPER, {**argvs, **BAD_VLLM},
                tmp_path_factory.mktemp("vllm-parse"), env)


@pytest.fixture(scope="module")
def router_says(tmp_path_factory):
    """What vllm-router's parser made of every router's argv (and of the bad ones)."""
    if not router_python().exists():
        pytest.fail(f"no vllm-router environment at {router_python()}: `make servers` "
                    "(servers/setup-cpu.sh) makes it", pytrace=False)
    argvs = {key: module_args(MEMBERS[key][1]) for key in ROUTER_KEYS}
    return _run(router_python(), ROUTER_HELPER, {**argvs, **BAD_ROUTER},
                tmp_path_factory.mktemp("router-parse"), dict(os.environ))


def test_the_multihost_config_is_among_them():
    assert MULTIHOST in ROUTED


@pytest.mark.parametrize("name", ROUTED)
def test_the_config_loads(name):
    assert name not in BROKEN, f"{name}: {BROKEN.get(name)}"
    servers = config.load_config(name).servers
    assert any(is_router(s) for s in servers), f"{name}: no router among its members"
    assert any(not is_router(s) for s in servers), f"{name}: no vLLM replica among its members"


def test_versions(vllm_says, router_says):
    assert vllm_says["version"].startswith("0.32"), vllm_says["version"]
    assert router_says["version"] == "0.1.17", router_says["version"]


def _value_matches(parsed: Any, value: Any) -> bool:
    return parsed == value or parsed == [value]


@pytest.mark.parametrize("key", VLLM_KEYS)
def test_vllm_reads_every_replica_as_configured(vllm_says, key):
    spec = MEMBERS[key][1]
    got = vllm_says["parsed"][key]
    assert got["ok"], f"vLLM rejects {key}: {got.get('error')}\nargv: {module_args(spec)}"
    assert got["validated"] is True, got["validated"]
    assert isinstance(got["engine"], dict), got["engine"]
    fields, engine = got["fields"], got["engine"]
    assert fields["model"] == engine["model"] == spec.model
    assert fields["model_tag"] is None
    assert fields["served_model_name"] == engine["served_model_name"] == [spec.served_model_name]
    assert (fields["host"], fields["port"]) == (spec.host, spec.port)
    for option, value in spec.options.items():
        if value is False or value is None:
            continue  # left out of the command line: vLLM's default
        dest = vllm_says["dests"]["--" + option.replace("_", "-")]
        assert _value_matches(fields[dest], value), (option, value, fields[dest])
    # what the graph needs from every replica behind a router: the prefix cache and its hit counts
    assert fields["enable_prefix_caching"] is True and engine["enable_prefix_caching"] is True
    assert fields["enable_prompt_tokens_details"] is True


@pytest.mark.parametrize("key", ROUTER_KEYS)
def test_the_router_reads_every_router_as_configured(router_says, key):
    name, spec = MEMBERS[key]
    argv = module_args(spec)
    got = router_says["parsed"][key]
    assert spec.argv()[1:3] == ["-m", ROUTER_MODULE]
    assert got["ok"], f"vllm-router rejects {key}: {got.get('error')}\nargv: {argv}"
    assert got["inexact_flags"] == [], f"flags vllm-router only takes as abbreviations: {got}"
    assert got["validated"] is True, got["validated"]
    assert got["built"] is True, got["built"]
    fields = got["fields"]
    tables = [t for t in _routers_of(name) if (t[1], t[2]) == (fields["host"], fields["port"])]
    assert len(tables) == 1, f"{key}: no router of {name}.toml listens on {fields['host']}:{fields['port']}"
    table, _, _, workers = tables[0]
    assert fields["worker_urls"] == workers
    if "policy" in table:
        assert fields["policy"] == table["policy"]
    for option, value in table.get("options", {}).items():
        if value is False or value is None:
            continue
        dest = router_says["dests"]["--" + option.replace("_", "-")]
        assert _value_matches(fields[dest], value), (option, value, fields[dest])
    assert Path(spec.argv()[0]) == router_python(), "a shipped router runs in the router's environment"


@pytest.mark.parametrize("key", ROUTER_KEYS)
def test_a_router_fronts_replicas_of_one_model(vllm_says, router_says, key):
    """Its workers are vLLM members of the same config, all serving one model under one name."""
    name = MEMBERS[key][0]
    replicas = {spec.origin: spec for k, (n, spec) in MEMBERS.items()
                if n == name and not is_router(spec)}
    workers = router_says["parsed"][key]["fields"]["worker_urls"]
    assert workers and set(workers) <= set(replicas), (workers, sorted(replicas))
    assert len({replicas[w].model for w in workers}) == 1
    assert len({replicas[w].served_model_name for w in workers}) == 1
    read = [vllm_says["parsed"][_key(name, replicas[w])]["fields"] for w in workers]
    assert len({json.dumps(f["served_model_name"]) for f in read}) == 1


@pytest.mark.parametrize("name", ROUTED)
def test_routers_on_one_host_do_not_collide(router_says, name):
    """Each router listens on its port and serves metrics on its prometheus-port (the command
    line's default, 29000, is the same for all)."""
    bound: dict[tuple[str, int], str] = {}
    for key in ROUTER_KEYS:
        if MEMBERS[key][0] != name:
            continue
        fields = router_says["parsed"][key]["fields"]
        for address in ((fields["host"], fields["port"]),
                        (fields["prometheus_host"], fields["prometheus_port"])):
            assert address not in bound, f"{key} and {bound[address]} both bind {address}"
            bound[address] = key


def _by_role(kind: str, role: str) -> list[str]:
    """The multihost config's vLLM replicas (kind "vllm") or routers of ``role``."""
    assert MULTIHOST not in BROKEN, f"{MULTIHOST}: {BROKEN.get(MULTIHOST)}"
    keys = VLLM_KEYS if kind == "vllm" else ROUTER_KEYS
    return [k for k in keys
            if MEMBERS[k][0] == MULTIHOST and getattr(MEMBERS[k][1], "role", None) == role]


def test_multihost_replicas_as_vllm_reads_them(vllm_says):
    hosts = ["10.0.0.11", "10.0.0.12"]
    for role, model, port, tp, share in (("base", "Qwen/QwQ-32B", 8101, 4, 0.82),
                                         ("small", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                                          8102, 1, 0.12)):
        keys = _by_role("vllm", role)
        assert sorted(MEMBERS[k][1].host for k in keys) == hosts
        for key in keys:
            spec = MEMBERS[key][1]
            fields, engine = vllm_says["parsed"][key]["fields"], vllm_says["parsed"][key]["engine"]
            assert fields["model"] == model and fields["port"] == port
            assert fields["tensor_parallel_size"] == engine["tensor_parallel_size"] == tp
            assert fields["data_parallel_size"] == engine["data_parallel_size"] == 1
            assert fields["gpu_memory_utilization"] == engine["gpu_memory_utilization"] == share
            assert fields["dtype"] == engine["dtype"] == "bfloat16"
            assert fields["max_model_len"] == engine["max_model_len"] == 16384
            assert fields["seed"] == engine["seed"] == 0
            assert fields["enforce_eager"] is False  # CUDA graphs on the GPU
            assert fields["speculative_config"] is None
            assert len(spec.env["CUDA_VISIBLE_DEVICES"].split(",")) == tp  # one GPU per TP rank
            assert spec.python == str(config.home() / "vllm-gpu" / "bin" / "python")


def test_multihost_routers_as_the_router_reads_them(router_says):
    for role, port, replica_port in (("base", 8111, 8101), ("small", 8112, 8102)):
        (key,) = _by_role("router", role)
        fields = router_says["parsed"][key]["fields"]
        # the launcher waits for it as long as for a replica: it binds once a replica is healthy
        assert MEMBERS[key][1].health_timeout >= fields["worker_startup_timeout_secs"]
        assert (fields["host"], fields["port"]) == ("10.0.0.10", port)
        assert fields["worker_urls"] == [f"http://10.0.0.11:{replica_port}",
                                         f"http://10.0.0.12:{replica_port}"]
        assert fields["policy"] == "cache_aware"
        assert fields["health_check_interval_secs"] == 10
        assert fields["health_failure_threshold"] == 3
        assert fields["retry_max_retries"] == 3  # attempts, the first included
        assert fields["worker_startup_timeout_secs"] == 1800
        assert fields["disable_retries"] is False and fields["disable_circuit_breaker"] is False
        assert fields["vllm_pd_disaggregation"] is False and fields["service_discovery"] is False


def test_the_graph_is_pointed_at_the_routers(router_says):
    """Context.for_servers(MULTIHOST) names the routers, never a replica."""
    ctx = Context.for_servers(MULTIHOST)
    for role, url, model in (("base", ctx.base_url, ctx.base_model),
                             ("small", ctx.small_url, ctx.small_model)):
        (key,) = _by_role("router", role)
        fields = router_says["parsed"][key]["fields"]
        assert url == f"http://{fields['host']}:{fields['port']}/v1"
        assert {MEMBERS[k][1].served_model_name for k in _by_role("vllm", role)} == {model}


@pytest.mark.parametrize("key", sorted(BAD_VLLM))
def test_vllm_rejects_a_wrong_command_line(vllm_says, key):
    assert vllm_says["parsed"][key]["ok"] is False, vllm_says["parsed"][key]


@pytest.mark.parametrize("key", sorted(BAD_ROUTER))
def test_a_wrong_router_command_line_is_caught(router_says, key):
    got = router_says["parsed"][key]
    assert got["ok"] is False or got["inexact_flags"], got
