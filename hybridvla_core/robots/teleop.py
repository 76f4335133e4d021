"""Teleoperation without ROS: devices -> absolute end-effector targets (the ArmTarget the bridges guard).

- SpaceMouse (pyspacemouse, imported only when used) and keyboard give a twist in the arm's base frame;
  `PoseIntegrator` turns it into an absolute target that starts at the measured pose and never leads the
  measured pose by more than max_lead_m / max_lead_rad (a blocked arm does not build up a runaway target).
- AgileX leader arms (/master/joint_left|right: 6 joints [rad] + gripper [m]) map one to one onto the
  follower Pipers: forward kinematics of the leader's joints is the follower's TCP target in its base frame.

Every target is (position [m] (3,), quaternion xyzw (4,), gripper 0 closed .. 1 open).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.runtime.kinematics import load_arm

AXES = ("x", "y", "z", "roll", "pitch", "yaw")


@dataclass
class Twist:
    linear: np.ndarray   # (3,) m/s in the base frame
    angular: np.ndarray  # (3,) rad/s about the base axes


class PoseIntegrator:
    """target <- target moved by twist * dt (translation in the base frame, rotation about the base axes)."""

    def __init__(self, max_lead_m: float = 0.05, max_lead_rad: float = 0.3):
        self.max_lead_m, self.max_lead_rad = max_lead_m, max_lead_rad
        self.position: np.ndarray | None = None
        self.rotation: Rotation | None = None
        self.gripper = 1.0

    @property
    def ready(self) -> bool:
        return self.position is not None

    def reset(self, position, quaternion, gripper: float) -> None:
        """Start from the measured pose (at start, and after the arm was disabled or held)."""
        self.position = np.asarray(position, float).copy()
        self.rotation = Rotation.from_quat(quaternion)
        self.gripper = float(np.clip(gripper, 0.0, 1.0))

    def step(self, twist: Twist, dt: float, measured_position=None, measured_quaternion=None):
        if not self.ready:
            raise RuntimeError("PoseIntegrator.step before reset: no measured pose yet")
        self.position = self.position + np.asarray(twist.linear, float) * dt
        self.rotation = Rotation.from_rotvec(np.asarray(twist.angular, float) * dt) * self.rotation
        if measured_position is not None:
            lead = self.position - np.asarray(measured_position, float)
            distance = np.linalg.norm(lead)
            if distance > self.max_lead_m:
                self.position = np.asarray(measured_position, float) + lead * (self.max_lead_m / distance)
        if measured_quaternion is not None:
            measured = Rotation.from_quat(measured_quaternion)
            lead = (self.rotation * measured.inv()).as_rotvec()
            angle = np.linalg.norm(lead)
            if angle > self.max_lead_rad:
                self.rotation = Rotation.from_rotvec(lead * (self.max_lead_rad / angle)) * measured
        return self.target()

    def target(self):
        return self.position.copy(), self.rotation.as_quat(), self.gripper


# For each base axis (x, y, z, roll, pitch, yaw) the device axis it follows, signed. The default is an operator
# behind the arm looking where its x points: pushing the cap away (device +y) moves +x, to the right (device +x)
# moves -y; the rotations follow the same turn of the frame (-90 deg about z).
# Each entry carries its sign: YAML (and so a ROS parameter file) reads a bare y as the boolean true.
OPERATOR_BEHIND_THE_ARM = ("+y", "-x", "+z", "+pitch", "-roll", "+yaw")


def parse_axis_map(axis_map) -> tuple[np.ndarray, np.ndarray]:
    """A signed permutation of the device axes, six entries such as "-x" (per base axis, translations taken from
    translations and rotations from rotations) -> (device index per base axis, sign per base axis)."""
    names = [str(entry) for entry in axis_map]
    parsed = [(name.lstrip("+-"), -1.0 if name.startswith("-") else 1.0) for name in names]
    axes = [axis for axis, _ in parsed]
    if (len(names) != 6 or any(a not in AXES for a in axes) or sorted(axes[:3]) != ["x", "y", "z"]
            or sorted(axes[3:]) != ["pitch", "roll", "yaw"]):
        raise ValueError(f"axis_map must give, for base x, y, z, roll, pitch, yaw, a signed device axis: x, y, z "
                         f"each once, then roll, pitch, yaw each once, each written with its sign (e.g. "
                         f"{list(OPERATOR_BEHIND_THE_ARM)}; a bare y reads as true), got {names}")
    return np.array([AXES.index(a) for a in axes]), np.array([sign for _, sign in parsed])


def spacemouse_twist(axes, max_linear: float, max_angular: float, deadband: float = 0.1,
                     axis_map=OPERATOR_BEHIND_THE_ARM) -> Twist:
    """SpaceMouse axes (x, y, z, roll, pitch, yaw in -1..1, HID_Z_UP) -> twist in the base frame: axis_map picks
    and signs the device axis of each base axis, the deadband is removed and the rest rescaled to 0..1, times
    max_linear [m/s] / max_angular [rad/s]."""
    index, signs = parse_axis_map(axis_map)
    a = np.asarray(axes, float)[index] * signs
    a = np.sign(a) * np.clip((np.abs(a) - deadband) / (1.0 - deadband), 0.0, 1.0)
    return Twist(a[:3] * max_linear, a[3:] * max_angular)


# key -> (axis index 0..5, direction); shown by KEYBOARD_HELP
KEYMAP = {"w": (0, 1), "s": (0, -1), "a": (1, 1), "d": (1, -1), "r": (2, 1), "f": (2, -1),
          "u": (3, 1), "o": (3, -1), "i": (4, 1), "k": (4, -1), "j": (5, 1), "l": (5, -1)}
KEYBOARD_HELP = ("keys: w/s +-x  a/d +-y  r/f +-z  u/o +-roll  i/k +-pitch  j/l +-yaw  space toggle gripper  "
                 "(hold a key: it repeats)")


class KeyboardTwist:
    """Keys from a terminal -> twist. A key press moves its axis for hold_s seconds; the terminal's key repeat
    (every ~30-50 ms while held) keeps it moving, releasing stops it within hold_s."""

    def __init__(self, max_linear: float, max_angular: float, hold_s: float = 0.15):
        self.max_linear, self.max_angular, self.hold_s = max_linear, max_angular, hold_s
        self._until = np.zeros(6)
        self._direction = np.zeros(6)

    def press(self, key: str, now: float) -> str | None:
        """Returns "gripper" for the gripper toggle, None otherwise."""
        if key == " ":
            return "gripper"
        if key in KEYMAP:
            axis, direction = KEYMAP[key]
            self._until[axis], self._direction[axis] = now + self.hold_s, direction
        return None

    def twist(self, now: float) -> Twist:
        active = np.where(self._until > now, self._direction, 0.0)
        return Twist(active[:3] * self.max_linear, active[3:] * self.max_angular)


class LeaderArm:
    """A leader arm's JointState (joint1..6 [rad], then the gripper opening [m]) -> the follower's target."""

    def __init__(self, model: str = "piper", gripper_max_width: float = 0.07):
        self.chain = load_arm(model)
        self.gripper_max_width = gripper_max_width

    def target(self, positions):
        positions = np.asarray(positions, float)
        dof = self.chain.dof
        if positions.shape[0] < dof + 1 or not np.all(np.isfinite(positions[:dof + 1])):
            raise ValueError(f"leader JointState needs {dof} joint positions and the gripper, finite; "
                             f"got {positions.tolist()}")
        position, quaternion = self.chain.fk(positions[:dof])
        return position, quaternion, float(np.clip(positions[dof] / self.gripper_max_width, 0.0, 1.0))


def legacy_to_z_up(axes) -> np.ndarray:
    """pyspacemouse's LEGACY axes (its only convention before 2.x, and 2.x's default) -> HID_Z_UP: x right, y away
    from the user, z up, each rotation right-handed about its own axis. LEGACY has the same translations but roll
    = -HID Ry, pitch = -HID Rx and yaw = +HID Rz (roll and pitch swapped, yaw clockwise): turning the cap about x
    would have turned the arm about y."""
    x, y, z, roll, pitch, yaw = np.asarray(axes, float)
    return np.array([x, y, z, -pitch, roll, -yaw])


READS_PER_TICK = 64  # at most this many queued HID reports taken per read() (each read takes one)


class SpaceMouse:
    """pyspacemouse behind a small interface: read() -> (axes (6,) in -1..1, buttons list of 0/1), axes in the
    HID_Z_UP convention (legacy_to_z_up). Works with pyspacemouse 1.x (module-level read) and 2.x (device objects)."""

    def __init__(self, device: str = ""):
        try:
            import pyspacemouse
        except ImportError:
            raise RuntimeError("SpaceMouse teleop needs pyspacemouse: pip install pyspacemouse "
                               "(and the hidapi system library, e.g. apt install libhidapi-hidraw0)") from None
        convention = getattr(pyspacemouse, "AxisConvention", None)
        self._legacy = convention is None  # 1.x: LEGACY only, converted here
        try:
            if self._legacy:
                handle = pyspacemouse.open(device=device or None)
            else:
                handle = pyspacemouse.open(device=device or None, axis_convention=convention.HID_Z_UP)
        except Exception as exc:  # noqa: BLE001 - HID backends raise their own types
            raise RuntimeError(f"no SpaceMouse could be opened ({type(exc).__name__}: {exc}); "
                               f"check the USB connection and the udev rule for hidraw") from None
        if not handle:
            raise RuntimeError("no SpaceMouse found (pyspacemouse.open returned nothing); check USB and udev rules")
        self._read = handle.read if hasattr(handle, "read") else pyspacemouse.read
        self._close = handle.close if hasattr(handle, "close") else pyspacemouse.close

    def read(self):
        """The newest state: every report queued since the last call is taken. One read takes one HID report, and
        the device sends translation and rotation as separate reports every ~8 ms: one read per 20 ms control
        tick fell behind, and the arm kept moving for about a second after the cap was released."""
        state = self._read()
        for _ in range(READS_PER_TICK):
            stamp = state.t
            state = self._read()
            if state.t == stamp:  # no new report
                break
        axes = np.array([float(getattr(state, a)) for a in AXES])
        return (legacy_to_z_up(axes) if self._legacy else axes), list(state.buttons)

    def close(self) -> None:
        self._close()
