"""HybridVLA on the simulated FR3: sim_lab (physics, rendered front/wrist views, /clock), the same guarded
franka_bridge as on the robot, and the policy, all on simulation time.

  ros2 launch hybridvla_ros sim_franka.launch.py checkpoint:=/path/to/ckpt instruction:="put the red block in the blue bowl"
      [config:=/path/to/config]   # the views come from sim_lab (use_our_cameras:=true is refused)
"""
from hybridvla_ros.launching import launch_description

CAMERAS = "cameras_franka.yaml"
POLICY = "policy_franka.yaml"
ROBOT = [("sim_lab", "sim_franka.yaml"), ("franka_bridge", "franka.yaml")]  # (executable, parameter file)
# The simulated cameras render at 15 Hz (sim_franka.yaml camera_rate_hz): a 0.1 s image age limit would
# refuse frames between renders.
POLICY_OVERRIDES = {"max_image_age_s": 0.25}


def generate_launch_description():
    return launch_description(cameras=CAMERAS, policy=POLICY, robot=ROBOT, sim=True, cameras_by_default=False,
                              policy_overrides=POLICY_OVERRIDES)
