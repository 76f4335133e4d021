"""Configuration of the simulated lab: one schema for the sim_lab node (ROS parameters) and for
`hybridvla sim run-experts` (which reads the same parameter files, config/sim_franka.yaml and
config/sim_agilex.yaml), so that topic names, rates and image sizes live in one place.

Topic patterns may contain {arm} (fr3, left, right) and {camera} (front, wrist, high, ...).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridvla_core.files import read_yaml
from hybridvla_core.resources import resource_path

ROBOT_TASKS = {"fr3": ("pick_place",), "agilex": ("lift_ball",)}
DEFAULT_CONFIG = {"fr3": "sim_franka.yaml", "agilex": "sim_agilex.yaml"}


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _non_negative(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _topic(v) -> bool:
    return isinstance(v, str) and v.startswith("/") and " " not in v


def _pattern(field: str):
    """An absolute topic name holding the placeholder {field}."""
    return lambda v: _topic(v) and "{" + field + "}" in v


# ROS parameter name -> (check, what a valid value is). Nested YAML keys become dotted names. The defaults
# are the values of the shipped config/sim_franka.yaml (parameter_spec), so every name and rate is written once.
SCHEMA: dict[str, tuple[Any, str]] = {
    "robot": (lambda v: v in ROBOT_TASKS, f"one of {', '.join(ROBOT_TASKS)}"),
    "task": (lambda v: any(v in t for t in ROBOT_TASKS.values()),
             "a task of the robot: " + "; ".join(f"{r}: {', '.join(t)}" for r, t in ROBOT_TASKS.items())),
    "seed": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "realtime": (lambda v: isinstance(v, bool), "true or false"),
    "physics_rate_hz": (_positive, "a rate in Hz > 0"),
    "controller_rate_hz": (_positive, "a rate in Hz > 0, at most physics_rate_hz"),
    "control_rate_hz": (_positive, "a rate in Hz > 0"),
    "state_rate_hz": (_positive, "a rate in Hz > 0"),
    "camera_rate_hz": (_positive, "a rate in Hz > 0"),
    "camera_width": (lambda v: isinstance(v, int) and 16 <= v <= 4096, "pixels, 16..4096"),
    "camera_height": (lambda v: isinstance(v, int) and 16 <= v <= 4096, "pixels, 16..4096"),
    "max_linear_speed": (_positive, "m/s > 0"),
    "max_angular_speed": (_positive, "rad/s > 0"),
    "gripper_speed": (_positive, "m/s > 0"),
    "episode_timeout_s": (_positive, "seconds > 0"),
    "publish_arm_state": (lambda v: isinstance(v, bool), "true or false"),
    "start_jitter.x_m": (_non_negative, "m >= 0"),
    "start_jitter.y_m": (_non_negative, "m >= 0"),
    "start_jitter.z_m": (_non_negative, "m >= 0"),
    "start_jitter.yaw_rad": (_non_negative, "rad >= 0"),
    "base_frame": (lambda v: isinstance(v, str) and v != "" and " " not in v, "a frame name"),
    "topics.target_pose": (_topic, "an absolute topic name"),
    "topics.current_pose": (_topic, "an absolute topic name"),
    "topics.joint_states": (_topic, "an absolute topic name"),
    "topics.gripper_ns": (_topic, "an absolute namespace"),
    "topics.joint_ctrl": (_pattern("arm"), "an absolute topic name pattern with {arm}"),
    "topics.arm_joint_states": (_pattern("arm"), "an absolute topic name pattern with {arm}"),
    "topics.enable_flag": (_pattern("arm"), "an absolute topic name pattern with {arm}"),
    "topics.arm_state": (_pattern("arm"), "an absolute topic name pattern with {arm}"),
    "topics.arm_target": (_pattern("arm"), "an absolute topic name pattern with {arm}"),
    "topics.episode_events": (_topic, "an absolute topic name"),
    "topics.camera_image": (_pattern("camera"), "an absolute topic pattern with {camera}"),
    "topics.camera_info": (_pattern("camera"), "an absolute topic pattern with {camera}"),
    "topics.privileged": (_topic, "an absolute topic name"),
}



@functools.lru_cache(maxsize=None)
def parameter_spec() -> dict[str, tuple[Any, Any, str]]:
    """name -> (default, check, expected) for hybridvla_ros.common.declare_parameters; defaults from the
    shipped config/sim_franka.yaml."""
    defaults = _read_parameters(resource_path("config", DEFAULT_CONFIG["fr3"]))
    missing = sorted(set(SCHEMA) - set(defaults))
    if missing:
        raise ValueError(f"config/{DEFAULT_CONFIG['fr3']} lacks parameter '{missing[0]}'")
    return {name: (defaults[name], check, expected) for name, (check, expected) in SCHEMA.items()}


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
    start_jitter_x_m: float
    start_jitter_y_m: float
    start_jitter_z_m: float
    start_jitter_yaw_rad: float
    base_frame: str
    topics_target_pose: str
    topics_current_pose: str
    topics_joint_states: str
    topics_gripper_ns: str
    topics_joint_ctrl: str
    topics_arm_joint_states: str
    topics_enable_flag: str
    topics_arm_state: str
    topics_arm_target: str
    topics_episode_events: str
    topics_camera_image: str
    topics_camera_info: str
    topics_privileged: str

    def env_kwargs(self) -> dict[str, Any]:
        """Arguments of SimEnv."""
        return dict(robot=self.robot, task=self.task, physics_rate_hz=self.physics_rate_hz,
                    controller_rate_hz=self.controller_rate_hz, image_width=self.camera_width,
                    image_height=self.camera_height, max_linear_speed=self.max_linear_speed,
                    max_angular_speed=self.max_angular_speed, gripper_speed=self.gripper_speed,
                    start_jitter=(self.start_jitter_x_m, self.start_jitter_y_m, self.start_jitter_z_m,
                                  self.start_jitter_yaw_rad))

    def arm_topic(self, pattern: str, arm: str) -> str:
        return pattern.format(arm=arm)

    def camera_topic(self, pattern: str, camera: str) -> str:
        return pattern.format(camera=camera)


def config_from_parameters(values: dict[str, Any]) -> SimConfig:
    """Validate parameter values (name -> value; missing ones take their defaults) into a SimConfig.
    Raises ValueError with one line naming the bad field."""
    unknown = sorted(set(values) - set(SCHEMA))
    if unknown:
        raise ValueError(f"unknown parameter '{unknown[0]}'; known: {', '.join(SCHEMA)}")
    merged = {}
    for name, (default, check, expected) in parameter_spec().items():
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


def _read_parameters(path: Path) -> dict[str, Any]:
    """The flattened ros__parameters of a ROS 2 parameter file (node section 'sim_lab' or '/**')."""
    doc = read_yaml(path) or {}
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a ROS 2 parameter file (sim_lab: ros__parameters: ...)")
    section = next((doc[k] for k in ("sim_lab", "/sim_lab", "/**") if k in doc), None)
    if section is None or "ros__parameters" not in section:
        raise ValueError(f"{path}: no 'sim_lab: ros__parameters:' section")
    return _flatten(section["ros__parameters"])


def load_config(path: str | Path | None = None, robot: str = "fr3") -> SimConfig:
    """Read and validate a parameter file; None = the shipped file of `robot`."""
    path = Path(path) if path is not None else resource_path("config", DEFAULT_CONFIG[robot])
    return config_from_parameters(_read_parameters(path))


def fr3_pick_place_config(path: str | Path | None = None, command: str = "this command") -> SimConfig:
    """The sim config of a command that runs the FR3 pick_place scene (the demo's); ValueError in one line when
    the file configures another robot or task."""
    cfg = load_config(path, robot="fr3")
    if cfg.robot != "fr3" or cfg.task != "pick_place":
        raise ValueError(f"{command} runs the FR3 pick_place scene; the sim config says {cfg.robot}/{cfg.task}")
    return cfg
