"""A tiny HybridVLA learns a synthetic task whose actions depend on the image and the instruction, through
the real training-set format and training loop, and predicts held-out samples with both branches."""
import numpy as np
import pytest
import torch

from hybridvla_core.model import Policy, TrainsetDataset, TrainsetWriter
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.training import train

INSTRUCTIONS = {"move left": -1.0, "move right": 1.0}
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
SCALE = np.array([0.02, 0.02, 0.02, 0.1, 0.1, 0.1, 1.0])  # metres, radians, gripper


def synthetic_sample(rng):
    instruction = rng.choice(list(INSTRUCTIONS))
    colour = rng.choice(list(COLOURS))
    image = rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
    row, col = rng.integers(0, 20, 2)
    image[row:row + 12, col:col + 12] = COLOURS[colour]
    wrist = np.full((24, 24, 3), 128, dtype=np.uint8)
    side, red = INSTRUCTIONS[instruction], 1.0 if colour == "red" else -1.0
    # Each dim mixes the instruction and the colour differently; the gripper opens for red. (No dim is pure
    # noise: normalised, such a dim spans [-1, 1] uniformly, which only slows both branches' fit down.)
    action = np.array([0.6 * side, 0.6 * red, 0.3 * (side + red), -0.6 * side, 0.3 * (red - side), -0.6 * red,
                       1.0 if red > 0 else 0.0]) * SCALE
    action[:6] += rng.uniform(-0.01, 0.01, 6) * SCALE[:6]
    state = rng.normal(0, 0.05, 7)
    state[6] = 1.0
    return {"front": image, "wrist": wrist}, state, action, instruction


def write_set(directory, count, seed):
    rng = np.random.default_rng(seed)
    with TrainsetWriter(directory, ["front", "wrist"], 7, chunk=1, unnorm_key="synthetic", shard_size=64) as writer:
        for i in range(count):
            images, state, action, instruction = synthetic_sample(rng)
            writer.add(images, state, action, instruction, episode=i // 10)


def branch_errors(policy, samples, statistics):
    diffusion, ar = [], []
    for images, state, action, instruction in samples:
        result = policy.predict({"images": images, "state": state, "instruction": instruction})
        target = statistics.action.normalize(action)
        diffusion.append(np.abs(statistics.action.normalize(result.diffusion_action) - target)[:6].mean())
        ar.append(np.abs(statistics.action.normalize(result.ar_action) - target)[:6].mean())
    return float(np.mean(diffusion)), float(np.mean(ar))


@pytest.fixture
def one_thread():
    """One intra-op thread: the model is too small to gain from more, and on a busy machine more threads than
    free cores mostly wait for each other. It also keeps the arithmetic independent of the core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_model_learns_image_and_instruction_dependent_actions(tmp_path, one_thread):
    # ~45 s on one busy core: 1 layer of width 64, batch 16 x 2 noise draws, 800 steps. The diffusion branch is
    # the slow learner (with 600 steps an occasional held-out sample still lands in the wrong mode).
    write_set(tmp_path / "set", 256, seed=0)
    dataset = TrainsetDataset(tmp_path / "set", image_size=32)
    assert len(dataset) == 256 and dataset[0]["pixels"].shape == (2, 3, 32, 32)
    rng = np.random.default_rng(123)
    held_out = [synthetic_sample(rng) for _ in range(16)]

    config = tiny_config(hidden=64, layers=1, repeated_samples=2).to_dict()
    config.pop("action_dim"), config.pop("convention"), config.pop("unnorm_key"), config.pop("tokens")
    spec = {"model": config, "data": {"path": str(tmp_path / "set")},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 16,
                      "learning_rate": 3e-3, "save_every": 0, "progress": False}}
    torch.manual_seed(0)
    start = train(spec)
    start_policy = Policy.from_checkpoint(start["checkpoint"], theta=0.0)
    start_dif, start_ar = branch_errors(start_policy, held_out, dataset.statistics)

    spec["train"]["max_steps"] = 800  # resumes from step 1
    result = train(spec)
    history = result["history"]
    assert len(history) == 799
    policy = Policy.from_checkpoint(result["checkpoint"], theta=0.0)
    dif, ar = branch_errors(policy, held_out, dataset.statistics)
    print(f"held-out mean |error| (normalised): diffusion {start_dif:.3f} -> {dif:.3f}, AR {start_ar:.3f} -> {ar:.3f}")
    assert dif < 0.5 * start_dif and ar < 0.25 * start_ar
    # Correct on held-out samples: the signs set by the instruction (dims 0, 3) and the colour (dim 1), and the
    # gripper (colour), from both branches.
    for images, state, action, instruction in held_out:
        result = policy.predict({"images": images, "state": state, "instruction": instruction})
        for branch in (result.diffusion_action, result.ar_action):
            assert np.all(np.sign(branch[[0, 1, 3]]) == np.sign(action[[0, 1, 3]])), (instruction, branch, action)
        assert result.action[6] == action[6]
