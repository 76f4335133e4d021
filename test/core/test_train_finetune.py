"""Fine-tuning (train.init_from) onto a training set with another action convention: the weights carry over,
the action convention and unnorm_key become the new set's. And train.state_noise: only the named state dims get it."""
import numpy as np
from safetensors.numpy import load_file

from hybridvla_core.actions import ActionConvention
from hybridvla_core.model import TrainsetWriter
from hybridvla_core.model.checkpoint import load_checkpoint
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.training import train


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


def test_init_from_adopts_the_new_sets_convention(tmp_path):
    _write_set(tmp_path / "delta", ActionConvention(), "lab_delta", 0)
    absolute = ActionConvention(translation="absolute")
    _write_set(tmp_path / "absolute", absolute, "lab_absolute", 1)
    model = tiny_config().to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    model["views"] = [{"name": "front"}]
    first = train(_spec(tmp_path / "delta", tmp_path / "run1", model=model))["checkpoint"]
    second = train(_spec(tmp_path / "absolute", tmp_path / "run2", init_from=str(first)))["checkpoint"]

    tuned, statistics = load_checkpoint(second)
    assert tuned.config.convention == absolute and tuned.config.unnorm_key == "lab_absolute"
    assert set(statistics) == {"lab_absolute"}
    # The weights came from the first run: the frozen vision tower is bit-identical, the rest moved on.
    before, after = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    vision = [k for k in before if k.startswith("vision_backbone.")]
    assert vision and all(np.array_equal(before[k], after[k]) for k in vision)
    assert not np.array_equal(before["final_layer.mlp.2.weight"], after["final_layer.mlp.2.weight"])


def test_state_noise_reaches_only_the_named_dims(tmp_path, monkeypatch):
    import pytest
    from hybridvla_core.model import hybridvla
    from hybridvla_core.model.trainset import TrainsetDataset

    _write_set(tmp_path / "set", ActionConvention(), "lab", 0)
    seen = []
    forward = hybridvla.HybridVLA.forward

    def spy(self, pixels, prompts, states, actions, *args, **kwargs):
        seen.append(states.detach().clone())
        return forward(self, pixels, prompts, states, actions, *args, **kwargs)

    monkeypatch.setattr(hybridvla.HybridVLA, "forward", spy)
    model = tiny_config().to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    model["views"] = [{"name": "front"}]
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
