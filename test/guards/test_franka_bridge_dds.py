"""franka_bridge over DDS, as its own process started with config/franka.yaml, against a fake FR3 in this
process (crisp-style /target_pose in, /current_pose BEST_EFFORT + /joint_states out, franka_gripper actions,
the controller_manager's list_controllers with cartesian_impedance_controller active).
The tests run in file order on one bridge: disabled start, tracking, clamping, watchdog hold, gripper, disable,
e-stop."""
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hybridvla_msgs.msg")
pytest.importorskip("controller_manager_msgs.srv", reason="controller_manager_msgs stand-in not built: run make setup")
franka_action = pytest.importorskip("franka_msgs.action", reason="franka_msgs stand-in not built: run make setup")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from hybridvla_msgs.msg import ArmState, ArmTarget, GuardEvent  # noqa: E402
from rclpy.action import ActionServer  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402

from hybridvla_core.runtime.kinematics import load_arm  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS, SENSOR_QOS, arrays_to_pose, pose_to_arrays  # noqa: E402
from rosnodes import ROOT, Process, Spinner, serve_list_controllers, wait_for  # noqa: E402
from vendor_interfaces import (CRISP_CARTESIAN_CONTROLLER, CRISP_CONTROLLER_MANAGER,  # noqa: E402
                               CRISP_FR3_BASE_FRAME, CRISP_FR3_CONTROLLERS_AS_LAUNCHED)

pytestmark = pytest.mark.ros
READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
BOX_MIN = np.array([0.20, -0.50, 0.01])  # config/franka.yaml


class FakeFR3(Node):
    """Tracks every target_pose exactly (IK on urdf/fr3.urdf) and reports it like franka_ros2 + crisp (current_pose in
    crisp's FR3 base frame `base`, which is fr3_link0 of urdf/fr3.urdf)."""

    def __init__(self, context):
        super().__init__("fake_fr3", context=context)
        self.chain = load_arm("fr3")
        self.q = READY.copy()
        self.width = 0.04
        self.lock = threading.Lock()
        self.targets: list[np.ndarray] = []
        self.goals: list[tuple[str, float]] = []
        self.pose_pub = self.create_publisher(PoseStamped, "/current_pose", SENSOR_QOS)
        self.joint_pub = self.create_publisher(JointState, "/joint_states", COMMAND_QOS)
        self.create_subscription(PoseStamped, "/target_pose", self.on_target, COMMAND_QOS)
        self.create_timer(0.02, self.publish)
        ActionServer(self, franka_action.Grasp, "/franka_gripper/grasp", lambda h: self.run_goal("grasp", h))
        ActionServer(self, franka_action.Move, "/franka_gripper/move", lambda h: self.run_goal("move", h))
        # After `ros2 control switch_controllers --activate cartesian_impedance_controller` (README).
        self.controllers = {**CRISP_FR3_CONTROLLERS_AS_LAUNCHED, CRISP_CARTESIAN_CONTROLLER: "active"}
        serve_list_controllers(self, self.controllers, CRISP_CONTROLLER_MANAGER)

    def on_target(self, msg):
        assert msg.header.frame_id == CRISP_FR3_BASE_FRAME
        position, quaternion = pose_to_arrays(msg.pose)
        with self.lock:
            self.targets.append(position)
            result = self.chain.ik(position, quaternion, self.q)
            if result.success:
                self.q = result.q

    def run_goal(self, kind, handle):
        with self.lock:
            self.goals.append((kind, handle.request.width))
            self.width = handle.request.width if kind == "move" else 0.0
        handle.succeed()
        result = (franka_action.Grasp if kind == "grasp" else franka_action.Move).Result(success=True)
        return result

    def publish(self):
        with self.lock:
            position, quaternion = self.chain.fk(self.q)
            q, width = self.q.copy(), self.width
        pose = PoseStamped(pose=arrays_to_pose(position, quaternion))
        pose.header.frame_id = CRISP_FR3_BASE_FRAME
        pose.header.stamp = self.get_clock().now().to_msg()
        self.pose_pub.publish(pose)
        js = JointState(name=[f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"],
                        position=[float(v) for v in q] + [width / 2, width / 2])
        js.header.stamp = pose.header.stamp
        self.joint_pub.publish(js)

    def tcp(self):
        with self.lock:
            return self.chain.fk(self.q)


class Client(Node):
    def __init__(self, context):
        super().__init__("bridge_test_client", context=context)
        self.target_pub = self.create_publisher(ArmTarget, "/hybridvla/fr3/target", COMMAND_QOS)
        self.events, self.states = [], []
        self.create_subscription(GuardEvent, "/hybridvla/guard_events", self.events.append, EVENT_QOS)
        self.create_subscription(ArmState, "/hybridvla/fr3/arm_state", self.states.append, COMMAND_QOS)

    def send(self, position, quaternion, gripper=0.5, confidence=1.0):
        msg = ArmTarget(arm="fr3", pose=arrays_to_pose(position, quaternion), gripper=float(gripper),
                        confidence=float(confidence))
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = CRISP_FR3_BASE_FRAME
        self.target_pub.publish(msg)

    def kinds(self, since=0):
        return [e.kind for e in self.events[since:]]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    spinner = Spinner()
    robot, client = spinner.add(FakeFR3(spinner.context)), spinner.add(Client(spinner.context))
    spinner.start()
    bridge = Process("hybridvla_ros.franka_bridge_node", ROOT / "config/franka.yaml",
                     log=tmp_path_factory.mktemp("franka") / "bridge.log")
    try:
        assert wait_for(lambda: client.states, timeout=30), "no ArmState from the bridge:\n" + bridge.output()
        yield spinner, robot, client, bridge
    finally:
        bridge.stop()
        spinner.close()


def step_towards(client, robot, goal, gripper=0.5, steps=200):
    """Stream targets toward goal like a 20 Hz policy until the fake arm is there."""
    for _ in range(steps):
        client.send(goal, robot.tcp()[1], gripper)
        if np.linalg.norm(robot.tcp()[0] - goal) < 1e-3:
            return True
        wait_for(lambda: False, timeout=0.05)
    return False


def test_starts_disabled_and_commands_nothing(lab):
    spinner, robot, client, bridge = lab
    position, quaternion = robot.tcp()
    client.send(position + [0.02, 0, 0], quaternion)
    assert wait_for(lambda: GuardEvent.DISABLED in client.kinds(), timeout=10), bridge.output()
    assert not robot.targets
    assert client.states[-1].enabled is False


def test_enable_then_targets_inside_the_workspace_are_tracked(lab):
    spinner, robot, client, bridge = lab
    response = spinner.enable(client, "/franka_bridge/enable")
    assert response.success, response.message
    start = robot.tcp()[0]
    goal = start + np.array([0.06, 0.05, -0.04])   # a few guard steps away, inside the box
    assert step_towards(client, robot, goal), bridge.output()
    assert wait_for(lambda: client.states[-1].enabled and np.linalg.norm(
        pose_to_arrays(client.states[-1].pose)[0] - goal) < 2e-3, timeout=10)
    # Every target the controller received was within one step (3 cm) of the previous one.
    steps = np.linalg.norm(np.diff(np.array(robot.targets), axis=0), axis=1)
    assert steps.max() <= 0.03 + 1e-6


def test_a_target_outside_is_clamped_and_reported(lab):
    spinner, robot, client, bridge = lab
    since = len(client.events)
    position, quaternion = robot.tcp()
    outside = np.array([position[0], position[1], -0.5])  # half a metre into the table
    # Streamed like a 20 Hz policy until the arm rests on the box floor (or 15 s): each target moves at most
    # one guard step (3 cm) from the measured pose, so how many it takes depends on how fresh that pose is.
    at_floor = lambda: abs(robot.tcp()[0][2] - BOX_MIN[2]) < 2e-3  # noqa: E731
    for _ in range(300):
        client.send(outside, quaternion)
        if at_floor():
            break
        wait_for(lambda: False, timeout=0.05)
    assert at_floor(), robot.tcp()
    assert wait_for(lambda: GuardEvent.WORKSPACE_CLAMP in client.kinds(since), timeout=10)
    clamp = next(e for e in client.events[since:] if e.kind == GuardEvent.WORKSPACE_CLAMP)
    assert clamp.requested.position.z == pytest.approx(-0.5) and clamp.sent.position.z >= BOX_MIN[2] - 1e-9
    assert min(t[2] for t in robot.targets) >= BOX_MIN[2] - 1e-9


def test_when_targets_stop_the_arm_holds(lab):
    spinner, robot, client, bridge = lab
    since = len(client.events)
    position, quaternion = robot.tcp()
    client.send(position - [0.02, 0, 0], quaternion)
    assert wait_for(lambda: GuardEvent.STALE_TARGET in client.kinds(since), timeout=10)
    stale = next(e for e in client.events[since:] if e.kind == GuardEvent.STALE_TARGET)
    assert stale.magnitude > 0.5  # age of the newest target when the watchdog held: beyond the 0.5 s period
    n = len(robot.targets)
    assert wait_for(lambda: len(robot.targets) > n + 10, timeout=10)  # the hold keeps being commanded...
    held = np.array(robot.targets[n:])
    assert np.ptp(held, axis=0).max() == 0.0  # ...at one pose


def test_gripper_goes_through_franka_gripper_actions_once_per_change(lab):
    spinner, robot, client, bridge = lab
    position, quaternion = robot.tcp()
    assert robot.goals == [("move", 0.04)]  # the earlier targets all asked for gripper 0.5: sent once
    for _ in range(10):
        client.send(position, quaternion, gripper=0.0)
        wait_for(lambda: False, timeout=0.03)
    assert wait_for(lambda: ("grasp", 0.0) in robot.goals, timeout=10)
    for _ in range(10):
        client.send(position, quaternion, gripper=1.0)
        wait_for(lambda: False, timeout=0.03)
    assert wait_for(lambda: ("move", 0.08) in robot.goals, timeout=10)
    assert robot.goals[1:] == [("grasp", 0.0), ("move", 0.08)]  # unchanged commands were not resent
    assert wait_for(lambda: client.states[-1].gripper_width == pytest.approx(0.08), timeout=10)


def test_disable_holds_the_arm(lab):
    spinner, robot, client, bridge = lab
    since = len(client.events)
    assert spinner.call(client, SetBool, "/franka_bridge/enable", SetBool.Request(data=False)).success
    held = robot.tcp()[0]
    for _ in range(20):
        client.send(held + [0.02, 0, 0], robot.tcp()[1])
        wait_for(lambda: False, timeout=0.03)
    assert wait_for(lambda: client.kinds(since).count(GuardEvent.DISABLED) > 5, timeout=10)
    np.testing.assert_allclose(robot.tcp()[0], held, atol=1e-4)
    assert wait_for(lambda: not client.states[-1].enabled, timeout=5)


def test_estop_latches_until_cleared(lab):
    spinner, robot, client, bridge = lab
    assert spinner.enable(client, "/franka_bridge/enable").success
    assert spinner.call(client, Trigger, "/franka_bridge/estop", Trigger.Request()).success
    assert wait_for(lambda: GuardEvent.ESTOP in client.kinds(), timeout=10)
    refused = spinner.enable(client, "/franka_bridge/enable")
    assert not refused.success and "e-stop" in refused.message
    assert spinner.call(client, Trigger, "/franka_bridge/clear_estop", Trigger.Request()).success
    assert spinner.enable(client, "/franka_bridge/enable").success
    # Enabled again, the unchanged gripper command goes out once more: the fingers may have moved meanwhile.
    goals = len(robot.goals)
    for _ in range(10):
        client.send(*robot.tcp(), gripper=1.0)
        wait_for(lambda: False, timeout=0.03)
    assert wait_for(lambda: len(robot.goals) > goals, timeout=10)
    assert robot.goals[goals:] == [("move", 0.08)]


@pytest.mark.parametrize("override, name", [
    ("guards.max_translation_step:=-0.1", "guards.max_translation_step"),
    ("output_type:=twist", "output_type"),
    ("guards.workspace_min:=[0.9, 0.0, 0.0]", "guards.workspace_max"),
    ("guards.min_confidence:=1.5", "guards.min_confidence"),
    ("guards.max_translation_step:=100.0", "guards.max_translation_step"),  # above its upper bound (0.1 m)
    ("guards.max_joint_step:=100.0", "guards.max_joint_step"),
    ("model:=piper", "model"),  # a 6-joint arm model with the FR3's 7 joint names
])
def test_a_bad_parameter_stops_the_node_with_one_line(tmp_path, override, name):
    bridge = Process("hybridvla_ros.franka_bridge_node", ROOT / "config/franka.yaml", override, log=tmp_path / "bad.log")
    try:
        rc = bridge.proc.wait(timeout=60)
    finally:
        bridge.stop()
    lines = [line for line in bridge.output().splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and f"'{name}'" in lines[0], lines


def test_a_misspelt_parameter_or_node_section_stops_the_bridge(tmp_path):
    """A typo would leave the default in force (guards.max_translaton_step: the 3 cm step), a misspelt node key every
    default (another workspace, a relative output topic): both are refused in one line naming the near name."""
    typo = Process("hybridvla_ros.franka_bridge_node", ROOT / "config/franka.yaml", "guards.max_translaton_step:=0.05",
                   log=tmp_path / "typo.log")
    misspelt = tmp_path / "franka.yaml"
    misspelt.write_text((ROOT / "config/franka.yaml").read_text().replace("franka_bridge:", "franka_brige:", 1))
    section = Process("hybridvla_ros.franka_bridge_node", misspelt, log=tmp_path / "section.log")
    try:
        codes = [typo.proc.wait(timeout=60), section.proc.wait(timeout=60)]
    finally:
        typo.stop()
        section.stop()
    typo_lines = [line for line in typo.output().splitlines() if line.strip()]
    assert codes[0] == 2 and len(typo_lines) == 1, typo_lines
    assert "guards.max_translaton_step (did you mean guards.max_translation_step?)" in typo_lines[0]
    section_lines = [line for line in section.output().splitlines() if line.strip()]
    assert codes[1] == 2 and len(section_lines) == 1, section_lines
    assert "no section for node 'franka_bridge'" in section_lines[0] and "did you mean franka_brige?" in section_lines[0]
