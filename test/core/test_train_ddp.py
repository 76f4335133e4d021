"""Two CPU processes (gloo) under torchrun train one step and end with identical parameters."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from hybridvla_core.model import TrainsetWriter
from hybridvla_core.model.presets import tiny_config

WORKER = textwrap.dedent("""
    import os, sys, yaml, torch
    from safetensors.torch import save_file
    from hybridvla_core.model.training import train
    spec = yaml.safe_load(open(sys.argv[1]))
    result = train(spec)
    state = {k: v.detach().contiguous().clone() for k, v in result["model"].state_dict().items()}
    save_file(state, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"))
""")


def train_on_two_ranks(tmp_path, spec: dict, worker: str = WORKER) -> dict:
    """`spec` trained by two gloo processes (torch.distributed.run) running `worker`; asserts both ranks end with
    identical parameters and returns rank 0's state dict (numpy)."""
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "worker.py").write_text(worker)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "worker.py"), str(tmp_path / "train.yaml"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=280, cwd=os.getcwd())
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=key)
    return rank0


@pytest.mark.timeout(300)
def test_two_gloo_processes_end_with_identical_parameters(tmp_path):
    rng = np.random.default_rng(0)
    with TrainsetWriter(tmp_path / "set", ["front", "wrist"], 7, unnorm_key="toy") as writer:
        for i in range(8):
            writer.add({"front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                        "wrist": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)},
                       rng.normal(size=7), rng.normal(size=7), ["push the button", "open it"][i % 2], episode=i)
    model = tiny_config().to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    spec = {"model": model, "data": {"path": str(tmp_path / "set")},
            "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "batch_size": 2, "learning_rate": 1e-2,
                      "save_every": 0, "progress": False}}
    rank0 = train_on_two_ranks(tmp_path, spec)
    # The step did change the weights: the zero-initialised last layer moved.
    assert np.abs(rank0["final_layer.mlp.fc2.weight"]).max() > 0
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
