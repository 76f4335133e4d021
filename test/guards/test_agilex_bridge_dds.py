"""agilex_bridge over DDS, as its own process started with config/agilex.yaml:
- backend piper_sdk: simulated Pipers on python-can virtual buses inside the bridge process (the CAN frames,
  the SDK's enable sequence and EmergencyStop are real); the arms move only through the guards;
- backend piper_ros: a fake piper_ros pair in this process (joint_ctrl_single in, joint_states_single out)."""
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hybridvla_msgs.msg")

from hybridvla_msgs.msg import ArmState, ArmTarget, GuardEvent  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from hybridvla_core.runtime.kinematics import load_arm  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS, arrays_to_pose, pose_to_arrays  # noqa: E402
from rosnodes import ROOT, Process, Spinner, wait_for  # noqa: E402
from vendor_interfaces import piper_ros_humble_speed_and_effort  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ARMS = ("left", "right")
HOME = np.array([0.0, 1.2, -1.2, 0.0, 0.9, 0.0])
CHAIN = load_arm("piper")


class Client(Node):
    def __init__(self, context):
        super().__init__("agilex_test_client", context=context)
        self.pubs = {a: self.create_publisher(ArmTarget, f"/hybridvla/{a}/target", COMMAND_QOS) for a in ARMS}
        self.events = []
        self.states = {a: [] for a in ARMS}
        self.create_subscription(GuardEvent, "/hybridvla/guard_events", self.events.append, EVENT_QOS)
        for a in ARMS:
            self.create_subscription(ArmState, f"/hybridvla/{a}/arm_state", self.states[a].append, COMMAND_QOS)

    def pose(self, arm):
        return pose_to_arrays(self.states[arm][-1].pose)

    def send(self, arm, position, quaternion, gripper=0.5):
        msg = ArmTarget(arm=arm, pose=arrays_to_pose(position, quaternion), gripper=float(gripper), confidence=1.0)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = f"{arm}_base_link"
        self.pubs[arm].publish(msg)

    def track(self, goals, steps=300):
        """Stream targets toward goals (arm -> position) at ~20 Hz until both measured poses are there."""
        for _ in range(steps):
            done = True
            for arm, goal in goals.items():
                position, quaternion = self.pose(arm)
                self.send(arm, goal, quaternion)
                done &= bool(np.linalg.norm(position - goal) < 1.5e-3)
            if done:
                return True
            wait_for(lambda: False, timeout=0.05)
        return False


def test_piper_sdk_backend_moves_simulated_arms_only_through_the_guards(tmp_path):
    spinner = Spinner()
    client = spinner.add(Client(spinner.context))
    spinner.start()
    bridge = Process("hybridvla_ros.agilex_bridge_node", ROOT / "config/agilex.yaml", "backend:=piper_sdk",
                     "piper_sdk.bustype:=virtual", "piper_sdk.simulate:=true",
                     "piper_sdk.can_ports:=[vcan_dds_left, vcan_dds_right]", "speed_percent:=100",
                     log=tmp_path / "bridge.log")
    try:
        assert wait_for(lambda: all(client.states[a] for a in ARMS), timeout=30), bridge.output()
        for arm in ARMS:  # the SDK read the simulated arms' feedback frames
            np.testing.assert_allclose(client.states[arm][-1].joint_positions, HOME, atol=1e-4)
            assert not client.states[arm][-1].enabled
        home = {a: client.pose(a)[0] for a in ARMS}
        client.send("left", home["left"] + [0.02, 0, 0], client.pose("left")[1])
        assert wait_for(lambda: GuardEvent.DISABLED in [e.kind for e in client.events], timeout=10)

        response = spinner.enable(client, "/agilex_bridge/enable")
        assert response.success, response.message + bridge.output()
        goals = {"left": home["left"] + [0.04, 0.03, -0.02], "right": home["right"] + [-0.03, -0.04, 0.02]}
        assert client.track(goals), (client.pose("left"), client.pose("right"), bridge.output())
        for arm in ARMS:
            state = client.states[arm][-1]
            assert state.enabled and state.joint_names == [f"joint{i}" for i in range(1, 7)]
            # The joints read back through the SDK put the TCP where the guards were asked to.
            np.testing.assert_allclose(CHAIN.fk(np.array(state.joint_positions))[0], goals[arm], atol=2e-3)

        assert spinner.call(client, Trigger, "/agilex_bridge/estop", Trigger.Request()).success
        assert wait_for(lambda: GuardEvent.ESTOP in [e.kind for e in client.events], timeout=10)
        stopped = {a: np.array(client.states[a][-1].joint_positions) for a in ARMS}
        n = len(client.states["left"])
        for _ in range(20):
            client.send("left", goals["left"] + [0.02, 0, 0], client.pose("left")[1])
            wait_for(lambda: False, timeout=0.03)
        assert wait_for(lambda: len(client.states["left"]) > n + 10, timeout=10)
        for arm in ARMS:
            np.testing.assert_allclose(client.states[arm][-1].joint_positions, stopped[arm], atol=1e-5)
            assert not client.states[arm][-1].enabled
    finally:
        bridge.stop()
        spinner.close()


class FakePiperRos(Node):
    """Two piper_ctrl_single_node stand-ins: the arm jumps to each joint_ctrl_single command."""

    def __init__(self, context):
        super().__init__("fake_piper_ros", context=context)
        self.lock = threading.Lock()
        self.q = {a: HOME.copy() for a in ARMS}
        self.gripper = {a: 0.0 for a in ARMS}
        self.commands = {a: [] for a in ARMS}
        self.speeds = {a: [] for a in ARMS}  # (speed %, effort 0.001 N*m) as piper_ros humble reads each command
        self.enable_flags = {a: [] for a in ARMS}
        self.pubs = {a: self.create_publisher(JointState, f"/{a}/joint_states_single", COMMAND_QOS) for a in ARMS}
        for a in ARMS:
            self.create_subscription(JointState, f"/{a}/joint_ctrl_single", lambda m, a=a: self.on_ctrl(a, m), COMMAND_QOS)
            self.create_subscription(Bool, f"/{a}/enable_flag", lambda m, a=a: self.enable_flags[a].append(m.data),
                                     COMMAND_QOS)
        self.create_timer(0.01, self.publish)

    def on_ctrl(self, arm, msg):
        with self.lock:
            self.commands[arm].append(list(msg.position))
            self.speeds[arm].append(piper_ros_humble_speed_and_effort(list(msg.velocity), list(msg.effort)))
            self.q[arm] = np.array(msg.position[:6])
            self.gripper[arm] = msg.position[6]

    def publish(self):
        with self.lock:
            for a in ARMS:
                self.pubs[a].publish(JointState(name=[f"joint{i}" for i in range(1, 8)],
                                                position=[float(v) for v in self.q[a]] + [float(self.gripper[a])]))


def test_piper_ros_backend_sends_guarded_joints_and_clamps(tmp_path):
    spinner = Spinner()
    client = spinner.add(Client(spinner.context))
    robot = spinner.add(FakePiperRos(spinner.context))
    spinner.start()
    # Not piper_ros' own defaults (30 %, 1 N*m), so that a command without them would show.
    bridge = Process("hybridvla_ros.agilex_bridge_node", ROOT / "config/agilex.yaml", "speed_percent:=55",
                     "gripper_effort:=2000", log=tmp_path / "bridge.log")
    try:
        assert wait_for(lambda: all(client.states[a] for a in ARMS), timeout=30), bridge.output()
        wait_for(lambda: False, timeout=0.3)
        assert robot.commands == {"left": [], "right": []}  # disabled: nothing sent
        assert spinner.enable(client, "/agilex_bridge/enable").success
        assert wait_for(lambda: robot.enable_flags["left"] == [True] and robot.enable_flags["right"] == [True])
        home = {a: client.pose(a)[0] for a in ARMS}
        goals = {"left": home["left"] + [0.03, 0.0, 0.02], "right": home["right"]}
        assert client.track(goals), bridge.output()
        since = len(client.events)
        below = home["right"].copy()
        below[2] = -0.4  # into the table
        for _ in range(60):
            client.send("right", below, client.pose("right")[1], gripper=2.0)
            wait_for(lambda: False, timeout=0.05)
        kinds = {e.kind for e in client.events[since:] if e.arm == "right"}
        assert {GuardEvent.WORKSPACE_CLAMP, GuardEvent.GRIPPER_CLAMP} <= kinds, kinds
        with robot.lock:
            sent = np.array(robot.commands["right"])
        assert sent.shape[1] == 7 and np.all(np.isfinite(sent))
        assert sent[:, 6].max() == pytest.approx(0.07)  # gripper 2.0 clamped to 1.0 -> 0.07 m
        lowest = min(CHAIN.fk(q[:6])[0][2] for q in sent)
        assert lowest >= 0.01 - 6e-4  # never below the box floor (IK tolerance 0.5 mm)
        assert np.all(np.abs(np.diff(sent[:, :6], axis=0)) <= 0.5 + 1e-9)  # max_joint_step
        # piper_ros applies the configured speed and gripper effort to every command, both arms.
        with robot.lock:
            applied = {a: set(robot.speeds[a]) for a in ARMS}
        assert applied == {"left": {(55, 2000)}, "right": {(55, 2000)}}, applied
    finally:
        bridge.stop()
        spinner.close()


def test_a_bad_parameter_stops_the_node_with_one_line(tmp_path):
    bridge = Process("hybridvla_ros.agilex_bridge_node", ROOT / "config/agilex.yaml", "guards.right.watchdog_period:=0.0",
                     log=tmp_path / "bad.log")
    try:
        rc = bridge.proc.wait(timeout=60)
    finally:
        bridge.stop()
    lines = [line for line in bridge.output().splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and "'guards.right.watchdog_period'" in lines[0], lines
