"""The wheel works outside the checkout: built from this tree (``pip wheel``, hatchling), installed
with its dependencies (pinned by constraints.txt) into a fresh venv in ``tmp_path``, and run from a
working directory outside the checkout, with the checkout on no path (no PYTHONPATH, no editable
install, no user site). The package must find everything it reads (prompts, server configs, the
setup script, the benchmark data) in its own ``specreason_graph/_data/`` (pyproject.toml's
force-include), and the wheel must carry nothing else from the tree.

The build and the install are shared by the module (about 15 s of pip from its cache and this
machine's package sources); then one process of the installed package checks the library (its first
imports compile the bytecode pip was told not to; ``serve start`` through ``cli.main`` too), then
two ``specreason`` commands side by side. Without a package source to install from, the tests are
skipped, except under CI, where they fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
DATA = ("prompts", "servers", "data")
"""The checkout's folders the wheel ships, as ``specreason_graph/_data/<name>``."""
SKIPPED_BY_HATCHLING = ("__pycache__", ".pyc")
LARGEST_FILE = 2 * 1024 * 1024
"""No file in the wheel is larger (the largest is data/gsm8k_test.jsonl, 0.75 MB)."""
LARGEST_WHEEL = 2 * 1024 * 1024
"""The wheel itself (0.7 MB: mostly the benchmark data, compressed)."""
JUNK = ("__pycache__", ".pyc", ".log", ".lock", ".egg-info", "/build/", "/results/", "/runs/",
        ".ipynb_checkpoints", "/tests/", "conftest.py", "/test_")
"""What must never be in the wheel: bytecode, server logs, benchmark results and their locks, a
build of servers/vllm-cpu-fixes (setup-cpu.sh removes its own; force-include ships whatever is in
the tree), notebooks' checkpoints, tests."""
NO_INDEX = ("No matching distribution found", "Could not find a version", "NewConnectionError",
            "Temporary failure in name resolution", "Network is unreachable")
"""pip's words when it cannot reach a package source: the only failure that skips."""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path | None = None) -> dict[str, str]:
    """This process's environment without the checkout in it: no PYTHON* (PYTHONPATH), no
    SPECREASON_* (the endpoints and settings a developer may have exported), no user site; a
    SPECREASON_HOME of the test's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "SPECREASON_", "VIRTUAL_ENV"))}
    return {**env, "PYTHONNOUSERSITE": "1", **({"SPECREASON_HOME": str(home)} if home else {})}


def _pip(argv: list[str], what: str, cwd: Path) -> None:
    """Run a pip command; skip (fail under CI) when it found no package source, fail otherwise."""
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**_env(), "PIP_NO_INPUT": "1"})
    if done.returncode == 0:
        return
    output = (done.stdout + done.stderr)[-3000:]
    if any(words in output for words in NO_INDEX) and not in_ci():
        pytest.skip(f"{what}: pip found no package source ({output.strip().splitlines()[-1]})")
    pytest.fail(f"{what} failed (exit {done.returncode}):\n{output}", pytrace=False)


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this tree: built in isolation (pip fetches hatchling: 2 s from its cache) unless
    hatchling is in this environment (1 s; it is not in the graph's)."""
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _has("hatchling") else []
    _pip([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation,
          "--wheel-dir", str(out), str(ROOT)], "building the wheel", out)
    built = sorted(out.glob("specreason_graph-*.whl"))
    assert len(built) == 1, built
    return built[0]


class Installed:
    """The fresh venv with the wheel installed, and where to run it from."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.python = self.venv / "bin" / "python"
        self.specreason = self.venv / "bin" / "specreason"
        self.cwd = root / "elsewhere"
        self.home = root / "home"
        self.site = Path(subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, env=_env(self.home)).stdout.strip())
        self.data = self.site / "specreason_graph" / "_data"

    def start(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*argv], cwd=self.cwd, env=_env(self.home), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    # The base interpreter's venv: nothing of the graph's environment (.venv) comes along. No pip
    # in it (ensurepip costs 4 s): this environment's pip installs into it (--python).
    # --no-compile: a module is compiled when first imported (pip compiling all takes longer).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")],
                   check=True, timeout=300)
    _pip([sys.executable, "-m", "pip", "--python", str(root / "venv" / "bin" / "python"),
          "install", "--quiet", "--no-compile", "-c", str(ROOT / "constraints.txt"), str(wheel)],
         "installing the wheel", root)
    where = Installed(root)
    where.cwd.mkdir()
    # Decoys: another distribution's top-level folders of the same names in site-packages must not
    # be taken for the package's own (its _data/ comes first).
    for name in DATA:
        (where.site / name).mkdir(exist_ok=True)
    return where


def _config(path: Path) -> dict[str, dict]:
    """A shipped config's servers by role, its ``extends`` resolved (one level, as they are)."""
    data = tomllib.loads(path.read_text())
    servers = {}
    if "extends" in data:
        parent = tomllib.loads((path.parent / f"{data['extends']}.toml").read_text())
        servers = {s["role"]: {**parent.get("defaults", {}), **s} for s in parent["server"]}
    for raw in data.get("server", []):
        servers[raw["role"]] = {**servers.get(raw["role"], data.get("defaults", {})), **raw}
    return servers


# --- the wheel's files -------------------------------------------------------------------------

def test_the_wheel_ships_the_data_folders_and_nothing_else_of_the_tree(wheel):
    with zipfile.ZipFile(wheel) as archive:
        members = {info.filename: info for info in archive.infolist() if not info.is_dir()}
        shipped = {name: archive.read(name) for name in members
                   if name.startswith("specreason_graph/_data/")}
    assert wheel.stat().st_size < LARGEST_WHEEL, f"{wheel.name}: {wheel.stat().st_size} bytes"
    too_large = {n: i.file_size for n, i in members.items() if i.file_size > LARGEST_FILE}
    assert not too_large, too_large
    junk = sorted(n for n in members if any(j in "/" + n for j in JUNK))
    assert not junk, f"not for the wheel (remove them from the tree before building): {junk}"

    # the package: every module of the checkout, and no other top-level name
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "specreason_graph").rglob("*.py")
               if "__pycache__" not in p.parts and "_data" not in p.parts}
    assert modules <= set(members), sorted(modules - set(members))
    others = {n.split("/")[0] for n in members} - {"specreason_graph"}
    assert len(others) == 1 and others.pop().endswith(".dist-info"), members.keys()

    # _data: exactly the files of prompts/, servers/ and data/ (hatchling leaves out bytecode),
    # byte for byte
    expected = {}
    for folder in DATA:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and not any(s in path.as_posix() for s in SKIPPED_BY_HATCHLING):
                expected[f"specreason_graph/_data/{folder}/"
                         f"{path.relative_to(ROOT / folder).as_posix()}"] = path.read_bytes()
    assert sorted(shipped) == sorted(expected)
    differ = [name for name in expected if shipped[name] != expected[name]]
    assert not differ, differ
    prompts = [n for n in shipped if "/_data/prompts/" in n]
    assert any("/prompts/paper/" in n for n in prompts) and len(prompts) >= 8, prompts


# --- the installed package, outside the checkout -----------------------------------------------

CLOSED = """\
extends = "cpu"
[[server]]
role = "base"
port = {}
memory_gib = 0
[[server]]
role = "small"
port = {}
memory_gib = 0
"""
"""The CPU default's servers on ports where nothing listens (a server running on this machine is
never asked), memory_gib 0 (the launcher goes as far as looking for the server environment whatever
the machine has free)."""

CHECK = textwrap.dedent("""
    import io, json, sys, traceback
    from contextlib import redirect_stderr, redirect_stdout
    import specreason_graph
    from specreason_graph import cli, prompts
    from specreason_graph.context import Context
    from specreason_graph.evaluation import datasets
    from specreason_graph.resources import prompt_set_dir, resource_dir

    def command(*argv):
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = cli.main(list(argv))
            except BaseException:
                code = -1
                traceback.print_exc()
        return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}

    ctx = Context()
    print(json.dumps({
        "package": specreason_graph.__file__,
        "path": sys.path,
        "dirs": {name: str(resource_dir(name)) for name in ("prompts", "servers", "data")},
        "paper": str(prompt_set_dir("paper")),
        "context": {k: getattr(ctx, k) for k in ("base_url", "base_model", "small_url", "small_model")},
        "math": prompts.render_problem("math", "What is 17 * 23?"),
        "paper_math": prompts.render_problem("math", "What is 17 * 23?", "paper"),
        "datasets": {name: len(datasets.load(name)) for name in datasets.DATASETS},
        "commands": {
            "cpu-plain": command("serve", "start", "--dry-run", "--config", "cpu-plain"),
            "closed": command("serve", "start", "--config", sys.argv[1]),
        },
    }))
""")
"""The library's checks, and the commands that need no process of their own (``cli.main``, what
the ``specreason`` script calls), in one process of the installed package."""


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        out, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def library(installed) -> subprocess.CompletedProcess[str]:
    """What the installed package finds and does, from a folder outside the checkout."""
    config = installed.root / "closed.toml"
    config.write_text(CLOSED.format(_closed_port(), _closed_port()))
    return _finish(installed.start(str(installed.python), "-c", CHECK, str(config)))


@pytest.fixture
def checked(library) -> dict:
    assert library.returncode == 0, library.stderr[-3000:]
    return json.loads(library.stdout)


@pytest.fixture(scope="module")
def scripts(installed, library) -> dict[str, subprocess.CompletedProcess[str]]:
    """The ``specreason`` script itself, two commands side by side (after ``library``, whose
    imports compiled the bytecode they share)."""
    specreason = str(installed.specreason)
    argv = {"help": [specreason, "--help"], "cpu": [specreason, "serve", "start", "--dry-run"]}
    started = {name: installed.start(*command) for name, command in argv.items()}
    return {name: _finish(process) for name, process in started.items()}


def test_the_package_is_the_wheels_and_the_checkout_is_on_no_path(installed, checked):
    assert Path(checked["package"]).is_relative_to(installed.site)
    assert not any(str(ROOT) in entry for entry in checked["path"]), checked["path"]
    for name in DATA:
        assert Path(checked["dirs"][name]) == installed.data / name, checked["dirs"]
    assert Path(checked["paper"]) == installed.data / "prompts" / "paper"


def test_context_defaults_are_the_wheels_cpu_servers(installed, checked):
    servers = _config(installed.data / "servers" / "cpu.toml")
    base, small = servers["base"], servers["small"]
    assert checked["context"] == {
        "base_url": f"http://{base['host']}:{base['port']}/v1",
        "base_model": base["served-model-name"],
        "small_url": f"http://{small['host']}:{small['port']}/v1",
        "small_model": small["served-model-name"]}


def test_prompts_render_from_the_wheels_files(installed, checked):
    for key, folder in (("math", ROOT / "prompts"), ("paper_math", ROOT / "prompts" / "paper")):
        template = (folder / "math.txt").read_text(encoding="utf-8").strip()
        assert "{problem}" in template
        assert checked[key] == template.replace("{problem}", "What is 17 * 23?")
    assert checked["math"] != checked["paper_math"]


def test_benchmark_data_loads_from_the_wheel(checked):
    assert all(checked["datasets"].values()), checked["datasets"]
    lines = (ROOT / "data" / "gsm8k_test.jsonl").read_text(encoding="utf-8").strip().splitlines()
    assert checked["datasets"]["gsm8k"] == len(lines)
    assert checked["datasets"]["gpqa"] == 198  # decrypted from the wheel's zip


def test_specreason_help(scripts):
    done = scripts["help"]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "serve" in done.stdout and "ask" in done.stdout


@pytest.mark.parametrize("config", ["cpu", "cpu-plain"])
def test_serve_dry_run_prints_the_wheels_servers(installed, request, config):
    """``cpu`` through the ``specreason`` script, ``cpu-plain`` through ``cli.main``."""
    done = request.getfixturevalue("scripts")["cpu"] if config == "cpu" else \
        SimpleNamespace(**request.getfixturevalue("checked")["commands"][config])
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    models = installed.home / "models"
    for role, server in _config(installed.data / "servers" / f"{config}.toml").items():
        name = server["served-model-name"]
        at = lines.index(f"# {role} server: {name} at http://{server['host']}:{server['port']}/v1"
                         ", runs on this machine")
        command = lines[at + 1]
        assert f"{installed.home}/vllm-cpu/bin/python -m vllm.entrypoints.openai.api_server" \
            in command
        assert f"--model {models}/{name} " in command
        assert f"--port {server['port']} " in command
    if config == "cpu":  # the base server's draft model, also under SPECREASON_HOME
        assert f'"model":"{models}/qwen2.5-coder-0.5b-instruct"' in done.stdout
    assert str(ROOT) not in done.stdout
    assert not installed.home.exists() or not any(installed.home.rglob("*.pid"))


def test_serve_start_names_the_wheels_setup_script(installed, checked):
    """No server environment under SPECREASON_HOME: a one-line error naming the shipped setup
    script by its path (``servers/setup-cpu.sh`` means nothing outside the checkout)."""
    done = SimpleNamespace(**checked["commands"]["closed"])
    assert done.returncode == 2, (done.stdout, done.stderr[-3000:])
    script = installed.data / "servers" / "setup-cpu.sh"
    assert script.is_file()
    assert f"no server environment at {installed.home}/vllm-cpu/bin/python" in done.stderr
    assert f"run `bash {script}` first" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
