"""The recording parameter files and record.launch.py: every value passes the nodes' own checks, the topics
match what the simulated lab and the bridges publish, and the nodes a launch would start run from these files
(launch itself needs a ROS 2 machine; here the same processes are started directly)."""
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hybridvla_core.resources import SOURCE_ROOT
from hybridvla_core.sim.config import load_config

CONFIG = SOURCE_ROOT / "config"
FILES = ["record_franka.yaml", "record_agilex.yaml", "record_sim_franka.yaml"]


def block(name, node):
    return yaml.safe_load((CONFIG / name).read_text())[node]["ros__parameters"]


def launch_module():
    spec = importlib.util.spec_from_file_location("record_launch", SOURCE_ROOT / "launch" / "record.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", FILES)
def test_parameters_pass_the_node_checks(name):
    pytest.importorskip("rclpy")
    from hybridvla_ros import recorder_node, teleop_node

    for node, spec in (("recorder", recorder_node.PARAMETERS), ("teleop", teleop_node.PARAMETERS)):
        values = block(name, node)
        unknown = set(values) - set(spec)
        assert not unknown, f"{name}/{node}: unknown parameters {unknown}"
        for key, value in values.items():
            check = spec[key][1]
            assert check is None or check(value), f"{name}/{node}: {key} = {value!r}"
    rec = block(name, "recorder")
    assert len(rec["expected_hz"]) == len(rec["topics"])


def test_sim_recording_topics_are_the_sim_labs():
    sim = load_config(CONFIG / "sim_franka.yaml")
    topics = set(block("record_sim_franka.yaml", "recorder")["topics"])
    expected = {sim.camera_topic(sim.topics_camera_image, c) for c in ("front", "wrist")}
    expected |= {sim.topics_joint_states, sim.topics_current_pose, sim.topics_episode_events,
                 sim.arm_topic(sim.topics_arm_state, "fr3"), sim.arm_topic(sim.topics_arm_target, "fr3"),
                 sim.topics_privileged}
    assert expected <= topics
    rec = block("record_sim_franka.yaml", "recorder")
    assert rec["expected_hz"][0] == sim.camera_rate_hz
    assert rec["expected_hz"][rec["topics"].index(sim.topics_privileged)] == sim.state_rate_hz


def test_privileged_labels_are_recorded_only_in_simulation():
    """The simulator's ground truth (training labels) never appears in a real robot's recording config."""
    sim = load_config(CONFIG / "sim_franka.yaml")
    for name in ("record_franka.yaml", "record_agilex.yaml"):
        assert sim.topics_privileged not in block(name, "recorder")["topics"], name


def test_launch_plan_for_every_robot():
    module = launch_module()
    for robot in module.ROBOTS:
        cameras = module.CAMERAS_BY_DEFAULT[robot]
        steps = module.plan(robot, CONFIG, use_our_cameras=cameras, teleop=True, recorder=True, instruction="pick",
                            output_dir="/tmp/x")
        executables = [s[0] for s in steps]
        keyboard = block(module.ROBOTS[robot][2], "teleop")["device"] == "keyboard"
        # A keyboard teleop needs a terminal, which launch does not give a process (its stdin is a pipe).
        assert executables[-1] == "recorder" and ("teleop" in executables) != keyboard
        assert ("camera_node" in executables) == cameras
        for _, name, params in steps:
            files = [Path(p) for p in params if isinstance(p, str)]
            assert all(f.is_file() and name in yaml.safe_load(f.read_text()) for f in files), (robot, name)
        assert steps[-1][2][1]["instruction"] == "pick" and steps[-1][2][1]["use_sim_time"] == (robot == "sim_franka")
    with pytest.raises(ValueError, match="robot:=ur5"):
        module.plan("ur5", CONFIG, use_our_cameras=False, teleop=False, recorder=True)
    with pytest.raises(ValueError, match="sim_lab already renders the views"):  # two publishers per view
        module.plan("sim_franka", CONFIG, use_our_cameras=True, teleop=False, recorder=True)


@pytest.mark.timeout(120)
def test_recorder_refuses_an_unknown_compression_with_one_line(tmp_path):
    pytest.importorskip("rclpy")
    proc = subprocess.run([sys.executable, "-m", "hybridvla_ros.recorder_node", "--ros-args", "--params-file",
                           str(CONFIG / "record_sim_franka.yaml"), "-p", f"output_dir:={tmp_path}",
                           "-p", "compression:=lz4"], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[Recorder] error: parameter 'compression' = 'lz4' is invalid: "
                                                   "expected chunk-zstd"), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and not list(tmp_path.iterdir())


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_recorder_and_leader_teleop_start_from_the_agilex_file(tmp_path):
    """What record.launch.py robot:=agilex starts besides cameras and the bridge, from the same file."""
    params = str(CONFIG / "record_agilex.yaml")
    procs = [subprocess.Popen([sys.executable, "-m", f"hybridvla_ros.{module}", "--ros-args", "--params-file", params]
                              + extra, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for module, extra in (("recorder_node", ["-p", f"output_dir:={tmp_path}"]), ("teleop_node", []))]
    outputs = []
    try:
        for proc, ready in zip(procs, ("recording 15 topics", "leader arms")):
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if ready in line:
                    break
            outputs.append("".join(lines))
            assert ready in outputs[-1], outputs[-1]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    assert [p.returncode for p in procs] == [0, 0]
