"""A user's mistake (errors.UserError) ends every entry point in one line and exit status 2; --debug shows the
traceback instead; any other exception is a bug and keeps its traceback."""
import os
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


@pytest.mark.parametrize("mistake", ["a path under a regular file", "not YAML", "not JSON"])
def test_a_bad_path_or_file_is_one_line(mistake, monkeypatch, capsys, tmp_path):
    """OS errors on a user's path and files that do not parse are mistakes, whatever code met them first."""
    import json

    import yaml

    regular = tmp_path / "afile.txt"
    regular.write_text("x")
    bad = tmp_path / "bad.txt"
    bad.write_text("train: {max_steps: 3\n  lr: [1, 2\n" if mistake == "not YAML" else '{"a": 1,, "b": 2}')

    def run(args):
        if mistake == "a path under a regular file":
            (regular / "out").mkdir(parents=True)
        elif mistake == "not YAML":
            yaml.safe_load(bad.read_text())
        json.loads(bad.read_text())

    monkeypatch.setattr(doctor, "run", run)
    assert main(["doctor"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hybridvla doctor: "), lines
    if mistake == "a path under a regular file":
        assert str(regular / "out") in lines[0] and "Not a directory" in lines[0]
    elif mistake == "not YAML":
        assert "line 2" in lines[0], lines  # where the parser stopped
    else:
        assert "not valid JSON" in lines[0] and "line 1 column 9" in lines[0], lines  # the second comma


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


@pytest.mark.parametrize("argv, option", [
    (["demo", "--episodes", "0"], "--episodes"), (["demo", "--time-limit", "-1"], "--time-limit"),
    (["demo", "--seed", "-5"], "--seed"), (["sim", "run-experts", "--task", "pick_place", "--seed", "-5"], "--seed"),
    (["sim", "record-demos", "--out", "x", "--start", "-5"], "--start"), (["bench", "--chunk", "0"], "--chunk"),
    (["bench", "--repeats", "0"], "--repeats"), (["bench", "--device", "bogus"], "--device"),
    (["bench", "--ddim-steps", "nan"], "--ddim-steps"), (["eval", "sim", "ckpt", "--time-limit", "-1"], "--time-limit"),
    (["eval", "bags", "ckpt", "bags", "--device", "cuda:7"], "--device")])
def test_an_option_out_of_range_is_refused_before_any_work(argv, option, capsys):
    """Negative seeds crashed numpy, zero repeats crashed statistics after 41 s, zero episodes ran a whole graph."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and f"argument {option}: " in err[-1], err
    assert "expected" in err[-1] or "no CUDA device" in err[-1], err


def test_the_demo_domain_id_option_wins_over_the_environment(monkeypatch):
    """`hybridvla demo --domain-id 42` with ROS_DOMAIN_ID=7 inherited ran in domain 7 (setdefault)."""
    from hybridvla_ros.demo.processes import ros_environment

    for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY", "MUJOCO_GL", "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, os.environ.get(name, "x"))  # restored after the test
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    ros_environment(42)
    assert os.environ["ROS_DOMAIN_ID"] == "42"
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    ros_environment(None)
    assert os.environ["ROS_DOMAIN_ID"] == "7"


@pytest.mark.parametrize("option", ["--json", "--record"])
def test_run_experts_checks_its_outputs_before_recording(option, tmp_path, capsys):
    """--json under a regular file used to fail after every bag was written."""
    regular = tmp_path / "afile.txt"
    regular.write_text("x")
    paths = {"--json": tmp_path / "results.json", "--record": tmp_path / "bags"}
    paths[option] = regular / "out"
    argv = ["sim", "run-experts", "--task", "pick_place", "--episodes", "1", "--json", str(paths["--json"]),
            "--record", str(paths["--record"])]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "is a file, not a directory" in err[0], err
    assert not (tmp_path / "bags").exists() and not (tmp_path / "results.json").exists()


def test_a_demo_node_that_refuses_its_parameters_ends_the_demo_with_its_own_line(tmp_path):
    """The demo waited 30 s for the recorder's service, then ended in a RuntimeError traceback; the recorder had
    said what was wrong in one line of its log."""
    pytest.importorskip("rclpy")
    from hybridvla_core.errors import UserError
    from hybridvla_ros.demo.processes import Processes

    procs = Processes(tmp_path)
    procs.start("recorder", "hybridvla_ros.recorder_node", [],
                {"output_dir": str(tmp_path / "bags"), "topics": ["/a"], "keys": "auto"})
    procs.procs["recorder"].wait(timeout=60)
    with pytest.raises(UserError) as stopped:
        procs.check()
    message = str(stopped.value)
    assert message.startswith("recorder stopped (exit 2): [Recorder] error: parameter 'keys'"), message
    assert "\n" not in message and str(tmp_path / "recorder.log") in message
