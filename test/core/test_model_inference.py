"""The model's cache discipline, leakage, the Policy engine and checkpoints (tiny random models)."""
import numpy as np
import pytest
import torch

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import Policy, build_model, load_checkpoint, save_checkpoint
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model import policy as policy_module
from hybridvla_core.model.cached_steps import HFCachedSteps


def random_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = build_model(tiny_config(**kwargs)).eval()
    # The last layer starts at zero (eps = 0 everywhere); give it weights so the checks mean something.
    torch.nn.init.normal_(model.final_layer.mlp.fc2.weight, std=0.3)
    return model


def statistics(action_dim):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(200, action_dim))
    return DatasetStatistics.from_samples(samples, samples, num_trajectories=4)


def observation(action_dim=7, views=("front", "wrist"), seed=0):
    rng = np.random.default_rng(seed)
    return {"images": {v: rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for v in views},
            "state": rng.normal(size=action_dim), "instruction": "Pick up the red cube"}


@pytest.mark.parametrize("chunk", [1, 4])
def test_cached_and_uncached_ddim_agree(chunk):
    model = random_model(chunk=chunk)
    policy = Policy(model, statistics(7), ddim_steps=4)
    with torch.no_grad():
        prefix = policy.prefix(policy._validate(observation()))
        noise = torch.randn(1, chunk, 7)
        cached = model.denoise_cached(model.prefill(prefix), noise, 4)
        uncached = model.denoise_uncached(prefix, noise, 4)
    assert (cached - noise).abs().max() > 1e-2  # the model did move the sample
    assert (cached - uncached).abs().max().item() <= 1e-4


def test_the_reference_fixed_crop_would_be_wrong_for_chunks():
    # Cropping 2 positions (the reference) with T = 4 leaves stale [t, x] entries: the result changes.
    model = random_model(chunk=4)
    policy = Policy(model, statistics(7))
    with torch.no_grad():
        prefix = policy.prefix(policy._validate(observation()))
        noise = torch.randn(1, 4, 7)
        cache = HFCachedSteps(model, prefix).cache  # the HF model's DynamicCache holding the prefix
        sample = noise
        for t in model.schedule.ddim_timesteps(4):
            hidden = model._run_llm(model.diffusion_embeds(torch.tensor([t]), sample), cache=cache)
            cache.crop(-2)
            sample = model.schedule.ddim_step(sample, model.final_layer(hidden[:, 1:]), t, 4)
        correct = model.denoise_uncached(prefix, noise, 4)
    assert (sample - correct).abs().max() > 1e-3


@pytest.mark.parametrize("conditioning", ["denoised", "noisy"])
def test_no_leakage_in_the_training_forward(conditioning):
    model = random_model(chunk=2, ar_conditioning=conditioning)
    torch.manual_seed(1)
    pixels = torch.rand(2, 2, 3, 32, 32)
    prompts = [model.prompt_ids("open the drawer"), model.prompt_ids("push")]  # different lengths: padded
    states = torch.rand(2, 7) * 2 - 1
    actions = torch.rand(2, 2, 7) * 2 - 1
    noise = torch.randn(4, 2, 7)
    timesteps = torch.tensor([10, 60, 30, 90])
    with torch.no_grad():
        base = model(pixels, prompts, states, actions, noise=noise, timesteps=timesteps)
        other_targets = actions.clone()
        other_targets[:, 0] = -other_targets[:, 0]  # changes the AR ground truth (the first action)
        changed_gt = model(pixels, prompts, states, other_targets, noise=noise, timesteps=timesteps)
        changed_noise = model(pixels, prompts, states, actions, noise=noise + 0.5, timesteps=timesteps)
    # The denoiser sees the clean action only through x_t; feeding the same x_t must give the same output.
    same_xt = model.schedule.add_noise(other_targets.repeat_interleave(2, 0), noise, timesteps)
    base_xt = model.schedule.add_noise(actions.repeat_interleave(2, 0), noise, timesteps)
    with torch.no_grad():
        noise_for_same_xt = noise + (base_xt - same_xt) / (1 - model.schedule.alphas_cumprod[timesteps]).sqrt().float().view(-1, 1, 1)
        leak = model(pixels, prompts, states, other_targets, noise=noise_for_same_xt, timesteps=timesteps)
    torch.testing.assert_close(leak["denoiser_output"], base["denoiser_output"], atol=1e-5, rtol=0)
    assert not torch.allclose(changed_gt["ar_logits"], base["ar_logits"])  # teacher forcing does see the GT
    assert (changed_noise["ar_logits"] - base["ar_logits"]).abs().max() > 1e-4


def test_policy_predict_result_and_modes(monkeypatch):
    model = random_model(chunk=3)
    obs = observation()
    result = Policy(model, statistics(7), mode="hybrid", seed=3).predict(obs)
    assert result.action.shape == (7,) and result.action_chunk.shape == (3, 7)
    assert result.diffusion_chunk.shape == (3, 7) and result.ar_action.shape == (7,)
    assert result.token_confidence.shape == (7,) and np.all((result.token_confidence > 0) & (result.token_confidence <= 1))
    assert result.source == "diffusion"  # an untrained model is never confident
    assert result.action[6] in (0.0, 1.0)
    assert {"prefill", "denoise", "autoregressive", "total"} <= set(result.timings_ms)
    again = Policy(model, statistics(7), mode="hybrid", seed=3).predict(obs)
    np.testing.assert_array_equal(result.action_chunk, again.action_chunk)
    # theta = 0 forces averaging of both branches.
    averaged = Policy(model, statistics(7), theta=0.0, seed=3).predict(obs)
    assert averaged.source == "average"
    expected = (result.diffusion_action[:6] + result.ar_action[:6]) / 2
    np.testing.assert_allclose(averaged.action[:6], expected, atol=1e-9)
    # ensemble_gripper reaches the ensemble (its rule: test_model_components); the checkpoint's by default.
    rules = []
    real = policy_module.ensemble
    monkeypatch.setattr(policy_module, "ensemble", lambda *a, **k: rules.append(a[5]) or real(*a, **k))
    Policy(model, statistics(7), theta=0.0, ensemble_gripper="autoregressive").predict(obs)
    Policy(model, statistics(7), theta=0.0).predict(obs)
    assert rules == ["autoregressive", model.config.ensemble_gripper] and model.config.ensemble_gripper == "average"
    with pytest.raises(ValueError, match="ensemble_gripper must be one of"):
        Policy(model, statistics(7), ensemble_gripper="vote")
    ar_only = Policy(model, statistics(7), mode="autoregressive", ar_schedule="reference").predict(obs)
    assert ar_only.diffusion_action is None and ar_only.source == "autoregressive"
    assert "denoise" not in ar_only.timings_ms
    dif_only = Policy(model, statistics(7), mode="diffusion").predict(obs)
    assert dif_only.ar_action is None and np.isnan(dif_only.mean_confidence)


def test_dual_arm_policy():
    model = random_model(action_dim=14, views=("front", "wrist_left", "wrist_right"))
    result = Policy(model, statistics(14), theta=0.0).predict(
        observation(14, ("front", "wrist_left", "wrist_right")))
    assert result.action.shape == (14,) and set(result.action[[6, 13]]) <= {0.0, 1.0}
    assert model.tokens_per_image == 16 + 4 + 4


def test_bad_observations_raise_one_clear_value_error():
    policy = Policy(random_model(), statistics(7))
    obs = observation()
    cases = [
        ({**obs, "images": {"front": obs["images"]["front"]}}, "missing view 'wrist'"),
        ({**obs, "state": np.zeros(14)}, r"state must have shape \(7,\)"),
        ({**obs, "state": np.array([0, 0, np.inf, 0, 0, 0, 1.0])}, "non-finite"),
        ({**obs, "images": {**obs["images"], "front": obs["images"]["front"].astype(np.float32)}}, "uint8"),
        ({**obs, "instruction": " "}, "instruction"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message) as info:
            policy.predict(bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="statistics have 14 action dims, model 7"):
        Policy(random_model(), statistics(14))


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi"])
def test_save_load_gives_identical_predictions(tmp_path, family):
    model = random_model(family=family, chunk=2)
    stats = {"lab": statistics(7)}
    save_checkpoint(model, tmp_path / "ckpt", stats)
    assert {"config.json", "model.safetensors", "dataset_statistics.json", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "ckpt").iterdir()}
    obs = observation()
    before = Policy(model, stats["lab"], theta=0.0, seed=7).predict(obs)
    loaded = Policy.from_checkpoint(tmp_path / "ckpt", theta=0.0, seed=7, unnorm_key="lab")
    after = loaded.predict(obs)
    np.testing.assert_array_equal(before.action_chunk, after.action_chunk)
    np.testing.assert_array_equal(before.token_confidence, after.token_confidence)
    reloaded, _ = load_checkpoint(tmp_path / "ckpt")
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
