"""Configuration of the simulated lab: one schema for the sim_lab node (ROS parameters) and for
`hybridvla sim run-experts` (which reads the same parameter files, config/sim_franka.yaml and
config/sim_agilex.yaml), so that topic names, rates and image sizes live in one place.

Topic patterns may contain {arm} (fr3, left, right) and {camera} (front, wrist, overhead, ...).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hybridvla_core.resources import resource_path

ROBOT_TASKS = {"fr3": ("pick_place",), "agilex": ("lift_ball",)}
DEFAULT_CONFIG = {"fr3": "sim_franka.yaml", "agilex": "sim_agilex.yaml"}


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _topic(v) -> bool:
    return isinstance(v, str) and v.startswith("/") and " " not in v


# ROS parameter name -> (default, check, what a valid value is). Nested YAML keys become dotted names.
PARAMETERS: dict[str, tuple[Any, Any, str]] = {
    "robot": ("fr3", lambda v: v in ROBOT_TASKS, f"one of {', '.join(ROBOT_TASKS)}"),
    "task": ("pick_place", lambda v: any(v in t for t in ROBOT_TASKS.values()),
             "a task of the robot: " + "; ".join(f"{r}: {', '.join(t)}" for r, t in ROBOT_TASKS.items())),
    "seed": (0, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "realtime": (True, lambda v: isinstance(v, bool), "true or false"),
    "physics_rate_hz": (500.0, _positive, "a rate in Hz > 0"),
    "controller_rate_hz": (50.0, _positive, "a rate in Hz > 0, at most physics_rate_hz"),
    "control_rate_hz": (10.0, _positive, "a rate in Hz > 0"),
    "state_rate_hz": (50.0, _positive, "a rate in Hz > 0"),
    "camera_rate_hz": (15.0, _positive, "a rate in Hz > 0"),
    "camera_width": (320, lambda v: isinstance(v, int) and 16 <= v <= 4096, "pixels, 16..4096"),
    "camera_height": (240, lambda v: isinstance(v, int) and 16 <= v <= 4096, "pixels, 16..4096"),
    "max_linear_speed": (0.5, _positive, "m/s > 0"),
    "max_angular_speed": (1.5, _positive, "rad/s > 0"),
    "gripper_speed": (0.1, _positive, "m/s > 0"),
    "episode_timeout_s": (30.0, _positive, "seconds > 0"),
    "publish_arm_state": (False, lambda v: isinstance(v, bool), "true or false"),
    "topics.target_pose": ("/target_pose", _topic, "an absolute topic name"),
    "topics.current_pose": ("/current_pose", _topic, "an absolute topic name"),
    "topics.joint_states": ("/joint_states", _topic, "an absolute topic name"),
    "topics.gripper_ns": ("/franka_gripper", _topic, "an absolute namespace"),
    "topics.joint_ctrl": ("/{arm}/joint_ctrl_single", _topic, "an absolute topic name pattern with {arm}"),
    "topics.arm_joint_states": ("/{arm}/joint_states_single", _topic, "an absolute topic name pattern with {arm}"),
    "topics.arm_state": ("/hybridvla/{arm}/arm_state", _topic, "an absolute topic name pattern with {arm}"),
    "topics.arm_target": ("/hybridvla/{arm}/target", _topic, "an absolute topic name pattern with {arm}"),
    "topics.episode_events": ("/hybridvla/episode_events", _topic, "an absolute topic name"),
    "topics.camera_image": ("/camera/{camera}/color/image_raw", _topic, "an absolute topic pattern with {camera}"),
    "topics.camera_info": ("/camera/{camera}/color/camera_info", _topic, "an absolute topic pattern with {camera}"),
}


@dataclass(frozen=True)
class SimConfig:
    """Validated settings; attribute names are the parameter names with '.' replaced by '_'."""
    robot: str
    task: str
    seed: int
    realtime: bool
    physics_rate_hz: float
    controller_rate_hz: float
    control_rate_hz: float
    state_rate_hz: float
    camera_rate_hz: float
    camera_width: int
    camera_height: int
    max_linear_speed: float
    max_angular_speed: float
    gripper_speed: float
    episode_timeout_s: float
    publish_arm_state: bool
    topics_target_pose: str
    topics_current_pose: str
    topics_joint_states: str
    topics_gripper_ns: str
    topics_joint_ctrl: str
    topics_arm_joint_states: str
    topics_arm_state: str
    topics_arm_target: str
    topics_episode_events: str
    topics_camera_image: str
    topics_camera_info: str

    def env_kwargs(self) -> dict[str, Any]:
        """Arguments of SimEnv."""
        return dict(robot=self.robot, task=self.task, physics_rate_hz=self.physics_rate_hz,
                    controller_rate_hz=self.controller_rate_hz, image_width=self.camera_width,
                    image_height=self.camera_height, max_linear_speed=self.max_linear_speed,
                    max_angular_speed=self.max_angular_speed, gripper_speed=self.gripper_speed)

    def arm_topic(self, pattern: str, arm: str) -> str:
        return pattern.format(arm=arm)

    def camera_topic(self, pattern: str, camera: str) -> str:
        return pattern.format(camera=camera)


def config_from_parameters(values: dict[str, Any]) -> SimConfig:
    """Validate parameter values (name -> value; missing ones take their defaults) into a SimConfig.
    Raises ValueError with one line naming the bad field."""
    unknown = sorted(set(values) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter '{unknown[0]}'; known: {', '.join(PARAMETERS)}")
    merged = {}
    for name, (default, check, expected) in PARAMETERS.items():
        value = values.get(name, default)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not check(value):
            raise ValueError(f"parameter '{name}' = {value!r} is invalid: expected {expected}")
        merged[name.replace(".", "_")] = value
    cfg = SimConfig(**merged)
    if cfg.task not in ROBOT_TASKS[cfg.robot]:
        raise ValueError(f"parameter 'task' = {cfg.task!r} is invalid: robot {cfg.robot} has {', '.join(ROBOT_TASKS[cfg.robot])}")
    if cfg.controller_rate_hz > cfg.physics_rate_hz:
        raise ValueError(f"parameter 'controller_rate_hz' = {cfg.controller_rate_hz} is invalid: "
                         f"expected at most physics_rate_hz ({cfg.physics_rate_hz})")
    return cfg


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_config(path: str | Path | None = None, robot: str = "fr3") -> SimConfig:
    """Read a ROS 2 parameter file (node section 'sim_lab' or '/**'); None = the shipped file of `robot`."""
    path = Path(path) if path is not None else resource_path("config", DEFAULT_CONFIG[robot])
    doc = yaml.safe_load(path.read_text()) or {}
    section = next((doc[k] for k in ("sim_lab", "/sim_lab", "/**") if k in doc), None)
    if section is None or "ros__parameters" not in section:
        raise ValueError(f"{path}: no 'sim_lab: ros__parameters:' section")
    return config_from_parameters(_flatten(section["ros__parameters"]))

