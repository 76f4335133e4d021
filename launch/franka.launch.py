"""HybridVLA on the Franka FR3: cameras, the policy and the guarded franka_bridge (franka_ros2 with a
Cartesian controller such as crisp_controllers must already run).

  ros2 launch hybridvla_ros franka.launch.py checkpoint:=/path/to/ckpt instruction:="put the red block in the bowl"
      [config:=/path/to/config] [use_our_cameras:=false]   # false: realsense-ros publishes the views
The policy starts disabled: ros2 service call /policy/enable std_srvs/srv/SetBool "{data: true}"
"""
from hybridvla_ros.launching import launch_description

CAMERAS = "cameras_franka.yaml"
POLICY = "policy_franka.yaml"
ROBOT = [("franka_bridge", "franka.yaml")]  # (executable, parameter file)


def generate_launch_description():
    return launch_description(cameras=CAMERAS, policy=POLICY, robot=ROBOT, sim=False, cameras_by_default=True)
