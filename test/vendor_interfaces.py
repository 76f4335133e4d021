"""What the vendor stacks publish, subscribe and declare, as read in THEIR code (never in ours): the expected
values of the bring-up tests. Each constant names the file it was read from (repository, path, revision).
A test that compared our simulated lab or bridge with values taken from our own code would prove nothing."""

# utiasDSL/crisp_controllers_demos @ db5a36b, crisp_controllers_robot_demos/config/fr3/controllers.yaml:
#   pose_broadcaster / cartesian_impedance_controller: base_frame: base, end_effector_frame: fr3_hand_tcp
#   (config/fr3/fr3.urdf.xacro: franka_robot ... connected_to="base", i.e. fr3_link0 hangs from `base`, identity)
CRISP_FR3_BASE_FRAME = "base"
CRISP_FR3_END_EFFECTOR_FRAME = "fr3_hand_tcp"
# utiasDSL/crisp_controllers @ 8093548, src/pose_broadcaster.cpp: create_publisher("current_pose",
#   rclcpp::SystemDefaultsQoS()) (RELIABLE), header.frame_id = params_.base_frame; relative name, controllers
#   run in the controller_manager's (root) namespace in the demo launch.
CRISP_CURRENT_POSE_TOPIC = "/current_pose"
CRISP_CURRENT_POSE_RELIABLE = True
# src/cartesian_controller.cpp: create_subscription("target_pose", rclcpp::QoS(1), ...) (RELIABLE, depth 1), and
#   check_topic_publisher_count: messages are ignored while more than one publisher is on the topic.
CRISP_TARGET_POSE_TOPIC = "/target_pose"
# crisp_controllers_robot_demos/launch/franka.launch.py: joint_state_publisher source_list
#   [franka/joint_states, franka_gripper/joint_states], rate 1000 -> /joint_states.
CRISP_JOINT_STATES_TOPIC = "/joint_states"
CRISP_JOINT_STATES_RATE_HZ = 1000
# frankarobotics/franka_ros2, franka_gripper/launch/gripper.launch.py: v2.0.0 and later name the node
#   'franka_gripper' in the launch argument `namespace`; v0.1.x .. v1.1.0 name it [arm_id, '_gripper'].
#   franka_gripper/src/gripper_action_server.cpp: actions ~/homing, ~/move, ~/grasp, ~/gripper_action.
FRANKA_GRIPPER_NS_FROM_2_0 = "/franka_gripper"
FRANKA_GRIPPER_NS_BEFORE_2_0 = "/fr3_gripper"  # arm_id fr3
FRANKA_GRIPPER_ACTIONS = {"grasp": "franka_msgs/action/Grasp", "move": "franka_msgs/action/Move",
                          "homing": "franka_msgs/action/Homing"}

# crisp_controllers_robot_demos/launch/franka.launch.py: ros2_control_node (node controller_manager, root namespace)
#   and spawners joint_state_broadcaster, joint_trajectory_controller, pose_broadcaster, external_torques_broadcaster
#   (active) and cartesian_impedance_controller, joint_impedance_controller, torque_feedback_controller,
#   gravity_compensation (`--inactive`). crisp_controllers @ 8093548, src/cartesian_controller.cpp: target_pose,
#   target_joint and target_wrench are subscribed in on_configure, i.e. also while the controller is inactive.
# ros-controls/ros2_control @ 53b9999, controller_manager_msgs/srv/ListControllers.srv, msg/ControllerState.msg:
#   <controller_manager>/list_controllers returns ControllerState[] controller; state is one of unconfigured,
#   inactive, active, finalized.
CRISP_CONTROLLER_MANAGER = "/controller_manager"
CRISP_FR3_CONTROLLERS_AS_LAUNCHED = {
    "joint_state_broadcaster": "active", "joint_trajectory_controller": "active", "pose_broadcaster": "active",
    "external_torques_broadcaster": "active", "cartesian_impedance_controller": "inactive",
    "joint_impedance_controller": "inactive", "torque_feedback_controller": "inactive",
    "gravity_compensation": "inactive"}
CRISP_CARTESIAN_CONTROLLER = "cartesian_impedance_controller"

# agilexrobotics/Piper_ros, branch ros-humble-no-aloha @ 8e5a686, src/piper/piper/piper_ctrl_single_node.py:
#   declare_parameter: can_port, auto_enable, girpper_exist (sic), rviz_ctrl_flag (no gripper_val_mutiple);
#   publishes joint_states_single (depth 10, reliable) with names joint0..joint6 at 200 Hz, position[6] the
#   gripper in m; subscribes joint_ctrl_single, enable_flag (std_msgs/Bool), pos_cmd; service enable_srv.
PIPER_ROS_HUMBLE_PARAMETERS = ("can_port", "auto_enable", "girpper_exist", "rviz_ctrl_flag")
PIPER_ROS_JOINT_STATE_NAMES = [f"joint{i}" for i in range(7)]
PIPER_ROS_FEEDBACK_RATE_HZ = 200


def piper_ros_humble_speed_and_effort(velocity, effort) -> tuple[int, int]:
    """What piper_ctrl_single_node (humble branch, joint_callback) makes of a joint_ctrl_single's velocity and
    effort: (MotionCtrl_2 speed [%], GripperCtrl effort [0.001 N*m]). Transcribed from upstream: the speed is
    round(velocity[6]) clamped to 0..100 when velocity has 7 values not all zero, else 30; the effort is effort[6]
    clamped to 0.5..3, times 1000, when effort has 7 values, else 1000."""
    speed = 30
    if len(velocity) == 7 and not all(v == 0 for v in velocity):
        speed = min(max(round(velocity[6]), 0), 100)
    grip = round(min(max(effort[6], 0.5), 3) * 1000) if len(effort) == 7 else 1000
    return speed, grip

# piper_sdk 0.6 (agilexrobotics/piper_sdk), piper_sdk/interface/piper_interface_v2.py: EnablePiper() returns the
#   six driver_enable_status bits read BEFORE it sends EnableArm(7); GetArmEnableStatus() reads them from the
#   low-speed feedback (GetArmLowSpdInfoMsgs().motor_1..motor_6.foc_status.driver_enable_status).
PIPER_MOTORS = 6
