"""The one home of the action layout, its convention, its normalisation and its conversion to absolute
end-effector targets. The policy node, evaluation, the simulated lab and the dataset builder all call this.

Layout (per arm, 7 dims): [x, y, z, roll, pitch, yaw, gripper]; dual arm = 14 dims, grippers at 6 and 13.
Translation in metres, Euler angles in radians (scipy "xyz", i.e. extrinsic rotations about the base axes),
gripper 1 = open, 0 = closed. The robot state uses the same layout with absolute values.

Normalisation BOUNDS_Q99 (reference): a_n = clip(2 (a - q01) / (q99 - q01) - 1, -1, 1) on masked dims;
grippers are left unnormalised (mask False). Statistics live in dataset_statistics.json:
{unnorm_key: {"action": {mean, std, max, min, q01, q99, mask, angle_centre}, "proprio": {...},
"num_transitions": N, "num_trajectories": M}}.
Euler angles are wrapped into [c - pi, c + pi) about their circular mean c (angle_centre, rad; null for
other dims) before statistics and before every normalisation: a top-down TCP has roll = +-pi, and without
the wrap that dim would jump between both ends of its range from one step to the next.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.errors import UserError
from hybridvla_core.files import read_json

ARM_DIM = 7
GRIPPER_INDEX_IN_ARM = 6
EULER_ORDER = "xyz"  # scipy lowercase = extrinsic, as in the reference's RLBench script
SUPPORTED_ACTION_DIMS = (7, 14)
# Division guard of the reference normalisation for dims whose q01 == q99.
_RANGE_EPS = 1e-8


def num_arms(action_dim: int) -> int:
    if action_dim not in SUPPORTED_ACTION_DIMS:
        raise ValueError(f"action_dim must be 7 (one arm) or 14 (two arms), got {action_dim}")
    return action_dim // ARM_DIM


def gripper_indices(action_dim: int) -> list[int]:
    """Indices of the gripper dims: [6] or [6, 13]."""
    return [arm * ARM_DIM + GRIPPER_INDEX_IN_ARM for arm in range(num_arms(action_dim))]


def angle_dims(dims: int) -> list[int]:
    """Indices of the Euler angles (roll, pitch, yaw of each arm) in a 7/14-dim action or state."""
    return [arm * ARM_DIM + i for arm in range(num_arms(dims)) for i in (3, 4, 5)]


def wrap_angles(values: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Each dim with a finite centre (rad) wrapped into [centre - pi, centre + pi); other dims unchanged."""
    wrapped = centre + np.mod(values - centre + np.pi, 2 * np.pi) - np.pi
    return np.where(np.isfinite(centre), wrapped, values)


def default_mask(action_dim: int) -> np.ndarray:
    """True where a dim is normalised: everything but the grippers."""
    mask = np.ones(action_dim, dtype=bool)
    mask[gripper_indices(action_dim)] = False
    return mask


@dataclass(frozen=True)
class ActionConvention:
    """How an action vector maps to robot targets; stored in every checkpoint's config so that deployment
    reads it and never guesses.

    translation: "delta" (added to the measured position, base frame, metres) or "absolute" (metres).
    rotation: "absolute_euler" (target orientation) or "delta_euler" (R_target = R_delta * R_measured,
        i.e. the delta is applied about the base axes), Euler "xyz" radians.
    gripper: "1=open" (reference) or "1=closed"; targets always report 1 = open.
    """

    translation: str = "delta"
    rotation: str = "absolute_euler"
    gripper: str = "1=open"

    def __post_init__(self) -> None:
        if self.translation not in ("delta", "absolute"):
            raise ValueError(f"convention.translation must be 'delta' or 'absolute', got {self.translation!r}")
        if self.rotation not in ("absolute_euler", "delta_euler"):
            raise ValueError(
                f"convention.rotation must be 'absolute_euler' or 'delta_euler', got {self.rotation!r}"
            )
        if self.gripper not in ("1=open", "1=closed"):
            raise ValueError(f"convention.gripper must be '1=open' or '1=closed', got {self.gripper!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "ActionConvention":
        unknown = set(data) - {"translation", "rotation", "gripper"}
        if unknown:
            raise ValueError(f"unknown action convention fields: {sorted(unknown)}")
        return cls(**dict(data))


class ArmTarget(NamedTuple):
    """An absolute end-effector target for one arm in its base frame."""

    position: np.ndarray  # (3,) metres
    quaternion_xyzw: np.ndarray  # (4,) unit quaternion, scipy order
    gripper: float  # 0 = closed .. 1 = open


class ArmPose(NamedTuple):
    """A measured end-effector pose for one arm in its base frame."""

    position: np.ndarray  # (3,) metres
    quaternion_xyzw: np.ndarray  # (4,)
    gripper: float = 1.0  # 0 = closed .. 1 = open


def _check_vector(name: str, value, action_dim: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {array.shape}")
    if action_dim is None:
        num_arms(array.shape[0])
    elif array.shape[0] != action_dim:
        raise ValueError(f"{name} has {array.shape[0]} dims, expected {action_dim}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains non-finite values: {array.tolist()}")
    return array


def _check_poses(measured_poses: Sequence, arms: int) -> list[ArmPose]:
    if len(measured_poses) != arms:
        raise ValueError(f"expected {arms} measured arm pose(s), got {len(measured_poses)}")
    poses = []
    for arm, pose in enumerate(measured_poses):
        position = np.asarray(pose[0], dtype=np.float64)
        quaternion = np.asarray(pose[1], dtype=np.float64)
        gripper = float(pose[2]) if len(pose) > 2 else 1.0
        if position.shape != (3,) or quaternion.shape != (4,):
            raise ValueError(f"measured pose of arm {arm} must be (position (3,), quaternion xyzw (4,))")
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quaternion))):
            raise ValueError(f"measured pose of arm {arm} contains non-finite values")
        if np.linalg.norm(quaternion) < 1e-6:
            raise ValueError(f"measured pose of arm {arm} has a zero quaternion")
        poses.append(ArmPose(position, quaternion / np.linalg.norm(quaternion), gripper))
    return poses


def _gripper_to_open_fraction(value: float, convention: ActionConvention) -> float:
    opening = value if convention.gripper == "1=open" else 1.0 - value
    return float(np.clip(opening, 0.0, 1.0))


def to_absolute_targets(
    action, measured_poses: Sequence, convention: ActionConvention
) -> list[ArmTarget]:
    """Action (7/14, robot units) + measured poses (one (position m, quaternion xyzw) per arm)
    -> one absolute ArmTarget per arm."""
    action = _check_vector("action", action)
    poses = _check_poses(measured_poses, num_arms(action.shape[0]))
    targets = []
    for arm, pose in enumerate(poses):
        chunk = action[arm * ARM_DIM:(arm + 1) * ARM_DIM]
        position = chunk[:3] + pose.position if convention.translation == "delta" else chunk[:3].copy()
        rotation = Rotation.from_euler(EULER_ORDER, chunk[3:6])
        if convention.rotation == "delta_euler":
            rotation = rotation * Rotation.from_quat(pose.quaternion_xyzw)
        targets.append(ArmTarget(position, rotation.as_quat(), _gripper_to_open_fraction(chunk[6], convention)))
    return targets


def from_absolute_targets(
    targets: Sequence, measured_poses: Sequence, convention: ActionConvention
) -> np.ndarray:
    """Inverse of to_absolute_targets: recorded absolute targets (position m, quaternion xyzw, gripper 0..1
    with 1 = open) + the measured poses at that step -> the action vector (7/14) in this convention."""
    arms = len(targets)
    if arms not in (1, 2):
        raise ValueError(f"expected 1 or 2 arm targets, got {arms}")
    poses = _check_poses(measured_poses, arms)
    action = np.zeros(arms * ARM_DIM)
    for arm, (target, pose) in enumerate(zip(targets, poses)):
        position = np.asarray(target[0], dtype=np.float64)
        if position.shape != (3,):
            raise ValueError(f"target position of arm {arm} must have shape (3,), got {position.shape}")
        target_rotation = Rotation.from_quat(np.asarray(target[1], dtype=np.float64))
        if convention.translation == "delta":
            position = position - pose.position
        if convention.rotation == "delta_euler":
            target_rotation = target_rotation * Rotation.from_quat(pose.quaternion_xyzw).inv()
        gripper = float(target[2])
        action[arm * ARM_DIM:arm * ARM_DIM + 3] = position
        action[arm * ARM_DIM + 3:arm * ARM_DIM + 6] = target_rotation.as_euler(EULER_ORDER)
        action[arm * ARM_DIM + 6] = gripper if convention.gripper == "1=open" else 1.0 - gripper
    if not np.all(np.isfinite(action)):
        raise ValueError("targets contain non-finite values")
    return action


def state_from_poses(poses: Sequence) -> np.ndarray:
    """Measured poses (position m, quaternion xyzw, gripper 0..1 with 1 = open) -> the 7/14 state vector
    [x, y, z, roll, pitch, yaw, gripper] per arm that the model takes as robot state."""
    if len(poses) not in (1, 2):
        raise ValueError(f"expected 1 or 2 arm poses, got {len(poses)}")
    state = []
    for pose in _check_poses(poses, len(poses)):
        euler = Rotation.from_quat(pose.quaternion_xyzw).as_euler(EULER_ORDER)
        state.extend([*pose.position, *euler, pose.gripper])
    return np.asarray(state)


# ----------------------------------------------------------------------------------------------------------
# BOUNDS_Q99 normalisation and dataset_statistics.json


@dataclass
class NormStats:
    """Per-dim statistics of one quantity (action or proprio), reference schema."""

    mean: np.ndarray
    std: np.ndarray
    max: np.ndarray
    min: np.ndarray
    q01: np.ndarray
    q99: np.ndarray
    mask: np.ndarray  # bool, True = normalised
    angle_centre: np.ndarray | None = None  # rad where a dim is an angle, NaN elsewhere; None = no wrap

    @classmethod
    def from_samples(cls, values: np.ndarray, mask: np.ndarray | None = None) -> "NormStats":
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0:
            raise ValueError(f"statistics need a non-empty (N, dims) array, got shape {values.shape}")
        dims = values.shape[1]
        mask = default_mask(dims) if mask is None else np.asarray(mask, dtype=bool)
        centre = np.full(dims, np.nan)
        angles = angle_dims(dims) if dims in SUPPORTED_ACTION_DIMS else []
        centre[angles] = np.arctan2(np.sin(values[:, angles]).mean(0), np.cos(values[:, angles]).mean(0))
        values = wrap_angles(values, centre)
        return cls(
            mean=values.mean(0), std=values.std(0), max=values.max(0), min=values.min(0),
            q01=np.quantile(values, 0.01, axis=0), q99=np.quantile(values, 0.99, axis=0), mask=mask,
            angle_centre=centre,
        )

    def to_dict(self) -> dict:
        out = {key: [float(v) for v in getattr(self, key)] for key in ("mean", "std", "max", "min", "q01", "q99")}
        out["mask"] = [bool(v) for v in self.mask]
        if self.angle_centre is not None:
            out["angle_centre"] = [float(v) if np.isfinite(v) else None for v in self.angle_centre]
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "NormStats":
        missing = {"q01", "q99"} - set(data)
        if missing:
            raise ValueError(f"statistics entry lacks {sorted(missing)}")
        q01 = np.asarray(data["q01"], dtype=np.float64)
        fields = {}
        for key in ("mean", "std", "max", "min", "q01", "q99"):
            fields[key] = np.asarray(data.get(key, np.zeros_like(q01)), dtype=np.float64)
        # No mask: every dim normalised, as the reference reads such a file (np.ones_like(q01, dtype=bool)).
        fields["mask"] = np.asarray(data.get("mask", np.ones(q01.shape[0], dtype=bool)), dtype=bool)
        if data.get("angle_centre") is not None:  # absent in reference files: no wrap
            fields["angle_centre"] = np.array([np.nan if v is None else v for v in data["angle_centre"]],
                                              dtype=np.float64)
        return cls(**fields)

    def normalize(self, values) -> np.ndarray:
        """Robot units -> [-1, 1] on masked dims (last axis = dims)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1] != self.q01.shape[0]:
            raise ValueError(f"expected {self.q01.shape[0]} dims, got {values.shape[-1]}")
        if self.angle_centre is not None:
            values = wrap_angles(values, self.angle_centre)
        normalised = np.clip(2.0 * (values - self.q01) / (self.q99 - self.q01 + _RANGE_EPS) - 1.0, -1.0, 1.0)
        return np.where(self.mask, normalised, values)

    def unnormalize(self, values) -> np.ndarray:
        """[-1, 1] -> robot units on masked dims."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1] != self.q01.shape[0]:
            raise ValueError(f"expected {self.q01.shape[0]} dims, got {values.shape[-1]}")
        return np.where(self.mask, 0.5 * (values + 1.0) * (self.q99 - self.q01) + self.q01, values)


@dataclass
class DatasetStatistics:
    """One entry of dataset_statistics.json."""

    action: NormStats
    proprio: NormStats
    num_transitions: int
    num_trajectories: int

    def to_dict(self) -> dict:
        return {
            "action": self.action.to_dict(), "proprio": self.proprio.to_dict(),
            "num_transitions": int(self.num_transitions), "num_trajectories": int(self.num_trajectories),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "DatasetStatistics":
        if "action" not in data:
            raise ValueError("statistics entry lacks 'action'")
        action = NormStats.from_dict(data["action"])
        proprio = NormStats.from_dict(data["proprio"]) if "proprio" in data else action
        return cls(action, proprio, int(data.get("num_transitions", 0)), int(data.get("num_trajectories", 0)))

    @classmethod
    def from_samples(cls, actions, states, num_trajectories: int) -> "DatasetStatistics":
        actions = np.asarray(actions, dtype=np.float64)
        actions = actions.reshape(-1, actions.shape[-1])
        return cls(NormStats.from_samples(actions), NormStats.from_samples(states),
                   num_transitions=len(states), num_trajectories=num_trajectories)


def save_dataset_statistics(path: str | Path, statistics: Mapping[str, DatasetStatistics]) -> None:
    Path(path).write_text(json.dumps({key: value.to_dict() for key, value in statistics.items()}, indent=2))


def load_dataset_statistics(path: str | Path) -> dict[str, DatasetStatistics]:
    if not Path(path).is_file():
        raise UserError(f"{path}: missing: a checkpoint needs the dataset_statistics.json its training wrote (copy it "
                        f"from the training run's output directory)")
    data = read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON object keyed by dataset name")
    return {key: DatasetStatistics.from_dict(value) for key, value in data.items()}


def select_statistics(statistics: Mapping[str, DatasetStatistics], unnorm_key: str | None) -> DatasetStatistics:
    """The entry named unnorm_key; with None, the only entry."""
    if unnorm_key is None:
        if len(statistics) != 1:
            raise UserError(f"several statistics entries {sorted(statistics)}: choose one with unnorm_key")
        return next(iter(statistics.values()))
    if unnorm_key not in statistics:
        raise UserError(f"unnorm_key {unnorm_key!r} not in dataset statistics {sorted(statistics)}: set the "
                        f"checkpoint's unnorm_key (config.json) to the entry its training used")
    return statistics[unnorm_key]
