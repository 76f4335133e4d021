"""The own greedy decode loop (static KV buffers, no `generate`) gives the tokens HF's `generate` gives for the
same sequence, on tiny Llama and Phi models: greedy over the action bins (a LogitsProcessor masks the rest, as
the loop does), the confidence = the token's probability under the full-vocabulary softmax of the raw logits."""
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from test_cached_steps import prefix_of, random_model


class ActionBinsOnly(LogitsProcessor):
    def __init__(self, first: int, end: int):
        self.first, self.end = first, end

    def __call__(self, input_ids, scores):
        masked = torch.full_like(scores, float("-inf"))
        masked[:, self.first:self.end] = scores[:, self.first:self.end]
        return masked


@pytest.mark.parametrize("family", ["llama", "phi"])
@pytest.mark.parametrize("schedule", ["single", "reference"])
def test_decode_loop_matches_generate(family, schedule):
    model = random_model(family, 4, chunk=2)
    with torch.no_grad():
        prefix = prefix_of(model)
        noise = torch.randn(1, 2, 7, generator=torch.Generator().manual_seed(5))
        t = torch.tensor([0 if schedule == "single" else 61])
        if schedule == "single":
            _, confidence, ids = model.decode_actions(model.prefill(prefix), t, noise)
        else:
            _, confidence, ids = model.decode_actions_uncached(prefix, t, noise)
        first = model.action_tokenizer.first_id
        out = model.llm.generate(
            inputs_embeds=torch.cat([prefix, model._ar_head(t, noise)], dim=1), max_new_tokens=7, min_new_tokens=7,
            do_sample=False, logits_processor=LogitsProcessorList([ActionBinsOnly(first, first + 256)]),
            output_logits=True, return_dict_in_generate=True, pad_token_id=model.config.tokens["pad_id"])
    expected_ids = out.sequences[:, -7:]
    assert torch.equal(ids, expected_ids), (ids, expected_ids)
    raw = torch.stack(out.logits, dim=1).float()  # (1, 7, vocab), before the processor
    expected_confidence = torch.softmax(raw, dim=-1).gather(2, expected_ids[..., None])[..., 0]
    torch.testing.assert_close(confidence, expected_confidence, atol=1e-5, rtol=1e-4)
