"""What the arm bridge nodes decide without ROS: their parameters (guards; franka_bridge's) and the Franka gripper
commands.

Guard parameters of one arm live under a prefix (franka_bridge: "guards.", agilex_bridge: "guards.<arm>.") and
map one to one onto GuardConfig fields; units as in GuardConfig (m, rad, s; gripper dimensionless 0..1).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from hybridvla_core.errors import UserError
from hybridvla_core.runtime.guards import UPPER_LIMITS, GuardConfig
from hybridvla_core.runtime.kinematics import ARMS


def _finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _box(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_finite_number(x) for x in v)


# field -> (default, check, what a valid value is); the defaults suit a tabletop arm at policy rate (10 Hz).
GUARD_PARAMETERS: dict[str, tuple[Any, Any, str]] = {
    "workspace_min": ([0.25, -0.45, 0.02], _box, "3 finite numbers [m], TCP box corner in the base frame"),
    "workspace_max": ([0.75, 0.45, 0.75], _box, "3 finite numbers [m], TCP box corner in the base frame"),
    "max_translation_step": (0.03, lambda v: _finite_number(v) and 0 < v <= UPPER_LIMITS["max_translation_step"][0],
                             f"0 < step <= {UPPER_LIMITS['max_translation_step'][0]} [m per command]"),
    "max_rotation_step": (0.15, lambda v: _finite_number(v) and 0 < v <= UPPER_LIMITS["max_rotation_step"][0],
                          f"0 < step <= {UPPER_LIMITS['max_rotation_step'][0]} [rad per command]"),
    "joint_margin": (0.05, lambda v: _finite_number(v) and 0 <= v < 0.5, "0 <= margin < 0.5 [rad]"),
    "max_joint_step": (0.5, lambda v: _finite_number(v) and 0 < v <= UPPER_LIMITS["max_joint_step"][0],
                       f"0 < step <= {UPPER_LIMITS['max_joint_step'][0]} [rad per command]"),
    "gripper_min": (0.0, lambda v: _finite_number(v) and 0 <= v <= 1, "0..1"),
    "gripper_max": (1.0, lambda v: _finite_number(v) and 0 <= v <= 1, "0..1"),
    "watchdog_period": (0.5, lambda v: _finite_number(v) and 0 < v <= UPPER_LIMITS["watchdog_period"][0],
                        f"0 < period <= {UPPER_LIMITS['watchdog_period'][0]} [s]"),
    "min_confidence": (0.0, lambda v: _finite_number(v) and 0 <= v <= 1,
                       "0..1 (0 = off): targets whose policy confidence is lower are refused, the arm holds"),
    "ik_iterations": (20, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
}


def _name(v) -> bool:
    return isinstance(v, str) and v != ""


def _positive(v) -> bool:
    return _finite_number(v) and v > 0


OUTPUT_TYPES = ("pose_stamped", "joint_state")

# franka_bridge's parameters besides its guards (hybridvla_ros/franka_bridge_node.py declares them; `hybridvla eval
# sim --bridge-config` checks a parameter file against them): name -> (default, check, what a valid value is).
FRANKA_BRIDGE_PARAMETERS: dict[str, tuple[Any, Any, str]] = {
    "arm": ("fr3", _name, "the arm's name in ArmTarget/ArmState/GuardEvent"),
    "model": ("fr3", lambda v: v in ARMS, f"one of {sorted(ARMS)} (kinematics.ARMS)"),
    "frame_id": ("base", _name, "the arm's base frame: the controller's base_frame (crisp's FR3 demo: base)"),
    "joint_names": ([f"fr3_joint{i}" for i in range(1, 8)], lambda v: isinstance(v, list) and len(v) == 7,
                    "7 joint names"),
    "finger_joint_names": (["fr3_finger_joint1", "fr3_finger_joint2"], lambda v: isinstance(v, list) and len(v) == 2,
                           "2 finger joint names (their sum is the gripper width)"),
    "target_topic": ("/hybridvla/fr3/target", _name, "a topic name"),
    "output_topic": ("target_pose", _name, "a topic name"),
    "output_type": ("pose_stamped", lambda v: v in OUTPUT_TYPES, f"one of {OUTPUT_TYPES}"),
    "current_pose_topic": ("current_pose", _name, "a topic name"),
    "measured_pose": ("current_pose", lambda v: v in ("current_pose", "fk"),
                      "current_pose (the robot's TCP pose) or fk (from joint_states through urdf)"),
    "joint_states_topic": ("joint_states", _name, "a topic name"),
    "arm_state_topic": ("/hybridvla/fr3/arm_state", _name, "a topic name"),
    "guard_events_topic": ("/hybridvla/guard_events", _name, "a topic name"),
    "rate_hz": (50.0, _positive, "a rate > 0 [Hz]"),
    "gripper.enabled": (True, lambda v: isinstance(v, bool), "true or false"),
    "gripper.action_ns": ("/franka_gripper", _name, "the franka_gripper node's name: /franka_gripper (franka_ros2 "
                          ">= 2.0), /<arm_id>_gripper e.g. /fr3_gripper (before 2.0)"),
    "gripper.max_width": (0.08, lambda v: _positive(v) and v <= 0.08, "0 < width <= 0.08 [m]"),
    "gripper.close_below": (0.5, lambda v: _positive(v) and v < 1, "0 < threshold < 1"),
    "gripper.speed": (0.1, _positive, "a speed > 0 [m/s]"),
    "gripper.force": (20.0, _positive, "a force > 0 [N]"),
    "gripper.epsilon_inner": (0.005, _positive, "a tolerance > 0 [m]"),
    "gripper.epsilon_outer": (0.08, _positive, "a tolerance > 0 [m]"),
    "preflight.min_state_rate_hz": (25.0, _positive, "a rate > 0 [Hz]: ~/enable refuses slower current_pose / "
                                    "joint_states"),
    "controller.name": ("cartesian_impedance_controller", lambda v: isinstance(v, str),
                        "the ros2_control controller that takes output_topic (crisp: cartesian_impedance_controller; "
                        "joint_impedance_controller for output_type joint_state), or '' for one outside ros2_control"),
    "controller.manager": ("/controller_manager", _name, "the controller_manager node (its ~/list_controllers)"),
}


# Parameters rclpy declares on every node (a parameter file may set them).
ROS_NODE_PARAMETERS = ("use_sim_time", "start_type_description_service")


def check_parameters(values: dict[str, Any], spec: dict[str, tuple[Any, Any, str]], where: str) -> None:
    """Parameter values read from a file, judged as the node that declares `spec` would judge them at start: a
    name it does not have (a typo: the default would run instead), or a value its check refuses. UserError."""
    for name, value in values.items():
        if name in ROS_NODE_PARAMETERS or name.startswith("qos_overrides."):
            continue
        if name not in spec:
            near = difflib.get_close_matches(name, list(spec), n=1)
            raise UserError(f"{where}: unknown parameter '{name}'"
                            + (f" (did you mean '{near[0]}'?)" if near else "") + "; the node would refuse it")
        _default, check, expected = spec[name]
        if check is not None and not check(value):
            raise UserError(f"{where}: parameter '{name}' = {value!r} is invalid: expected {expected}")


def guard_parameter_spec(prefix: str, overrides: dict[str, Any] | None = None) -> dict[str, tuple[Any, Any, str]]:
    """The guard parameters under `prefix` for hybridvla_ros.common.declare_parameters."""
    overrides = overrides or {}
    return {prefix + name: (overrides.get(name, default), check, expected)
            for name, (default, check, expected) in GUARD_PARAMETERS.items()}


def guard_config(arm: str, model: str, values: dict[str, Any], prefix: str) -> GuardConfig:
    """GuardConfig from declared parameter values; raises ValueError naming the parameter on a bad combination."""
    fields = {name: values[prefix + name] for name in GUARD_PARAMETERS}
    fields["workspace_min"] = tuple(float(v) for v in fields["workspace_min"])
    fields["workspace_max"] = tuple(float(v) for v in fields["workspace_max"])
    config = GuardConfig(arm=arm, model=model, **fields)
    try:
        config.validate()
    except ValueError as exc:
        raise ValueError(str(exc).replace("guard config '", f"parameter '{prefix}", 1)) from None
    return config


@dataclass(frozen=True)
class GripperGoal:
    action: str        # "grasp" (close on whatever is there) or "move" (open to a width)
    width: float       # m


class FrankaGripperCommander:
    """Turns the guarded gripper command (0 closed .. 1 open) into franka_gripper goals: Grasp to close, Move
    to open to gripper * max_width. A goal goes out only when it differs from the last one sent (an open
    width by more than `resend_width` [m]). A goal the server never accepted is forgotten so that the next
    command retries it; a goal that ran and failed is not repeated until the command changes."""

    def __init__(self, max_width: float = 0.08, close_below: float = 0.5, resend_width: float = 0.005):
        if not (0 < max_width <= 0.08 and 0 < close_below < 1 and resend_width > 0):
            raise ValueError(f"gripper: max_width {max_width} m must be in (0, 0.08], close_below {close_below} "
                             f"in (0, 1), resend_width {resend_width} m > 0")
        self.max_width = max_width
        self.close_below = close_below
        self.resend_width = resend_width
        self.last: GripperGoal | None = None

    def decide(self, gripper: float) -> GripperGoal | None:
        """The goal to send for this command, or None when it would repeat the last one."""
        if gripper < self.close_below:
            goal = GripperGoal("grasp", 0.0)
        else:
            goal = GripperGoal("move", round(min(max(gripper, 0.0), 1.0) * self.max_width, 4))
        last = self.last
        if last is not None and last.action == goal.action and abs(last.width - goal.width) <= self.resend_width:
            return None
        self.last = goal
        return goal

    def forget(self) -> None:
        """The fingers may have moved while the bridge was disabled (by hand, from Desk, a simulated lab's
        reset): the next command goes out whatever was sent before. Called on every enable."""
        self.last = None

    def not_accepted(self, goal: GripperGoal) -> None:
        """The server was absent or rejected the goal: allow it to be sent again."""
        if self.last == goal:
            self.last = None
