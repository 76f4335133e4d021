"""The bring-up checks: the judgement (hybridvla_core.robots.preflight, piper_can's piper_ros parameters) without ROS,
and `hybridvla preflight` as a user runs it, over DDS, against the simulated lab (every check passes) and against a
graph misconfigured the ways a first bring-up goes wrong, each named on its own line with its fix. Expected vendor
names come from test/vendor_interfaces.py (read in the vendors' code), never from our simulator."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridvla_core.robots.piper_can import judge_piper_ros_parameters, piper_ros_node_parameters
from hybridvla_core.robots.preflight import (Endpoint, judge_action_server, judge_controller, judge_frame, judge_input,
                                             judge_output, judge_rate, judge_tf, qos_mismatch, summary, tf_path)
from vendor_interfaces import (CRISP_CARTESIAN_CONTROLLER, CRISP_CONTROLLER_MANAGER,
                               CRISP_CURRENT_POSE_RELIABLE, CRISP_CURRENT_POSE_TOPIC, CRISP_FR3_BASE_FRAME,
                               CRISP_FR3_CONTROLLERS_AS_LAUNCHED,
                               CRISP_JOINT_STATES_TOPIC, CRISP_TARGET_POSE_TOPIC, FRANKA_GRIPPER_ACTIONS,
                               FRANKA_GRIPPER_NS_BEFORE_2_0, FRANKA_GRIPPER_NS_FROM_2_0, PIPER_ROS_HUMBLE_PARAMETERS)

ROOT = Path(__file__).resolve().parents[2]
HYBRIDVLA = str(Path(sys.executable).parent / "hybridvla")
POSE = "geometry_msgs/msg/PoseStamped"


# --- judgement --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pub_reliable, pub_latched, sub_reliable, sub_latched, matches", [
    (True, False, True, False, True), (True, False, False, False, True), (False, False, False, False, True),
    (False, False, True, False, False),                     # best-effort publisher, reliable subscription
    (True, False, True, True, False), (True, True, True, True, True), (True, True, True, False, True),
])
def test_qos_matching_follows_the_dds_request_offer_rules(pub_reliable, pub_latched, sub_reliable, sub_latched, matches):
    why = qos_mismatch(Endpoint("/p", POSE, pub_reliable, pub_latched), Endpoint("/s", POSE, sub_reliable, sub_latched))
    assert (why is None) == matches


def test_the_bridge_subscription_takes_crisp_and_franka_ros2_poses():
    # crisp publishes current_pose reliable, franka_ros2's broadcaster best effort: the bridge subscribes best effort.
    bridge = Endpoint("/franka_bridge", POSE, reliable=False)
    for reliable in (CRISP_CURRENT_POSE_RELIABLE, False):
        checks = judge_input(CRISP_CURRENT_POSE_TOPIC, POSE, [Endpoint("/pose_broadcaster", POSE, reliable)], bridge,
                             source="crisp", fix_absent="")
        assert all(c.ok for c in checks), summary(checks)
    bad = judge_input("/t", POSE, [Endpoint("/teleop", POSE, False)], Endpoint("/franka_bridge", POSE, True),
                      source="teleop", fix_absent="")
    assert [c.ok for c in bad] == [True, True, False]
    assert "BEST_EFFORT" in bad[2].detail and "RELIABLE" in bad[2].detail and "/teleop" in bad[2].fix


def test_frame_rate_and_output_judgement():
    wrong = judge_frame(CRISP_CURRENT_POSE_TOPIC, CRISP_FR3_BASE_FRAME, "fr3_link0", "frame_id")
    assert not wrong.ok and "'fr3_link0'" in wrong.detail and "'base'" in wrong.detail and "frame_id" in wrong.fix
    assert judge_frame("/p", "base", "base", "frame_id").ok and not judge_frame("/p", "base", None, "frame_id").ok
    assert not judge_rate("/img", 2.0, 10.0, "policy").ok and judge_rate("/img", 15.0, 10.0, "policy").ok
    assert "no message" in judge_rate("/img", None, 10.0, "policy").detail
    ours = Endpoint("/franka_bridge", POSE, True)
    assert not judge_output("/target_pose", POSE, [], ours, consumer="crisp", fix_absent="activate")[0].ok
    two = judge_output("/target_pose", POSE, [Endpoint("/ctrl", POSE, True)], ours, [Endpoint("/teleop", POSE, True)],
                       consumer="crisp", fix_absent="", single_publisher=True)
    assert not two[-1].ok and "/teleop" in two[-1].detail


def test_gripper_server_under_the_older_franka_ros2_namespace_is_suggested():
    servers = {f"{FRANKA_GRIPPER_NS_BEFORE_2_0}/{k}": [t] for k, t in FRANKA_GRIPPER_ACTIONS.items()}
    check = judge_action_server(f"{FRANKA_GRIPPER_NS_FROM_2_0}/grasp", FRANKA_GRIPPER_ACTIONS["grasp"], servers,
                                "gripper.action_ns")
    assert not check.ok and f"set gripper.action_ns to {FRANKA_GRIPPER_NS_BEFORE_2_0}" in check.fix
    assert judge_action_server(f"{FRANKA_GRIPPER_NS_BEFORE_2_0}/grasp", FRANKA_GRIPPER_ACTIONS["grasp"], servers,
                               "gripper.action_ns").ok


def test_the_controller_must_be_active_not_only_subscribed():
    """crisp's launch spawns cartesian_impedance_controller --inactive: loaded, subscribed, ignoring targets."""
    service = f"{CRISP_CONTROLLER_MANAGER}/list_controllers"
    launched = judge_controller(CRISP_CARTESIAN_CONTROLLER, CRISP_FR3_CONTROLLERS_AS_LAUNCHED, service,
                                "controller.name")
    assert not launched.ok and "is inactive" in launched.detail
    assert f"switch_controllers --activate {CRISP_CARTESIAN_CONTROLLER}" in launched.fix
    switched = {**CRISP_FR3_CONTROLLERS_AS_LAUNCHED, CRISP_CARTESIAN_CONTROLLER: "active"}
    assert judge_controller(CRISP_CARTESIAN_CONTROLLER, switched, service, "controller.name").ok
    typo = judge_controller("cartesian_impedance_control", switched, service, "controller.name")
    assert not typo.ok and f"{CRISP_CARTESIAN_CONTROLLER} (active)" in typo.detail and "controller.name" in typo.fix
    silent = judge_controller(CRISP_CARTESIAN_CONTROLLER, None, service, "controller.name")
    assert not silent.ok and service in silent.detail and "set controller.name to ''" in silent.fix


def test_tf_paths_through_a_common_ancestor():
    edges = {"fr3_link0": "base", "cam_front": "base", "left_base_link": "world", "cam_high": "world"}
    assert tf_path("base", "cam_front", edges) == ["cam_front", "base"]
    assert tf_path("left_base_link", "cam_high", edges) == ["cam_high", "world", "left_base_link"]
    assert tf_path("base", "cam_high", edges) is None
    check = judge_tf("base", "cam_wrist", edges, "header.frame_id of /camera/wrist")
    assert not check.ok and "static_transform_publisher --frame-id base --child-frame-id cam_wrist" in check.fix


def test_piper_ros_parameters_use_the_humble_branch_spelling():
    params = piper_ros_node_parameters("humble", "can_left")
    assert set(params) <= set(PIPER_ROS_HUMBLE_PARAMETERS) and params["girpper_exist"] is True
    assert params["auto_enable"] is False and params["rviz_ctrl_flag"] is False
    # A humble node as piper_ros declares it (its defaults: auto_enable False, girpper_exist True, rviz False).
    humble = {"can_port": "can_left", "auto_enable": False, "girpper_exist": True, "rviz_ctrl_flag": False}
    assert all(c.ok for c in judge_piper_ros_parameters("left", "/left/piper_ctrl_single_node", humble))
    doubled = judge_piper_ros_parameters("left", "/left/piper_ctrl_single_node", {**humble, "rviz_ctrl_flag": True})
    assert [c.name for c in doubled if not c.ok] == ["piper_ros /left/piper_ctrl_single_node rviz_ctrl_flag"]
    other = judge_piper_ros_parameters("left", "/n", {"can_port": "x", "auto_enable": False, "gripper_exist": True,
                                                      "gripper_val_mutiple": 2})
    assert [c.name for c in other if not c.ok] == ["piper_ros /n gripper_val_mutiple"]
    missing = judge_piper_ros_parameters("left", "/left/piper_ctrl_single_node", None)
    assert not missing[0].ok and "-p girpper_exist:=true" in missing[0].fix and "gripper_val_mutiple" not in missing[0].fix


# --- `hybridvla preflight` over DDS -----------------------------------------------------------------------
def preflight(robot, *args, timeout=60):
    done = subprocess.run([HYBRIDVLA, "preflight", "--robot", robot, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.ros
@pytest.mark.slow
@pytest.mark.parametrize("robot, params", [("fr3", "sim_franka.yaml"), ("agilex", "sim_agilex.yaml")])
def test_every_check_passes_against_the_simulated_lab(robot, params, tmp_path):
    pytest.importorskip("mujoco")
    pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs stand-in not built: run make setup")
    log = open(tmp_path / "sim.log", "w")
    sim = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.sim_lab_node", "--ros-args", "--params-file",
                            str(ROOT / "config" / params)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while "sim_lab:" not in (tmp_path / "sim.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        # The sim launch files' policy image age (sim_*.launch.py POLICY_OVERRIDES): cameras render at 15 Hz.
        code, out = preflight(robot, "--max-image-age", "0.25", "--window", "3")
        fails = [line for line in out.splitlines() if line.startswith("FAIL")]
        if code != 0 and fails and all(line.startswith(("FAIL  rate ", "FAIL  TF ")) for line in fails):
            # Rates and the wrist cameras' moving /tf are measured, and a starved 2-core machine (sim_lab rendering,
            # the suite's other processes) can miss a window (CI once saw every camera at 15 Hz but no /tf message
            # yet): one longer look. Any other failure is a real one.
            code, out = preflight(robot, "--max-image-age", "0.25", "--window", "6")
        assert code == 0, out
        assert "FAIL" not in out and f"preflight {robot}:" in out
        assert "TF " in out and "rate /camera/" in out  # cameras and their frames were checked
    finally:
        sim.send_signal(2)
        sim.wait(timeout=15)
        log.close()


@pytest.mark.ros
def test_each_misconfiguration_is_named_with_its_fix(monkeypatch):
    """A graph like a first FR3 bring-up gone wrong: current_pose in franka_ros2's fr3_link0 (the bridge expects
    crisp's base), a teleop script publishing targets BEST_EFFORT to the bridge's RELIABLE subscription, no gripper
    action server, the front camera at 2 Hz, cartesian_impedance_controller subscribed but inactive (as crisp's launch
    spawns it); the wrist camera is right."""
    # A DDS domain of its own: a node of an earlier test still leaving the graph (its gripper servers) must not
    # be part of this one.
    monkeypatch.setenv("ROS_DOMAIN_ID", str((int(os.environ.get("ROS_DOMAIN_ID", "0")) + 37) % 100 + 1))
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("hybridvla_msgs.msg")
    from geometry_msgs.msg import PoseStamped
    from hybridvla_msgs.msg import ArmTarget
    from sensor_msgs.msg import Image, JointState

    from hybridvla_ros.common import COMMAND_QOS, SENSOR_QOS
    from rosnodes import Spinner, serve_list_controllers

    pytest.importorskip("controller_manager_msgs.srv", reason="controller_manager_msgs stand-in not built: make setup")
    spinner = Spinner()
    node = spinner.add(rclpy.node.Node("misconfigured_lab", context=spinner.context))
    serve_list_controllers(node, dict(CRISP_FR3_CONTROLLERS_AS_LAUNCHED), CRISP_CONTROLLER_MANAGER)
    pose_pub = node.create_publisher(PoseStamped, CRISP_CURRENT_POSE_TOPIC, COMMAND_QOS)
    joint_pub = node.create_publisher(JointState, CRISP_JOINT_STATES_TOPIC, COMMAND_QOS)
    node.create_subscription(PoseStamped, CRISP_TARGET_POSE_TOPIC, lambda m: None, COMMAND_QOS)
    node.create_publisher(ArmTarget, "/hybridvla/fr3/target", SENSOR_QOS)  # BEST_EFFORT
    front = node.create_publisher(Image, "/camera/front/color/image_raw", SENSOR_QOS)
    wrist = node.create_publisher(Image, "/camera/wrist/color/image_raw", SENSOR_QOS)

    def state():
        pose = PoseStamped()
        pose.header.frame_id, pose.pose.orientation.w = "fr3_link0", 1.0
        pose_pub.publish(pose)
        joint_pub.publish(JointState(name=[f"fr3_joint{i}" for i in range(1, 8)], position=[0.0] * 7))

    def image(pub, frame):
        msg = Image(height=4, width=4, encoding="rgb8", step=12, data=bytes(48))
        msg.header.frame_id = frame
        pub.publish(msg)

    node.create_timer(0.01, state)
    node.create_timer(0.5, lambda: image(front, "front_color_optical_frame"))
    node.create_timer(1 / 30, lambda: image(wrist, "wrist_color_optical_frame"))
    spinner.start()
    try:
        code, out = preflight("fr3", "--window", "3", "--no-cameras")
        code_cam, out_cam = preflight("fr3", "--window", "3")
    finally:
        spinner.close()
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert code == 1, out
    names = {line.split(":")[0].removeprefix("FAIL").strip() for line in fails}
    # (A starved test process can also fail a rate check of the good streams on a loaded machine: not asserted.)
    assert {f"frame {CRISP_CURRENT_POSE_TOPIC}", "QoS /hybridvla/fr3/target", f"action {FRANKA_GRIPPER_NS_FROM_2_0}/grasp",
            f"action {FRANKA_GRIPPER_NS_FROM_2_0}/move", f"controller {CRISP_CARTESIAN_CONTROLLER}"} <= names, out
    assert not names & {f"subscriber {CRISP_TARGET_POSE_TOPIC}", f"type {CRISP_CURRENT_POSE_TOPIC}"}, out
    frame_line = next(line for line in fails if line.startswith(f"FAIL  frame {CRISP_CURRENT_POSE_TOPIC}"))
    assert "'fr3_link0'" in frame_line and f"'{CRISP_FR3_BASE_FRAME}'" in frame_line and "fix: set parameter frame_id" in frame_line
    qos_line = next(line for line in fails if "QoS" in line)
    assert "BEST_EFFORT" in qos_line and "RELIABLE" in qos_line and "/misconfigured_lab" in qos_line and "fix:" in qos_line
    assert all("fix:" in line for line in fails)
    assert code_cam == 1
    cam_fails = [line for line in out_cam.splitlines() if line.startswith("FAIL")]
    rate_line = next(line for line in cam_fails if line.startswith("FAIL  rate /camera/front/color/image_raw"))
    assert "needs >= 10 Hz" in rate_line and "fix:" in rate_line, out_cam  # policy_franka.yaml max_image_age_s 0.1
    assert not any("rate /camera/wrist" in line for line in cam_fails), out_cam
    # No TF at all in this graph: both camera frames are named as unreachable from the base.
    assert any(line.startswith(f"FAIL  TF {CRISP_FR3_BASE_FRAME} -> wrist_color_optical_frame") for line in cam_fails), out_cam
