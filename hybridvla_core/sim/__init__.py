"""The simulated lab (MuJoCo): scenes built from urdf/, seeded tasks with success detectors, the robots'
controllers, rendering, scripted experts and the run-experts command. No ROS here; hybridvla_ros.sim_lab_node
puts the real robots' interfaces in front of it."""
import os

# Offscreen rendering without a display (CI, SSH, robot PCs): EGL, which also uses an NVIDIA GPU when there
# is one. Must be decided before mujoco is first imported; an explicit MUJOCO_GL wins.
if "MUJOCO_GL" not in os.environ and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    os.environ["MUJOCO_GL"] = "egl"
