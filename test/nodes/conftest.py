"""Fixtures of the node tests: tiny random-weight checkpoints (built with the model's own API, never
downloaded), generated image folders, and a way to start node processes the way the launch files do."""
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(Path(__file__).parent / "helpers"))

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


class NodeProcess:
    """A console-script node started as a launch file starts it (--params-file, the node's name, then
    overrides), its output collected by a thread."""

    def __init__(self, executable: str, params_file: Path | None = None, node_name: str | None = None,
                 overrides: dict | None = None):
        command = [str(BIN / executable), "--ros-args"]
        if node_name:
            command += ["-r", f"__node:={node_name}"]
        if params_file:
            command += ["--params-file", str(params_file)]
        for key, value in (overrides or {}).items():
            command += ["-p", f"{key}:={value}"]
        self.command = command
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                self._reader.join(timeout=2.0)
                if any(text in line for line in self.lines):
                    return
                break
            time.sleep(0.05)
        raise AssertionError(f"{' '.join(self.command)} never printed {text!r}; output:\n{self.output}")

    def wait(self, timeout: float = 90.0) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=2.0)
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, as ros2 launch does at shutdown; SIGKILL if that does not end it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait()
