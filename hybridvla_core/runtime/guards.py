"""The guard pipeline: the only road from an end-effector target to an arm command.

One GuardPipeline per arm, shared by the arm bridges, teleoperation and the simulated lab. Pure numpy/scipy.
A target (absolute TCP pose in the arm's base frame + gripper 0..1 + stamp) goes through, in order:
  e-stop latched / disabled  -> hold                      (ESTOP / DISABLED)
  NaN, inf, not a unit quaternion -> hold                 (NON_FINITE)
  stamp older than the watchdog, or measured state stale -> hold (STALE_TARGET)
  policy confidence below min_confidence (off by default) -> hold (LOW_CONFIDENCE)
  position clamped into the workspace box                 (WORKSPACE_CLAMP)
  translation / rotation step from the MEASURED pose limited (STEP_CLAMP)
  IK seeded at the measured joints; no solution inside the joint limits minus the margin, or a joint
  step above max_joint_step -> hold                        (JOINT_LIMIT)
  gripper clamped into its range                          (GRIPPER_CLAMP)
and tick(now), called by the bridge at its own rate, holds when the newest target is older than the
watchdog period (STALE_TARGET, once per stale episode).

Hold = keep commanding the last safe command; on disable, hold and e-stop the command becomes the measured
pose at that moment (latched, so the arm stops where it is and never jumps). Nothing is commanded before
the first enable. Every clamp, refusal and hold yields a GuardEventRecord (kinds = hybridvla_msgs/GuardEvent).

Units: metres, radians, seconds; quaternions (x, y, z, w); gripper dimensionless 0 (closed) .. 1 (open).
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from hybridvla_core.runtime.kinematics import (KinematicChain, load_arm, quaternion_from_rotvec, quaternion_inverse,
                                               quaternion_multiply, rotvec_from_quaternion)


class EventKind(IntEnum):
    """Same numbers as the constants of hybridvla_msgs/msg/GuardEvent."""

    NON_FINITE = 0
    WORKSPACE_CLAMP = 1
    STEP_CLAMP = 2
    JOINT_LIMIT = 3
    GRIPPER_CLAMP = 4
    STALE_TARGET = 5
    DISABLED = 6
    ESTOP = 7
    LOW_CONFIDENCE = 8


_ROUNDING = 1e-9  # m, rad: far below any limit, far above the rounding of the pose arithmetic

# The largest value a safety limit may be set to (value, unit): beyond these a "limit" is a typo or no limit at all
# (a 10 Hz policy stepping 0.1 m per command already asks for 1 m/s of TCP speed).
UPPER_LIMITS = {
    "max_translation_step": (0.10, "m per command"),
    "max_rotation_step": (0.5, "rad per command"),
    "max_joint_step": (1.0, "rad per command"),
    "watchdog_period": (2.0, "s"),
}


@dataclass(frozen=True)
class GuardConfig:
    arm: str                                      # arm name as configured: "fr3", "left", "right"
    model: str                                    # kinematics.ARMS key: "fr3", "piper", "piper_left", ...
    workspace_min: tuple[float, float, float]     # m, TCP position box in the arm's base frame
    workspace_max: tuple[float, float, float]     # m
    max_translation_step: float = 0.03            # m per command, from the measured TCP position
    max_rotation_step: float = 0.15               # rad per command, from the measured TCP orientation
    joint_margin: float = 0.05                    # rad kept clear of every joint limit
    max_joint_step: float = 0.5                   # rad per command, any joint, from the measured joints
    gripper_min: float = 0.0                      # dimensionless, 0 = closed
    gripper_max: float = 1.0                      # dimensionless, 1 = fully open
    watchdog_period: float = 0.5                  # s: older targets / measurements -> hold
    min_confidence: float = 0.0                   # 0..1: targets less confident -> hold; 0 = off (NaN passes then)
    ik_iterations: int = 20                       # warm-started at the measured joints: 2-4 are typical
    ik_position_tolerance: float = 5e-4           # m
    ik_rotation_tolerance: float = 5e-3           # rad

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        def bad(name, why):
            raise ValueError(f"guard config '{name}' = {getattr(self, name)!r} is invalid: {why}")

        for name in ("workspace_min", "workspace_max"):
            v = getattr(self, name)
            if len(v) != 3 or not all(math.isfinite(float(x)) for x in v):
                bad(name, "expected 3 finite numbers [m]")
        if not all(lo < hi for lo, hi in zip(self.workspace_min, self.workspace_max)):
            bad("workspace_max", f"every axis must exceed workspace_min {list(self.workspace_min)}")
        for name in ("max_translation_step", "max_rotation_step", "max_joint_step", "watchdog_period",
                     "ik_position_tolerance", "ik_rotation_tolerance"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                bad(name, "expected a finite number > 0")
            if name in UPPER_LIMITS and v > UPPER_LIMITS[name][0]:
                bad(name, f"expected at most {UPPER_LIMITS[name][0]} {UPPER_LIMITS[name][1]}: a larger limit no longer "
                          f"guards anything")
        if not (math.isfinite(self.joint_margin) and 0 <= self.joint_margin < 0.5):
            bad("joint_margin", "expected 0 <= margin < 0.5 rad")
        if not (0.0 <= self.gripper_min < self.gripper_max <= 1.0):
            bad("gripper_max", f"expected 0 <= gripper_min ({self.gripper_min}) < gripper_max <= 1")
        if not (isinstance(self.min_confidence, (int, float)) and 0.0 <= self.min_confidence <= 1.0):
            bad("min_confidence", "expected 0 <= min_confidence <= 1 (0 = off)")
        if not (isinstance(self.ik_iterations, int) and self.ik_iterations >= 1):
            bad("ik_iterations", "expected an integer >= 1")


@dataclass(frozen=True)
class Target:
    position: np.ndarray      # (3,) m, arm base frame
    quaternion: np.ndarray    # (4,) x, y, z, w
    gripper: float            # 0 closed .. 1 open
    stamp: float              # s, time of the observation the target came from
    confidence: float = 1.0   # 0..1, the policy's (ArmTarget.confidence; NaN = none given: diffusion mode)


@dataclass(frozen=True)
class Command:
    position: np.ndarray      # (3,) m, arm base frame
    quaternion: np.ndarray    # (4,) x, y, z, w, unit
    gripper: float            # 0 closed .. 1 open
    joints: np.ndarray        # rad, the IK solution (or the measured joints when holding)
    hold: bool                # true when this repeats a held command rather than a new target


@dataclass(frozen=True)
class GuardEventRecord:
    kind: EventKind
    detail: str                                   # one line: what was asked, what was done
    magnitude: float                              # m, rad, 0..1 (gripper) or s (stale), per kind
    stamp: float                                  # s, when the guard acted
    requested_position: np.ndarray | None         # as asked (may hold NaN)
    requested_quaternion: np.ndarray | None
    requested_gripper: float
    sent_position: np.ndarray | None              # as sent: the held pose when refused; None = nothing sent
                                                  # (never enabled); holds without a target: asked = sent
    sent_quaternion: np.ndarray | None
    sent_gripper: float


@dataclass
class GuardResult:
    command: Command | None                       # None: nothing may be commanded (never enabled)
    events: list[GuardEventRecord] = field(default_factory=list)


@dataclass(frozen=True)
class _Measured:
    joints: np.ndarray
    position: np.ndarray
    quaternion: np.ndarray
    gripper: float
    stamp: float


def _norm(v) -> float:
    """Euclidean norm that cannot overflow for finite input (np.linalg.norm does near 1e154)."""
    return math.hypot(*(float(x) for x in v))


def _finite(*values) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, dtype=float))) for v in values)


class GuardPipeline:
    """Per-arm guard state machine. Not thread-safe: a bridge calls it from one executor thread."""

    def __init__(self, config: GuardConfig, chain: KinematicChain | None = None):
        config.validate()
        self.config = config
        self.chain = chain if chain is not None else load_arm(config.model)
        self._box_lo = np.array(config.workspace_min, dtype=float)
        self._box_hi = np.array(config.workspace_max, dtype=float)
        self._enabled = False
        self._estop = False
        self._measured: _Measured | None = None
        self._command: Command | None = None      # the command being sent (safe or held)
        self._newest_stamp: float | None = None   # stamp of the newest accepted target (or of the enable)
        self._stale_reported = False

    # --- state ----------------------------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self._enabled and not self._estop

    @property
    def estopped(self) -> bool:
        return self._estop

    @property
    def command(self) -> Command | None:
        return self._command

    @property
    def measured(self) -> _Measured | None:
        return self._measured

    def set_measured(self, joints, stamp: float, position=None, quaternion=None, gripper: float | None = None) -> bool:
        """Store the measured joints [rad] (and TCP pose, else computed by FK; gripper 0..1). A non-finite
        or malformed measurement is ignored (returns False): the previous one stays and ages out."""
        joints = np.asarray(joints, dtype=float)
        if joints.shape != (self.chain.dof,) or not _finite(joints, stamp):
            return False
        if position is None or quaternion is None:
            position, quaternion = self.chain.fk(joints)
        position, quaternion = np.asarray(position, dtype=float), np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or quaternion.shape != (4,) or not _finite(position, quaternion):
            return False
        norm = _norm(quaternion)
        if abs(norm - 1.0) > 0.1:
            return False
        if gripper is None or not math.isfinite(gripper):
            gripper = self._measured.gripper if self._measured else (self._command.gripper if self._command else 0.0)
        self._measured = _Measured(joints, position, quaternion / norm, float(np.clip(gripper, 0.0, 1.0)), float(stamp))
        return True

    # --- enable / hold / e-stop -----------------------------------------------------------------------
    def enable(self, now: float) -> tuple[bool, str]:
        """Start passing targets, from the measured pose (latched: no jump to an old command)."""
        if self._estop:
            return False, "e-stop is latched: clear it first"
        if self._measured is None or now - self._measured.stamp > self.config.watchdog_period:
            return False, "no fresh measured state of the arm"
        if not self.chain.within_limits(self._measured.joints, self.config.joint_margin):
            # Every target would be refused: the IK keeps the joints this far from the limits.
            return False, (f"measured joints {np.round(self._measured.joints, 3).tolist()} are within "
                           f"{self.config.joint_margin} rad of a limit: move the arm to a ready pose first")
        self._latch_measured()
        self._enabled = True
        self._newest_stamp = now
        self._stale_reported = False
        return True, "enabled"

    def disable(self, now: float, reason: str = "disabled") -> GuardResult:
        """Stop passing targets; hold the measured pose."""
        was = self._enabled
        self._enabled = False
        if self._measured is not None and self._command is not None and was:
            self._latch_measured()
        return self._hold(now, [(EventKind.DISABLED, f"{reason}: holding the measured pose", 0.0)], None)

    def estop(self, now: float) -> GuardResult:
        """Latch the e-stop: nothing but the held measured pose until clear_estop() and enable()."""
        self._estop = True
        self._enabled = False
        if self._measured is not None and self._command is not None:
            self._latch_measured()
        return self._hold(now, [(EventKind.ESTOP, "e-stop latched: holding the measured pose", 0.0)], None)

    def clear_estop(self) -> None:
        """Unlatch; the pipeline stays disabled until enable()."""
        self._estop = False

    def _latch_measured(self) -> None:
        m = self._measured
        self._command = Command(m.position.copy(), m.quaternion.copy(), m.gripper, m.joints.copy(), hold=True)

    # --- the pipeline ---------------------------------------------------------------------------------
    def submit(self, target: Target, now: float) -> GuardResult:
        """Run one target through the guards. The result's command is what the bridge sends now."""
        cfg = self.config
        if self._estop:
            return self._hold(now, [(EventKind.ESTOP, "target ignored: e-stop latched", 0.0)], target)
        if not self._enabled:
            return self._hold(now, [(EventKind.DISABLED, "target ignored: bridge disabled", 0.0)], target)
        p = np.asarray(target.position, dtype=float)
        qt = np.asarray(target.quaternion, dtype=float)
        if p.shape != (3,) or qt.shape != (4,) or not _finite(p, qt, target.gripper, target.stamp):
            return self._hold(now, [(EventKind.NON_FINITE, "target holds NaN/inf: refused", 0.0)], target)
        norm = _norm(qt)
        if abs(norm - 1.0) > 0.1:
            # Finite components near float max can still have an infinite norm: report a finite magnitude.
            return self._hold(now, [(EventKind.NON_FINITE, f"quaternion norm {norm:.3g} is not 1: refused",
                                     min(abs(norm - 1.0), sys.float_info.max))], target)
        qt = qt / norm
        age = now - float(target.stamp)
        if abs(age) > cfg.watchdog_period:
            return self._hold(now, [(EventKind.STALE_TARGET, f"target stamp is {age:+.3f} s from now "
                                     f"(watchdog {cfg.watchdog_period} s): refused", abs(age))], target)
        if self._newest_stamp is not None and target.stamp < self._newest_stamp:
            return self._hold(now, [(EventKind.STALE_TARGET, "target older than the newest one: refused",
                                     self._newest_stamp - target.stamp)], target)
        m = self._measured
        if now - m.stamp > cfg.watchdog_period:
            return self._hold(now, [(EventKind.STALE_TARGET, f"measured state is {now - m.stamp:.3f} s old: refused",
                                     now - m.stamp)], target)
        self._newest_stamp = float(target.stamp)
        self._stale_reported = False
        confidence = float(target.confidence)
        if cfg.min_confidence > 0 and not confidence >= cfg.min_confidence:  # NaN holds too
            short = cfg.min_confidence - confidence if math.isfinite(confidence) else cfg.min_confidence
            return self._hold(now, [(EventKind.LOW_CONFIDENCE, f"confidence {confidence:.3f} below min_confidence "
                                     f"{cfg.min_confidence}: refused", short)], target)
        notes: list[tuple[EventKind, str, float]] = []

        # Workspace box, then the step from the measured pose toward it.
        boxed = np.clip(p, self._box_lo, self._box_hi)
        if not np.array_equal(boxed, p):
            d = _norm(boxed - p)
            notes.append((EventKind.WORKSPACE_CLAMP, f"position clamped into the workspace by {d:.4f} m", d))
        delta = boxed - m.position
        dist = float(np.linalg.norm(delta))
        position = boxed
        if dist > cfg.max_translation_step:
            position = m.position + delta * (cfg.max_translation_step / dist)
            notes.append((EventKind.STEP_CLAMP, f"translation step {dist:.4f} m limited to "
                          f"{cfg.max_translation_step} m", dist - cfg.max_translation_step))
            # The measured pose may lie outside the box: the step toward it must still end inside.
            inside = np.clip(position, self._box_lo, self._box_hi)
            if not np.array_equal(inside, position):
                if np.linalg.norm(inside - m.position) > cfg.max_translation_step:
                    return self._hold(now, notes + [(EventKind.WORKSPACE_CLAMP, "arm is outside the workspace "
                                                     "by more than one step: refused", float(np.linalg.norm(inside - position)))], target)
                position = inside
        rotvec = rotvec_from_quaternion(quaternion_multiply(qt, quaternion_inverse(m.quaternion)))
        angle = float(np.linalg.norm(rotvec))
        quaternion = qt
        if angle > cfg.max_rotation_step:
            quaternion = quaternion_multiply(quaternion_from_rotvec(rotvec * (cfg.max_rotation_step / angle)),
                                             m.quaternion)
            notes.append((EventKind.STEP_CLAMP, f"rotation step {angle:.4f} rad limited to {cfg.max_rotation_step} rad",
                          angle - cfg.max_rotation_step))

        ik = self.chain.ik(position, quaternion, m.joints, margin=cfg.joint_margin,
                           position_tolerance=cfg.ik_position_tolerance, rotation_tolerance=cfg.ik_rotation_tolerance,
                           max_iterations=cfg.ik_iterations)
        if not ik.success:
            return self._hold(now, notes + [(EventKind.JOINT_LIMIT, "no IK solution inside the joint limits minus "
                                             f"{cfg.joint_margin} rad (residual {ik.position_error:.4f} m, "
                                             f"{ik.rotation_error:.4f} rad): refused", ik.position_error)], target)
        joint_step = np.abs(ik.q - m.joints)
        if joint_step.max() > cfg.max_joint_step:
            j = int(joint_step.argmax())
            return self._hold(now, notes + [(EventKind.JOINT_LIMIT, f"IK moves {self.chain.joint_names[j]} by "
                                             f"{joint_step[j]:.3f} rad > {cfg.max_joint_step} rad: refused",
                                             float(joint_step[j]))], target)

        gripper = float(np.clip(target.gripper, cfg.gripper_min, cfg.gripper_max))
        if gripper != target.gripper:
            notes.append((EventKind.GRIPPER_CLAMP, f"gripper {target.gripper:.3f} clamped to {gripper:.3f}",
                          abs(float(target.gripper) - gripper)))
        self._command = Command(position, quaternion, gripper, ik.q, hold=False)
        return GuardResult(self._command, [self._record(now, n, target) for n in notes])

    def tick(self, now: float) -> GuardResult:
        """Called by the bridge at its output rate: the command to send now, holding (and reporting once)
        when the newest target or the measured state is older than the watchdog period."""
        if self._command is None:
            return GuardResult(None)
        moved = self._relatch_if_moved_away(now)
        if moved is not None:
            return moved
        if not self.enabled:
            return GuardResult(self._command)
        m = self._measured
        target_age = now - self._newest_stamp
        measured_age = now - m.stamp
        if max(target_age, measured_age) <= self.config.watchdog_period:
            return GuardResult(self._command)
        if self._stale_reported:
            return GuardResult(self._command)
        self._stale_reported = True
        what = (f"no target for {target_age:.3f} s" if target_age > self.config.watchdog_period
                else f"measured state is {measured_age:.3f} s old")
        return self._hold(now, [(EventKind.STALE_TARGET, f"{what} (watchdog {self.config.watchdog_period} s): "
                                 "holding the last safe command", max(target_age, measured_age))], None)

    def _relatch_if_moved_away(self, now: float) -> GuardResult | None:
        """A held pose more than one guarded step from where the arm now is (the simulated lab reset it, or it
        was pushed or hand-guided while held) is not sent: driving back there would be a move nobody asked for,
        larger than any step the guards let a target make. Hold the measured pose instead."""
        c, m = self._command, self._measured
        if not c.hold or m is None or now - m.stamp > self.config.watchdog_period:
            return None
        distance = float(np.linalg.norm(c.position - m.position))
        angle = float(np.linalg.norm(rotvec_from_quaternion(quaternion_multiply(c.quaternion,
                                                                                quaternion_inverse(m.quaternion)))))
        # A held command is often exactly one step from the pose it was clamped toward: rounding (1e-16) must not
        # turn "one step" into "more than one step".
        if distance <= self.config.max_translation_step + _ROUNDING and angle <= self.config.max_rotation_step + _ROUNDING:
            return None
        self._latch_measured()
        return GuardResult(self._command, [self._record(now, (
            EventKind.STEP_CLAMP, f"held pose is {distance:.4f} m / {angle:.4f} rad from the measured pose "
            "(more than one step): holding the measured pose", max(distance, angle)), None)])

    # --- helpers --------------------------------------------------------------------------------------
    def _hold(self, now: float, notes, target: Target | None) -> GuardResult:
        if self._command is not None and not self._command.hold:
            c = self._command
            self._command = Command(c.position, c.quaternion, c.gripper, c.joints, hold=True)
        return GuardResult(self._command, [self._record(now, n, target) for n in notes])

    def _record(self, now: float, note, target: Target | None) -> GuardEventRecord:
        kind, detail, magnitude = note
        sent = self._command
        sent_p = None if sent is None else sent.position.copy()
        sent_q = None if sent is None else sent.quaternion.copy()
        sent_g = 0.0 if sent is None else sent.gripper
        if target is None:  # a hold that no target caused (tick, disable, e-stop): asked = sent
            req_p, req_q, req_g = sent_p, sent_q, sent_g
        else:
            req_p, req_q, req_g = target.position, target.quaternion, target.gripper
        return GuardEventRecord(
            kind=kind, detail=f"{self.config.arm}: {detail}", magnitude=float(magnitude), stamp=float(now),
            requested_position=None if req_p is None else np.asarray(req_p, dtype=float).copy(),
            requested_quaternion=None if req_q is None else np.asarray(req_q, dtype=float).copy(),
            requested_gripper=float(req_g), sent_position=sent_p, sent_quaternion=sent_q, sent_gripper=float(sent_g),
        )
