"""franka_bridge: ArmTarget -> guards (hybridvla_core.runtime.guards) -> a Cartesian controller of franka_ros2.

  in   <target_topic>        hybridvla_msgs/ArmTarget (policy or teleop; m, xyzw, gripper 0..1), reliable depth 1
       <current_pose_topic>  geometry_msgs/PoseStamped, measured TCP in frame_id (crisp PoseBroadcaster stamps its
                             base_frame parameter: `base` in crisp's FR3 demo), subscribed BEST_EFFORT depth 1
                             (matches crisp's reliable and franka_ros2's best-effort publishers). A pose in
                             another frame is not used, and ~/enable is refused naming both frames.
       <joint_states_topic>  sensor_msgs/JointState: fr3_joint1..7 [rad] (IK seed) + fr3_finger_joint1/2 [m]
       Both state topics may arrive at 1 kHz: no callback runs per message; the middleware keeps the newest
       sample (depth 1), which the guards take when a target arrives and at rate_hz (bridge_common.LatestSample).
  out  <output_topic>        output_type pose_stamped: geometry_msgs/PoseStamped in frame_id (crisp_controllers
                             CartesianController `target_pose`; FZI cartesian_controllers `<ctrl>/target_frame`;
                             MoveIt Servo `pose_command_in_topic`) or joint_state: sensor_msgs/JointState of the
                             guarded IK joints [rad] (crisp `target_joint`); on each accepted target and at
                             rate_hz, reliable depth 1
       <arm_state_topic>     hybridvla_msgs/ArmState at rate_hz;  <guard_events_topic> hybridvla_msgs/GuardEvent
  actions <gripper.action_ns>/grasp (close), <gripper.action_ns>/move (open) - franka_msgs.action
  services ~/enable (std_srvs/SetBool), ~/hold, ~/estop, ~/clear_estop (std_srvs/Trigger). Starts disabled.
  ~/enable true first runs the bring-up checks (hybridvla_core.robots.preflight, the same as `hybridvla preflight`):
  current_pose in frame_id, both state topics at >= preflight.min_state_rate_hz, a subscriber (the controller)
  on output_topic and no second publisher there (crisp drops targets then), controller.name active in
  controller.manager's ~/list_controllers (asked every 0.5 s; enabled, a controller no longer active makes the
  bridge hold), the gripper's grasp and move action servers; the first failures are the refusal's one line.
"""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import PoseStamped
from hybridvla_msgs.msg import ArmState, ArmTarget, GuardEvent
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybridvla_core.robots.arm_bridge import (FRANKA_BRIDGE_PARAMETERS, FrankaGripperCommander, GripperGoal,
                                             guard_config, guard_parameter_spec)
from hybridvla_core.runtime.guards import Command, GuardPipeline, GuardResult
from hybridvla_core.robots.preflight import (Check, frame_refusal, judge_action_server, judge_controller, judge_output,
                                             judge_rate, summary)
from hybridvla_ros import graph
from hybridvla_ros.bridge_common import ControlServices, LatestSample, arm_state_msg, event_msg, now_s, target_from_msg
from hybridvla_ros.common import (COMMAND_QOS, EVENT_QOS, SENSOR_QOS, ParameterError, arrays_to_pose,
                                  bridge_executor, declare_parameters, pose_to_arrays, run_node)
from hybridvla_ros.controllers import ControllerStates

OUTPUT_TYPE_NAMES = {"pose_stamped": "geometry_msgs/msg/PoseStamped", "joint_state": "sensor_msgs/msg/JointState"}
PARAMETERS = FRANKA_BRIDGE_PARAMETERS  # hybridvla_core.robots.arm_bridge: `hybridvla eval sim` reads the same file
STATE_WINDOW_S = 2.0   # s over which the state topics' rates are measured for ~/enable


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
        if len(values["joint_names"]) != self.pipeline.chain.dof:  # e.g. model:=piper with the FR3's 7 joints
            raise ParameterError(f"parameter 'model' = {values['model']!r} has {self.pipeline.chain.dof} joints but "
                                 f"'joint_names' lists {len(values['joint_names'])}: the arm model and the joint "
                                 f"names must describe the same arm")
        self.gripper_width = 0.0          # m, measured
        self._pose = None                 # (position, quaternion, receipt time s) from current_pose
        self._pose_frame: str | None = None  # frame_id of the newest current_pose

        self.events_pub = self.create_publisher(GuardEvent, values["guard_events_topic"], EVENT_QOS)
        self.state_pub = self.create_publisher(ArmState, values["arm_state_topic"], COMMAND_QOS)
        out_type = PoseStamped if values["output_type"] == "pose_stamped" else JointState
        self.output_pub = self.create_publisher(out_type, values["output_topic"], COMMAND_QOS)
        self.create_subscription(ArmTarget, values["target_topic"], self.on_target, COMMAND_QOS)
        # The state topics are read on demand from a node no executor spins (see LatestSample).
        self.reader = Node(f"{self.get_name()}_state_reader", namespace=self.get_namespace(), context=self.context)
        self.joints_in = LatestSample(self.reader, JointState, values["joint_states_topic"], SENSOR_QOS, STATE_WINDOW_S)
        self.pose_in = None
        if values["measured_pose"] == "current_pose":
            self.pose_in = LatestSample(self.reader, PoseStamped, values["current_pose_topic"], SENSOR_QOS, STATE_WINDOW_S)

        self.gripper = None
        if values["gripper.enabled"]:
            from rclpy.action import ActionClient

            Grasp, Move = _franka_actions()
            self._grasp_type, self._move_type = Grasp, Move
            ns = values["gripper.action_ns"].rstrip("/")
            self.grasp_client = ActionClient(self, Grasp, f"{ns}/grasp")
            self.move_client = ActionClient(self, Move, f"{ns}/move")
            self.gripper = FrankaGripperCommander(values["gripper.max_width"], values["gripper.close_below"])

        # crisp subscribes target_pose when configured, not when activated: only the controller_manager says
        # whether the controller acts on what the bridge sends.
        self.controllers = ControllerStates(self, values["controller.manager"]) if values["controller.name"] else None
        ControlServices(self, {self.arm: self.pipeline}, self.publish_events, on_enable=self.on_enable,
                        precheck=self.precheck)
        self.create_timer(1.0 / values["rate_hz"], self.on_timer)
        self.get_logger().info(
            f"franka_bridge: {self.arm} ({values['model']}) {values['target_topic']} -> guards -> "
            f"{values['output_topic']} ({values['output_type']}) at {values['rate_hz']} Hz; DISABLED until "
            f"~/enable true; workspace {list(config.workspace_min)}..{list(config.workspace_max)} m in {self.frame_id}")

    # --- measured state -----------------------------------------------------------------------------------
    def _absorb_fingers(self, msg: JointState) -> None:
        index = {name: i for i, name in enumerate(msg.name)}
        fingers = self.v["finger_joint_names"]
        if all(f in index for f in fingers) and len(msg.position) == len(msg.name):
            self.gripper_width = float(sum(msg.position[index[f]] for f in fingers))

    def absorb(self) -> None:
        """The newest current_pose and joint_states (if new since the last call) -> the guards' measured state,
        stamped with their receipt time on the node's clock."""
        now = now_s(self)
        got = self.pose_in.take() if self.pose_in is not None else None
        if got is not None:
            msg, age = got
            frame = msg.header.frame_id
            self._pose_frame = frame
            if frame not in ("", self.frame_id):
                self.get_logger().warn(frame_refusal(self.v["current_pose_topic"], self.frame_id, frame, "frame_id"),
                                       throttle_duration_sec=5.0)
            else:
                position, quaternion = pose_to_arrays(msg.pose)
                self._pose = (position, quaternion, now - age)
        got = self.joints_in.take()
        if got is None:
            return
        msg, age = got
        self._absorb_fingers(msg)
        index = {name: i for i, name in enumerate(msg.name)}
        names = self.v["joint_names"]
        if not all(n in index for n in names) or len(msg.position) != len(msg.name):
            return  # a gripper-only message (franka_gripper/joint_states), or a malformed one
        joints = np.array([msg.position[index[n]] for n in names])
        stamp = now - age
        position = quaternion = None
        if self._pose is not None and stamp - self._pose[2] <= self.pipeline.config.watchdog_period:
            position, quaternion = self._pose[0], self._pose[1]
        elif self.v["measured_pose"] == "current_pose":
            return  # no fresh TCP pose: the measured state ages and the guards hold
        gripper = self.gripper_width / self.v["gripper.max_width"]
        if not self.pipeline.set_measured(joints, stamp, position, quaternion, gripper):
            self.get_logger().warn("non-finite or malformed joint state ignored", throttle_duration_sec=5.0)

    # --- bring-up checks (hybridvla_core.robots.preflight; `hybridvla preflight --robot fr3` runs the same) -------------
    def checks(self) -> list[Check]:
        v = self.v
        self.absorb()
        min_hz = v["preflight.min_state_rate_hz"]
        checks = []
        if v["measured_pose"] == "current_pose":
            topic = v["current_pose_topic"]
            frame = self._pose_frame
            if frame is not None and frame not in ("", self.frame_id):
                checks.append(Check(f"frame {topic}", False, frame_refusal(topic, self.frame_id, frame, "frame_id")))
            checks.append(judge_rate(topic, self.pose_in.rate(), min_hz,
                                     "parameter preflight.min_state_rate_hz: the guards need a fresh TCP pose"))
        checks.append(judge_rate(v["joint_states_topic"], self.joints_in.rate(), min_hz,
                                 "parameter preflight.min_state_rate_hz: the IK seeds at the measured joints"))
        ours = graph.endpoint(self.get_fully_qualified_name(), OUTPUT_TYPE_NAMES[v["output_type"]], COMMAND_QOS)
        checks += judge_output(v["output_topic"], ours.type, graph.subscribers(self, v["output_topic"]), ours,
                               graph.publishers(self, v["output_topic"], exclude_self=True),
                               consumer="the Cartesian controller (crisp: cartesian_impedance_controller)",
                               fix_absent="load the controller (the crisp launch spawns it) or set output_topic to "
                                          "its input",
                               single_publisher=True)
        if self.controllers is not None:
            checks.append(judge_controller(v["controller.name"], self.controllers.states(), self.controllers.service,
                                           "controller.name"))
        if self.gripper is not None:
            servers = graph.action_servers(self)
            ns = v["gripper.action_ns"].rstrip("/")
            checks.append(judge_action_server(f"{ns}/grasp", "franka_msgs/action/Grasp", servers, "gripper.action_ns"))
            checks.append(judge_action_server(f"{ns}/move", "franka_msgs/action/Move", servers, "gripper.action_ns"))
        return checks

    def precheck(self) -> str | None:
        checks = self.checks()
        return None if all(c.ok for c in checks) else summary(checks)

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
        self.absorb()
        result = self.pipeline.submit(target_from_msg(msg), now_s(self))
        self.publish_events(self.arm, result)
        if result.command is not None:
            self.publish_command(result.command)  # now, not at the next tick: target-to-command latency
            if not result.command.hold and self.gripper is not None:
                self.command_gripper(result.command.gripper)

    def on_timer(self) -> None:
        self.absorb()
        self.hold_unless_controller_active()
        result = self.pipeline.tick(now_s(self))
        self.publish_events(self.arm, result)
        if result.command is not None:
            self.publish_command(result.command)
        state = arm_state_msg(self, self.arm, self.frame_id, self.pipeline, self.v["joint_names"], self.gripper_width,
                              self.v["gripper.max_width"])
        if state is not None:
            self.state_pub.publish(state)

    def hold_unless_controller_active(self) -> None:
        """Enabled, and the controller_manager says the controller is no longer active (switched off, or franka_ros2
        deactivated it after an error): hold. No answer is not taken as news (a busy manager)."""
        if self.controllers is None or not self.pipeline.enabled:
            return
        states, name = self.controllers.states(), self.v["controller.name"]
        if states is not None and states.get(name) != "active":
            state = states.get(name, "not loaded")
            self.publish_events(self.arm, self.pipeline.disable(
                now_s(self), f"controller {name} is {state} (activate it, then ~/enable true)"))

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

    def close(self) -> None:
        self.reader.destroy_node()

    def _on_result(self, goal: GripperGoal, future) -> None:
        result = future.result().result
        if not result.success and goal == self.gripper.last:  # a superseded goal's failure is no news
            self.get_logger().warn(f"gripper {goal.action} to {goal.width:.3f} m failed: {result.error or 'no reason'}")


def main(args=None) -> int:
    return run_node(FrankaBridge, args, executor_factory=bridge_executor)


if __name__ == "__main__":
    raise SystemExit(main())
