"""franka_bridge over DDS with `guards.min_confidence:=0.5` (off in config/franka.yaml): a target whose policy
confidence is below it, or NaN (diffusion mode has no autoregressive confidence), is refused and the arm
holds; a confident target moves the arm. Its own bridge and fake FR3 (test_franka_bridge_dds.py's), so that
the module-scoped lab of that file is not running beside it."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hybridvla_msgs.msg")
pytest.importorskip("franka_msgs.action", reason="franka_msgs stand-in not built: run make setup")

from hybridvla_msgs.msg import GuardEvent  # noqa: E402
from rosnodes import ROOT, Process, Spinner, wait_for  # noqa: E402
from test_franka_bridge_dds import Client, FakeFR3  # noqa: E402

pytestmark = pytest.mark.ros


def quiet(events: list, seconds: float = 0.5) -> bool:
    """No new event for `seconds`: the refusals of targets already sent have all arrived."""
    count = len(events)
    time.sleep(seconds)
    return len(events) == count


def test_low_or_missing_confidence_holds_the_arm_and_a_confident_target_moves_it(tmp_path):
    spinner = Spinner()
    robot, client = spinner.add(FakeFR3(spinner.context)), spinner.add(Client(spinner.context))
    spinner.start()
    bridge = Process("hybridvla_ros.franka_bridge_node", ROOT / "config/franka.yaml", "guards.min_confidence:=0.5",
                     log=tmp_path / "bridge.log")
    try:
        assert wait_for(lambda: client.states, timeout=30), "no ArmState from the bridge:\n" + bridge.output()
        assert spinner.enable(client, "/franka_bridge/enable").success
        start, quaternion = robot.tcp()
        goal = start + np.array([0.02, 0.0, 0.0])
        targets_before = len(robot.targets)
        for confidence in (0.3, float("nan")):
            since = len(client.events)
            refused = lambda: client.kinds(since).count(GuardEvent.LOW_CONFIDENCE) >= 5  # noqa: E731
            # Targets go out latest-only (depth 1): a starved bridge takes fewer than were sent, so keep sending
            # until five were refused; every one it took must be.
            for _ in range(300):
                client.send(goal, quaternion, confidence=confidence)
                if wait_for(refused, timeout=0.03):
                    break
            assert refused(), bridge.output()
            event = next(e for e in client.events[since:] if e.kind == GuardEvent.LOW_CONFIDENCE)
            assert event.requested.position.x == pytest.approx(goal[0])
            np.testing.assert_allclose(robot.tcp()[0], start, atol=1e-4)
        # Refused targets send nothing new toward the goal: whatever reached the arm stayed at the start.
        assert all(np.linalg.norm(t - start) < 1e-4 for t in robot.targets[targets_before:])
        assert wait_for(lambda: quiet(client.events), timeout=10), "guard events kept coming after the last refusal"
        since = len(client.events)  # refusals still in flight are counted before it
        for _ in range(100):
            client.send(goal, quaternion, confidence=0.9)
            if np.linalg.norm(robot.tcp()[0] - goal) < 1e-3:
                break
            wait_for(lambda: False, timeout=0.05)
        np.testing.assert_allclose(robot.tcp()[0], goal, atol=1e-3)
        assert GuardEvent.LOW_CONFIDENCE not in client.kinds(since)
    finally:
        bridge.stop()
        spinner.close()
