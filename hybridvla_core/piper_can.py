"""AgileX Piper over CAN: piper_sdk units, the dual-arm slot layout, the piper_sdk backend and a simulated arm.

piper_sdk units (interface facts): joints in 0.001 degree, gripper stroke and end-pose X/Y/Z in 0.001 mm
(= 1 micrometre), gripper effort in 0.001 N*m (0..5000). Everything above this module speaks radians and
metres; the conversions below are the only place where the SDK's integers appear.

Dual arm: a 14-dim vector (action, state or joint command) is two 7-dim slots (actions.ARM_DIM); slot 0
belongs to arm_order[0], slot 1 to arm_order[1]. The order is the `arm_order` parameter of the agilex bridge
(default ["left", "right"], the Cobot Magic convention: left arm first).

SimulatedPiper answers on a python-can "virtual" bus inside this process, like the real arm's controller:
it consumes 0x150 (e-stop), 0x151 (MotionCtrl_2), 0x155..0x157 (joint targets), 0x159 (gripper), 0x471
(motor enable) and sends 0x2A1 (status), 0x2A5..0x2A7 (joints), 0x2A8 (gripper) and 0x261..0x266 (driver
low-speed info carrying the enable bit), at 200 Hz.
"""
from __future__ import annotations

import math
import struct
import threading
import time
from collections import Counter
from typing import Mapping, Sequence

import numpy as np

from hybridvla_core.actions import ARM_DIM

GRIPPER_MAX_M = 0.07          # m, the SDK's gripper stroke range 0..0.07
MAX_JOINT_SPEED = 3.0         # rad/s, Piper joints


# --- units ----------------------------------------------------------------------------------------------
def rad_to_sdk_joint(rad: float) -> int:
    """rad -> SDK joint angle in 0.001 degree (rounded to the nearest unit)."""
    return int(round(math.degrees(float(rad)) * 1000.0))


def sdk_joint_to_rad(value: int) -> float:
    """SDK joint angle in 0.001 degree -> rad."""
    return math.radians(value / 1000.0)


def m_to_sdk_micrometre(metres: float) -> int:
    """m -> SDK length in 0.001 mm (gripper stroke, end-pose X/Y/Z)."""
    return int(round(float(metres) * 1e6))


def sdk_micrometre_to_m(value: int) -> float:
    """SDK length in 0.001 mm -> m."""
    return value / 1e6


# --- dual-arm slots -------------------------------------------------------------------------------------
def check_arm_order(order: Sequence[str]) -> tuple[str, str]:
    if len(order) != 2 or len(set(order)) != 2 or not all(isinstance(a, str) and a for a in order):
        raise ValueError(f"arm_order must name two different arms, e.g. ['left', 'right'], got {list(order)!r}")
    return order[0], order[1]


def split_dual(vector, order: Sequence[str]) -> dict[str, np.ndarray]:
    """14-dim vector -> {arm: 7-dim slot}; slot 0 is order[0]."""
    first, second = check_arm_order(order)
    v = np.asarray(vector, dtype=float)
    if v.shape != (2 * ARM_DIM,):
        raise ValueError(f"expected a {2 * ARM_DIM}-dim dual-arm vector, got shape {v.shape}")
    return {first: v[:ARM_DIM].copy(), second: v[ARM_DIM:].copy()}


def join_dual(per_arm: Mapping[str, Sequence[float]], order: Sequence[str]) -> np.ndarray:
    """{arm: 7-dim slot} -> 14-dim vector in arm order."""
    arms = check_arm_order(order)
    missing = [a for a in arms if a not in per_arm]
    if missing:
        raise ValueError(f"no values for arm(s) {missing}; have {sorted(per_arm)}")
    slots = [np.asarray(per_arm[a], dtype=float) for a in arms]
    for arm, slot in zip(arms, slots):
        if slot.shape != (ARM_DIM,):
            raise ValueError(f"arm {arm!r}: expected {ARM_DIM} values (6 joints/pose + gripper), got {slot.shape}")
    return np.concatenate(slots)


# --- piper_sdk backend ----------------------------------------------------------------------------------
def _import_piper_sdk():
    try:
        from piper_sdk import C_PiperInterface_V2
    except ImportError as exc:  # the message names the fix
        raise ImportError("backend 'piper_sdk' needs the piper_sdk package: pip install piper_sdk python-can") from exc
    return C_PiperInterface_V2


class PiperSdkArm:
    """One Piper through piper_sdk's C_PiperInterface_V2. Joint targets go out as MotionCtrl_2 (CAN control,
    MOVE J) + JointCtrl, the gripper as GripperCtrl; feedback comes from the SDK's reader thread.

    bustype "socketcan" on the robot PC (can_name = the interface, e.g. can_left); "virtual" in tests."""

    def __init__(self, can_name: str, bustype: str = "socketcan", speed_percent: int = 30,
                 gripper_effort: int = 1000):
        if not 1 <= speed_percent <= 100:
            raise ValueError(f"speed_percent must be 1..100, got {speed_percent}")
        if not 0 <= gripper_effort <= 5000:
            raise ValueError(f"gripper_effort must be 0..5000 (0.001 N*m), got {gripper_effort}")
        C_PiperInterface_V2 = _import_piper_sdk()
        self.can_name = can_name
        self.speed_percent = int(speed_percent)
        self.gripper_effort = int(gripper_effort)
        if bustype == "socketcan":
            self._piper = C_PiperInterface_V2(can_name)
        else:
            self._piper = C_PiperInterface_V2(can_name, judge_flag=False, can_auto_init=False)
            self._piper.CreateCanBus(can_name, bustype=bustype, judge_flag=False)
        self._piper.ConnectPort()

    def enable(self, timeout: float = 2.0) -> bool:
        """The vendor's enable sequence: EnablePiper() until every driver reports enabled, then enable the
        gripper. False when the drivers do not report enabled within the timeout."""
        deadline = time.monotonic() + timeout
        while not self._piper.EnablePiper():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        self._piper.GripperCtrl(0, self.gripper_effort, 0x01, 0)
        return True

    def send(self, joints_rad: Sequence[float], gripper_m: float) -> None:
        """Joint target [rad] (6) and gripper opening [m, 0..0.07]; the caller has guarded both."""
        if len(joints_rad) != 6 or not all(math.isfinite(v) for v in joints_rad) or not math.isfinite(gripper_m):
            raise ValueError(f"refusing a malformed Piper command: joints {list(joints_rad)}, gripper {gripper_m}")
        self._piper.MotionCtrl_2(0x01, 0x01, self.speed_percent, 0x00)
        self._piper.JointCtrl(*(rad_to_sdk_joint(v) for v in joints_rad))
        gripper = min(max(float(gripper_m), 0.0), GRIPPER_MAX_M)
        self._piper.GripperCtrl(m_to_sdk_micrometre(gripper), self.gripper_effort, 0x01, 0)

    def read(self) -> tuple[np.ndarray, float, float] | None:
        """(joints [rad] (6,), gripper opening [m], SDK feedback time [s]) or None before the first feedback."""
        joints = self._piper.GetArmJointMsgs()
        if joints.time_stamp == 0:
            return None
        js = joints.joint_state
        q = np.array([sdk_joint_to_rad(v) for v in (js.joint_1, js.joint_2, js.joint_3, js.joint_4, js.joint_5,
                                                     js.joint_6)])
        gripper = sdk_micrometre_to_m(self._piper.GetArmGripperMsgs().gripper_state.grippers_angle)
        return q, gripper, float(joints.time_stamp)

    def emergency_stop(self) -> None:
        self._piper.EmergencyStop(0x01)

    def close(self) -> None:
        self._piper.DisconnectPort()


# --- a simulated arm on a virtual bus ------------------------------------------------------------------
_JOINT_FEEDBACK = (0x2A5, 0x2A6, 0x2A7)
_JOINT_CTRL = (0x155, 0x156, 0x157)


class SimulatedPiper:
    """A Piper controller on a python-can virtual bus (same process). Joints move toward the last JointCtrl
    target at MAX_JOINT_SPEED * speed% only while enabled (0x471), in CAN control + MOVE J (0x151) and not
    e-stopped (0x150 0x01; 0x150 0x02 resets). Joint targets are clipped to the SDK limits like the firmware."""

    LIMITS_MDEG = ((-150000, 150000), (0, 180000), (-170000, 0), (-100000, 100000), (-70000, 70000),
                   (-120000, 120000))

    def __init__(self, channel: str, joints_rad: Sequence[float] = (0, 0, 0, 0, 0, 0), rate_hz: float = 200.0):
        import can

        self._can = can
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.joints = np.array([rad_to_sdk_joint(v) for v in joints_rad], dtype=float)  # 0.001 deg
        self.target = self.joints.copy()
        self.gripper = 0.0          # 0.001 mm
        self.gripper_target = 0.0
        self.enabled = False
        self.can_mode = False       # 0x151 ctrl_mode 0x01 and move_mode MOVE J
        self.speed_percent = 0
        self.estopped = False
        self.frames = Counter()     # CAN id -> frames consumed
        self._period = 1.0 / rate_hz
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-piper-{channel}", daemon=True)
        self._thread.start()

    def joints_rad(self) -> np.ndarray:
        with self._lock:
            return np.array([sdk_joint_to_rad(v) for v in np.round(self.joints)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.bus.shutdown()

    def _consume(self, msg) -> None:
        i32 = lambda d, k: struct.unpack(">i", bytes(d[k:k + 4]))[0]  # noqa: E731 - big-endian int32
        cid, d = msg.arbitration_id, msg.data
        self.frames[cid] += 1
        if cid == 0x471 and d[1] == 0x02 and d[0] in (7, 0xFF):
            self.enabled = True
        elif cid == 0x471 and d[1] == 0x01 and d[0] in (7, 0xFF):
            self.enabled = False
        elif cid == 0x150 and d[0] == 0x01:
            self.estopped = True
        elif cid == 0x150 and d[0] == 0x02:
            self.estopped = self.enabled = False
        elif cid == 0x151:
            self.can_mode = d[0] == 0x01 and d[1] == 0x01
            self.speed_percent = d[2]
        elif cid in _JOINT_CTRL:
            k = 2 * _JOINT_CTRL.index(cid)
            for j, value in ((k, i32(d, 0)), (k + 1, i32(d, 4))):
                lo, hi = self.LIMITS_MDEG[j]
                self.target[j] = min(max(value, lo), hi)
        elif cid == 0x159:
            self.gripper_target = min(max(i32(d, 0), 0), m_to_sdk_micrometre(GRIPPER_MAX_M))

    def _feedback(self) -> list:
        Message = self._can.Message
        q = [int(round(v)) for v in self.joints]
        frames = [Message(arbitration_id=0x2A1, is_extended_id=False,
                          data=bytes([0x01 if self.can_mode else 0x00, 0x01 if self.estopped else 0x00, 0x01,
                                      0, 0, 0, 0, 0]))]
        for n, cid in enumerate(_JOINT_FEEDBACK):
            frames.append(Message(arbitration_id=cid, is_extended_id=False, data=struct.pack(">ii", q[2 * n], q[2 * n + 1])))
        status = 0x40 if self.enabled else 0x00  # bit 6: driver enabled
        frames.append(Message(arbitration_id=0x2A8, is_extended_id=False,
                              data=struct.pack(">ihBB", int(round(self.gripper)), 0, status, 0)))
        for motor in range(6):
            frames.append(Message(arbitration_id=0x261 + motor, is_extended_id=False,
                                  data=struct.pack(">HhbBH", 240, 30, 30, status, 0)))
        return frames

    def _run(self) -> None:
        next_feedback = time.monotonic()
        while not self._stop.is_set():
            msg = self.bus.recv(timeout=max(0.0, next_feedback - time.monotonic()))
            with self._lock:
                if msg is not None:
                    self._consume(msg)
                now = time.monotonic()
                if now < next_feedback:
                    continue
                next_feedback = now + self._period
                if self.enabled and self.can_mode and not self.estopped:
                    step = math.degrees(MAX_JOINT_SPEED * self.speed_percent / 100.0 * self._period) * 1000.0
                    self.joints += np.clip(self.target - self.joints, -step, step)
                    self.gripper += float(np.clip(self.gripper_target - self.gripper, -500.0, 500.0))
                frames = self._feedback()
            for frame in frames:
                self.bus.send(frame)
