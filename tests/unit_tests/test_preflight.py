"""Preflight logic against a stand-in OpenAI-style HTTP server on loopback (the real vLLM pair is
checked by the integration tests): what is an error, what is a warning."""

from __future__ import annotations

import pytest

from specreason_graph.context import Context
from specreason_graph.serving import preflight
from tests.vllm_stub import VLLMStub


@pytest.fixture
def servers():
    """``servers("b", tokens=[1, 2], max_model_len=…)``: a running stand-in's URL, stopped after."""
    started = []

    def make(model, **kwargs):
        stub = VLLMStub(model, **kwargs).__enter__()
        started.append(stub)
        return stub.url

    yield make
    for stub in started:
        stub.__exit__()


def ctx(base_url, small_url, **settings):
    return Context(base_url=base_url, small_url=small_url, base_model="b", small_model="s",
                   **settings)


def test_a_vllm_pair_of_one_family_has_no_warnings(servers):
    base = servers("b", tokens=[1, 2, 3])
    small = servers("s", tokens=[1, 2, 3])
    assert preflight.check(ctx(base, small)).warnings == []


def test_different_tokenizer_families_warn(servers):
    base = servers("b", tokens=[1, 2, 3])
    small = servers("s", tokens=[9, 9])
    [warning] = preflight.check(ctx(base, small)).warnings
    assert "tokenize text differently" in warning and "b and s" in warning


def test_a_context_smaller_than_the_budget_warns(servers):
    base = servers("b", max_model_len=4096, tokens=[1])
    small = servers("s", max_model_len=32768, tokens=[1])
    [warning] = preflight.check(ctx(base, small, token_budget=8192)).warnings
    assert "base model's context (4096 tokens)" in warning and "context_full" in warning


def test_a_server_without_tokenize_is_probably_not_vllm(servers):
    base = servers("b", max_model_len=None, tokenize=False)
    small = servers("s", tokens=[1])
    [warning] = preflight.check(ctx(base, small)).warnings
    assert f"base server at {base} has no vLLM /tokenize" in warning


def test_wrong_model_name_is_an_error_listing_what_is_served(servers):
    base = servers("other", max_model_len=None, tokens=[1])
    small = servers("s", max_model_len=None, tokens=[1])
    with pytest.raises(preflight.EndpointError, match=r"serves \['other'\], not 'b': pass --base-model"):
        preflight.check(ctx(base, small))


def test_an_endpoint_that_is_not_openai_compatible_is_an_error(servers):
    base = servers(None, tokenize=False, status=404)
    small = servers("s", max_model_len=None, tokens=[1])
    with pytest.raises(preflight.EndpointError, match="answered 404 to /models"):
        preflight.check(ctx(base, small))


# --- the thinking opener, from the served chat template ------------------------------------------

def stub_pair(base_think: bool, small_think: bool, **kwargs):
    return VLLMStub("b", think=base_think, **kwargs), VLLMStub("s", think=small_think, **kwargs)


@pytest.mark.parametrize(("think", "opener"), [(True, "<think>\n"), (False, "")])
def test_the_thinking_opener_is_read_from_the_chat_template(think, opener):
    base, small = stub_pair(think, think)
    with base, small:
        pair = preflight.check(ctx(base.url, small.url))
    assert pair.warnings == []
    assert pair.base.generation_prompt == "<|im_start|>assistant\n" + opener
    assert (pair.base.thinking_opener, pair.small.thinking_opener) == (opener, opener)
    assert pair.thinking_opener == opener


def test_a_server_that_cannot_say_gives_no_opener():
    base, small = stub_pair(True, True, detokenize=False)
    with base, small:
        pair = preflight.check(ctx(base.url, small.url))
    assert pair.thinking_opener is None and pair.base.generation_prompt is None


def test_the_base_models_opener_decides_and_a_difference_warns():
    base, small = stub_pair(True, False)
    with base, small:
        pair = preflight.check(ctx(base.url, small.url))
    assert pair.thinking_opener == "<think>\n"
    [warning] = pair.warnings
    assert "b's chat template opens the assistant turn with '<think>\\n' and s's with ''" in warning


# --- does the question fit ------------------------------------------------------------------------

def test_a_question_that_does_not_fit_is_an_error_naming_both_sizes():
    from langchain_core.messages import HumanMessage

    from specreason_graph.graph import first_request

    base, small = stub_pair(False, False, max_model_len=2048)
    with base, small:
        c = ctx(base.url, small.url, max_step_tokens=512)
        pair = preflight.check(c)
        fits = first_request("x" * 1000, c)
        preflight.check_fits([pair.base, pair.small], fits.messages, fits.continue_final,
                             fits.max_tokens)
        long = first_request("x" * 1600, c)
        with pytest.raises(preflight.DoesNotFit) as info:
            preflight.check_fits([pair.base, pair.small], long.messages, long.continue_final,
                                 long.max_tokens)
        # what the stub's template makes of the graph's first request: one token a character
        rendered = base.render({"messages": [{"role": "user", "content": long.messages[0].content}]})
        assert f"its prompt is {len(rendered)} tokens and a step (max_step_tokens) 512 more" \
            in str(info.value)
        assert "b at " in str(info.value) and "takes 2048" in str(info.value)
        n = preflight.prompt_tokens(pair.small, [HumanMessage("hi")], continue_final=False)
        assert n == len("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


# --- speculative decoding on the base server ------------------------------------------------------

def _speculating(acceptance, temperature=0.6):
    preflight._speculation_checked.clear()
    stub = VLLMStub(model="base", acceptance=acceptance)
    return stub, Context(base_url=stub.url, base_model="base", temperature=temperature)


def test_a_speculating_server_that_accepts_sampled_drafts_passes():
    stub, ctx = _speculating(lambda t: 0.87 if t == 0 else 0.83)
    with stub:
        assert preflight.check_speculation(ctx) == pytest.approx(0.83, abs=0.02)
        temperatures = [body["temperature"] for body in stub.chat_requests()]
        assert temperatures == [0.0, 0.6]  # greedy, then the run's own temperature
        assert preflight.check_speculation(ctx) == pytest.approx(0.83, abs=0.02)
        assert len(stub.chat_requests()) == 2  # once per server and setting


def test_sampled_acceptance_collapsing_is_refused_naming_the_fault():
    stub, ctx = _speculating(lambda t: 0.87 if t == 0 else 0.01)
    with stub, pytest.raises(preflight.EndpointError) as caught:
        preflight.check_speculation(ctx)
    message = str(caught.value)
    assert stub.url in message and "accepted 0% of 32 drafted tokens at temperature 0.6" in message
    assert "88% greedy" in message and "expand kernel" in message
    assert "servers/setup-cpu.sh" in message and "--temperature 0" in message


def test_a_plain_server_or_a_greedy_run_is_not_probed():
    preflight._speculation_checked.clear()
    with VLLMStub(model="base") as plain:  # publishes no speculative counters
        ctx = Context(base_url=plain.url, base_model="base")
        assert preflight.check_speculation(ctx) is None
        assert plain.chat_requests() == []
    stub, ctx = _speculating(lambda t: 0.0, temperature=0)
    with stub:
        assert preflight.check_speculation(ctx) is None
        assert stub.chat_requests() == []
