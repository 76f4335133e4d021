"""agilex_bridge: per-arm ArmTarget -> guards (IK to joints, hybridvla_core.runtime.guards) -> two Piper arms.

The dual-arm robot is two independent arms named in arm_order (default [left, right]); a 14-dim policy action
is [arm_order[0] 7, arm_order[1] 7] (hybridvla_core.robots.piper_can.split_dual) and reaches this node as one ArmTarget
per arm, each in that arm's base frame.
  in   <target_topic>  hybridvla_msgs/ArmTarget per arm ({arm} is replaced), reliable depth 1
  out  <arm_state_topic> hybridvla_msgs/ArmState per arm at rate_hz; <guard_events_topic> hybridvla_msgs/GuardEvent
  backend piper_ros: out /{arm}/joint_ctrl_single (sensor_msgs/JointState: position[0:6] joints rad,
                     position[6] gripper opening m, velocity[6] speed_percent [%], effort[6] gripper_effort / 1000
                     [N*m])
                     at rate_hz; /{arm}/enable_flag (std_msgs/Bool) on enable;
                     in /{arm}/joint_states_single (position[0:6] rad, [6] gripper m; read by index, the names
                     differ between branches). No e-stop topic exists in
                     piper_ros: ~/estop holds the arms (use the hardware stop button too).
  backend piper_sdk: one C_PiperInterface_V2 per CAN port (can_ports parallel to arm_order): enable sequence on
                     ~/enable, MotionCtrl_2 (speed_percent) + JointCtrl (0.001 deg) + GripperCtrl (0.001 mm) at rate_hz,
                     EmergencyStop on ~/estop; measured joints/gripper from the SDK's feedback.
  services ~/enable (std_srvs/SetBool: both arms or none), ~/hold, ~/estop, ~/clear_estop (std_srvs/Trigger).
Starts disabled: nothing is sent to an arm before ~/enable true.
"""
from __future__ import annotations

import math

import numpy as np
from hybridvla_msgs.msg import ArmState, ArmTarget, GuardEvent
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool

from hybridvla_core.robots.arm_bridge import guard_config, guard_parameter_spec
from hybridvla_core.runtime.guards import Command, GuardPipeline, GuardResult
from hybridvla_core.runtime.kinematics import ARMS
from hybridvla_core.robots.piper_can import GRIPPER_MAX_M, PiperSdkArm, SimulatedPiper, check_arm_order
from hybridvla_ros.bridge_common import ControlServices, LatestSample, arm_state_msg, event_msg, now_s, target_from_msg
from hybridvla_ros.common import (COMMAND_QOS, EVENT_QOS, SENSOR_QOS, ParameterError, bridge_executor,
                                  declare_parameters, run_node)

BACKENDS = ("piper_ros", "piper_sdk")
JOINT_NAMES = [f"joint{i}" for i in range(1, 7)]
_name = lambda v: isinstance(v, str) and v != ""  # noqa: E731
_positive = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0  # noqa: E731
_names = lambda v: isinstance(v, list) and len(v) == 2 and all(_name(x) for x in v)  # noqa: E731

PARAMETERS = {
    "arm_order": (["left", "right"], _names, "two arm names: slot 0 and slot 1 of a 14-dim action"),
    "model": ("piper", lambda v: v in ARMS, f"one of {sorted(ARMS)} (kinematics.ARMS); each arm in its own base frame"),
    "frame_id": ("{arm}_base_link", _name, "base frame of each arm, {arm} replaced"),
    "target_topic": ("/hybridvla/{arm}/target", _name, "a topic name, {arm} replaced"),
    "arm_state_topic": ("/hybridvla/{arm}/arm_state", _name, "a topic name, {arm} replaced"),
    "guard_events_topic": ("/hybridvla/guard_events", _name, "a topic name"),
    "rate_hz": (50.0, _positive, "a rate > 0 [Hz]"),
    "gripper_max_width": (GRIPPER_MAX_M, lambda v: _positive(v) and v <= 0.08, "0 < width <= 0.08 [m]: gripper 1.0"),
    "backend": ("piper_ros", lambda v: v in BACKENDS, f"one of {BACKENDS}"),
    "speed_percent": (30, lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100,
                      "an integer 1..100 [% of the arm's top joint speed], either backend"),
    "gripper_effort": (1000, lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 5000,
                       "an integer 0..5000 [0.001 N*m], either backend"),
    "piper_ros.joint_ctrl_topic": ("/{arm}/joint_ctrl_single", _name, "a topic name, {arm} replaced"),
    "piper_ros.joint_states_topic": ("/{arm}/joint_states_single", _name, "a topic name, {arm} replaced"),
    "piper_ros.enable_topic": ("/{arm}/enable_flag", _name, "a topic name, {arm} replaced"),
    "piper_ros.node": ("/{arm}/piper_ctrl_single_node", _name,
                       "the piper_ros control node of each arm, {arm} replaced (`hybridvla preflight` reads its parameters)"),
    "preflight.min_state_rate_hz": (25.0, _positive, "a rate > 0 [Hz]: the lowest joint_states_single rate that passes"),
    "piper_sdk.can_ports": (["can_left", "can_right"], _names, "two CAN interfaces, parallel to arm_order"),
    "piper_sdk.bustype": ("socketcan", _name, "a python-can interface: socketcan on the robot, virtual in tests"),
    "piper_sdk.enable_timeout": (2.0, _positive, "a time > 0 [s]"),
    "piper_sdk.simulate": (False, lambda v: isinstance(v, bool),
                           "true: a simulated Piper answers on each port (bustype virtual; tests and dry runs)"),
}


class PiperRosBackend:
    """piper_ros piper_ctrl_single_node per arm."""

    def __init__(self, node: "AgilexBridge", arms: list[str], v: dict):
        self.node = node
        # piper_ros (humble) reads the speed from velocity[6] [%] and the gripper effort from effort[6] [N*m,
        # clamped to 0.5..3] of a 7-value joint_ctrl_single; without them it moves at 30 % with 1 N*m.
        self.velocity = [0.0] * 6 + [float(v["speed_percent"])]
        self.effort = [0.0] * 6 + [v["gripper_effort"] / 1000.0]
        self.ctrl = {a: node.create_publisher(JointState, v["piper_ros.joint_ctrl_topic"].format(arm=a), COMMAND_QOS)
                     for a in arms}
        self.enable_pubs = {a: node.create_publisher(Bool, v["piper_ros.enable_topic"].format(arm=a), COMMAND_QOS)
                            for a in arms}
        # joint_states_single (200 Hz per arm) read on demand each cycle from a node no executor spins: no
        # callback per message (bridge_common.LatestSample).
        self.reader = Node(f"{node.get_name()}_state_reader", namespace=node.get_namespace(), context=node.context)
        self.state_in = {a: LatestSample(self.reader, JointState, v["piper_ros.joint_states_topic"].format(arm=a),
                                         SENSOR_QOS) for a in arms}

    def on_joint_states(self, arm: str, msg: JointState, age: float = 0.0) -> None:
        if len(msg.position) < 7:
            return
        self.node.measured(arm, np.asarray(msg.position[:6], dtype=float), float(msg.position[6]), age)

    def enable(self, arm: str) -> tuple[bool, str]:
        # piper_ros (humble) enables on enable_flag without confirming the drivers, and publishes no enable bits:
        # say what was done, not more.
        self.enable_pubs[arm].publish(Bool(data=True))
        return True, "enable_flag sent to piper_ros (its drivers' enable bits are not published: not confirmed)"

    def send(self, arm: str, joints, gripper_m: float, estopped: bool) -> None:
        msg = JointState(name=JOINT_NAMES + ["joint7"], position=[float(v) for v in joints] + [float(gripper_m)],
                         velocity=self.velocity, effort=self.effort)
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.ctrl[arm].publish(msg)

    def poll(self, arms=None) -> None:
        """The newest joint_states_single of each arm (or of `arms`), if one arrived since the last look."""
        for arm in arms or self.state_in:
            got = self.state_in[arm].take()
            if got is not None:
                self.on_joint_states(arm, *got)

    def emergency_stop(self) -> None:
        """piper_ros has no e-stop topic: the guards hold the arms."""

    def close(self) -> None:
        self.reader.destroy_node()


class PiperSdkBackend:
    """piper_sdk over CAN, one interface per arm."""

    def __init__(self, node: "AgilexBridge", arms: list[str], v: dict):
        self.node = node
        self.timeout = v["piper_sdk.enable_timeout"]
        self.last_stamp: dict[str, float] = {}   # SDK feedback time of the last reading used, per arm
        ports = dict(zip(arms, v["piper_sdk.can_ports"]))
        self.sims = {a: SimulatedPiper(p, joints_rad=(0.0, 1.2, -1.2, 0.0, 0.9, 0.0))
                     for a, p in ports.items()} if v["piper_sdk.simulate"] else {}
        try:
            self.arms = {a: PiperSdkArm(p, bustype=v["piper_sdk.bustype"], speed_percent=v["speed_percent"],
                                        gripper_effort=v["gripper_effort"]) for a, p in ports.items()}
        except (ImportError, ConnectionError) as exc:
            raise ParameterError(f"backend piper_sdk on {list(ports.values())} ({v['piper_sdk.bustype']}): {exc}") from None

    def enable(self, arm: str) -> tuple[bool, str]:
        """Reported only once every driver's enable bit is confirmed (PiperSdkArm.enable, MotorEnableWatch)."""
        return self.arms[arm].enable(self.timeout)

    def send(self, arm: str, joints, gripper_m: float, estopped: bool) -> None:
        if not estopped:  # after EmergencyStop the arm takes nothing until it is reset
            self.arms[arm].send(list(joints), gripper_m)

    def poll(self, arms=None) -> None:
        """The newest SDK feedback of each arm (or of `arms`)."""
        for arm in arms or self.arms:
            reading = self.arms[arm].read()
            # The SDK keeps its last values when the feedback stops: only a new frame is a measurement, so a
            # silent arm ages out and the guards hold.
            if reading is not None and reading[2] != self.last_stamp.get(arm):
                self.last_stamp[arm] = reading[2]
                self.node.measured(arm, reading[0], reading[1])

    def emergency_stop(self) -> None:
        for sdk in self.arms.values():
            sdk.emergency_stop()

    def close(self) -> None:
        for sdk in self.arms.values():
            sdk.close()
        for sim in self.sims.values():
            sim.close()


class AgilexBridge(Node):
    def __init__(self):
        super().__init__("agilex_bridge")
        v = declare_parameters(self, PARAMETERS, last=False)  # the per-arm guard parameters follow
        try:
            self.arms = list(check_arm_order(v["arm_order"]))
        except ValueError as exc:
            raise ParameterError(f"parameter 'arm_order': {exc}") from None
        v.update(declare_parameters(self, {k: s for a in self.arms for k, s in guard_parameter_spec(
            f"guards.{a}.", {"workspace_min": [0.10, -0.40, 0.01], "workspace_max": [0.60, 0.40, 0.55],
                             "max_translation_step": 0.02, "max_rotation_step": 0.1}).items()}))
        self.v = v
        self.pipelines: dict[str, GuardPipeline] = {}
        for a in self.arms:
            try:
                self.pipelines[a] = GuardPipeline(guard_config(a, v["model"], v, f"guards.{a}."))
            except ValueError as exc:
                raise ParameterError(str(exc)) from None
        self.frames = {a: v["frame_id"].format(arm=a) for a in self.arms}
        self.gripper_width = {a: 0.0 for a in self.arms}   # m, measured
        self.events_pub = self.create_publisher(GuardEvent, v["guard_events_topic"], EVENT_QOS)
        self.state_pubs = {a: self.create_publisher(ArmState, v["arm_state_topic"].format(arm=a), COMMAND_QOS)
                           for a in self.arms}
        for a in self.arms:
            self.create_subscription(ArmTarget, v["target_topic"].format(arm=a), lambda m, a=a: self.on_target(a, m),
                                     COMMAND_QOS)
        self.backend = (PiperRosBackend if v["backend"] == "piper_ros" else PiperSdkBackend)(self, self.arms, v)
        ControlServices(self, self.pipelines, self.publish_events, on_enable=self.backend.enable,
                        on_estop=self.backend.emergency_stop)
        self.create_timer(1.0 / v["rate_hz"], self.on_timer)
        self.get_logger().info(f"agilex_bridge: arms {self.arms} ({v['model']}), backend {v['backend']}, "
                               f"{v['rate_hz']} Hz; DISABLED until ~/enable true")

    def measured(self, arm: str, joints: np.ndarray, gripper_m: float, age: float = 0.0) -> None:
        """A backend's reading: joints [rad], gripper opening [m], received `age` seconds ago."""
        if math.isfinite(gripper_m):
            self.gripper_width[arm] = gripper_m
        if not self.pipelines[arm].set_measured(joints, now_s(self) - age,
                                                gripper=gripper_m / self.v["gripper_max_width"]):
            self.get_logger().warn(f"{arm}: non-finite or malformed joint state ignored", throttle_duration_sec=5.0)

    def on_target(self, arm: str, msg: ArmTarget) -> None:
        if msg.arm not in ("", arm):
            self.get_logger().warn(f"target for arm {msg.arm!r} on {arm}'s topic ignored", throttle_duration_sec=5.0)
            return
        self.backend.poll([arm])  # this arm's state only: the other arm's target may be waiting behind this one
        result = self.pipelines[arm].submit(target_from_msg(msg), now_s(self))
        self.publish_events(arm, result)
        if result.command is not None:  # now, not at the next cycle: target-to-command latency
            self.send(arm, result.command, self.pipelines[arm].estopped)

    def on_timer(self) -> None:
        self.backend.poll()
        now = now_s(self)
        for arm, pipeline in self.pipelines.items():
            result = pipeline.tick(now)
            self.publish_events(arm, result)
            if result.command is not None:
                self.send(arm, result.command, pipeline.estopped)
            state = arm_state_msg(self, arm, self.frames[arm], pipeline, JOINT_NAMES, self.gripper_width[arm],
                                  self.v["gripper_max_width"])
            if state is not None:
                self.state_pubs[arm].publish(state)

    def send(self, arm: str, c: Command, estopped: bool) -> None:
        self.backend.send(arm, c.joints, c.gripper * self.v["gripper_max_width"], estopped)

    def publish_events(self, arm: str, result: GuardResult) -> None:
        for record in result.events:
            self.events_pub.publish(event_msg(self, arm, record, self.frames[arm]))
            self.get_logger().info(record.detail, throttle_duration_sec=1.0)

    def close(self) -> None:
        self.backend.close()


def main(args=None) -> int:
    return run_node(AgilexBridge, args, executor_factory=bridge_executor)


if __name__ == "__main__":
    raise SystemExit(main())
