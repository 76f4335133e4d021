"""piper_sdk units, dual-arm slots, and the piper_sdk backend on a python-can virtual bus against a simulated
Piper that consumes the command frames and answers with feedback frames."""
import itertools
import math
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridvla_core.runtime.guards import GuardConfig, GuardPipeline, Target
from hybridvla_core.robots.piper_can import (GRIPPER_MAX_M, MotorEnableWatch, PiperSdkArm, SimulatedPiper, join_dual,
                                      m_to_sdk_micrometre, rad_to_sdk_joint, sdk_joint_to_rad, sdk_micrometre_to_m,
                                      split_dual)
from vendor_interfaces import PIPER_MOTORS

READY = np.array([0.0, 1.2, -1.0, 0.0, 0.6, 0.0])
_channels = itertools.count()
# piper_sdk 0.6 still passes python-can the old bustype= keyword.
pytestmark = pytest.mark.filterwarnings("ignore:The .bustype. argument is deprecated:DeprecationWarning")


def test_units_known_values():
    assert rad_to_sdk_joint(math.pi) == 180_000 and rad_to_sdk_joint(-math.pi / 2) == -90_000
    assert sdk_joint_to_rad(90_000) == pytest.approx(math.pi / 2)
    assert m_to_sdk_micrometre(0.07) == 70_000 and m_to_sdk_micrometre(0.001) == 1000
    assert sdk_micrometre_to_m(35_000) == pytest.approx(0.035)
    # The SDK's own limit table: joint1 +-150 deg = +-2.6179 rad.
    assert rad_to_sdk_joint(2.6179) == 149_995


@given(st.floats(-math.pi, math.pi))
def test_joint_units_round_trip_within_half_a_unit(rad):
    assert abs(sdk_joint_to_rad(rad_to_sdk_joint(rad)) - rad) <= math.radians(0.0005) + 1e-15


@given(st.integers(-180_000, 180_000))
def test_sdk_joint_values_survive_the_round_trip_exactly(value):
    assert rad_to_sdk_joint(sdk_joint_to_rad(value)) == value


@given(st.floats(0, GRIPPER_MAX_M))
def test_length_units_round_trip(metres):
    assert abs(sdk_micrometre_to_m(m_to_sdk_micrometre(metres)) - metres) <= 0.5e-6 + 1e-15


@given(st.integers(0, 70_000))
def test_sdk_lengths_survive_the_round_trip_exactly(value):
    assert m_to_sdk_micrometre(sdk_micrometre_to_m(value)) == value


def test_dual_arm_slots_both_ways():
    vector = np.arange(14.0)
    arms = split_dual(vector, ["left", "right"])
    np.testing.assert_array_equal(arms["left"], np.arange(7.0))  # slot 0 = first in arm_order
    np.testing.assert_array_equal(arms["right"], np.arange(7.0, 14.0))
    np.testing.assert_array_equal(join_dual(arms, ["left", "right"]), vector)
    swapped = split_dual(vector, ["right", "left"])
    np.testing.assert_array_equal(swapped["right"], np.arange(7.0))
    np.testing.assert_array_equal(join_dual(swapped, ["right", "left"]), vector)
    with pytest.raises(ValueError, match="two different arms"):
        split_dual(vector, ["left", "left"])
    with pytest.raises(ValueError, match="14-dim"):
        split_dual(np.zeros(7), ["left", "right"])
    with pytest.raises(ValueError, match="no values for arm"):
        join_dual({"left": np.zeros(7)}, ["left", "right"])


@pytest.fixture
def sim_arm():
    channel = f"vcan_test_{next(_channels)}"
    sim = SimulatedPiper(channel, joints_rad=READY)
    arm = PiperSdkArm(channel, bustype="virtual", speed_percent=100)
    deadline = time.monotonic() + 5.0
    while arm.read() is None:
        assert time.monotonic() < deadline, "no feedback frames from the simulated Piper"
        time.sleep(0.005)
    yield sim, arm
    arm.close()
    sim.close()


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_guarded_targets_reach_the_arm_and_read_back_through_the_sdk(sim_arm):
    sim, arm = sim_arm
    guards = GuardPipeline(GuardConfig("left", "piper_left", (0.15, -0.35, 0.05), (0.55, 0.35, 0.5),
                                       watchdog_period=1.0))
    q, gripper, _ = arm.read()
    np.testing.assert_allclose(q, READY, atol=1e-5)  # 0x2A5..0x2A7 parsed by the SDK
    guards.set_measured(q, time.monotonic(), gripper=gripper / GRIPPER_MAX_M)
    assert guards.enable(time.monotonic())[0]
    assert arm.enable(timeout=2.0) == (True, "enabled: all six drivers report enabled") and sim.enabled  # 0x471
    start = guards.measured.position.copy()
    goal = start + np.array([0.05, 0.04, -0.03])  # several steps away
    for _ in range(200):
        now = time.monotonic()
        q, gripper, _ = arm.read()
        guards.set_measured(q, now, gripper=gripper / GRIPPER_MAX_M)
        result = guards.submit(Target(goal, guards.measured.quaternion, 0.5, now), now)
        command = result.command
        arm.send(command.joints, command.gripper * GRIPPER_MAX_M)
        if np.linalg.norm(guards.measured.position - goal) < 1e-3:
            break
        wait_for(lambda: np.abs(arm.read()[0] - command.joints).max() < 2e-5, timeout=1.0)
    # Every joint the guards sent came back through the SDK, to the SDK's 0.001-degree resolution.
    assert wait_for(lambda: np.abs(arm.read()[0] - command.joints).max() <= math.radians(0.0005) + 1e-9)
    assert np.linalg.norm(guards.measured.position - goal) < 2e-3
    assert wait_for(lambda: abs(arm.read()[1] - 0.5 * GRIPPER_MAX_M) < 1e-6)  # 0x159 -> 0x2A8
    assert min(sim.frames[cid] for cid in (0x151, 0x155, 0x156, 0x157, 0x159)) >= 3


def test_joints_out_of_range_or_nan_never_go_on_the_bus(sim_arm):
    sim, arm = sim_arm
    before = sim.frames[0x155]
    with pytest.raises(ValueError, match="malformed"):
        arm.send([0.0, float("nan"), 0.0, 0.0, 0.0, 0.0], 0.01)
    with pytest.raises(ValueError, match="malformed"):
        arm.send([0.0] * 5, 0.01)
    time.sleep(0.05)
    assert sim.frames[0x155] == before


def test_emergency_stop_reaches_the_arm(sim_arm):
    sim, arm = sim_arm
    assert arm.enable(timeout=2.0)[0]
    arm.emergency_stop()
    assert wait_for(lambda: sim.estopped)
    held = sim.joints_rad()
    arm.send(READY + 0.1, 0.0)  # the stopped arm no longer follows
    time.sleep(0.1)
    np.testing.assert_allclose(sim.joints_rad(), held)


# --- enable confirmed by each driver's bit ----------------------------------------------------------------
def test_enable_watch_waits_for_fresh_feedback_with_every_bit():
    watch = MotorEnableWatch(timeout=1.0)
    watch.start(0.0, feedback_stamp=5.0)
    # Bits that were already set before the command (the SDK's cached feedback) do not count: stamp unchanged.
    assert watch.observe(0.1, 5.0, [True] * PIPER_MOTORS) is None
    assert watch.observe(0.2, 5.1, [True, True, False, True, True, True]) is None
    assert watch.observe(0.3, 5.2, [True] * PIPER_MOTORS) is True


def test_enable_watch_times_out_naming_the_drivers_that_stayed_down():
    watch = MotorEnableWatch(timeout=0.5)
    watch.start(0.0, 1.0)
    assert watch.observe(0.2, 1.1, [True, True, False, True, False, True]) is None
    assert watch.observe(0.6, 1.2, [True, True, False, True, False, True]) is False
    assert "motor(s) 3, 5 (joints 3, 5) did not report enabled within 0.5 s" in watch.reason()
    silent = MotorEnableWatch(timeout=0.5)
    silent.start(0.0, 1.0)
    assert silent.observe(0.6, 1.0, [True] * PIPER_MOTORS) is False  # stale bits, nothing new arrived
    assert "no driver feedback" in silent.reason() and "CAN" in silent.reason()
    with pytest.raises(ValueError, match="timeout"):
        MotorEnableWatch(timeout=0.0)


def _arm_on(sim_kwargs):
    channel = f"vcan_test_{next(_channels)}"
    sim = SimulatedPiper(channel, joints_rad=READY, **sim_kwargs)
    arm = PiperSdkArm(channel, bustype="virtual", speed_percent=100)
    assert wait_for(lambda: arm.read() is not None), "no feedback frames from the simulated Piper"
    return sim, arm


@pytest.mark.parametrize("sim_kwargs, expected", [
    ({"stuck_motors": (4,)}, "motor(s) 4 (joint 4) did not report enabled within 0.3 s"),
    ({"low_speed_feedback": False}, "no driver feedback"),
], ids=["driver 4 stays down", "no low-speed feedback"])
def test_enable_times_out_leaves_every_driver_disabled_and_names_the_motor(sim_kwargs, expected):
    sim, arm = _arm_on(sim_kwargs)
    try:
        ok, message = arm.enable(timeout=0.3)
        assert not ok and expected in message and "disabled again" in message, message
        assert message.startswith(arm.can_name) and "\n" not in message
        assert wait_for(lambda: not any(sim.motor_enabled))  # the five that came up were disabled again (0x471)
        before = sim.joints_rad()
        arm.send(READY + 0.1, 0.0)  # a command after the refusal moves nothing
        time.sleep(0.1)
        np.testing.assert_allclose(sim.joints_rad(), before)
    finally:
        arm.close()
        sim.close()


@pytest.mark.parametrize("velocity", [[], [0.0] * 7, [0.0] * 6 + [55.0], [0.0] * 6 + [140.0], [1.0] * 6 + [-3.0],
                                      [0.0] * 6 + [30.4], [5.0] * 6, [0.0] * 8 + [50.0]])
def test_the_simulated_piper_ros_takes_the_speed_as_piper_ros_does(velocity):
    """hybridvla_core's reading (the simulated lab uses it) against the transcription of piper_ros' own code."""
    from hybridvla_core.robots.piper_can import piper_ros_speed_percent
    from vendor_interfaces import piper_ros_humble_speed_and_effort

    assert piper_ros_speed_percent(velocity) == piper_ros_humble_speed_and_effort(velocity, [])[0]
