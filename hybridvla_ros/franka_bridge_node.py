"""franka_bridge: ArmTarget -> guards (hybridvla_core.guards) -> a Cartesian controller of franka_ros2.

  in   <target_topic>        hybridvla_msgs/ArmTarget (policy or teleop; m, xyzw, gripper 0..1), reliable depth 1
       <current_pose_topic>  geometry_msgs/PoseStamped, measured TCP in frame_id (crisp PoseBroadcaster /
                             franka_ros2), BEST_EFFORT
       <joint_states_topic>  sensor_msgs/JointState: fr3_joint1..7 [rad] (IK seed) + fr3_finger_joint1/2 [m]
  out  <output_topic>        output_type pose_stamped: geometry_msgs/PoseStamped in frame_id (crisp_controllers
                             CartesianController `target_pose`; FZI cartesian_controllers `<ctrl>/target_frame`;
                             MoveIt Servo `pose_command_in_topic`) or joint_state: sensor_msgs/JointState of the
                             guarded IK joints [rad] (crisp `target_joint`); at rate_hz, reliable depth 1
       <arm_state_topic>     hybridvla_msgs/ArmState at rate_hz;  <guard_events_topic> hybridvla_msgs/GuardEvent
  actions <gripper.action_ns>/grasp (close), <gripper.action_ns>/move (open) - franka_msgs.action
  services ~/enable (std_srvs/SetBool), ~/hold, ~/estop, ~/clear_estop (std_srvs/Trigger). Starts disabled.
"""
from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import PoseStamped
from hybridvla_msgs.msg import ArmState, ArmTarget, GuardEvent
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybridvla_core.arm_bridge import FrankaGripperCommander, GripperGoal, guard_config, guard_parameter_spec
from hybridvla_core.guards import Command, GuardPipeline, GuardResult
from hybridvla_core.kinematics import ARMS
from hybridvla_ros.bridge_common import ControlServices, arm_state_msg, event_msg, now_s, target_from_msg
from hybridvla_ros.common import (COMMAND_QOS, EVENT_QOS, SENSOR_QOS, ParameterError, arrays_to_pose,
                                  declare_parameters, pose_to_arrays, run_node)

OUTPUT_TYPES = ("pose_stamped", "joint_state")
_name = lambda v: isinstance(v, str) and v != ""  # noqa: E731
_positive = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0  # noqa: E731

PARAMETERS = {
    "arm": ("fr3", _name, "the arm's name in ArmTarget/ArmState/GuardEvent"),
    "model": ("fr3", lambda v: v in ARMS, f"one of {sorted(ARMS)} (kinematics.ARMS)"),
    "frame_id": ("fr3_link0", _name, "the arm's base frame"),
    "joint_names": ([f"fr3_joint{i}" for i in range(1, 8)], lambda v: isinstance(v, list) and len(v) == 7, "7 joint names"),
    "finger_joint_names": (["fr3_finger_joint1", "fr3_finger_joint2"], lambda v: isinstance(v, list) and len(v) == 2,
                           "2 finger joint names (their sum is the gripper width)"),
    "target_topic": ("/hybridvla/fr3/target", _name, "a topic name"),
    "output_topic": ("target_pose", _name, "a topic name"),
    "output_type": ("pose_stamped", lambda v: v in OUTPUT_TYPES, f"one of {OUTPUT_TYPES}"),
    "current_pose_topic": ("current_pose", _name, "a topic name"),
    "measured_pose": ("current_pose", lambda v: v in ("current_pose", "fk"),
                      "current_pose (the robot's TCP pose) or fk (from joint_states through urdf)"),
    "joint_states_topic": ("joint_states", _name, "a topic name"),
    "arm_state_topic": ("/hybridvla/fr3/arm_state", _name, "a topic name"),
    "guard_events_topic": ("/hybridvla/guard_events", _name, "a topic name"),
    "rate_hz": (50.0, _positive, "a rate > 0 [Hz]"),
    "gripper.enabled": (True, lambda v: isinstance(v, bool), "true or false"),
    "gripper.action_ns": ("/franka_gripper", _name, "the franka_gripper node's name"),
    "gripper.max_width": (0.08, lambda v: _positive(v) and v <= 0.08, "0 < width <= 0.08 [m]"),
    "gripper.close_below": (0.5, lambda v: _positive(v) and v < 1, "0 < threshold < 1"),
    "gripper.speed": (0.1, _positive, "a speed > 0 [m/s]"),
    "gripper.force": (20.0, _positive, "a force > 0 [N]"),
    "gripper.epsilon_inner": (0.005, _positive, "a tolerance > 0 [m]"),
    "gripper.epsilon_outer": (0.08, _positive, "a tolerance > 0 [m]"),
}


def _franka_actions():
    try:
        from franka_msgs.action import Grasp, Move
    except ImportError:
        raise ParameterError("franka_msgs is not installed: source the franka_ros2 workspace (on a development "
                             "machine `make setup` builds the test stand-in), or set gripper.enabled:=false") from None
    return Grasp, Move


class FrankaBridge(Node):
    def __init__(self):
        super().__init__("franka_bridge")
        values = declare_parameters(self, {**PARAMETERS, **guard_parameter_spec("guards.")})
        try:
            config = guard_config(values["arm"], values["model"], values, "guards.")
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        self.v = values
        self.arm, self.frame_id = values["arm"], values["frame_id"]
        self.pipeline = GuardPipeline(config)
        self.gripper_width = 0.0          # m, measured
        self._pose = None                 # (position, quaternion, receipt time s) from current_pose

        self.events_pub = self.create_publisher(GuardEvent, values["guard_events_topic"], EVENT_QOS)
        self.state_pub = self.create_publisher(ArmState, values["arm_state_topic"], COMMAND_QOS)
        out_type = PoseStamped if values["output_type"] == "pose_stamped" else JointState
        self.output_pub = self.create_publisher(out_type, values["output_topic"], COMMAND_QOS)
        self.create_subscription(ArmTarget, values["target_topic"], self.on_target, COMMAND_QOS)
        self.create_subscription(JointState, values["joint_states_topic"], self.on_joint_states, SENSOR_QOS)
        if values["measured_pose"] == "current_pose":
            self.create_subscription(PoseStamped, values["current_pose_topic"], self.on_current_pose, SENSOR_QOS)

        self.gripper = None
        if values["gripper.enabled"]:
            from rclpy.action import ActionClient

            Grasp, Move = _franka_actions()
            self._grasp_type, self._move_type = Grasp, Move
            ns = values["gripper.action_ns"].rstrip("/")
            self.grasp_client = ActionClient(self, Grasp, f"{ns}/grasp")
            self.move_client = ActionClient(self, Move, f"{ns}/move")
            self.gripper = FrankaGripperCommander(values["gripper.max_width"], values["gripper.close_below"])

        ControlServices(self, {self.arm: self.pipeline}, self.publish_events, on_enable=self.on_enable)
        self.create_timer(1.0 / values["rate_hz"], self.on_timer)
        self.get_logger().info(
            f"franka_bridge: {self.arm} ({values['model']}) {values['target_topic']} -> guards -> "
            f"{values['output_topic']} ({values['output_type']}) at {values['rate_hz']} Hz; DISABLED until "
            f"~/enable true; workspace {list(config.workspace_min)}..{list(config.workspace_max)} m in {self.frame_id}")

    # --- measured state -----------------------------------------------------------------------------------
    def on_current_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id not in ("", self.frame_id):
            self.get_logger().warn(f"current_pose in {msg.header.frame_id!r} ignored: expected {self.frame_id}",
                                   throttle_duration_sec=5.0)
            return
        position, quaternion = pose_to_arrays(msg.pose)
        self._pose = (position, quaternion, now_s(self))

    def on_joint_states(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        fingers = self.v["finger_joint_names"]
        if all(f in index for f in fingers) and len(msg.position) == len(msg.name):
            self.gripper_width = float(sum(msg.position[index[f]] for f in fingers))
        names = self.v["joint_names"]
        if not all(n in index for n in names) or len(msg.position) != len(msg.name):
            return  # a gripper-only message, or a malformed one
        joints = np.array([msg.position[index[n]] for n in names])
        now = now_s(self)
        position = quaternion = None
        if self._pose is not None and now - self._pose[2] <= self.pipeline.config.watchdog_period:
            position, quaternion = self._pose[0], self._pose[1]
        elif self.v["measured_pose"] == "current_pose":
            return  # no fresh TCP pose: the measured state ages and the guards hold
        gripper = self.gripper_width / self.v["gripper.max_width"]
        if not self.pipeline.set_measured(joints, now, position, quaternion, gripper):
            self.get_logger().warn("non-finite or malformed joint state ignored", throttle_duration_sec=5.0)

    def on_enable(self, _arm: str) -> tuple[bool, str]:
        if self.gripper is not None:
            self.gripper.forget()
        return True, "enabled"

    # --- targets and output ---------------------------------------------------------------------------------
    def on_target(self, msg: ArmTarget) -> None:
        if msg.arm not in ("", self.arm):
            self.get_logger().warn(f"target for arm {msg.arm!r} ignored: this bridge drives {self.arm!r}",
                                   throttle_duration_sec=5.0)
            return
        result = self.pipeline.submit(target_from_msg(msg), now_s(self))
        self.publish_events(self.arm, result)
        if result.command is not None and not result.command.hold and self.gripper is not None:
            self.command_gripper(result.command.gripper)

    def on_timer(self) -> None:
        result = self.pipeline.tick(now_s(self))
        self.publish_events(self.arm, result)
        if result.command is not None:
            self.publish_command(result.command)
        state = arm_state_msg(self, self.arm, self.frame_id, self.pipeline, self.v["joint_names"], self.gripper_width,
                              self.v["gripper.max_width"])
        if state is not None:
            self.state_pub.publish(state)

    def publish_command(self, c: Command) -> None:
        if self.v["output_type"] == "pose_stamped":
            msg = PoseStamped(pose=arrays_to_pose(c.position, c.quaternion))
            msg.header.frame_id = self.frame_id
        else:
            msg = JointState(name=list(self.v["joint_names"]), position=[float(v) for v in c.joints])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.output_pub.publish(msg)

    def publish_events(self, arm: str, result: GuardResult) -> None:
        for record in result.events:
            self.events_pub.publish(event_msg(self, arm, record, self.frame_id))
            self.get_logger().info(record.detail, throttle_duration_sec=1.0)

    # --- gripper --------------------------------------------------------------------------------------------
    def command_gripper(self, gripper: float) -> None:
        goal = self.gripper.decide(gripper)
        if goal is None:
            return
        v = self.v
        if goal.action == "grasp":
            client, msg = self.grasp_client, self._grasp_type.Goal(width=goal.width, speed=v["gripper.speed"],
                                                                    force=v["gripper.force"])
            msg.epsilon.inner, msg.epsilon.outer = v["gripper.epsilon_inner"], v["gripper.epsilon_outer"]
        else:
            client, msg = self.move_client, self._move_type.Goal(width=goal.width, speed=v["gripper.speed"])
        if not client.server_is_ready():
            self.gripper.not_accepted(goal)
            self.get_logger().warn(f"gripper {goal.action} not sent: no action server", throttle_duration_sec=5.0)
            return
        client.send_goal_async(msg).add_done_callback(lambda f, goal=goal: self._on_goal(goal, f))

    def _on_goal(self, goal: GripperGoal, future) -> None:
        handle = future.result()
        if not handle.accepted:
            self.gripper.not_accepted(goal)
            self.get_logger().warn(f"gripper {goal.action} to {goal.width:.3f} m rejected")
            return
        handle.get_result_async().add_done_callback(lambda f, goal=goal: self._on_result(goal, f))

    def _on_result(self, goal: GripperGoal, future) -> None:
        result = future.result().result
        if not result.success and goal == self.gripper.last:  # a superseded goal's failure is no news
            self.get_logger().warn(f"gripper {goal.action} to {goal.width:.3f} m failed: {result.error or 'no reason'}")


def main(args=None) -> int:
    return run_node(FrankaBridge, args)


if __name__ == "__main__":
    raise SystemExit(main())
