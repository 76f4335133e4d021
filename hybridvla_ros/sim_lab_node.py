"""sim_lab: the simulated lab behind the real robots' ROS interfaces (the logic is hybridvla_core.sim).

FR3 (robot: fr3), as franka_ros2 + crisp_controllers (crisp's FR3 demo configuration) + franka_gripper:
  node /controller_manager, service ~/list_controllers (controller_manager_msgs): crisp's demo controllers,
       cartesian_impedance_controller active (CRISP_FR3_CONTROLLER_STATES)
  in   target_pose (geometry_msgs/PoseStamped in base_frame; m, xyzw; reliable, depth 1)
  out  current_pose (PoseStamped of fr3_hand_tcp in base_frame, reliable like crisp's pose_broadcaster),
       joint_states (fr3_joint1..7 rad + fingers m), <gripper_ns>/joint_states (fr3_finger_joint1/2, m);
       /tf_static: base_frame -> fr3_link0 (identity, as crisp's demo URDF) and -> the fixed cameras' optical
       frames; /tf: base_frame -> the wrist camera's optical frame, at the camera rate
  actions <gripper_ns>/move, /grasp, /homing (franka_msgs: width m, speed m/s, force N, epsilon m; a new goal
       or ~/reset aborts the running one; a goal gives up after 5 simulated s)
AgileX (robot: agilex), as piper_ros (humble branch) per arm (left, right):
  node /<arm>/piper_ctrl_single_node (parameters can_port, auto_enable false, girpper_exist true, rviz_ctrl_flag false)
  in   /<arm>/joint_ctrl_single (sensor_msgs/JointState: position[0:6] rad, position[6] gripper width m,
       velocity[6] speed % of the joints' top speed, 30 % without it, as piper_ros), taken only after
       /<arm>/enable_flag (std_msgs/Bool) true
  out  /<arm>/joint_states_single (names joint0..joint6 as piper_ros: 6 joints rad + gripper width m; reliable)
       /tf_static: world -> <arm>_base_link (urdf/dual_piper.urdf) and -> the fixed cameras' optical frames;
       /tf: world -> the wrist cameras' optical frames, at the camera rate
Both:
  cameras /camera/<view>/color/image_raw (Image rgb8) + camera_info; /clock (rosgraph_msgs/Clock);
  optional /hybridvla/<arm>/arm_state (publish_arm_state); topics.privileged (/sim/privileged,
  geometry_msgs/PoseArray at the state rate in the frame of the arm's poses: the instruction's block - TCP and
  bowl - TCP [m], SimEnv.privileged_offsets; only tasks with a block and a bowl, i.e. FR3 pick_place);
  ~/reset (std_srvs/Trigger: next seed; setting the parameter seed at run time makes the next ~/reset start
  that seed),
  ~/success (std_msgs/Bool, 5 Hz), ~/instruction (std_msgs/String, transient local).
Every stamp and /clock: simulation time offset to the wall clock at start (equal to wall time while the
simulation keeps real time), so nodes with or without use_sim_time see fresh images. A machine too busy for
real time slows the simulation down (never a catch-up burst): run the nodes with use_sim_time, as the launch
files and the demo do, and the closed loop is the same at any speed.
"""
from __future__ import annotations

import sys
import threading

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseArray, PoseStamped, TransformStamped
from hybridvla_msgs.msg import ArmState
from rcl_interfaces.msg import SetParametersResult
from rclpy._rclpy_pybind11 import RCLError
from rclpy.action import ActionServer, CancelResponse
from rclpy.parameter import Parameter
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from hybridvla_core.robots.piper_can import PIPER_ROS_JOINT_STATE_NAMES, piper_ros_speed_percent
from hybridvla_core.sim.config import config_from_parameters, parameter_spec
from hybridvla_core.sim.record import camera_frame
from hybridvla_core.sim.runner import LiveLab
from hybridvla_ros.common import (COMMAND_QOS, ParameterError, arrays_to_pose, declare_parameters,
                                  pose_to_arrays, run_node)
from hybridvla_ros.images import numpy_to_image

# Drivers publish their state reliable, depth 1 (a best-effort subscriber still receives it): crisp's
# pose_broadcaster (SystemDefaultsQoS), joint_state_publisher, piper_ros (depth 10).
STATE_QOS = COMMAND_QOS
# The controllers crisp's FR3 demo launch (crisp_controllers_robot_demos/launch/franka.launch.py) spawns, in the
# states the README's `ros2 control switch_controllers --activate cartesian_impedance_controller --deactivate
# joint_trajectory_controller` leaves them (spawned --inactive: the other impedance controllers).
CRISP_FR3_CONTROLLER_STATES = {
    "joint_state_broadcaster": "active", "pose_broadcaster": "active", "external_torques_broadcaster": "active",
    "cartesian_impedance_controller": "active", "joint_impedance_controller": "inactive",
    "joint_trajectory_controller": "inactive", "torque_feedback_controller": "inactive",
    "gravity_compensation": "inactive"}
# piper_ros humble: the parameters its piper_ctrl_single_node declares, as the bridge wants them (not
# auto-enabled, gripper on).
PIPER_ROS_HUMBLE_PARAMETERS = {"can_port": "sim", "auto_enable": False, "girpper_exist": True, "rviz_ctrl_flag": False}
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
GRIPPER_TIMEOUT_S = 5.0   # simulated s before a gripper goal reports where the fingers are


def _stamp(t_ns: int) -> Time:
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


class SimLabNode(Node):
    def __init__(self):
        super().__init__("sim_lab")
        if self.get_parameter("use_sim_time").value:
            # The clock's source runs on wall time. (Subscribed to its own /clock, rclpy's multi-threaded
            # executor here took a whole core: 20 s of CPU in 20 s, against 3 s without.)
            self.set_parameters([Parameter("use_sim_time", value=False)])
            self.get_logger().info("use_sim_time ignored: sim_lab publishes /clock and keeps wall time itself")
        values = declare_parameters(self, parameter_spec())
        try:
            self.cfg = config_from_parameters(values)
        except ValueError as exc:
            raise ParameterError(str(exc)) from None
        cfg = self.cfg
        self.lab = LiveLab(cfg)
        # Spun beside this node (run_node): piper_ros nodes, controller_manager. They ignore the process's ROS
        # arguments: ros2 launch names this node with `-r __node:=sim_lab`, which would rename every node of the
        # process (rcl applies a rule without a node prefix to all of them).
        self.companion_nodes: list[Node] = []
        self._gripper_goal = None  # (kind, goal handle, deadline in simulated s) of the running franka_gripper goal
        self._outcomes = {}        # goal id -> its Result, waiting for the executor to report it
        env = self.lab.env
        self.cameras = {name: (self.create_publisher(Image, cfg.camera_topic(cfg.topics_camera_image, name), STATE_QOS),
                               self.create_publisher(CameraInfo, cfg.camera_topic(cfg.topics_camera_info, name), STATE_QOS))
                        for name in env.cameras}
        self.clock_pub = self.create_publisher(Clock, "/clock", STATE_QOS)
        self.tf_pub = self.tf_static_pub = None
        try:  # tf2_msgs: /opt/ros on a ROS 2 machine, the test-only stand-in on a development machine
            from tf2_msgs.msg import TFMessage

            self.tf_pub = self.create_publisher(TFMessage, "/tf", QoSProfile(depth=100))
            self.tf_static_pub = self.create_publisher(TFMessage, "/tf_static", LATCHED_QOS)
            self._tf_message = TFMessage
        except ImportError:
            self.get_logger().warn("tf2_msgs not installed: no /tf, /tf_static (camera frames)")
        self.arm_state_pubs = {}
        if cfg.publish_arm_state:
            self.arm_state_pubs = {arm: self.create_publisher(ArmState, cfg.arm_topic(cfg.topics_arm_state, arm), STATE_QOS)
                                   for arm in env.arms}
        # Privileged training labels: only a task with a block and a bowl has them (the same for every episode).
        self.privileged_pub = None
        if all(env.privileged_offsets(arm) is not None for arm in env.arms):
            self.privileged_pub = self.create_publisher(PoseArray, cfg.topics_privileged, STATE_QOS)
        if cfg.robot == "fr3":
            # Only the FR3 needs franka_msgs and controller_manager_msgs (on a development machine: the test-only
            # stand-ins).
            from controller_manager_msgs.srv import ListControllers
            from franka_msgs.action import Grasp, Homing, Move

            manager = Node("controller_manager", context=self.context, use_global_arguments=False)
            manager.create_service(ListControllers, "~/list_controllers", self.on_list_controllers)
            self.companion_nodes.append(manager)
            self.actions = {"move": Move, "grasp": Grasp, "homing": Homing}
            self.create_subscription(PoseStamped, cfg.topics_target_pose, self.on_target_pose, COMMAND_QOS)
            self.pose_pub = self.create_publisher(PoseStamped, cfg.topics_current_pose, STATE_QOS)
            self.joint_pub = self.create_publisher(JointState, cfg.topics_joint_states, STATE_QOS)
            self.finger_pub = self.create_publisher(JointState, f"{cfg.topics_gripper_ns}/joint_states", STATE_QOS)
            for name, action in self.actions.items():
                ActionServer(self, action, f"{cfg.topics_gripper_ns}/{name}", self._report,
                             handle_accepted_callback=lambda handle, kind=name: self._on_gripper_goal(kind, handle),
                             cancel_callback=lambda _goal: CancelResponse.ACCEPT)
        else:
            self.piper_pubs, self.piper_enabled = {}, {}
            for arm in env.arms:
                # piper_ros runs one piper_ctrl_single_node per arm, namespaced by the arm: the same node name,
                # parameters (humble branch) and topics here, so that the bridge and `hybridvla preflight` find
                # what they find on the robot. As piper_ros, joint_ctrl_single moves the arm only once enable_flag
                # true arrived.
                vendor = Node("piper_ctrl_single_node", namespace=f"/{arm}", context=self.context,
                              use_global_arguments=False)
                for name, value in PIPER_ROS_HUMBLE_PARAMETERS.items():
                    vendor.declare_parameter(name, value)
                vendor.create_subscription(JointState, cfg.arm_topic(cfg.topics_joint_ctrl, arm),
                                           lambda m, arm=arm: self.on_joint_ctrl(arm, m), COMMAND_QOS)
                vendor.create_subscription(Bool, cfg.arm_topic(cfg.topics_enable_flag, arm),
                                           lambda m, arm=arm: self.piper_enabled.__setitem__(arm, bool(m.data)),
                                           COMMAND_QOS)
                self.piper_pubs[arm] = vendor.create_publisher(
                    JointState, cfg.arm_topic(cfg.topics_arm_joint_states, arm), STATE_QOS)
                self.companion_nodes.append(vendor)
        self.success_pub = self.create_publisher(Bool, "~/success", STATE_QOS)
        self.instruction_pub = self.create_publisher(String, "~/instruction", LATCHED_QOS)
        self.create_service(Trigger, "~/reset", self.on_reset)
        self.add_on_set_parameters_callback(self.on_parameters)
        self.create_timer(0.2, self.publish_success)
        self.instruction_pub.publish(String(data=env.instruction))
        self.publish_static_tf()
        self.get_logger().info(f"sim_lab: {cfg.robot} / {cfg.task}, seed {env.seed}: {env.instruction!r}"
                               f"{' (real time)' if cfg.realtime else ' (as fast as possible)'}")
        self._running = True
        self._thread = threading.Thread(target=self.loop, name="sim_lab", daemon=True)
        self._thread.start()

    # --- the simulation thread ------------------------------------------------------------------------------
    def loop(self) -> None:
        try:
            self._loop()
        except RCLError:
            if self.context.ok():
                raise  # shutting down invalidated the publishers mid-step otherwise
        finally:
            self.lab.close()  # here: the renderer's GL context belongs to this thread

    def _loop(self) -> None:
        reported_slip = 0.0
        while self._running and rclpy.ok():
            due = self.lab.step()
            pacer = self.lab.pacer
            if pacer is not None and pacer.slipped_s > reported_slip + 0.5:
                reported_slip = pacer.slipped_s
                self.get_logger().warn(f"simulation {reported_slip:.1f} s behind real time in all (machine busy): it "
                                       "runs slower, never catching up in a burst (nodes on /clock see a pause)",
                                       throttle_duration_sec=5.0)
            if "state" in due:
                self.publish_state()
                if self.cfg.robot == "fr3":
                    self._watch_gripper()
            if "camera" in due:
                self.publish_cameras()

    def publish_state(self) -> None:
        env = self.lab.env
        with self.lab.lock:
            stamp = _stamp(self.lab.stamp_ns())
            readings = {arm: env.read(arm) for arm in env.arms}
            privileged = ({arm: env.privileged_offsets(arm) for arm in env.arms} if self.privileged_pub is not None
                          else {})
        self.clock_pub.publish(Clock(clock=stamp))
        for arm, r in readings.items():
            frame = self.base_frame(arm)
            if self.cfg.robot == "fr3":
                pose = PoseStamped(pose=arrays_to_pose(r.position, r.quaternion))
                pose.header.stamp, pose.header.frame_id = stamp, frame
                self.pose_pub.publish(pose)
                self.joint_pub.publish(self._joints(stamp, r.joint_names + r.finger_names, np.concatenate([r.q, r.fingers])))
                self.finger_pub.publish(self._joints(stamp, r.finger_names, r.fingers))
            else:
                self.piper_pubs[arm].publish(self._joints(stamp, PIPER_ROS_JOINT_STATE_NAMES,
                                                          np.concatenate([r.q, [r.gripper_width]])))
            if arm in self.arm_state_pubs:
                m = ArmState(arm=arm, pose=arrays_to_pose(r.position, r.quaternion), gripper=r.gripper,
                             gripper_width=r.gripper_width, joint_names=r.joint_names,
                             joint_positions=[float(v) for v in r.q], enabled=True)
                m.header.stamp, m.header.frame_id = stamp, frame
                self.arm_state_pubs[arm].publish(m)
            if privileged.get(arm) is not None:
                labels = PoseArray(poses=[arrays_to_pose(p, (0.0, 0.0, 0.0, 1.0)) for p in privileged[arm]])
                labels.header.stamp, labels.header.frame_id = stamp, frame
                self.privileged_pub.publish(labels)

    def base_frame(self, arm: str) -> str:
        """The frame an arm's poses are in: FR3 base_frame (crisp's base, = fr3_link0), a Piper its base link."""
        return self.cfg.base_frame if self.cfg.robot == "fr3" else self.lab.env.arms[arm].spec.root_link

    def root_frame(self) -> str:
        """The TF root: the FR3's base_frame (the world origin is fr3_link0), the dual arm's URDF root `world`."""
        return self.cfg.base_frame if self.cfg.robot == "fr3" else "world"

    def _transform(self, stamp, parent: str, child: str, position, quaternion) -> TransformStamped:
        t = TransformStamped()
        t.header.stamp, t.header.frame_id, t.child_frame_id = stamp, parent, child
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = (float(v) for v in position)
        (t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z,
         t.transform.rotation.w) = (float(v) for v in quaternion)
        return t

    def publish_static_tf(self) -> None:
        """Arm bases and fixed cameras in the TF root (world coordinates: fr3_link0 is the FR3 world origin)."""
        if self.tf_static_pub is None:
            return
        env, root = self.lab.env, self.root_frame()
        with self.lab.lock:
            stamp = _stamp(self.lab.stamp_ns())
            transforms = [self._transform(stamp, root, env.arms[a].spec.root_link, *env.base_pose(a)) for a in env.arms]
            transforms += [self._transform(stamp, root, camera_frame(c), *env.optical_pose(c))
                           for c, spec in env.cameras.items() if spec.body is None and c in self.cameras]
        self.tf_static_pub.publish(self._tf_message(transforms=transforms))

    def publish_moving_tf(self, stamp) -> None:
        """Cameras on the arms (wrist views), at the camera rate; the caller holds the lab's lock."""
        env, root = self.lab.env, self.root_frame()
        transforms = [self._transform(stamp, root, camera_frame(c), *env.optical_pose(c))
                      for c, spec in env.cameras.items() if spec.body is not None and c in self.cameras]
        if transforms and self.tf_pub is not None:
            self.tf_pub.publish(self._tf_message(transforms=transforms))

    @staticmethod
    def _joints(stamp, names, positions) -> JointState:
        m = JointState(name=list(names), position=[float(v) for v in positions])
        m.header.stamp = stamp
        return m

    def publish_cameras(self) -> None:
        env = self.lab.env
        with self.lab.lock:
            stamp = _stamp(self.lab.stamp_ns())
            images = {name: env.render(name) for name in self.cameras}
            self.publish_moving_tf(stamp)
        width, height = env.image_size
        for name, (image_pub, info_pub) in self.cameras.items():
            frame = camera_frame(name)
            image_pub.publish(numpy_to_image(images[name], "rgb8", stamp=stamp, frame_id=frame))
            fx, fy, cx, cy = env.intrinsics(name)
            info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                              r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                              p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])
            info.header.stamp, info.header.frame_id = stamp, frame
            info_pub.publish(info)

    def publish_success(self) -> None:
        with self.lab.lock:
            success = self.lab.env.success()
        self.success_pub.publish(Bool(data=success))

    # --- commands -------------------------------------------------------------------------------------------
    def on_target_pose(self, msg: PoseStamped) -> None:
        position, quaternion = pose_to_arrays(msg.pose)
        frame = self.base_frame("fr3")
        if msg.header.frame_id not in ("", frame):
            self.get_logger().warn(f"target_pose in frame {msg.header.frame_id!r} ignored: expected {frame}",
                                   throttle_duration_sec=5.0)
            return
        try:
            with self.lab.lock:
                self.lab.env.set_target("fr3", position, quaternion / np.linalg.norm(quaternion))
        except ValueError as exc:
            self.get_logger().warn(f"target_pose ignored: {exc}", throttle_duration_sec=5.0)

    def on_joint_ctrl(self, arm: str, msg: JointState) -> None:
        if not self.piper_enabled.get(arm, False):
            return  # as piper_ros: ignored until enable_flag true
        if len(msg.position) < 6 or not np.all(np.isfinite(msg.position)):
            self.get_logger().warn(f"{arm} joint_ctrl_single ignored: needs 6 (+1 gripper) finite positions",
                                   throttle_duration_sec=5.0)
            return
        with self.lab.lock:
            # As piper_ros: the speed % from velocity[6] (30 % without one); 0 % is taken as the least, 1 %.
            speed = max(piper_ros_speed_percent(list(msg.velocity)), 1) / 100.0
            self.lab.env.set_joint_target(arm, np.asarray(msg.position[:6], float), speed)
            if len(msg.position) > 6:
                self.lab.env.set_gripper_width(arm, float(msg.position[6]))

    @staticmethod
    def on_list_controllers(_request, response):
        from controller_manager_msgs.msg import ControllerState

        response.controller = [ControllerState(name=name, state=state)
                               for name, state in CRISP_FR3_CONTROLLER_STATES.items()]
        return response

    def on_parameters(self, parameters) -> SetParametersResult:
        """Only `seed` changes at run time (the next ~/reset starts it); the rest is fixed at start."""
        for p in parameters:
            if p.name != "seed" or not isinstance(p.value, int) or p.value < 0:
                return SetParametersResult(successful=False, reason=f"{p.name}: only seed (int >= 0) is settable")
        for p in parameters:
            with self.lab.lock:
                self.lab.next_seed = p.value
        return SetParametersResult(successful=True)

    def on_reset(self, _request, response):
        with self.lab.lock:  # a gripper goal of the last episode ends here (the reset reopens the fingers)
            self._end_gripper_goal("preempted by the lab's reset")
        instruction = self.lab.reset()
        self.instruction_pub.publish(String(data=instruction))
        response.success = True
        response.message = f"seed {self.lab.env.seed}: {instruction}"
        self.get_logger().info(f"reset: {response.message}")
        return response

    # --- franka_gripper actions -----------------------------------------------------------------------------
    # No callback blocks: a goal starts the fingers when it is accepted, the simulation thread watches it
    # (_watch_gripper) and, once the fingers stop (or a newer goal, a reset or a cancel ends it), hands the
    # goal to the executor with its outcome (goal_handle.execute), whose callback only reports it. So one
    # executor thread serves the node (with rclpy's MultiThreadedExecutor, needed while gripper goals
    # blocked, sim_lab used 57 % of a core in a 3-episode demo; now 32 %).
    def _on_gripper_goal(self, kind: str, goal_handle) -> None:
        g = goal_handle.request
        if kind == "move":
            width, speed, force = g.width, g.speed, None
        elif kind == "grasp":
            width, speed, force = 0.0, g.speed, g.force
        else:  # homing: open fully
            width, speed, force = self.lab.env.arms["fr3"].gripper_max, 0.0, None
        with self.lab.lock:
            self._end_gripper_goal("preempted by a newer gripper goal")
            self.lab.env.set_gripper_width("fr3", width, speed, force)
            self._gripper_goal = (kind, goal_handle, self.lab.env.time + GRIPPER_TIMEOUT_S)

    def _end_gripper_goal(self, why: str) -> None:
        """Abort the running goal (if any) with `why`; the caller holds the lab's lock."""
        if self._gripper_goal is not None:
            kind, goal_handle, _ = self._gripper_goal
            self._gripper_goal = None
            self._finish(goal_handle, kind, None, why)

    def _watch_gripper(self) -> None:
        """Simulation thread, at the state rate: feedback, and the end of the running goal."""
        env = self.lab.env
        with self.lab.lock:
            if self._gripper_goal is None:
                return
            kind, goal_handle, deadline = self._gripper_goal
            width = env.read("fr3").gripper_width
            if goal_handle.is_cancel_requested:
                env.set_gripper_width("fr3", width)  # stop where the fingers are
                error = "canceled"
            elif env.gripper_busy("fr3") and env.time < deadline:
                feedback = self.actions[kind].Feedback()
                if hasattr(feedback, "current_width"):  # Homing's feedback is empty
                    feedback.current_width = width
                goal_handle.publish_feedback(feedback)
                return
            else:
                error = ""
            self._gripper_goal = None
            self._finish(goal_handle, kind, width, error)

    def _finish(self, goal_handle, kind: str, width: float | None, error: str) -> None:
        """Hand the goal to the executor with its outcome: width [m] where the fingers stopped, or an error."""
        action = self.actions[kind]
        g = goal_handle.request
        if error:
            success = False
        elif kind == "move":
            success = abs(width - g.width) < 0.005
            error = "" if success else f"fingers stopped at {width:.4f} m, asked {g.width:.4f} m"
        elif kind == "grasp":
            # As the real gripper: close with the force until blocked; success if the width ends within epsilon.
            success = g.width - g.epsilon.inner <= width <= g.width + g.epsilon.outer
            error = "" if success else (f"grasp width {width:.4f} m outside {g.width:.4f} "
                                        f"-{g.epsilon.inner} +{g.epsilon.outer} m")
        else:
            success = True

        self._outcomes[bytes(goal_handle.goal_id.uuid)] = action.Result(success=success, error=error)
        goal_handle.execute()

    def _report(self, goal_handle):
        """The action servers' execute callback (executor thread): the result _finish stored, at once."""
        result = self._outcomes.pop(bytes(goal_handle.goal_id.uuid))
        if result.error == "canceled":
            goal_handle.canceled()
        elif result.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)  # the thread closes the lab
        for node in self.companion_nodes:
            node.destroy_node()


def main(args=None) -> int:
    # The simulation thread shares the GIL with rclpy's executor, whose wait loop is pure Python: at the default
    # 5 ms switch interval it waited up to 5 ms each time it took the GIL back, and in the demo graph on 2 cores
    # the simulation ran at 0.3-0.5x real time; handing the GIL back every 0.5 ms it keeps 0.95-0.98x.
    sys.setswitchinterval(0.0005)
    return run_node(SimLabNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
