"""The four launch files, run by launch_pytest (a ROS 2 machine with the package built and sourced).
Here launch_pytest is not installed and this module skips; test_policy_graph.py starts the same
executables with the same parameter files, and test_launch_files.py checks the files."""
import time
from pathlib import Path

import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest is not installed: it comes with ROS 2 (apt install "
                            "ros-$ROS_DISTRO-launch-pytest), not from PyPI")
rclpy = pytest.importorskip("rclpy")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_pytest.actions import ReadyToTest  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from hybridvla_msgs.msg import ArmTarget, PolicyAction  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.launch_test, pytest.mark.ros]


def include(launch_file: str, checkpoint: Path, **arguments) -> LaunchDescription:
    arguments = {"checkpoint": str(checkpoint), "instruction": "put the red block in the blue bowl",
                 "config": str(ROOT / "config"), **arguments}
    return LaunchDescription([
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(ROOT / "launch" / launch_file)),
                                 launch_arguments=arguments.items()),
        ReadyToTest(),
    ])


@pytest.fixture(scope="module")
def probe():
    rclpy.init()
    node = Node("launch_test_probe")
    yield node
    node.destroy_node()
    rclpy.shutdown()


def spin_until(node, condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    assert condition(), f"{what} within {timeout:g} s"


def assert_policy_waits_for_inputs(probe, node_names) -> None:
    """On a machine without the robot and cameras, every node comes up and the policy reports what it waits for."""
    reports = []
    sub = probe.create_subscription(DiagnosticArray, "/diagnostics", reports.append, 10)
    try:
        spin_until(probe, lambda: set(node_names) <= set(probe.get_node_names()), 60.0,
                   f"nodes {sorted(node_names)} did not all come up")
        spin_until(probe, lambda: any(s.name.startswith("policy") and s.message.startswith("no action")
                                      for r in reports for s in r.status), 60.0, "no policy diagnostics")
    finally:
        probe.destroy_subscription(sub)


def assert_sim_drives_the_arms(probe, arms) -> None:
    """The simulated lab closes the loop: PolicyAction while disabled, ArmTargets once enabled."""
    actions, targets = [], {arm: [] for arm in arms}
    subs = [probe.create_subscription(PolicyAction, "/hybridvla/policy_action", actions.append, EVENT_QOS)]
    subs += [probe.create_subscription(ArmTarget, f"/hybridvla/{arm}/target", targets[arm].append, COMMAND_QOS)
             for arm in arms]
    try:
        spin_until(probe, lambda: len(actions) >= 3, 120.0, "no PolicyAction from the simulated lab")
        assert actions[-1].instruction == "put the red block in the blue bowl"
        client = probe.create_client(SetBool, "/policy/enable")
        assert client.wait_for_service(timeout_sec=20.0)
        future = client.call_async(SetBool.Request(data=True))
        spin_until(probe, future.done, 20.0, "/policy/enable did not answer")
        spin_until(probe, lambda: all(len(t) >= 3 for t in targets.values()), 30.0, "no targets after enabling")
    finally:
        for sub in subs:
            probe.destroy_subscription(sub)


@launch_pytest.fixture
def franka(checkpoints):
    return include("franka.launch.py", checkpoints["franka"])


@launch_pytest.fixture
def agilex(checkpoints):
    return include("agilex.launch.py", checkpoints["agilex"])


@launch_pytest.fixture
def sim_franka(checkpoints):
    return include("sim_franka.launch.py", checkpoints["franka"])


@launch_pytest.fixture
def sim_agilex(checkpoints):
    return include("sim_agilex.launch.py", checkpoints["agilex"])


@pytest.mark.launch(fixture=franka)
def test_franka_launch_starts_cameras_policy_and_bridge(probe):
    assert_policy_waits_for_inputs(probe, {"front_camera", "wrist_camera", "policy", "franka_bridge"})


@pytest.mark.launch(fixture=agilex)
def test_agilex_launch_starts_cameras_policy_and_bridge(probe):
    assert_policy_waits_for_inputs(probe, {"high_camera", "left_wrist_camera", "right_wrist_camera", "policy",
                                           "agilex_bridge"})


@pytest.mark.launch(fixture=sim_franka)
def test_sim_franka_launch_closes_the_loop(probe):
    assert_sim_drives_the_arms(probe, ["fr3"])


@pytest.mark.launch(fixture=sim_agilex)
def test_sim_agilex_launch_closes_the_loop(probe):
    assert_sim_drives_the_arms(probe, ["left", "right"])
