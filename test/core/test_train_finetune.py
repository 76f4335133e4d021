"""Fine-tuning (train.init_from) onto a training set with another action convention: the weights carry over,
the action convention and unnorm_key become the new set's; a given model.diffusion or model.theta replaces
the checkpoint's, and so does model.vision.image_size for a keypoint tower.
train.state_noise: only the named state dims get it.
train.lr_schedule: the rate each step really used."""
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from hybridvla_core.actions import ActionConvention
from hybridvla_core.model import Policy, TrainsetWriter
from hybridvla_core.model.checkpoint import load_checkpoint
from hybridvla_core.model.policy import Observation
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.training import TrainConfig, learning_rate_at, train


def _write_set(directory, convention, unnorm_key, seed):
    rng = np.random.default_rng(seed)
    with TrainsetWriter(directory, ["front"], 7, convention=convention, unnorm_key=unnorm_key) as writer:
        for i in range(4):
            writer.add({"front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)}, rng.normal(size=7),
                       rng.normal(size=7), "push the button", episode=i)


def _spec(data, output, **extra):
    return {"data": {"path": str(data)}, **extra,
            "train": {"output_dir": str(output), "max_steps": 1, "batch_size": 2, "learning_rate": 1e-2,
                      "save_every": 0, "progress": False, "freeze_vision": "init_from" in extra}}


def _tiny_model_spec():
    model = tiny_config().to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    model["views"] = [{"name": "front"}]
    return model


@pytest.fixture
def used_learning_rates(monkeypatch):
    """The learning rate of every optimizer step train() takes."""
    used = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    return used


def test_init_from_adopts_the_new_sets_convention(tmp_path):
    _write_set(tmp_path / "delta", ActionConvention(), "lab_delta", 0)
    absolute = ActionConvention(translation="absolute")
    _write_set(tmp_path / "absolute", absolute, "lab_absolute", 1)
    model = _tiny_model_spec()
    first = train(_spec(tmp_path / "delta", tmp_path / "run1", model=model))["checkpoint"]
    second = train(_spec(tmp_path / "absolute", tmp_path / "run2", init_from=str(first)))["checkpoint"]

    tuned, statistics = load_checkpoint(second)
    assert tuned.config.convention == absolute and tuned.config.unnorm_key == "lab_absolute"
    assert set(statistics) == {"lab_absolute"}
    # The weights came from the first run: the frozen vision tower is bit-identical, the rest moved on.
    before, after = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    vision = [k for k in before if k.startswith("vision_backbone.")]
    assert vision and all(np.array_equal(before[k], after[k]) for k in vision)
    assert not np.array_equal(before["final_layer.mlp.fc2.weight"], after["final_layer.mlp.fc2.weight"])


def test_init_from_can_switch_the_denoiser_to_predict_the_clean_action(tmp_path):
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    first = train(_spec(tmp_path / "set", tmp_path / "run1", model=_tiny_model_spec()))["checkpoint"]
    assert load_checkpoint(first)[0].config.diffusion.prediction_type == "epsilon"
    second = train(_spec(tmp_path / "set", tmp_path / "run2", init_from=str(first),
                         model={"diffusion": {"prediction_type": "sample"}}))["checkpoint"]
    tuned, _ = load_checkpoint(second)
    assert tuned.config.diffusion.prediction_type == "sample" and tuned.schedule.prediction_type == "sample"
    assert tuned.config.diffusion.ddim_steps == tiny_config().diffusion.ddim_steps  # the rest kept
    assert tuned.config.theta == tiny_config().theta
    # The loss is now measured against the clean action, not the noise.
    torch.manual_seed(0)
    actions = torch.rand(2, 1, 7) * 2 - 1
    noise = torch.randn(2 * tuned.config.diffusion.repeated_samples, 1, 7)
    with torch.no_grad():
        out = tuned(torch.rand(2, 1, 3, 32, 32), [tuned.prompt_ids("push")] * 2, torch.zeros(2, 7), actions,
                    noise=noise)
    clean = actions.repeat_interleave(tuned.config.diffusion.repeated_samples, 0)
    torch.testing.assert_close(out["diffusion_loss"], torch.nn.functional.mse_loss(out["denoiser_output"], clean))
    assert not torch.isclose(out["diffusion_loss"], torch.nn.functional.mse_loss(out["denoiser_output"], noise))


def test_cosine_learning_rate_is_what_the_optimizer_used(tmp_path, used_learning_rates):
    settings = TrainConfig(max_steps=4, learning_rate=1e-3, lr_schedule="cosine", min_learning_rate=1e-5)
    rates = [learning_rate_at(settings, step) for step in range(5)]
    assert rates[0] == 1e-3 and rates[-1] == pytest.approx(1e-5) and rates[2] == pytest.approx((1e-3 + 1e-5) / 2)
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert learning_rate_at(TrainConfig(learning_rate=1e-3), 999) == 1e-3  # constant, the default
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    spec = _spec(tmp_path / "set", tmp_path / "run", model=_tiny_model_spec())
    spec["train"].update(max_steps=4, learning_rate=1e-3, lr_schedule="cosine", min_learning_rate=1e-5)
    train(spec)
    assert used_learning_rates == pytest.approx(rates[:4])
    with pytest.raises(ValueError, match="train.lr_schedule must be one of"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="train.min_learning_rate must be in"):
        TrainConfig(learning_rate=1e-4, min_learning_rate=1e-3)


def test_state_noise_reaches_only_the_named_dims(tmp_path, monkeypatch):
    from hybridvla_core.model import hybridvla
    from hybridvla_core.model.trainset import TrainsetDataset

    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    seen = []
    forward = hybridvla.HybridVLA.forward

    def spy(self, pixels, prompts, states, actions, *args, **kwargs):
        seen.append(states.detach().clone())
        return forward(self, pixels, prompts, states, actions, *args, **kwargs)

    monkeypatch.setattr(hybridvla.HybridVLA, "forward", spy)
    model = _tiny_model_spec()
    spec = _spec(tmp_path / "set", tmp_path / "run", model=model)
    spec["train"].update(batch_size=4, state_noise=1.0, state_noise_dims=[0, 5])
    train(spec)
    clean = np.stack([TrainsetDataset(tmp_path / "set", 32, ["front"])[i]["state"].numpy() for i in range(4)])
    noisy = seen[0].numpy()
    order = [int(np.argmin(np.abs(clean[:, [1, 2, 3, 4, 6]] - row[[1, 2, 3, 4, 6]]).sum(1))) for row in noisy]
    assert sorted(order) == [0, 1, 2, 3]  # every other dim arrives exact
    np.testing.assert_allclose(noisy[:, [1, 2, 3, 4, 6]], clean[order][:, [1, 2, 3, 4, 6]], atol=1e-6)
    assert np.all(np.abs(noisy[:, [0, 5]] - clean[order][:, [0, 5]]) > 1e-4)
    spec["train"].update(state_noise_dims=[7], output_dir=str(tmp_path / "run2"))
    with pytest.raises(ValueError, match=r"state_noise_dims \[7\]"):
        train(spec)
    spec["train"].pop("state_noise_dims")  # noise asked for, on no dim: refused, not silently dropped
    with pytest.raises(ValueError, match=r"state_noise 1.0 needs train.state_noise_dims"):
        train(spec)


def test_diffusion_loss_weight_scales_the_denoiser_gradient(tmp_path, monkeypatch):
    grads = {}
    clip = torch.nn.utils.clip_grad_norm_

    def spy(parameters, *args, **kwargs):
        parameters = list(parameters)
        # final_layer's last linear (action_dim x hidden): only the diffusion loss reaches it.
        grads[run] = next(p.grad.clone() for p in parameters if p.dim() == 2 and p.shape[0] == 7 and p.shape[1] > 7)
        return clip(parameters, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    for run, weight in (("one", 1.0), ("ten", 10.0)):
        spec = _spec(tmp_path / "set", tmp_path / run, model=_tiny_model_spec())
        spec["train"]["diffusion_loss_weight"] = weight
        record = train(spec)["history"][-1]
        # The logged loss is the one optimised: the weighted sum.
        assert record["loss"] == pytest.approx(weight * record["diffusion_loss"] + record["ar_loss"], rel=1e-5)
    assert grads["one"].abs().max() > 0
    torch.testing.assert_close(grads["ten"], 10 * grads["one"], rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="train.diffusion_loss_weight must be > 0"):
        TrainConfig(diffusion_loss_weight=0)


def test_stop_after_then_resume_follows_one_learning_rate_curve(tmp_path, used_learning_rates):
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    spec = _spec(tmp_path / "set", tmp_path / "run", model=_tiny_model_spec())
    spec["train"].update(max_steps=4, learning_rate=1e-3, lr_schedule="cosine", stop_after=2)
    stopped = train(spec)["checkpoint"]
    assert stopped == tmp_path / "run" / "checkpoints" / "step-00000002" and not (tmp_path / "run" / "final").exists()
    assert load_checkpoint(stopped)[0].config.diffusion.prediction_type == "epsilon"  # a usable checkpoint
    del spec["train"]["stop_after"]
    assert train(spec)["checkpoint"] == tmp_path / "run" / "final"
    settings = TrainConfig(max_steps=4, learning_rate=1e-3, lr_schedule="cosine")
    assert used_learning_rates == pytest.approx([learning_rate_at(settings, s) for s in range(4)])
    with pytest.raises(ValueError, match=r"train.stop_after must be in 1..max_steps \(4\), got 5"):
        TrainConfig(max_steps=4, stop_after=5)


def test_init_from_can_set_the_ensemble_settings(tmp_path):
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    first = train(_spec(tmp_path / "set", tmp_path / "run1", model=_tiny_model_spec()))["checkpoint"]
    assert load_checkpoint(first)[0].config.theta != 0.6
    second = train(_spec(tmp_path / "set", tmp_path / "run2", init_from=str(first),
                         model={"theta": 0.6, "ensemble_gripper": "autoregressive"}))
    tuned = load_checkpoint(second["checkpoint"])[0].config
    assert tuned.theta == 0.6 and tuned.ensemble_gripper == "autoregressive"
    with pytest.raises(ValueError, match=r"model.theta must be a number in \[0, 1\], got 1.5"):
        train(_spec(tmp_path / "set", tmp_path / "run3", init_from=str(first), model={"theta": 1.5}))
    with pytest.raises(ValueError, match="model.ensemble_gripper must be one of"):
        train(_spec(tmp_path / "set", tmp_path / "run4", init_from=str(first), model={"ensemble_gripper": "x"}))
    # What the weights were trained with cannot change in a fine-tune: said, not silently ignored.
    with pytest.raises(ValueError, match=r"model: need_to_sub, token_layout cannot change beside init_from"):
        train(_spec(tmp_path / "set", tmp_path / "run5", init_from=str(first),
                    model={"token_layout": "compact", "need_to_sub": 7}))
    with pytest.raises(ValueError, match=r"model: vision.kind cannot change beside init_from"):
        train(_spec(tmp_path / "set", tmp_path / "run6", init_from=str(first), model={"vision": {"kind": "clip"}}))


def _keypoint_model_spec():
    model = _tiny_model_spec()
    model["vision"] = {"kind": "keypoints", "image_size": 32, "keypoints": {"channels": 8, "keypoints": 4, "width": 16}}
    return model


def test_init_from_can_widen_a_keypoint_models_input(tmp_path):
    """model.vision.image_size beside init_from: the keypoint tower's weights carry over to a [height, width]
    input (a wide table crop kept at its aspect); the checkpoint then reads frames at that size."""
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    first = train(_spec(tmp_path / "set", tmp_path / "run1", model=_keypoint_model_spec()))["checkpoint"]
    second = train(_spec(tmp_path / "set", tmp_path / "run2", init_from=str(first),
                         model={"vision": {"image_size": [16, 48]}}))["checkpoint"]
    tuned, _ = load_checkpoint(second)
    assert tuned.config.vision.image_size == [16, 48] and tuned.config.vision.keypoints["keypoints"] == 4
    before, after = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert all(np.array_equal(before[k], after[k]) for k in before if k.startswith("vision_backbone."))
    policy = Policy.from_checkpoint(second)
    frame = np.random.default_rng(0).integers(0, 256, (24, 72, 3), dtype=np.uint8)
    observation = Observation({"front": frame}, np.zeros(7), "push the button")
    assert tuple(policy._pixels(observation).shape) == (1, 1, 3, 16, 48)
    assert np.all(np.isfinite(policy.predict(observation).action))


def test_init_from_refuses_a_new_input_size_for_a_patch_tower(tmp_path):
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    first = train(_spec(tmp_path / "set", tmp_path / "run1", model=_tiny_model_spec()))["checkpoint"]
    with pytest.raises(ValueError, match="image_size beside init_from needs a keypoints tower.*'small'"):
        train(_spec(tmp_path / "set", tmp_path / "run2", init_from=str(first), model={"vision": {"image_size": 64}}))


@pytest.mark.parametrize("field,value", [("learning_rate", float("nan")), ("learning_rate", float("inf")),
                                         ("min_learning_rate", float("nan")), ("grad_clip", float("nan")),
                                         ("learning_rate", 0.0)])
def test_a_nan_or_zero_rate_is_named_itself(field, value):
    """(a NaN learning rate used to be reported as 'min_learning_rate ... got 0.0')"""
    with pytest.raises(ValueError, match=rf"train\.{field} must be"):
        TrainConfig(max_steps=4, **{field: value})


def test_a_run_killed_while_saving_leaves_no_step_that_looks_complete(tmp_path, monkeypatch):
    """torch.save of the trainer state dies half-way (out of memory, preemption): no step-XXXXXXXX directory may
    appear with a half-written trainer_state.pt, which resume would pick and fail on; the next run resumes from
    the last whole step."""
    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    spec = _spec(tmp_path / "set", tmp_path / "run", model=_tiny_model_spec())
    spec["train"].update(max_steps=4, save_every=2)
    real_save = torch.save

    def dies_half_way(obj, path, *args, **kwargs):
        if str(path).endswith("trainer_state.pt") and "step-00000004" in str(path):
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise MemoryError("killed while saving")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(MemoryError):
        train(spec)
    steps = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in steps.iterdir()) == ["step-00000002"]  # no partial left behind either
    monkeypatch.setattr(torch, "save", real_save)
    assert train(spec)["checkpoint"] == tmp_path / "run" / "final"  # resumed from step 2
    assert (steps / "step-00000004" / "trainer_state.pt").is_file()
