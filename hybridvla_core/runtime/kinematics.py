"""Serial-chain kinematics read from the URDFs in urdf/: forward kinematics, Jacobian, damped
least-squares IK with joint limits. The one loader used by the guards, the bridges and the simulated lab.

Units: metres and radians; poses are (position (3,), quaternion (x, y, z, w)) in the chain's base frame.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.resources import resource_path


def _transform(xyz, rpy) -> np.ndarray:
    """4x4 homogeneous transform from a URDF origin (rpy = fixed-axis roll, pitch, yaw)."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", rpy).as_matrix()
    T[:3, 3] = xyz
    return T


def _floats(text: str | None, default: str) -> np.ndarray:
    return np.array([float(v) for v in (text or default).split()])


def quaternion_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix: scipy's Rotation.from_matrix(R).as_quat(), sign
    included (the same method: the largest of the diagonal and the trace first), at a tenth of its cost."""
    m = R
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    k = int(np.argmax((m[0, 0], m[1, 1], m[2, 2], trace)))
    if k == 3:
        q = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], 1.0 + trace])
    else:
        i, j, n = k, (k + 1) % 3, (k + 2) % 3
        q = np.empty(4)
        q[i] = 1.0 - trace + 2.0 * m[i, i]
        q[j] = m[j, i] + m[i, j]
        q[n] = m[n, i] + m[i, n]
        q[3] = m[n, j] - m[j, n]
    return q / np.sqrt(q @ q)


def rotvec_from_matrix(R: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle [rad], angle <= pi) of a rotation matrix: scipy's
    Rotation.from_matrix(R).as_rotvec() (the same series below 1e-3 rad), without its per-call overhead
    (the IK evaluates it once per iteration on every target)."""
    return rotvec_from_quaternion(quaternion_from_matrix(R))


# Quaternion helpers (x, y, z, w): what the guards ask of scipy's Rotation on every target, written out because
# scipy's per-call overhead (~40 us) made up a third of a guarded target's time (issue 27). Tested against scipy.
def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a * b: the rotation b, then a (scipy: Rotation.from_quat(a) * Rotation.from_quat(b))."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz])


def quaternion_inverse(q: np.ndarray) -> np.ndarray:
    """The inverse of a unit quaternion (its conjugate)."""
    return np.array([-q[0], -q[1], -q[2], q[3]])


def rotvec_from_quaternion(q: np.ndarray) -> np.ndarray:
    """Rotation vector (axis * angle [rad], angle <= pi) of a unit quaternion: scipy's as_rotvec()."""
    if q[3] < 0:
        q = -q
    angle = 2.0 * math.atan2(math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]), q[3])
    scale = 2.0 + angle**2 / 12.0 + 7.0 * angle**4 / 2880.0 if angle <= 1e-3 else angle / math.sin(angle / 2.0)
    return scale * np.asarray(q[:3], dtype=float)


def quaternion_from_rotvec(v: np.ndarray) -> np.ndarray:
    """Unit quaternion of a rotation vector [rad]: scipy's Rotation.from_rotvec(v).as_quat()."""
    angle = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    scale = 0.5 - angle**2 / 48.0 + angle**4 / 3840.0 if angle <= 1e-3 else math.sin(angle / 2.0) / angle
    return np.array([scale * v[0], scale * v[1], scale * v[2], math.cos(angle / 2.0)])


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (normalised first): scipy's Rotation.from_quat(q).as_matrix()."""
    x, y, z, w = np.asarray(q, dtype=float) / math.sqrt(float(np.dot(q, q)))
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


@dataclass(frozen=True)
class Joint:
    name: str
    kind: str               # revolute | prismatic | fixed | continuous
    origin: np.ndarray      # 4x4, parent link -> joint frame at q = 0
    axis: np.ndarray        # (3,) unit axis in the joint frame
    lower: float            # rad (m for prismatic)
    upper: float
    velocity: float         # rad/s (m/s)


@dataclass(frozen=True)
class IKResult:
    q: np.ndarray           # (n,) joint positions [rad]
    success: bool           # converged within the tolerances and inside the (margin-shrunk) limits
    position_error: float   # m
    rotation_error: float   # rad
    iterations: int


class KinematicChain:
    """The movable joints between base_link and tip_link of a URDF, in order."""

    def __init__(self, joints: list[Joint], base_link: str, tip_link: str):
        self.joints = joints
        self.base_link = base_link
        self.tip_link = tip_link
        self.active = [j for j in joints if j.kind != "fixed"]
        self.joint_names = [j.name for j in self.active]
        self.lower = np.array([j.lower for j in self.active])
        self.upper = np.array([j.upper for j in self.active])
        self.max_velocity = np.array([j.velocity for j in self.active])
        # What _rodrigues needs that does not depend on q, per active joint i: the fixed transform (A_i, b_i) from
        # the previous active joint's moving frame (or the base) to joint i's frame, the fixed joints between merged
        # in; the axis in that parent frame (A_i axis); Rodrigues' terms A_i K, A_i K^2 (constant: the axis is in
        # the joint's own frame); the transform after the last active joint to the tip (A_tip, b_tip).
        A, b = np.eye(3), np.zeros(3)
        rotations, offsets, axes, RK, RK2 = [], [], [], [], []
        for j in joints:
            b = b + A @ j.origin[:3, 3]
            A = A @ j.origin[:3, :3]
            if j.kind == "fixed":
                continue
            axis = np.asarray(j.axis, dtype=float)
            K = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
            revolute = j.kind != "prismatic"
            rotations.append(A)
            offsets.append(b)
            axes.append(A @ axis)
            RK.append(A @ K if revolute else np.zeros((3, 3)))
            RK2.append(A @ K @ K if revolute else np.zeros((3, 3)))
            A, b = np.eye(3), np.zeros(3)
        self._A, self._b, self._axes = np.array(rotations), np.array(offsets), np.array(axes)
        self._RK, self._RK2 = np.array(RK), np.array(RK2)
        self._prismatic = np.array([j.kind == "prismatic" for j in self.active])
        self._any_prismatic = bool(self._prismatic.any())
        self._A_tip, self._b_tip = A, b

    @property
    def dof(self) -> int:
        return len(self.active)

    @classmethod
    def from_urdf(cls, path: str | Path, base_link: str, tip_link: str) -> "KinematicChain":
        root = ET.parse(path).getroot()
        by_child = {}
        for j in root.findall("joint"):
            origin = j.find("origin")
            limit = j.find("limit")
            kind = j.get("type")
            axis = _floats(j.find("axis").get("xyz") if j.find("axis") is not None else None, "1 0 0")
            by_child[j.find("child").get("link")] = (
                j.find("parent").get("link"),
                Joint(
                    name=j.get("name"),
                    kind=kind,
                    origin=_transform(
                        _floats(origin.get("xyz") if origin is not None else None, "0 0 0"),
                        _floats(origin.get("rpy") if origin is not None else None, "0 0 0"),
                    ),
                    axis=axis / np.linalg.norm(axis),
                    lower=float(limit.get("lower", -np.pi)) if limit is not None else -np.pi,
                    upper=float(limit.get("upper", np.pi)) if limit is not None else np.pi,
                    velocity=float(limit.get("velocity", np.inf)) if limit is not None else np.inf,
                ),
            )
        chain, link = [], tip_link
        while link != base_link:
            if link not in by_child:
                raise ValueError(f"{path}: no joint chain from {base_link!r} to {tip_link!r} (stopped at {link!r})")
            link, joint = by_child[link]
            chain.append(joint)
        return cls(chain[::-1], base_link, tip_link)

    # --- forward kinematics -------------------------------------------------------------------------
    def _check_q(self, q) -> np.ndarray:
        q = np.asarray(q, dtype=float)
        if q.shape != (self.dof,):
            raise ValueError(f"joint vector has shape {q.shape}, expected ({self.dof},) for {self.joint_names}")
        return q

    def _frames(self, q: np.ndarray):
        """Yield (T_base_joint, joint) for every movable joint, and finally the tip transform."""
        T = np.eye(4)
        i = 0
        frames = []
        for joint in self.joints:
            T = T @ joint.origin
            if joint.kind == "fixed":
                continue
            frames.append((T.copy(), joint))
            motion = np.eye(4)
            if joint.kind == "prismatic":
                motion[:3, 3] = joint.axis * q[i]
            else:
                motion[:3, :3] = Rotation.from_rotvec(joint.axis * q[i]).as_matrix()
            T = T @ motion
            i += 1
        return frames, T

    def fk_matrix(self, q) -> np.ndarray:
        """4x4 pose of tip_link in base_link."""
        return self._frames(self._check_q(q))[1]

    def fk(self, q) -> tuple[np.ndarray, np.ndarray]:
        """(position [m], quaternion xyzw) of tip_link in base_link. The bridges call it on every state sample
        (the Piper publishes joints only): one Rodrigues pass without the Jacobian, ~0.1 ms."""
        T = self._rodrigues(self._check_q(q), jacobian=False)[0]
        return T[:3, 3].copy(), quaternion_from_matrix(T[:3, :3])

    def jacobian(self, q) -> np.ndarray:
        """6 x n geometric Jacobian (linear; angular) of the tip in the base frame."""
        frames, T_tip = self._frames(self._check_q(q))
        J = np.zeros((6, self.dof))
        for i, (T, joint) in enumerate(frames):
            axis = T[:3, :3] @ joint.axis
            if joint.kind == "prismatic":
                J[:3, i] = axis
            else:
                J[:3, i] = np.cross(axis, T_tip[:3, 3] - T[:3, 3])
                J[3:, i] = axis
        return J

    def fk_jacobian(self, q) -> tuple[np.ndarray, np.ndarray]:
        """(4x4 tip pose, 6 x n Jacobian) in one pass with Rodrigues' formula: the same values as
        fk_matrix and jacobian, several times faster (the guards call it inside IK on every target)."""
        return self._rodrigues(self._check_q(q), jacobian=True)

    def _rodrigues(self, q: np.ndarray, jacobian: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Tip pose (4x4) and, with jacobian, the 6 x n geometric Jacobian: every joint's motion at once
        (Rodrigues' formula on the precomputed terms), then one 3x3 product per joint along the chain."""
        s, c = np.sin(q), 1.0 - np.cos(q)
        M = self._A + s[:, None, None] * self._RK + c[:, None, None] * self._RK2  # joint i's rotation, parent frame
        offsets = self._b + q[:, None] * self._axes * self._prismatic[:, None] if self._any_prismatic else self._b
        R, t = np.eye(3), np.zeros(3)
        origins, axes = (np.empty((len(q), 3)), np.empty((len(q), 3))) if jacobian else (None, None)
        for i in range(len(q)):
            t = t + R @ offsets[i]   # joint i's origin (after a prismatic joint's travel)
            if jacobian:
                origins[i] = t
                axes[i] = R @ self._axes[i]
            R = R @ M[i]
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R @ self._A_tip, t + R @ self._b_tip
        if not jacobian:
            return T, None
        J = np.empty((6, len(q)))
        (ax, ay, az), (rx, ry, rz) = axes.T, (T[:3, 3] - origins).T
        # axis x (tip - origin), written out: np.cross costs several times more
        J[0], J[1], J[2] = ay * rz - az * ry, az * rx - ax * rz, ax * ry - ay * rx
        J[3:] = axes.T
        if self._any_prismatic:
            J[:3, self._prismatic], J[3:, self._prismatic] = axes[self._prismatic].T, 0.0
        return T, J

    # --- inverse kinematics -------------------------------------------------------------------------
    def within_limits(self, q, margin: float = 0.0) -> bool:
        q = self._check_q(q)
        return bool(np.all(q >= self.lower + margin) and np.all(q <= self.upper - margin))

    def ik(
        self,
        position,
        quaternion,
        q_seed,
        *,
        margin: float = 0.0,
        position_tolerance: float = 1e-4,
        rotation_tolerance: float = 1e-3,
        max_iterations: int = 200,
        damping: float = 1e-2,
        rotation_weight: float = 1.0,
    ) -> IKResult:
        """Damped least-squares IK from q_seed (normally the measured joints), clamped to the limits
        shrunk by `margin` [rad]. Success means the tolerances were met inside those limits: a target
        that needs a joint beyond them fails instead of being silently bent."""
        target_p = np.asarray(position, dtype=float)
        target_R = matrix_from_quaternion(np.asarray(quaternion, dtype=float))
        lo, hi = self.lower + margin, self.upper - margin
        q = np.clip(self._check_q(q_seed).copy(), lo, hi)
        W = np.array([1.0, 1.0, 1.0] + [rotation_weight] * 3)[:, None]
        damping_I = damping**2 * np.eye(6)
        for it in range(1, max_iterations + 1):
            T, J = self.fk_jacobian(q)
            e_p = target_p - T[:3, 3]
            e_r = rotvec_from_matrix(target_R @ T[:3, :3].T)
            norm_p, norm_r = math.sqrt(e_p @ e_p), math.sqrt(e_r @ e_r)
            if norm_p < position_tolerance and norm_r < rotation_tolerance:
                return IKResult(q, True, norm_p, norm_r, it)
            J = W * J
            e = W[:, 0] * np.concatenate([e_p, e_r])
            dq = J.T @ np.linalg.solve(J @ J.T + damping_I, e)
            # Limit the step so the linearisation stays valid far from the target.
            scale = min(1.0, 0.3 / max(np.abs(dq).max(), 1e-12))
            q = np.clip(q + scale * dq, lo, hi)
        T = self.fk_matrix(q)
        e_p = float(np.linalg.norm(target_p - T[:3, 3]))
        e_r = float(np.linalg.norm(rotvec_from_matrix(target_R @ T[:3, :3].T)))
        return IKResult(q, e_p < position_tolerance and e_r < rotation_tolerance, e_p, e_r, max_iterations)


# Arms the suite knows: URDF file in urdf/, base link, tool-centre-point link.
# piper: one Piper arm; piper_left / piper_right: the arms of the dual-arm robot, each in its own base frame.
ARMS = {
    "fr3": ("fr3.urdf", "fr3_link0", "fr3_hand_tcp"),
    "piper": ("piper.urdf", "base_link", "tcp"),
    "piper_left": ("dual_piper.urdf", "left_base_link", "left_tcp"),
    "piper_right": ("dual_piper.urdf", "right_base_link", "right_tcp"),
}


def load_arm(name: str) -> KinematicChain:
    """The kinematic chain of a known arm, from the URDF shipped in urdf/."""
    if name not in ARMS:
        raise ValueError(f"unknown arm model {name!r}; known: {', '.join(sorted(ARMS))}")
    filename, base, tip = ARMS[name]
    return KinematicChain.from_urdf(resource_path("urdf", filename), base, tip)
