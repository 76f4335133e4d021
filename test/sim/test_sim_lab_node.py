"""The sim_lab node in its own process, driven over Fast DDS the way the real stack drives franka_ros2:
target_pose moves the simulated TCP (read back on current_pose), franka_gripper's Grasp closes on a block,
cameras arrive on the realsense-style names on the same clock, ~/reset moves on to the next seed, and a
bad parameter stops the node at start with one line."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
franka_action = pytest.importorskip("franka_msgs.action", reason="test-only franka_msgs not built (make setup)")

from action_msgs.msg import GoalStatus  # noqa: E402
from geometry_msgs.msg import PoseArray, PoseStamped  # noqa: E402
from hybridvla_msgs.msg import ArmState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.time import Time  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from hybridvla_core.resources import resource_path  # noqa: E402
from hybridvla_core.sim.env import SimEnv  # noqa: E402
from hybridvla_core.sim.experts import TOP_DOWN  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, SENSOR_QOS, arrays_to_pose, pose_to_arrays  # noqa: E402
from vendor_interfaces import (CRISP_CARTESIAN_CONTROLLER, CRISP_CONTROLLER_MANAGER,  # noqa: E402
                               CRISP_FR3_BASE_FRAME, CRISP_FR3_CONTROLLERS_AS_LAUNCHED, PIPER_ROS_JOINT_STATE_NAMES,
                               piper_ros_humble_speed_and_effort)

pytestmark = pytest.mark.ros
SEED = 3
# `-r __node:=sim_lab` as ros2 launch adds for Node(name="sim_lab") (launch_ros actions/node.py): a rule without a
# node prefix renames every node of the process that reads the process's arguments.
NODE = [sys.executable, "-m", "hybridvla_ros.sim_lab_node", "--ros-args", "-r", "__node:=sim_lab",
        "--params-file", str(resource_path("config", "sim_franka.yaml"))]


def spin_until(node, condition, timeout, what):
    """Spin until condition() holds; fail naming `what` after `timeout` s (a wait, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        rclpy.spin_once(node, timeout_sec=0.05)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    log = tmp_path_factory.mktemp("sim_lab") / "node.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(NODE + ["-p", f"seed:={SEED}", "-p", "camera_width:=96", "-p", "camera_height:=72",
                                        "-p", "publish_arm_state:=true"],
                                stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    rclpy.init()
    node = Node("sim_lab_test")
    state = {"pose": None, "fingers": None, "image": None, "arm_state": None, "success": None}
    node.create_subscription(ArmState, "/hybridvla/fr3/arm_state", lambda m: state.__setitem__("arm_state", m),
                             SENSOR_QOS)
    node.create_subscription(Bool, "/sim_lab/success", lambda m: state.__setitem__("success", m.data), SENSOR_QOS)
    node.create_subscription(PoseStamped, "/current_pose", lambda m: state.__setitem__("pose", m), SENSOR_QOS)
    node.create_subscription(JointState, "/franka_gripper/joint_states", lambda m: state.__setitem__("fingers", m),
                             SENSOR_QOS)
    node.create_subscription(Image, "/camera/front/color/image_raw", lambda m: state.__setitem__("image", m),
                             SENSOR_QOS)
    target = node.create_publisher(PoseStamped, "/target_pose", COMMAND_QOS)
    try:
        spin_until(node, lambda: state["pose"] is not None or proc.poll() is not None, 60, "the first current_pose")
        assert proc.poll() is None, log.read_text()
        yield node, state, target, proc
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def move_to(node, state, target, position, quaternion, tolerance=0.01, timeout=30):
    msg = PoseStamped(pose=arrays_to_pose(position, quaternion))
    msg.header.frame_id = CRISP_FR3_BASE_FRAME
    target.publish(msg)
    spin_until(node, lambda: np.linalg.norm(pose_to_arrays(state["pose"].pose)[0] - position) < tolerance,
               timeout, f"the TCP to reach {position}")
    return pose_to_arrays(state["pose"].pose)


def run_action(node, client, goal, timeout=30):
    spin_until(node, lambda: client.wait_for_server(timeout_sec=0.0), 30, f"action server {client._action_name}")
    future = client.send_goal_async(goal)
    spin_until(node, future.done, timeout, "goal acceptance")
    result = future.result().get_result_async()
    spin_until(node, result.done, timeout, "the action result")
    return result.result().result


def test_the_controller_manager_answers_under_its_own_name_when_launched(lab):
    """franka_bridge asks /controller_manager/list_controllers; launched, the simulated lab's companion node was
    renamed /sim_lab, and no bridge could be enabled."""
    from controller_manager_msgs.srv import ListControllers

    node = lab[0]
    spin_until(node, lambda: ("controller_manager", "/") in node.get_node_names_and_namespaces(), 20,
               "the node /controller_manager")
    client = node.create_client(ListControllers, f"{CRISP_CONTROLLER_MANAGER}/list_controllers")
    spin_until(node, client.service_is_ready, 20, "list_controllers")
    future = client.call_async(ListControllers.Request())
    spin_until(node, future.done, 20, "the controller states")
    states = {c.name: c.state for c in future.result().controller}
    assert states[CRISP_CARTESIAN_CONTROLLER] == "active"
    assert set(states) == set(CRISP_FR3_CONTROLLERS_AS_LAUNCHED)  # crisp's controllers, after the README's switch
    node.destroy_client(client)


def test_target_pose_moves_the_tcp_to_within_1cm(lab):
    node, state, target, _ = lab
    goal = np.array([0.45, 0.12, 0.3])
    rotation = Rotation.from_euler("z", 0.2) * TOP_DOWN
    position, quaternion = move_to(node, state, target, goal, rotation.as_quat(), tolerance=0.01)
    assert np.linalg.norm(position - goal) < 0.01
    assert (Rotation.from_quat(quaternion) * rotation.inv()).magnitude() < 0.05
    assert state["pose"].header.frame_id == CRISP_FR3_BASE_FRAME  # as crisp's pose_broadcaster in its FR3 demo


def test_cameras_publish_rgb8_on_the_state_clock(lab):
    node, state, _, _ = lab
    spin_until(node, lambda: state["image"] is not None, 20, "a front camera image")
    image, pose = state["image"], state["pose"]
    assert (image.encoding, image.width, image.height) == ("rgb8", 96, 72)
    t_image = image.header.stamp.sec + image.header.stamp.nanosec * 1e-9
    t_pose = pose.header.stamp.sec + pose.header.stamp.nanosec * 1e-9
    assert abs(t_image - t_pose) < 1.0      # one clock for images and state
    assert abs(t_image - time.time()) < 5.0  # offset to wall time: fresh for nodes without use_sim_time


def test_arm_state_and_success_are_published(lab):
    node, state, _, _ = lab
    spin_until(node, lambda: state["arm_state"] is not None and state["success"] is not None, 20,
               "ArmState and ~/success")
    m = state["arm_state"]
    assert m.arm == "fr3" and m.header.frame_id == CRISP_FR3_BASE_FRAME and len(m.joint_positions) == 7
    assert 0.0 <= m.gripper <= 1.0 and state["success"] is False  # nothing is in a bowl yet


def test_privileged_labels_come_with_the_state_in_the_pose_frame(lab):
    """/sim/privileged (PoseArray): the instruction's block - TCP and bowl - TCP [m] in current_pose's frame, on
    current_pose's stamps; with the TCP of the same stamp they put the (fixed) bowl where this seed's layout has it."""
    node, state, _, _ = lab
    labels, poses = {}, {}

    def key(m):
        return (m.header.stamp.sec, m.header.stamp.nanosec)

    subs = [node.create_subscription(PoseArray, "/sim/privileged", lambda m: labels.__setitem__(key(m), m), SENSOR_QOS),
            node.create_subscription(PoseStamped, "/current_pose", lambda m: poses.__setitem__(key(m), m), SENSOR_QOS)]
    try:
        spin_until(node, lambda: len(set(labels) & set(poses)) >= 5, 20, "privileged labels with current_pose's stamps")
    finally:
        for sub in subs:
            node.destroy_subscription(sub)
    env = SimEnv("fr3", "pick_place")
    try:
        env.reset(SEED)
        bowl = env.data.body(f"bowl_{env.instruction.split()[6]}").xpos.copy()  # fr3_link0 = world, identity
    finally:
        env.close()
    for stamp in sorted(set(labels) & set(poses)):
        m, pose = labels[stamp], poses[stamp]
        assert m.header.frame_id == pose.header.frame_id == CRISP_FR3_BASE_FRAME and len(m.poses) == 2
        assert all((p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w) == (0, 0, 0, 1)
                   for p in m.poses)
        tcp = pose_to_arrays(pose.pose)[0]
        bowl_offset = np.array([m.poses[1].position.x, m.poses[1].position.y, m.poses[1].position.z])
        np.testing.assert_allclose(bowl_offset + tcp, bowl, atol=1e-6)


def test_grasp_goal_closes_the_gripper_on_a_block_and_fails_on_air(lab):
    node, state, target, _ = lab
    Grasp, Homing = franka_action.Grasp, franka_action.Homing
    grasp = ActionClient(node, Grasp, "/franka_gripper/grasp")
    homing = ActionClient(node, Homing, "/franka_gripper/homing")
    # The same seed in this process gives the node's episode: where the commanded block is.
    env = SimEnv("fr3", "pick_place")
    env.reset(SEED)
    block = env.task.block_position(env.model, env.data, env.layout.block)
    yaw = env.task.block_yaw(env.model, env.data, env.layout.block)
    env.close()
    goal = Grasp.Goal(width=0.04, speed=0.1, force=20.0)
    goal.epsilon.inner = goal.epsilon.outer = 0.005
    # In the air nothing stops the fingers: the grasp must fail.
    result = run_action(node, grasp, goal)
    assert not result.success and "outside" in result.error
    assert run_action(node, homing, Homing.Goal()).success
    spin_until(node, lambda: state["fingers"] is not None and sum(state["fingers"].position) > 0.075, 20,
               "open fingers after homing")
    rotation = (Rotation.from_euler("z", (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4) * TOP_DOWN).as_quat()
    move_to(node, state, target, block + [0, 0, 0.15], rotation)
    move_to(node, state, target, block + [0, 0, 0.004], rotation, tolerance=0.005)
    result = run_action(node, grasp, goal)
    assert result.success, result.error
    assert abs(sum(state["fingers"].position) - 0.04) < 0.005
    # Lift: the block stays between the fingers (they do not close further).
    move_to(node, state, target, block + [0, 0, 0.2], rotation)
    rclpy.spin_once(node, timeout_sec=0.1)
    assert abs(sum(state["fingers"].position) - 0.04) < 0.005


def test_a_new_gripper_goal_preempts_the_running_one(lab):
    node, state, _, _ = lab
    Move = franka_action.Move
    move = ActionClient(node, Move, "/franka_gripper/move")
    spin_until(node, lambda: move.wait_for_server(timeout_sec=0.0), 30, "action server move")
    # Open first: after a grasp the fingers' setpoint is already at 0 (the block stops the fingers at 4 cm), and a
    # goal to 0 would end at once with nothing left to preempt.
    assert run_action(node, move, Move.Goal(width=0.08, speed=0.1)).success
    # The newer goal goes out right behind the slow one (the server takes one client's requests in order).
    slow = move.send_goal_async(Move.Goal(width=0.0, speed=0.005))  # 16 s to close at 5 mm/s
    newer = move.send_goal_async(Move.Goal(width=0.07, speed=0.1))
    spin_until(node, lambda: slow.done() and newer.done(), 30, "acceptance of both goals")
    assert slow.result().accepted and newer.result().accepted
    slow_result, newer_result = slow.result().get_result_async(), newer.result().get_result_async()
    spin_until(node, lambda: slow_result.done() and newer_result.done(), 30, "both goals' ends")
    fast = newer_result.result().result
    assert fast.success, fast.error
    assert not slow_result.result().result.success and "preempted" in slow_result.result().result.error
    assert abs(sum(state["fingers"].position) - 0.07) < 0.005  # the fingers followed the newer goal


def test_a_canceled_gripper_goal_stops_the_fingers(lab):
    node, state, _, _ = lab
    Move = franka_action.Move
    move = ActionClient(node, Move, "/franka_gripper/move")
    spin_until(node, lambda: move.wait_for_server(timeout_sec=0.0), 30, "action server move")
    assert run_action(node, move, Move.Goal(width=0.08, speed=0.1)).success
    slow = move.send_goal_async(Move.Goal(width=0.0, speed=0.01))  # 8 s to close at 1 cm/s
    spin_until(node, slow.done, 30, "acceptance of the slow goal")
    result = slow.result().get_result_async()
    spin_until(node, lambda: sum(state["fingers"].position) < 0.075, 10, "the fingers closing")
    cancel = slow.result().cancel_goal_async()
    spin_until(node, lambda: cancel.done() and result.done(), 10, "the canceled goal's end")
    assert result.result().status == GoalStatus.STATUS_CANCELED and result.result().result.error == "canceled"
    stopped = sum(state["fingers"].position)
    later = time.monotonic() + 0.5
    while time.monotonic() < later:
        rclpy.spin_once(node, timeout_sec=0.05)
    assert 0.03 < stopped < 0.075 and abs(sum(state["fingers"].position) - stopped) < 0.003  # half a second on


def test_reset_service_starts_the_next_seed_and_ends_a_running_gripper_goal(lab):
    node, _, _, _ = lab
    Move = franka_action.Move
    move = ActionClient(node, Move, "/franka_gripper/move")
    spin_until(node, lambda: move.wait_for_server(timeout_sec=0.0), 30, "action server move")
    slow = move.send_goal_async(Move.Goal(width=0.0, speed=0.005))  # 16 s to close at 5 mm/s
    spin_until(node, slow.done, 30, "acceptance of the slow goal")
    slow_result = slow.result().get_result_async()
    client = node.create_client(Trigger, "/sim_lab/reset")
    spin_until(node, lambda: client.wait_for_service(timeout_sec=0.0), 20, "the ~/reset service")
    future = client.call_async(Trigger.Request())
    spin_until(node, future.done, 20, "the reset response")
    env = SimEnv("fr3", "pick_place")
    expected = env.reset(SEED + 1)
    env.close()
    assert future.result().success and future.result().message == f"seed {SEED + 1}: {expected}"
    # The last episode's gripper goal does not run on into the new one (nor report the reopened fingers).
    spin_until(node, slow_result.done, 10, "the slow goal's end")
    assert not slow_result.result().result.success and "reset" in slow_result.result().result.error


def test_seed_parameter_chooses_the_next_reset(lab):
    node, _, _, _ = lab
    params = node.create_client(SetParameters, "/sim_lab/set_parameters")
    reset = node.create_client(Trigger, "/sim_lab/reset")
    spin_until(node, lambda: params.wait_for_service(timeout_sec=0.0), 20, "the set_parameters service")

    def set_seed(value):
        request = SetParameters.Request(parameters=[Parameter("seed", value=value).to_parameter_msg()])
        future = params.call_async(request)
        spin_until(node, future.done, 20, "the set_parameters response")
        return future.result().results[0].successful

    assert not set_seed(-1)
    assert set_seed(100_042)
    future = reset.call_async(Trigger.Request())
    spin_until(node, future.done, 20, "the reset response")
    env = SimEnv("fr3", "pick_place")
    expected = env.reset(100_042)
    env.close()
    assert future.result().message == f"seed 100042: {expected}"


def test_bad_parameter_stops_the_node_with_one_line():
    proc = subprocess.run(NODE + ["-p", "camera_rate_hz:=-5.0"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and "camera_rate_hz" in lines[0], lines


def test_agilex_node_speaks_piper_ros_per_arm():
    """The dual-arm lab: /left/joint_ctrl_single moves the left arm and its gripper (read back on
    /left/joint_states_single); the right arm holds; three cameras are published. Started as the launch files
    start it (use_sim_time:=true), it keeps wall time itself, and it stops cleanly on SIGTERM."""
    cmd = [sys.executable, "-m", "hybridvla_ros.sim_lab_node", "--ros-args", "-r", "__node:=sim_lab", "--params-file",
           str(resource_path("config", "sim_agilex.yaml")), "-p", "camera_width:=64", "-p", "camera_height:=48",
           "-p", "use_sim_time:=true"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("sim_lab_agilex_test", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    states, images = {}, set()
    for arm in ("left", "right"):
        node.create_subscription(JointState, f"/{arm}/joint_states_single",
                                 lambda m, arm=arm: states.__setitem__(arm, m), SENSOR_QOS)
    for view in ("high", "left_wrist", "right_wrist"):
        node.create_subscription(Image, f"/camera/{view}/color/image_raw", lambda m, view=view: images.add(view),
                                 SENSOR_QOS)
    ctrl = node.create_publisher(JointState, "/left/joint_ctrl_single", COMMAND_QOS)
    enable = node.create_publisher(Bool, "/left/enable_flag", COMMAND_QOS)

    def wait(condition, what, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            assert proc.poll() is None, proc.stdout.read().decode()
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            executor.spin_once(timeout_sec=0.05)

    try:
        wait(lambda: len(states) == 2 and len(images) == 3, "joint_states_single of both arms and three cameras")
        assert list(states["left"].name) == PIPER_ROS_JOINT_STATE_NAMES  # as piper_ros (humble) names them
        names = node.get_node_names_and_namespaces()  # as launched (-r __node:=sim_lab): not renamed with it
        assert ("piper_ctrl_single_node", "/left") in names and ("piper_ctrl_single_node", "/right") in names, names
        right_before = np.array(states["right"].position)
        goal = [0.3, 1.0, -1.0, 0.2, 0.5, -0.4, 0.05]  # 6 joints rad + gripper width m
        left_before = np.array(states["left"].position)
        ctrl.publish(JointState(position=goal))  # as piper_ros: ignored before enable_flag true
        for _ in range(20):
            executor.spin_once(timeout_sec=0.05)
        np.testing.assert_allclose(states["left"].position, left_before, atol=0.01)
        wait(lambda: enable.get_subscription_count() > 0, "the simulated piper_ros enable_flag subscription")
        enable.publish(Bool(data=True))
        for _ in range(5):
            executor.spin_once(timeout_sec=0.05)
        ctrl.publish(JointState(position=goal))
        wait(lambda: np.abs(np.array(states["left"].position) - goal).max() < 0.01, "the left arm at its target")
        np.testing.assert_allclose(states["right"].position, right_before, atol=0.01)

        # As piper_ros: the speed is velocity[6] [% of 3 rad/s], 30 % without it (test/vendor_interfaces.py).
        def seconds_to_swing(target, velocity):  # simulated seconds for joint 1 to reach target
            ctrl.publish(JointState(position=[target, *goal[1:]], velocity=velocity))
            start = Time.from_msg(states["left"].header.stamp).nanoseconds
            wait(lambda: abs(states["left"].position[0] - target) < 0.02, f"joint 1 at {target}")
            return (Time.from_msg(states["left"].header.stamp).nanoseconds - start) / 1e9
        slow = seconds_to_swing(-0.9, [])
        fast = seconds_to_swing(0.3, [0.0] * 6 + [100.0])
        assert piper_ros_humble_speed_and_effort([], [])[0] == 30
        assert slow > 1.2 / (0.3 * 3.0) and fast < slow / 2, (slow, fast)  # 1.2 rad at <= 0.9 rad/s, then 3
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        proc.terminate()
        proc.wait(10)
    log = proc.stdout.read().decode()
    assert proc.returncode == 0 and "Traceback" not in log, log
    assert "use_sim_time ignored" in log, log
