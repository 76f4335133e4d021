"""HybridVLA on the simulated AgileX dual-arm: sim_lab (physics, rendered views, /clock), the same guarded
agilex_bridge as on the robot, and the policy, all on simulation time.

  ros2 launch hybridvla_ros sim_agilex.launch.py checkpoint:=/path/to/ckpt instruction:="hand the block over"
      [config:=/path/to/config]   # the views come from sim_lab (use_our_cameras:=true is refused)
"""
from hybridvla_ros.launching import launch_description

CAMERAS = "cameras_agilex.yaml"
POLICY = "policy_agilex.yaml"
ROBOT = [("sim_lab", "sim_agilex.yaml"), ("agilex_bridge", "agilex.yaml")]  # (executable, parameter file)
# The simulated cameras render slower than real ones: a 0.1 s image age limit would refuse frames between renders.
POLICY_OVERRIDES = {"max_image_age_s": 0.25}


def generate_launch_description():
    return launch_description(cameras=CAMERAS, policy=POLICY, robot=ROBOT, sim=True, cameras_by_default=False,
                              policy_overrides=POLICY_OVERRIDES)
