"""franka_bridge's ~/enable runs the bring-up checks before it moves anything: over DDS, one bridge process with
config/franka.yaml against a graph this test assembles piece by piece, as a lab bringing up franka_ros2 + crisp
for the first time would. Each refusal is one line that names what is wrong and what to change:
  - current_pose stamped fr3_link0 (franka_ros2's own broadcaster) while the bridge expects crisp's `base`;
  - no controller subscribed to /target_pose; a second publisher on it (crisp then drops every target);
  - the controller subscribed but inactive, as crisp's launch spawns it (and the bridge holds when an enabled
    controller is switched off);
  - the gripper at /fr3_gripper (franka_ros2 < 2.0) while the bridge looks at /franka_gripper (>= 2.0).
Expected names come from the vendors' code (test/vendor_interfaces.py)."""

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("hybridvla_msgs.msg")
pytest.importorskip("controller_manager_msgs.srv", reason="controller_manager_msgs stand-in not built: run make setup")
franka_action = pytest.importorskip("franka_msgs.action", reason="franka_msgs stand-in not built: run make setup")

from geometry_msgs.msg import PoseStamped  # noqa: E402
from hybridvla_msgs.msg import ArmState  # noqa: E402
from rclpy.action import ActionServer  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from hybridvla_core.runtime.kinematics import load_arm  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, arrays_to_pose  # noqa: E402
from rosnodes import ROOT, Process, Spinner, serve_list_controllers, wait_for  # noqa: E402
from vendor_interfaces import (CRISP_CARTESIAN_CONTROLLER, CRISP_CONTROLLER_MANAGER,  # noqa: E402
                               CRISP_CURRENT_POSE_TOPIC, CRISP_FR3_BASE_FRAME, CRISP_FR3_CONTROLLERS_AS_LAUNCHED,
                               CRISP_JOINT_STATES_TOPIC, CRISP_TARGET_POSE_TOPIC, FRANKA_GRIPPER_NS_BEFORE_2_0,
                               FRANKA_GRIPPER_NS_FROM_2_0)

pytestmark = pytest.mark.ros
READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
# franka_ros2's franka_robot_state_broadcaster stamps its poses with the URDF's base link (franka_semantic_components
# franka_robot_state.cpp: link_names[kBaseLinkIndex]) = fr3_link0: the frame a lab pointing the bridge at it sees.
FRANKA_ROS2_BASE_LINK = "fr3_link0"


class ArmStatePublisher(Node):
    """current_pose and joint_states at 100 Hz, current_pose stamped with `frame` (changeable)."""

    def __init__(self, context):
        super().__init__("fake_fr3_state", context=context)
        self.frame = FRANKA_ROS2_BASE_LINK
        position, quaternion = load_arm("fr3").fk(READY)
        self.pose = arrays_to_pose(position, quaternion)
        self.pose_pub = self.create_publisher(PoseStamped, CRISP_CURRENT_POSE_TOPIC, COMMAND_QOS)
        self.joint_pub = self.create_publisher(JointState, CRISP_JOINT_STATES_TOPIC, COMMAND_QOS)
        self.create_timer(0.01, self.publish)

    def publish(self):
        stamp = self.get_clock().now().to_msg()
        pose = PoseStamped(pose=self.pose)
        pose.header.stamp, pose.header.frame_id = stamp, self.frame
        self.pose_pub.publish(pose)
        js = JointState(name=[f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"],
                        position=[float(v) for v in READY] + [0.02, 0.02])
        js.header.stamp = stamp
        self.joint_pub.publish(js)


class Controller(Node):
    """crisp's cartesian_impedance_controller as the graph sees it: a reliable depth-1 target_pose subscription."""

    def __init__(self, context):
        super().__init__("cartesian_impedance_controller", context=context)
        self.targets = []
        self.create_subscription(PoseStamped, CRISP_TARGET_POSE_TOPIC, self.targets.append, COMMAND_QOS)


class Gripper(Node):
    """franka_gripper's grasp and move action servers under `namespace`."""

    def __init__(self, context, namespace):
        super().__init__("gripper_" + namespace.strip("/"), context=context)
        for kind, action in (("grasp", franka_action.Grasp), ("move", franka_action.Move)):
            ActionServer(self, action, f"{namespace}/{kind}", lambda h, action=action: (h.succeed(), action.Result(success=True))[1])


def enable(spinner, client):
    """The refusals are the subject here: a peer left out on purpose must not be waited for."""
    return spinner.enable(client, "/franka_bridge/enable", timeout=20, all_served=False)


def test_enable_names_each_bring_up_mistake_in_one_line(tmp_path):
    spinner = Spinner()
    state = spinner.add(ArmStatePublisher(spinner.context))
    client = spinner.add(Node("bringup_client", context=spinner.context))
    states = []
    client.create_subscription(ArmState, "/hybridvla/fr3/arm_state", states.append, COMMAND_QOS)
    spinner.start()
    bridge = Process("hybridvla_ros.franka_bridge_node", ROOT / "config/franka.yaml", log=tmp_path / "bridge.log")
    try:
        # The bridge's default frame is crisp's; current_pose arrives in franka_ros2's fr3_link0.
        response = wait_for(lambda: (r := enable(spinner, client)) and "frame" in r.message and r, timeout=30)
        assert response and not response.success, bridge.output()
        message = response.message
        assert "\n" not in message
        assert f"{CRISP_CURRENT_POSE_TOPIC} arrives in frame '{FRANKA_ROS2_BASE_LINK}'" in message, message
        assert f"frame_id is '{CRISP_FR3_BASE_FRAME}'" in message and "set parameter frame_id" in message, message
        assert not states, "a pose in an unexpected frame became the measured state"
        # The same line is logged; and nothing was enabled.
        assert f"'{FRANKA_ROS2_BASE_LINK}'" in bridge.output()

        # The publisher stamps crisp's frame now: the next failures are the controller and the gripper.
        state.frame = CRISP_FR3_BASE_FRAME
        assert wait_for(lambda: states, timeout=10), bridge.output()
        spinner.add(Gripper(spinner.context, FRANKA_GRIPPER_NS_BEFORE_2_0))
        response = wait_for(lambda: (r := enable(spinner, client)) and FRANKA_GRIPPER_NS_BEFORE_2_0 in r.message and r,
                            timeout=20)
        assert response and not response.success, bridge.output()
        message = response.message
        assert "frame" not in message, message
        assert f"subscriber {CRISP_TARGET_POSE_TOPIC}: nobody subscribes" in message, message
        assert f"action {FRANKA_GRIPPER_NS_FROM_2_0}/grasp: no action server" in message, message
        assert f"set gripper.action_ns to {FRANKA_GRIPPER_NS_BEFORE_2_0}" in message, message

        # The controller and the franka_ros2 >= 2.0 gripper come up; a second publisher on target_pose is refused.
        # The controller_manager lists the controllers as crisp's launch leaves them: cartesian_impedance_controller
        # configured (its target_pose subscriber exists) but inactive.
        controller = spinner.add(Controller(spinner.context))
        controllers = dict(CRISP_FR3_CONTROLLERS_AS_LAUNCHED)
        serve_list_controllers(spinner.add(Node("controller_manager", context=spinner.context)), controllers,
                               CRISP_CONTROLLER_MANAGER)
        spinner.add(Gripper(spinner.context, FRANKA_GRIPPER_NS_FROM_2_0))
        intruder = Node("teleop_script", context=spinner.context)
        intruder_pub = intruder.create_publisher(PoseStamped, CRISP_TARGET_POSE_TOPIC, COMMAND_QOS)
        response = wait_for(lambda: (r := enable(spinner, client)) and "also published by" in r.message and r, timeout=20)
        assert response and not response.success and "/teleop_script" in response.message, bridge.output()
        assert "subscriber" not in response.message and "action" not in response.message, response.message

        intruder.destroy_publisher(intruder_pub)
        intruder.destroy_node()
        # A subscriber on target_pose, but the controller is inactive: it would ignore every target.
        response = wait_for(lambda: (r := enable(spinner, client)) and "is inactive" in r.message and r, timeout=20)
        assert response and not response.success, bridge.output()
        message = response.message
        assert message.startswith(f"not enabled: controller {CRISP_CARTESIAN_CONTROLLER}: is inactive"), message
        assert f"switch_controllers --activate {CRISP_CARTESIAN_CONTROLLER}" in message and ";" not in message, message

        controllers.update({CRISP_CARTESIAN_CONTROLLER: "active", "joint_trajectory_controller": "inactive"})
        response = wait_for(lambda: (r := enable(spinner, client)) and r.success and r, timeout=20)
        assert response, bridge.output()
        # Enabled: it commands the controller from the measured pose.
        assert wait_for(lambda: controller.targets, timeout=10)
        assert controller.targets[-1].header.frame_id == CRISP_FR3_BASE_FRAME
        assert wait_for(lambda: states and states[-1].enabled, timeout=10)

        # The controller is switched off while the bridge is enabled: the bridge holds until enabled again.
        controllers[CRISP_CARTESIAN_CONTROLLER] = "inactive"
        assert wait_for(lambda: not states[-1].enabled, timeout=10), bridge.output()
        assert "controller cartesian_impedance_controller is inactive" in bridge.output()
    finally:
        bridge.stop()
        spinner.close()
