"""The lean cached-step path (cached_steps.CachedSteps) computes what the HF model computes, for every family
and for grouped-query attention; the HF fallback (sliding-window configs) keeps the cache discipline; the reference
schedule's single prefill of prefix + [t, x, <EOD>] decodes what a cached prefix + [t, x, <EOD>] decodes."""
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import Policy, build_model
from hybridvla_core.model import cached_steps
from hybridvla_core.model.cached_steps import CachedSteps, HFCachedSteps, _few_rows_linear
from hybridvla_core.model.hybridvla import _cache_keyword
from hybridvla_core.model.presets import tiny_config

CASES = [("llama", 4), ("llama", 2), ("qwen2", 4), ("qwen2", 2), ("phi", 4)]  # (family, key/value heads)


def random_model(family, kv_heads, chunk, seed=0):
    config = tiny_config(family=family, chunk=chunk)
    config.llm.hf_config["num_key_value_heads"] = kv_heads
    torch.manual_seed(seed)
    model = build_model(config).eval()
    torch.nn.init.normal_(model.final_layer.mlp.fc2.weight, std=0.3)
    return model


def prefix_of(model, seed=0):
    rng = np.random.default_rng(seed)
    samples = rng.normal(size=(50, 7))
    policy = Policy(model, DatasetStatistics.from_samples(samples, samples, 1))
    observation = {"images": {v: rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for v in ("front", "wrist")},
                   "state": rng.normal(size=7), "instruction": "stack the blue cup"}
    return policy.prefix(policy._validate(observation))


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 9, 20])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_few_rows_linear_is_linear(rows, bias, transposed, monkeypatch):
    """Whichever layout this machine measures faster, both give F.linear's result."""
    monkeypatch.setattr(cached_steps, "_transposed_is_faster", lambda weight, rows: transposed)
    torch.manual_seed(rows)
    linear = torch.nn.Linear(96, 160, bias=bias)
    x = torch.randn(1, rows, 96)
    out = _few_rows_linear(x, linear.weight, linear.bias)
    assert out.shape == (1, rows, 160) and out.is_contiguous()
    torch.testing.assert_close(out, F.linear(x, linear.weight, linear.bias), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family,kv_heads", CASES)
@pytest.mark.parametrize("lean", [True, False])
def test_steps_match_the_hf_model_at_every_offset(family, kv_heads, lean):
    model = random_model(family, kv_heads, chunk=2)
    with torch.no_grad():
        prefix = prefix_of(model)
        steps = model.prefill(prefix, room=6) if lean else HFCachedSteps(model, prefix)
        assert isinstance(steps, CachedSteps if lean else HFCachedSteps)
        torch.manual_seed(1)
        first, second, again = torch.randn(1, 3, 64), torch.randn(1, 2, 64), torch.randn(1, 3, 64)
        steps.run(first, start=0)
        got_second = steps.run(second, start=3)  # after `first`
        got_again = steps.run(again, start=0)  # overwrites `first` (and `second`)
        got_one = steps.run(second[:, :1], start=3)  # one token after `again`
        if lean:
            with pytest.raises(ValueError, match="exceed the room"):
                steps.run(torch.randn(1, 3, 64), start=4)
        steps.finish()
        if not lean:
            assert steps.cache.get_seq_length() == prefix.shape[1]  # the HF cache holds the prefix only
        full = lambda *parts: model._run_llm(torch.cat([prefix, *parts], dim=1))  # noqa: E731
        prefix_last = model._run_llm(prefix)[:, -1]
        expected_second = full(first, second)[:, -2:]
        expected_again = full(again)[:, -3:]
        expected_one = full(again, second[:, :1])[:, -1:]
    for got, expected in [(got_second, expected_second), (got_again, expected_again), (got_one, expected_one),
                          (steps.last_hidden, prefix_last)]:  # the prefill itself (lean: its own layers)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_the_cache_goes_by_the_installed_transformers_name():
    """transformers 5.x names the decoder's cache `cache` and deprecates `past_key_values` (gone in 5.40); 4.x has
    only `past_key_values` and would swallow `cache=` into **kwargs, running without the prefix. Neither the
    deprecation warning nor a dropped cache (the HF path would then see only its new tokens) may happen."""
    class DecoderOf4x(torch.nn.Module):
        def forward(self, inputs_embeds=None, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=None, **kwargs):
            pass

    assert _cache_keyword(DecoderOf4x) == "past_key_values"
    model = random_model("llama", 4, chunk=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        prefix = prefix_of(model)
        steps = HFCachedSteps(model, prefix)
        token = torch.randn(1, 1, 64)
        got = steps.run(token, start=0)
        expected = model._run_llm(torch.cat([prefix, token], dim=1))[:, -1:]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family,kv_heads", CASES)
@pytest.mark.parametrize("chunk", [1, 4])
def test_cached_ddim_and_decoding_match_full_recomputation(family, kv_heads, chunk):
    model = random_model(family, kv_heads, chunk)
    with torch.no_grad():
        prefix = prefix_of(model)
        noise = torch.randn(1, chunk, 7, generator=torch.Generator().manual_seed(2))
        steps = model.prefill(prefix)
        cached = model.denoise_cached(steps, noise, 4)
        uncached = model.denoise_uncached(prefix, noise, 4)
        assert (cached - noise).abs().max() > 1e-2 and (cached - uncached).abs().max().item() <= 1e-4
        zero_t = torch.zeros(1, dtype=torch.long)
        actions, confidence, ids = model.decode_actions(steps, zero_t, cached.clamp(-1, 1))  # same buffers
        # Greedy decoding by recomputing the whole sequence for every token.
        sequence = torch.cat([prefix, model._ar_head(zero_t, cached.clamp(-1, 1))], dim=1)
        first, end = model.action_tokenizer.first_id, model.action_tokenizer.first_id + 256
        expected_ids, expected_confidence = [], []
        for _ in range(7):
            logits = model._logits(model._run_llm(sequence)[:, -1])
            token = logits[:, first:end].argmax(-1) + first
            expected_ids.append(token)
            expected_confidence.append(torch.softmax(logits, -1).gather(1, token[:, None])[:, 0])
            sequence = torch.cat([sequence, model.embed_ids(token[:, None])], dim=1)
    assert torch.equal(ids, torch.stack(expected_ids, 1))
    torch.testing.assert_close(confidence, torch.stack(expected_confidence, 1), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_reference_pass_in_one_prefill_decodes_like_prefix_then_head(family):
    model = random_model(family, 4, chunk=2)
    with torch.no_grad():
        prefix = prefix_of(model)
        t = torch.tensor([37])
        noise = torch.randn(1, 2, 7, generator=torch.Generator().manual_seed(4))
        one_prefill = model.decode_actions_uncached(prefix, t, noise)
        two_parts = model.decode_actions(model.prefill(prefix), t, noise)
    assert torch.equal(one_prefill[2], two_parts[2])
    torch.testing.assert_close(one_prefill[1], two_parts[1], atol=1e-5, rtol=1e-4)
