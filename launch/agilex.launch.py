"""HybridVLA on the AgileX dual-arm Piper: cameras, the policy and the guarded agilex_bridge (both arms).

  ros2 launch hybridvla_ros agilex.launch.py checkpoint:=/path/to/ckpt instruction:="fold the towel"
      [config:=/path/to/config] [use_our_cameras:=false]   # false: OrbbecSDK_ROS2 / realsense-ros publish the views
The policy starts disabled: ros2 service call /policy/enable std_srvs/srv/SetBool "{data: true}"
"""
from hybridvla_ros.launching import launch_description

CAMERAS = "cameras_agilex.yaml"
POLICY = "policy_agilex.yaml"
ROBOT = [("agilex_bridge", "agilex.yaml")]  # (executable, parameter file)


def generate_launch_description():
    return launch_description(cameras=CAMERAS, policy=POLICY, robot=ROBOT, sim=False, cameras_by_default=True)
