"""`hybridvla preflight --robot fr3|agilex`: look at the live ROS graph before enabling an arm and print one line
per check (topic present, type, QoS compatible, frame, rate, action server, vendor node parameters, TF from the
arm's base to each camera frame), with the fix for each failure; exit code 1 when one fails, 2 on a bad
argument. It reads the same parameter files the launch files use (config/franka.yaml or agilex.yaml and the
policy file) and judges with hybridvla_core.robots.preflight, as the bridges' ~/enable does.

rclpy is imported only when the command runs (hybridvla_core.cli lists it; `hybridvla preflight --help` needs
no ROS)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hybridvla_core import options
from hybridvla_core.errors import UserError
from hybridvla_core.files import read_yaml
from hybridvla_core.robots.preflight import Check, Endpoint, failures, judge_frame, judge_input, judge_output, judge_rate, judge_tf
from hybridvla_core.resources import resource_path

ROBOTS = {"fr3": ("franka.yaml", "franka_bridge", "policy_franka.yaml"),
          "agilex": ("agilex.yaml", "agilex_bridge", "policy_agilex.yaml")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", required=True, choices=sorted(ROBOTS), help="which bridge's graph to check")
    parser.add_argument("--config", default=None,
                        help="folder with the parameter files (default: the installed config/); the same as config:= "
                             "of the launch files")
    parser.add_argument("--window", type=options.positive_float, default=2.0,
                        help="seconds to listen for rates and frames (default 2)")
    parser.add_argument("--max-image-age", type=float, default=None,
                        help="s, the policy's max_image_age_s (default: the policy file's; the sim launch files use "
                             "0.25): cameras must publish at least 1/this often")
    parser.add_argument("--no-cameras", action="store_true", help="skip the camera topics and their TF")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def node_parameters(path: Path, node: str, spec: dict) -> dict:
    """A node's parameters from a ROS 2 parameter file over the node's declared defaults."""
    doc = read_yaml(path) or {}
    section = (doc.get(node) or doc.get(f"/{node}") or {}) if isinstance(doc, dict) else {}
    if not isinstance(section, dict) or not isinstance(section.get("ros__parameters", {}), dict):
        raise UserError(f"{path}: expected '{node}: ros__parameters: {{...}}' (a ROS 2 parameter file)")
    values = {name: default for name, (default, _check, _expected) in spec.items()}
    values.update(_flat(section.get("ros__parameters", {})))
    return values


class Listener:
    """Subscribes to what the checks need for `window` seconds: arrival times, the newest header frame, TF edges."""

    def __init__(self, node, window: float):
        self.node, self.window = node, window
        self.times: dict[str, list[float]] = {}
        self.frames: dict[str, str] = {}
        self.edges: dict[str, str] = {}     # child frame -> parent frame (/tf, /tf_static)
        self.tf_available = True

    def watch(self, topic: str, msg_type, qos, frame: bool = True) -> None:
        self.times.setdefault(topic, [])

        def callback(msg, topic=topic):
            self.times[topic].append(time.monotonic())
            if frame and hasattr(msg, "header"):
                self.frames[topic] = msg.header.frame_id
        self.node.create_subscription(msg_type, topic, callback, qos)

    def watch_tf(self) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            self.tf_available = False
            return

        def on_tf(msg):
            for t in msg.transforms:
                self.edges[t.child_frame_id] = t.header.frame_id
        self.node.create_subscription(TFMessage, "/tf", on_tf, QoSProfile(depth=100))
        self.node.create_subscription(TFMessage, "/tf_static", on_tf,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                                 durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def rate(self, topic: str) -> float | None:
        times = self.times.get(topic) or []
        if len(times) < 2:
            return None
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)


def _type_name(msg_type) -> str:
    module = msg_type.__module__.split(".")
    return f"{module[0]}/{module[1]}/{msg_type.__name__}"


def fr3_checks(node, listener: Listener, v: dict, cameras: list[str], min_camera_hz: float, config: str) -> list[Check]:
    from geometry_msgs.msg import PoseStamped

    from hybridvla_ros import graph
    from hybridvla_ros.common import COMMAND_QOS, SENSOR_QOS
    from hybridvla_ros.franka_bridge_node import OUTPUT_TYPE_NAMES

    bridge = "/franka_bridge"
    sensor = graph.endpoint(bridge, "", SENSOR_QOS)
    command = graph.endpoint(bridge, "", COMMAND_QOS)
    checks: list[Check] = []
    min_hz = v["preflight.min_state_rate_hz"]
    if v["measured_pose"] == "current_pose":
        topic = v["current_pose_topic"]
        checks += judge_input(topic, _type_name(PoseStamped), graph.publishers(node, topic),
                              Endpoint(bridge, _type_name(PoseStamped), sensor.reliable),
                              source="crisp's pose_broadcaster", fix_absent="start crisp's pose_broadcaster "
                              "(`ros2 control` spawner pose_broadcaster) or set current_pose_topic")
        checks.append(judge_frame(topic, v["frame_id"], listener.frames.get(topic), f"frame_id ({config})"))
        checks.append(judge_rate(topic, listener.rate(topic), min_hz, "preflight.min_state_rate_hz"))
    topic = v["joint_states_topic"]
    checks += judge_input(topic, "sensor_msgs/msg/JointState", graph.publishers(node, topic),
                          Endpoint(bridge, "sensor_msgs/msg/JointState", sensor.reliable),
                          source="joint_state_publisher (franka_ros2 / crisp demo)",
                          fix_absent="start franka_ros2's bringup or set joint_states_topic")
    checks.append(judge_rate(topic, listener.rate(topic), min_hz, "preflight.min_state_rate_hz"))
    checks += _target_checks(node, v["target_topic"], Endpoint(bridge, "hybridvla_msgs/msg/ArmTarget", command.reliable))
    out_type = OUTPUT_TYPE_NAMES[v["output_type"]]
    checks += judge_output(v["output_topic"], out_type, graph.subscribers(node, v["output_topic"]),
                           Endpoint(bridge, out_type, command.reliable),
                           [p for p in graph.publishers(node, v["output_topic"]) if p.node != bridge],
                           consumer="the Cartesian controller (crisp: cartesian_impedance_controller)",
                           fix_absent="load the controller (the crisp launch spawns it) or set output_topic to its "
                                      "input",
                           single_publisher=True)
    if v["controller.name"]:
        from hybridvla_core.robots.preflight import judge_controller

        from hybridvla_ros.common import ParameterError

        service = f"{v['controller.manager'].rstrip('/')}/list_controllers"
        try:
            checks.append(judge_controller(v["controller.name"], _controller_states(node, service), service,
                                           f"controller.name ({config})"))
        except ParameterError as exc:  # controller_manager_msgs missing
            checks.append(Check(f"controller {v['controller.name']}", False, str(exc)))
    if v["gripper.enabled"]:
        from hybridvla_core.robots.preflight import judge_action_server

        servers = graph.action_servers(node)
        ns = v["gripper.action_ns"].rstrip("/")
        for kind, action in (("grasp", "Grasp"), ("move", "Move")):
            checks.append(judge_action_server(f"{ns}/{kind}", f"franka_msgs/action/{action}", servers,
                                              f"gripper.action_ns ({config})"))
    checks += camera_checks(node, listener, cameras, [v["frame_id"]], min_camera_hz)
    return checks


def _target_checks(node, topic: str, ours: Endpoint) -> list[Check]:
    """The bridge's target topic: nobody may publish yet (the policy starts later); whoever does must match."""
    from hybridvla_ros import graph

    publishers = graph.publishers(node, topic)
    if not publishers:
        return [Check(f"topic {topic}", True, "no publisher yet (the policy or teleop publishes targets)")]
    return judge_input(topic, ours.type, publishers, ours, source="the policy or teleop", fix_absent="")


def agilex_checks(node, listener: Listener, v: dict, arms: list[str], cameras: list[str], min_camera_hz: float,
                  config: str) -> list[Check]:
    from hybridvla_core.robots.piper_can import judge_piper_ros_parameters
    from hybridvla_ros import graph
    from hybridvla_ros.common import COMMAND_QOS, SENSOR_QOS

    bridge = "/agilex_bridge"
    checks: list[Check] = []
    if v["backend"] == "piper_ros":
        for arm in arms:
            topic = v["piper_ros.joint_states_topic"].format(arm=arm)
            checks += judge_input(topic, "sensor_msgs/msg/JointState", graph.publishers(node, topic),
                                  graph.endpoint(bridge, "sensor_msgs/msg/JointState", SENSOR_QOS),
                                  source=f"piper_ros piper_ctrl_single_node in /{arm}",
                                  fix_absent=f"start piper_ros for {arm} (`ros2 run piper piper_single_ctrl --ros-args "
                                             f"-r __ns:=/{arm} -p can_port:=can_{arm} ...`) or set "
                                             "piper_ros.joint_states_topic")
            checks.append(judge_rate(topic, listener.rate(topic), v["preflight.min_state_rate_hz"],
                                     "preflight.min_state_rate_hz"))
            for key, what in (("piper_ros.joint_ctrl_topic", "sensor_msgs/msg/JointState"),
                              ("piper_ros.enable_topic", "std_msgs/msg/Bool")):
                out = v[key].format(arm=arm)
                checks += judge_output(out, what, graph.subscribers(node, out), graph.endpoint(bridge, what, COMMAND_QOS),
                                       consumer=f"piper_ros in /{arm}",
                                       fix_absent=f"start piper_ros in /{arm} without remapping (its own "
                                                  "start_single_piper.launch.py remaps joint_ctrl_single to "
                                                  f"/joint_states), or set {key}")
            checks += judge_piper_ros_parameters(arm, v["piper_ros.node"].format(arm=arm),
                                                 _vendor_parameters(node, v["piper_ros.node"].format(arm=arm)))
    for arm in arms:
        checks += _target_checks(node, v["target_topic"].format(arm=arm),
                                 graph.endpoint(bridge, "hybridvla_msgs/msg/ArmTarget", COMMAND_QOS))
    checks += camera_checks(node, listener, cameras, [v["frame_id"].format(arm=a) for a in arms], min_camera_hz)
    return checks


def _vendor_parameters(node, target: str, timeout: float = 3.0) -> dict | None:
    """Every parameter a node declares (name -> value) through its parameter services; None when it is absent."""
    import rclpy
    from rcl_interfaces.srv import GetParameters, ListParameters
    from rclpy.parameter import parameter_value_to_python

    lister = node.create_client(ListParameters, f"{target}/list_parameters")
    if not lister.wait_for_service(timeout_sec=timeout):
        return None
    future = lister.call_async(ListParameters.Request())
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        return None
    names = list(future.result().result.names)
    getter = node.create_client(GetParameters, f"{target}/get_parameters")
    if not getter.wait_for_service(timeout_sec=timeout):
        return None
    future = getter.call_async(GetParameters.Request(names=names))
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done():
        return None
    return {n: parameter_value_to_python(value) for n, value in zip(names, future.result().values)}


def _controller_states(node, service: str, timeout: float = 3.0) -> dict[str, str] | None:
    """controller name -> state from a controller_manager's list_controllers; None when it does not answer."""
    import rclpy

    from hybridvla_ros.controllers import list_controllers_type

    ListControllers = list_controllers_type()
    client = node.create_client(ListControllers, service)
    if not client.wait_for_service(timeout_sec=timeout):
        return None
    future = client.call_async(ListControllers.Request())
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
    if not future.done() or future.result() is None:
        return None
    return {c.name: c.state for c in future.result().controller}


def camera_checks(node, listener: Listener, topics: list[str], bases: list[str], min_hz: float) -> list[Check]:
    """Each camera topic the policy reads: published as sensor_msgs/Image (the policy subscribes best effort),
    at >= min_hz, and a TF path from every arm base to its header.frame_id."""
    from hybridvla_ros import graph
    from hybridvla_ros.common import SENSOR_QOS

    checks = []
    policy = graph.endpoint("/policy", "sensor_msgs/msg/Image", SENSOR_QOS)
    for topic in topics:
        checks += judge_input(topic, "sensor_msgs/msg/Image", graph.publishers(node, topic), policy,
                              source="the camera driver (camera_node, realsense-ros, OrbbecSDK_ROS2)",
                              fix_absent="start the camera or point the policy file's image_topics at its topic")
        checks.append(judge_rate(topic, listener.rate(topic), min_hz,
                                 f"the policy refuses frames older than {1.0 / min_hz:g} s (max_image_age_s)"))
        frame = listener.frames.get(topic)
        if frame is None:
            continue
        if not listener.tf_available:
            checks.append(Check(f"TF -> {frame}", False, "tf2_msgs is not installed: TF not checked",
                                "source the ROS 2 installation (tf2_msgs)"))
            continue
        for base in bases:
            checks.append(judge_tf(base, frame, listener.edges, f"header.frame_id of {topic}"))
    return checks


def run(args) -> int:
    try:
        import rclpy
        from rclpy.node import Node
        from sensor_msgs.msg import Image, JointState
    except ImportError as exc:
        print(f"hybridvla preflight: error: ROS 2 (rclpy) is needed: {exc}", file=sys.stderr)
        return 2
    config = Path(args.config).expanduser() if args.config else resource_path("config", ROBOTS[args.robot][0]).parent
    bridge_file, bridge_node, policy_file = ROBOTS[args.robot]
    for name in (bridge_file, policy_file):
        if not (config / name).is_file():
            print(f"hybridvla preflight: error: {config / name} does not exist (--config)", file=sys.stderr)
            return 2
    policy = node_parameters(config / policy_file, "policy", {})
    cameras = [] if args.no_cameras else list(policy.get("image_topics", []))
    max_age = args.max_image_age if args.max_image_age is not None else float(policy.get("max_image_age_s", 0.1))
    if not max_age > 0:
        print(f"hybridvla preflight: error: --max-image-age must be > 0 s, got {max_age}", file=sys.stderr)
        return 2

    rclpy.init()
    node = Node("hybridvla_preflight")
    try:
        from hybridvla_ros.common import SENSOR_QOS

        listener = Listener(node, args.window)
        if args.robot == "fr3":
            from geometry_msgs.msg import PoseStamped

            from hybridvla_ros.franka_bridge_node import PARAMETERS

            v = node_parameters(config / bridge_file, bridge_node, PARAMETERS)
            if v["measured_pose"] == "current_pose":
                listener.watch(v["current_pose_topic"], PoseStamped, SENSOR_QOS)
            listener.watch(v["joint_states_topic"], JointState, SENSOR_QOS, frame=False)
        else:
            from hybridvla_ros.agilex_bridge_node import PARAMETERS

            v = node_parameters(config / bridge_file, bridge_node, PARAMETERS)
            arms = list(v["arm_order"])
            for arm in arms:
                listener.watch(v["piper_ros.joint_states_topic"].format(arm=arm), JointState, SENSOR_QOS, frame=False)
        for topic in cameras:
            listener.watch(topic, Image, SENSOR_QOS)
        listener.watch_tf()
        deadline = time.monotonic() + args.window
        while time.monotonic() < deadline:  # discovery and the measuring window
            rclpy.spin_once(node, timeout_sec=0.05)
        where = str(config / bridge_file)
        if args.robot == "fr3":
            checks = fr3_checks(node, listener, v, cameras, 1.0 / max_age, where)
        else:
            checks = agilex_checks(node, listener, v, arms, cameras, 1.0 / max_age, where)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    for check in checks:
        print(check.line())
    bad = failures(checks)
    print(f"preflight {args.robot}: {len(checks) - len(bad)}/{len(checks)} checks pass"
          + (f", {len(bad)} FAIL" if bad else ""))
    return 1 if bad else 0
