"""The distribution vLLM samples a token from, written out independently of vLLM's code: for the
checks that speculative sampling is lossless (the CPU rejection sampler in
tests/serverenv_tests/test_vllm_cpu_fixes.py, a running speculating server in
tests/integration_tests/test_specdecode_real.py)."""

from __future__ import annotations

import math


def target_distribution(scores: dict[int, float], temperature: float,
                        top_p: float) -> dict[int, float]:
    """Softmax of the scores (logits, or log-probabilities: a constant shift cancels) over the
    temperature, then the top-p nucleus (the likeliest tokens up to mass top_p, the one crossing it
    included), renormalised. Tokens outside the nucleus are absent."""
    top = max(scores.values())
    weights = {t: math.exp((s - top) / temperature) for t, s in scores.items()}
    total = sum(weights.values())
    kept, mass = {}, 0.0
    for token, w in sorted(weights.items(), key=lambda kv: -kv[1]):
        kept[token] = w / total
        mass += w / total
        if mass >= top_p:
            break
    norm = sum(kept.values())
    return {t: p / norm for t, p in kept.items()}
