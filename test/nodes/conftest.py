"""Fixtures of the node tests: tiny random-weight checkpoints (built with the model's own API, never
downloaded) and generated image folders (node_process.py starts node processes)."""
from pathlib import Path

import numpy as np
import pytest

# The views and arms of each setup, as in config/policy_<setup>.yaml.
SETUPS = {
    "franka": {"views": ("front", "wrist"), "action_dim": 7},
    "agilex": {"views": ("high", "left_wrist", "right_wrist"), "action_dim": 14},
}


def make_checkpoint(directory: Path, views, action_dim: int) -> Path:
    import torch

    from hybridvla_core.actions import DatasetStatistics
    from hybridvla_core.model import build_model, save_checkpoint
    from hybridvla_core.model.presets import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config(action_dim=action_dim, views=tuple(views), image_size=32)).eval()
    rng = np.random.default_rng(0)
    actions = rng.normal(scale=0.01, size=(200, action_dim))  # small deltas [m, rad]
    states = rng.normal(size=(200, action_dim))
    return save_checkpoint(model, directory, {"tiny": DatasetStatistics.from_samples(actions, states, 4)})


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """setup name -> a tiny checkpoint directory whose views and action size match config/policy_<setup>.yaml."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {name: make_checkpoint(root / name, s["views"], s["action_dim"]) for name, s in SETUPS.items()}


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Ten 64x48 RGB frames, each a different grey level."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("frames")
    for i in range(10):
        Image.fromarray(np.full((48, 64, 3), 20 * i, np.uint8)).save(folder / f"{i:03d}.png")
    return folder
