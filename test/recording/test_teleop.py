"""Teleoperation: device input -> absolute targets (core), and the teleop node turning leader-arm joint
states into per-arm ArmTargets over DDS from its own process."""
import subprocess
import sys
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hybridvla_core.robots import teleop
from hybridvla_core.runtime.kinematics import load_arm


def test_integrator_moves_in_the_base_frame_and_stays_near_the_measured_pose():
    integ = teleop.PoseIntegrator(max_lead_m=0.05, max_lead_rad=0.3)
    start = Rotation.from_euler("xyz", [np.pi, 0, 0])
    integ.reset([0.4, 0.0, 0.3], start.as_quat(), 0.7)
    p, q, g = integ.step(teleop.Twist(np.array([0.1, 0, 0]), np.array([0, 0, 0.5])), 0.1)
    np.testing.assert_allclose(p, [0.41, 0, 0.3])
    expected = Rotation.from_euler("z", 0.05) * start  # about the base z axis, not the tool's
    assert (Rotation.from_quat(q) * expected.inv()).magnitude() < 1e-9 and g == 0.7
    # The arm does not follow (blocked): the target stays within max_lead of the measured pose.
    for _ in range(100):
        p, q, _ = integ.step(teleop.Twist(np.array([0.1, 0, 0]), np.array([0, 0, 0.5])), 0.1,
                             [0.4, 0.0, 0.3], start.as_quat())
    assert np.linalg.norm(p - [0.4, 0, 0.3]) == pytest.approx(0.05)
    assert (Rotation.from_quat(q) * start.inv()).magnitude() == pytest.approx(0.3)


def test_spacemouse_deadband_scaling_and_signs():
    same = ["+x", "-y", "+z", "+roll", "+pitch", "+yaw"]
    t = teleop.spacemouse_twist([0.05, 1.0, -0.55, 0, 0, 1.0], 0.1, 0.5, deadband=0.1, axis_map=same)
    np.testing.assert_allclose(t.linear, [0.0, -0.1, -0.05])
    np.testing.assert_allclose(t.angular, [0, 0, 0.5])


@pytest.mark.parametrize("where, turn_deg, axis_map", [
    ("behind the arm", -90, teleop.OPERATOR_BEHIND_THE_ARM),
    ("in front of the arm", 90, ["-y", "+x", "+z", "-pitch", "+roll", "+yaw"])])
def test_spacemouse_axis_map_is_the_operators_frame_turned_onto_the_base(where, turn_deg, axis_map):
    """Device x right, y away from the operator, z up. Behind the arm the operator's 'away' is base +x and 'right'
    base -y (base = device turned -90 deg about z); in front, +90 deg. Linear and angular velocities turn alike:
    the expected twist is scipy's rotation of the device's, not the map's own arithmetic."""
    turn = Rotation.from_euler("z", turn_deg, degrees=True)
    rng = np.random.default_rng(0)
    for _ in range(10):
        device = rng.uniform(-1, 1, 6)
        t = teleop.spacemouse_twist(device, 1.0, 1.0, deadband=0.0, axis_map=axis_map)
        np.testing.assert_allclose(t.linear, turn.apply(device[:3]), atol=1e-12, err_msg=where)
        np.testing.assert_allclose(t.angular, turn.apply(device[3:]), atol=1e-12, err_msg=where)
    with pytest.raises(ValueError, match="a bare y reads as true"):
        teleop.parse_axis_map([True, "-x", "+z", "+pitch", "-roll", "+yaw"])  # YAML's reading of a bare y
    with pytest.raises(ValueError, match="axis_map"):
        teleop.parse_axis_map(["+x", "+x", "+z", "+roll", "+pitch", "+yaw"])


def test_keyboard_key_holds_its_axis_briefly():
    kb = teleop.KeyboardTwist(0.1, 0.5, hold_s=0.15)
    assert kb.press("w", 10.0) is None and kb.press("j", 10.0) is None
    np.testing.assert_allclose(kb.twist(10.1).linear, [0.1, 0, 0])
    np.testing.assert_allclose(kb.twist(10.1).angular, [0, 0, 0.5])
    assert not kb.twist(10.2).linear.any()  # released
    assert kb.press(" ", 11.0) == "gripper"


def test_leader_arm_maps_joints_to_the_follower_tcp():
    leader = teleop.LeaderArm("piper", gripper_max_width=0.07)
    q = [0.1, 1.0, -1.0, 0.2, 0.3, -0.1]
    position, quaternion, gripper = leader.target(q + [0.035])
    p_ref, q_ref = load_arm("piper").fk(q)
    np.testing.assert_allclose(position, p_ref)
    np.testing.assert_allclose(quaternion, q_ref)
    assert gripper == pytest.approx(0.5)
    with pytest.raises(ValueError, match="6 joint positions and the gripper"):
        leader.target(q)


def test_spacemouse_without_a_device_is_one_clear_error():
    with pytest.raises(RuntimeError, match="SpaceMouse"):
        teleop.SpaceMouse()


def test_teleop_node_refuses_a_missing_device_with_one_line():
    pytest.importorskip("rclpy")
    proc = subprocess.run([sys.executable, "-m", "hybridvla_ros.teleop_node", "--ros-args", "-p", "device:=spacemouse"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "SpaceMouse" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.ros
@pytest.mark.timeout(120)
def test_leader_arms_become_per_arm_targets_over_dds():
    rclpy = pytest.importorskip("rclpy")
    from hybridvla_msgs.msg import ArmTarget
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    proc = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.teleop_node", "--ros-args",
                             "-p", "device:=leader", "-p", "arms:=[left, right]", "-p", "frame_id:='{arm}_base_link'"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rclpy.init()
    node = Node("hvtest_leader")
    got = {}
    for arm in ("left", "right"):
        node.create_subscription(ArmTarget, f"/hybridvla/{arm}/target", lambda m, a=arm: got.setdefault(a, m), 10)
    pubs = {arm: node.create_publisher(JointState, f"/master/joint_{arm}", 10) for arm in ("left", "right")}
    joints = {"left": [0.1, 1.0, -1.0, 0.2, 0.3, -0.1, 0.07], "right": [-0.2, 0.8, -0.9, 0.0, 0.1, 0.4, 0.0]}
    try:
        deadline = time.monotonic() + 90
        while len(got) < 2:
            assert time.monotonic() < deadline, "no targets from the teleop node"
            for arm, pub in pubs.items():
                pub.publish(JointState(name=[f"joint{i}" for i in range(1, 8)], position=joints[arm]))
            rclpy.spin_once(node, timeout_sec=0.1)
    finally:
        node.destroy_node()
        rclpy.shutdown()
        proc.terminate()
        proc.wait(timeout=30)
    chain = load_arm("piper")
    for arm, target in got.items():
        p_ref, _ = chain.fk(joints[arm][:6])
        p = target.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], p_ref, atol=1e-9)
        assert target.header.frame_id == f"{arm}_base_link" and target.source == ArmTarget.SOURCE_TELEOP
    assert got["left"].gripper == pytest.approx(1.0) and got["right"].gripper == 0.0


def test_spacemouse_axes_follow_pyspacemouse_hid_z_up_whatever_its_version():
    """pyspacemouse's own remap tables (config_helpers._HID_TO_CONVENTION) are the expected side: LEGACY (1.x's only
    convention, 2.x's default) swaps roll and pitch and reverses yaw; converted, it equals HID_Z_UP."""
    config_helpers = pytest.importorskip("pyspacemouse.config_helpers")
    from pyspacemouse.types import AxisConvention

    tables = config_helpers._HID_TO_CONVENTION
    rng = np.random.default_rng(0)
    for _ in range(20):
        hid = dict(zip(teleop.AXES, rng.uniform(-1, 1, 6)))

        def seen(convention):
            return np.array([sign * hid[source] for source, sign in (tables[convention][a] for a in teleop.AXES)])
        np.testing.assert_allclose(teleop.legacy_to_z_up(seen(AxisConvention.LEGACY)), seen(AxisConvention.HID_Z_UP))


def test_spacemouse_opens_in_hid_z_up_and_takes_every_queued_report(monkeypatch):
    """pyspacemouse 2.x: opened with axis_convention HID_Z_UP; one read() takes one HID report, so a read per tick
    must take all that queued meanwhile (the arm kept moving after release)."""
    pyspacemouse = pytest.importorskip("pyspacemouse")
    from types import SimpleNamespace

    queued = [SimpleNamespace(t=float(i), x=0.1 * i, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
              for i in range(1, 6)]
    last = []

    def read():  # as SpaceMouseDevice.read: the state after at most one report, unchanged when none is queued
        if queued:
            last[:] = [queued.pop(0)]
        return last[0]

    opened = {}
    monkeypatch.setattr(pyspacemouse, "open", lambda **kw: opened.update(kw) or SimpleNamespace(read=read,
                                                                                                 close=lambda: None))
    mouse = teleop.SpaceMouse()
    assert opened["axis_convention"] == pyspacemouse.AxisConvention.HID_Z_UP
    axes, _ = mouse.read()
    assert axes[0] == pytest.approx(0.5) and not queued  # the newest of five queued reports
