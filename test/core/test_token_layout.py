"""The token sequence the LLM sees, per family, in training and inference, against the reference's layout.

Expected sequences are written out by hand from ../shared/facts/hybridvla-reference-code.md ("What a released
checkpoint needs, exactly") and the reference code (models/vlas/hybridvla.py predict_action, models/vlms/
prismatic.py _get_model_tags, vla/datasets/datasets.py + prompt builders):
  Llama-2: <s>=1 [views] "In: What action should the robot take to {instr}?\\nOut:" 29871 <BOD>=32001
           [state] [t] [x] <EOD>=32002 29871 a1..a7 </s>=2, a1 read from the logits at the trailing 29871;
  Phi-2:   <|endoftext|>=50256 [views] "Input: What action should the robot take to {instr}?\\nOutput:" 220
           <BOD>=50296 [state] [t] [x] <EOD>=50297 a1..a7 <|endoftext|>, a1 read at <EOD>.
Action token ids: vocab_size - need_to_sub - np.digitize(a, np.linspace(-1, 1, 256)) (OpenVLA / the reference's
ActionTokenizer). The tokenizers are byte-level stand-ins with the real vocabularies' sizes and the real ids at
those places (text_tokenizer.reference_shaped_tokenizer); the prompt's own ids are the stand-in's bytes.
What the LLM saw is read back from its input embeddings: a position whose embedding equals a row of the (randomised)
embedding table is that token; the others are matched against the vision, state and timestep embeddings.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import Policy, build_model
from hybridvla_core.model.cached_steps import CachedSteps
from hybridvla_core.model.hybridvla import HybridVLA
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.text_tokenizer import reference_shaped_tokenizer

INSTRUCTION = "Close the Jar"
FAMILIES = {  # family -> (stand-in, BOS, prompt text, ids before the state, ids after x up to a1, EOS)
    "llama": ("llama-2", 1, "In: What action should the robot take to close the jar?\nOut:",
              [29871, 32001], [32002, 29871], 2),
    "phi": ("phi-2", 50256, "Input: What action should the robot take to close the jar?\nOutput:",
            [220, 50296], [50297], 50256),
}
VOCAB_SIZE = {"llama": 32000, "phi": 50257}


def model_for(family, need_to_sub=0, ar_conditioning="noisy"):
    torch.manual_seed(0)
    config = tiny_config(family=family, ar_conditioning=ar_conditioning, views=("front", "wrist"))
    config.need_to_sub = need_to_sub
    model = build_model(config, reference_shaped_tokenizer(FAMILIES[family][0])).eval()
    with torch.no_grad():  # distinct rows (new rows start as the mean), so every token is recognisable
        torch.nn.init.normal_(model.llm.get_input_embeddings().weight)
        torch.nn.init.normal_(model.final_layer.mlp.fc2.weight, std=0.3)
    return model


class LLMCalls:
    """Records every pass through the decoder: its input embeddings and its last hidden states. Every path into
    the decoder goes through HybridVLA._run_llm (the HF model) or CachedSteps.run (the lean cached steps)."""

    def __init__(self, model):
        self.calls = []
        self.originals = {(HybridVLA, "_run_llm"): HybridVLA._run_llm, (CachedSteps, "run"): CachedSteps.run}
        for (owner, name), original in self.originals.items():
            setattr(owner, name, self._recording(original))

    def _recording(self, original):
        def wrapper(this, embeds, *args, **kwargs):
            self.calls.append({"embeds": embeds.detach().clone()})
            hidden = original(this, embeds, *args, **kwargs)
            self.calls[-1]["hidden"] = hidden.detach().clone()
            return hidden
        return wrapper

    def close(self):
        for (owner, name), original in self.originals.items():
            setattr(owner, name, original)


def read_sequence(model, embeds, vision, state, timesteps):
    """Row of embeddings (L, H) -> list: a token id, "V" (a vision token), "S" (state), "T" (timestep), "X" (else)."""
    table = model.llm.get_input_embeddings().weight.detach()
    t_table = [model.t_embedder(torch.tensor([t])).detach()[0] for t in range(timesteps)]
    same = lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-6)  # noqa: E731 (batching may move the last bit)
    out = []
    for row in embeds:
        ids = torch.nonzero((table == row).all(dim=1)).flatten().tolist()
        if ids:
            assert len(ids) == 1
            out.append(ids[0])
        elif any(same(row, v) for v in vision):
            out.append("V")
        elif same(row, state):
            out.append("S")
        elif any(same(row, t) for t in t_table):
            out.append("T")
        else:
            out.append("X")
    return out


def action_ids(actions, family, need_to_sub=0):
    """The reference's ActionTokenizer: vocab_size - need_to_sub - np.digitize(clip(a), linspace(-1, 1, 256))."""
    bins = np.linspace(-1, 1, 256)
    return (VOCAB_SIZE[family] - need_to_sub - np.digitize(np.clip(actions, -1, 1), bins)).tolist()


@pytest.mark.parametrize("family", ["llama", "phi"])
@pytest.mark.parametrize("need_to_sub", [0, 7])
def test_training_sequence_labels_and_first_action_position(family, need_to_sub):
    _, bos, prompt, before_state, after_x, eos = FAMILIES[family]
    model = model_for(family, need_to_sub)
    model.config.diffusion.repeated_samples = 1
    tokenizer = model.tokenizer
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert model.prompt_ids(INSTRUCTION) == prompt_ids + before_state[:1]  # the separator belongs to the prompt
    rng = np.random.default_rng(0)
    pixels = torch.rand(1, 2, 3, 32, 32)
    states = torch.tensor(rng.uniform(-1, 1, (1, 7)), dtype=torch.float32)
    actions = torch.tensor([[[-1.0, -0.5, 0.0, 0.3, 0.99, 1.0, 1.0]]], dtype=torch.float32)
    calls = LLMCalls(model)
    out = model(pixels, [model.prompt_ids(INSTRUCTION)], states, actions,
                noise=torch.zeros(1, 1, 7), timesteps=torch.tensor([37]))
    calls.close()
    assert len(calls.calls) == 1  # the reference's training: one pass, AR tokens after the noisy action
    vision = model.encode_images(pixels)[0]
    seen = read_sequence(model, calls.calls[0]["embeds"][0], vision, model.proprio_embedder(states)[0],
                         model.config.diffusion.train_steps)
    actions_as_ids = action_ids(actions[0, 0].numpy(), family, need_to_sub)
    expected = [bos] + ["V"] * vision.shape[0] + prompt_ids + before_state + ["S", "T", "X"] + after_x \
        + actions_as_ids
    assert seen == expected
    # Labels: a1..a7 and EOS, predicted from the last token before a1 through a7; nothing else has a loss.
    first = len(expected) - len(actions_as_ids) - 1
    assert seen[first] == after_x[-1]  # Llama: the trailing "▁" 29871; Phi: <EOD>
    hidden = calls.calls[0]["hidden"][0]
    logits = model.llm.get_output_embeddings()(hidden[first:]).float()
    torch.testing.assert_close(out["ar_logits"][0], logits, rtol=0, atol=0)
    labels = torch.tensor(actions_as_ids + [eos])
    torch.testing.assert_close(out["ar_loss"], F.cross_entropy(logits, labels), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "phi"])
def test_reference_inference_passes(family):
    """The reference preset: a diffusion pass on [.. sep <BOD> state][t x] and a separate AR pass on fresh noise at
    a random t with <EOD> (and Llama's "▁") after it; a1 is the argmax over the action bins of the logits at the
    last position of that pass."""
    _, bos, prompt, before_state, after_x, _ = FAMILIES[family]
    model = model_for(family)
    samples = np.random.default_rng(0).normal(size=(50, 7))
    policy = Policy(model, DatasetStatistics.from_samples(samples, samples, 2), preset="reference")
    assert policy.ar_schedule == "reference"
    rng = np.random.default_rng(1)
    observation = {"images": {v: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for v in ("front", "wrist")},
                   "state": samples[0], "instruction": INSTRUCTION}
    calls = LLMCalls(model)
    with torch.no_grad():
        result = policy.predict(observation)
        vision = model.encode_images(policy._pixels(policy._validate(observation)))[0]
        state = torch.as_tensor(policy.statistics.proprio.normalize(samples[0]), dtype=torch.float32)
        state = model.proprio_embedder(state[None])[0]
    calls.close()
    prompt_ids = model.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    head = [bos] + ["V"] * vision.shape[0] + prompt_ids + before_state + ["S"]
    with torch.no_grad():
        sequences = [read_sequence(model, c["embeds"][0].clone(), vision, state, model.config.diffusion.train_steps)
                     for c in calls.calls]
    prefills = [i for i, seen in enumerate(sequences) if seen[:1] == [bos]]  # later calls run on a cache
    assert len(prefills) == 2
    assert sequences[prefills[0]] == head  # the diffusion prefill (its [t, x] steps run on the cache)
    assert sequences[prefills[1]] == head + ["T", "X"] + after_x  # the AR pass: fresh noise at a random t
    ar_pass = calls.calls[prefills[1]]
    t_index = sequences[prefills[1]].index("T")
    with torch.no_grad():
        drawn_t = [t for t in range(100) if torch.allclose(model.t_embedder(torch.tensor([t]))[0],
                                                           ar_pass["embeds"][0, t_index], rtol=0, atol=1e-6)]
    assert len(drawn_t) == 1
    with torch.no_grad():
        logits = model.llm.get_output_embeddings()(ar_pass["hidden"][0, -1].clone()).float()
    first_bin = VOCAB_SIZE[family] - 256
    a1 = int(logits[first_bin:VOCAB_SIZE[family]].argmax()) + first_bin
    bin_centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    expected_a1 = bin_centres[np.clip(VOCAB_SIZE[family] - a1 - 1, 0, 254)]
    assert policy.statistics.action.normalize(result.ar_action)[0] == pytest.approx(expected_a1, abs=1e-6)  # bin centres in fp32


def test_reference_gate_is_the_sum_of_six_confidences_above_5_8():
    """The reference script fuses when sum(conf[:6]) > 5.8; the preset's theta must decide the same."""
    from hybridvla_core.model.ensemble import ensemble

    samples = np.random.default_rng(0).normal(size=(50, 7))
    policy = Policy(model_for("llama"), DatasetStatistics.from_samples(samples, samples, 2), preset="reference")
    diffusion, ar = np.full(7, 0.2), np.full(7, -0.2)
    for confidences in ([0.97] * 6 + [0.1], [0.966] * 6 + [1.0], [1.0] * 5 + [0.81, 0.0], [1.0] * 5 + [0.79, 1.0],
                        [0.9667] * 6 + [0.5]):
        fused = ensemble(diffusion, ar, np.array(confidences), "hybrid", policy.theta).source == "average"
        assert fused == (sum(confidences[:6]) > 5.8), confidences


def test_single_prefill_preset_is_one_pass_on_the_denoised_action():
    samples = np.random.default_rng(0).normal(size=(50, 7))
    model = model_for("llama")
    policy = Policy(model, DatasetStatistics.from_samples(samples, samples, 2), preset="single-prefill")
    assert policy.ar_schedule == "single"
    rng = np.random.default_rng(1)
    calls = LLMCalls(model)
    with torch.no_grad():
        policy.predict({"images": {v: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for v in ("front", "wrist")},
                        "state": samples[0], "instruction": INSTRUCTION})
    calls.close()
    prefills = [c for c in calls.calls if c["embeds"].shape[1] > model.step_room]
    assert len(prefills) == 1  # one prefill; the DDIM steps and the AR tokens run after it, a few tokens a call
    assert len(calls.calls) == 1 + 4 + 1 + 6  # prefill, 4 DDIM steps, [t x <EOD> sep], a2..a7
    with pytest.raises(ValueError, match=r"preset must be one of \('reference', 'single-prefill'\), got 'fast'"):
        Policy(model, DatasetStatistics.from_samples(samples, samples, 2), preset="fast")
