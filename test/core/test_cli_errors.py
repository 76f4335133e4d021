"""A user's mistake (errors.UserError) ends every entry point in one line and exit status 2; --debug shows the
traceback instead; any other exception is a bug and keeps its traceback."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybridvla_core.tools import doctor
from hybridvla_core.cli import main
from hybridvla_core.model.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[2]


def test_a_user_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    def run(args):
        raise CheckpointError("ckpt/model.safetensors: truncated; copy the checkpoint again")

    monkeypatch.setattr(doctor, "run", run)
    assert main(["doctor"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "hybridvla doctor: ckpt/model.safetensors: truncated; copy the checkpoint again (--debug shows where)"]
    with pytest.raises(CheckpointError):
        main(["--debug", "doctor"])


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.setattr(doctor, "run", lambda args: {}["missing"])
    with pytest.raises(KeyError):
        main(["doctor"])


def test_the_demo_refuses_a_damaged_checkpoint_in_one_line(tmp_path):
    damaged = tmp_path / "ckpt"
    shutil.copytree(ROOT / "checkpoints" / "sim_fr3_pick_place", damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    demo = [str(Path(sys.executable).parent / "hybridvla"), "demo", "--checkpoint", str(damaged), "--episodes", "1",
            "--output", str(tmp_path / "out")]
    done = subprocess.run(demo, capture_output=True, text=True, timeout=120)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"hybridvla demo: {weights}: not a readable safetensors file")
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
    debug = subprocess.run(demo + ["--debug"], capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
