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
# piper_ros humble's joint_states_single names: joint0..joint5 [rad] and joint6 = the gripper opening [m].
PIPER_ROS_JOINT_STATE_NAMES = [f"joint{i}" for i in range(7)]
PIPER_ROS_DEFAULT_SPEED_PERCENT = 30  # piper_ros (humble) moves at this when joint_ctrl_single carries no speed


def piper_ros_speed_percent(velocity) -> int:
    """The MotionCtrl_2 speed [%] piper_ros (humble, joint_callback) applies for a joint_ctrl_single's velocity
    field: round(velocity[6]) clamped to 0..100 when there are 7 values not all zero, else 30."""
    if len(velocity) == 7 and any(v != 0 for v in velocity):
        return min(max(round(velocity[6]), 0), 100)
    return PIPER_ROS_DEFAULT_SPEED_PERCENT
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


# --- confirming the motors' enable bits ------------------------------------------------------------------
MOTORS = 6


class MotorEnableWatch:
    """Judges an arm's enable from its drivers' low-speed feedback (piper_sdk GetArmLowSpdInfoMsgs:
    motor_1..motor_6.foc_status.driver_enable_status, CAN 0x261..0x266).

    piper_sdk's EnablePiper() and piper_ros's enable_flag report before the drivers do (EnablePiper returns the
    bits read BEFORE it sends the enable frame), so an arm is "enabled" only when every driver's bit is set in
    feedback that arrived after the first enable command (the feedback's time stamp moved on). The SDK keeps
    one time stamp for the six drivers' frames: a driver whose frames stopped while the others go on would
    keep its last bit (not observable through the SDK).

    start(t, feedback_stamp) when the first enable command goes out; observe(t, feedback_stamp, bits) then
    returns True (all confirmed), False (timed out: see reason()) or None (keep waiting). t in seconds on any
    monotonic clock; feedback_stamp as the SDK reports it (only compared for change)."""

    def __init__(self, timeout: float, motors: int = MOTORS):
        if not timeout > 0:
            raise ValueError(f"enable timeout must be > 0 s, got {timeout}")
        self.timeout, self.motors = float(timeout), motors
        self._t0 = self._stamp0 = None
        self.fresh = False                      # feedback newer than the command seen
        self.up = [False] * motors              # newest fresh bit per driver

    def start(self, t: float, feedback_stamp: float) -> None:
        self._t0, self._stamp0 = t, feedback_stamp
        self.fresh, self.up = False, [False] * self.motors

    def observe(self, t: float, feedback_stamp: float, bits) -> bool | None:
        if self._t0 is None:
            raise RuntimeError("MotorEnableWatch.observe before start")
        if feedback_stamp != self._stamp0:
            self.fresh = True
            self.up = [bool(b) for b in list(bits)[:self.motors]]
        if self.fresh and all(self.up):
            return True
        if t - self._t0 > self.timeout:
            return False
        return None

    def reason(self) -> str:
        """Why the enable failed, naming the drivers that did not come up (motor n drives joint n)."""
        if not self.fresh:
            return (f"no driver feedback (piper_sdk low-speed info, CAN 0x261..0x266) within {self.timeout:g} s of the "
                    "enable command: check the arm's power and its CAN link")
        down = [i + 1 for i, up in enumerate(self.up) if not up]
        return (f"motor(s) {', '.join(map(str, down))} (joint{'s' if len(down) > 1 else ''} "
                f"{', '.join(map(str, down))}) did not report enabled within {self.timeout:g} s "
                "(driver_enable_status in the low-speed feedback)")


# --- piper_ros: the parameters its control node really reads ------------------------------------------------
# piper_ctrl_single_node declares (agilexrobotics/Piper_ros): on the official humble branch (ros-humble-no-aloha,
# also foxy / noetic) can_port, auto_enable, girpper_exist (sic), rviz_ctrl_flag, and no gripper multiplier;
# forks and later branches spell gripper_exist and add gripper_val_mutiple (position[6] * multiplier). A ROS 2
# node ignores a parameter it does not declare: the wrong spelling on a launch line changes nothing, silently.
PIPER_ROS_BRANCHES = {
    "humble": {"gripper": "girpper_exist", "multiplier": None},
    "gripper_val_mutiple": {"gripper": "gripper_exist", "multiplier": "gripper_val_mutiple"},
}


def piper_ros_node_parameters(branch: str, can_port: str, gripper: bool = True) -> dict:
    """The parameters to start piper_ctrl_single_node with so that it takes what the agilex bridge sends:
    not auto-enabled (the bridge enables it on ~/enable), the gripper on, joint_ctrl_single position[6] in
    metres (rviz_ctrl_flag false: true doubles it; multiplier 1 where the branch has one)."""
    if branch not in PIPER_ROS_BRANCHES:
        raise ValueError(f"piper_ros branch must be one of {sorted(PIPER_ROS_BRANCHES)}, got {branch!r}")
    names = PIPER_ROS_BRANCHES[branch]
    params = {"can_port": can_port, "auto_enable": False, names["gripper"]: bool(gripper)}
    if names["multiplier"]:
        params[names["multiplier"]] = 1
    else:
        params["rviz_ctrl_flag"] = False
    return params


def judge_piper_ros_parameters(arm: str, node: str, declared: Mapping | None, gripper: bool = True) -> list:
    """Checks (hybridvla_core.robots.preflight.Check) of a running piper_ctrl_single_node's declared parameters
    (name -> value, from its parameter services; None: the node was not found)."""
    from hybridvla_core.robots.preflight import Check

    name = f"piper_ros {node}"
    if declared is None:
        return [Check(name, False, "node not found (no parameter services answered)",
                      f"start piper_ros for {arm}: ros2 run piper piper_single_ctrl --ros-args -r __ns:=/{arm} "
                      + " ".join(f"-p {k}:={str(v).lower() if isinstance(v, bool) else v}"
                                 for k, v in piper_ros_node_parameters("humble", f"can_{arm}", gripper).items()))]
    branch = next((b for b, n in PIPER_ROS_BRANCHES.items() if n["gripper"] in declared), None)
    if branch is None:
        return [Check(name, False, f"declares neither girpper_exist nor gripper_exist ({sorted(declared)}): "
                      "not a piper_ctrl_single_node this bridge knows", "run piper_ros's piper_single_ctrl")]
    spelling = PIPER_ROS_BRANCHES[branch]["gripper"]
    checks = [Check(f"{name} {spelling}", declared[spelling] is bool(gripper),
                    f"{declared[spelling]} (this branch spells it {spelling!r})",
                    f"start it with -p {spelling}:={str(gripper).lower()} (another spelling is ignored)")]
    multiplier = PIPER_ROS_BRANCHES[branch]["multiplier"]
    if multiplier:
        checks.append(Check(f"{name} {multiplier}", declared.get(multiplier) == 1, f"{declared.get(multiplier)}",
                            f"start it with -p {multiplier}:=1: the bridge sends the gripper opening in metres"))
    if "rviz_ctrl_flag" in declared:
        checks.append(Check(f"{name} rviz_ctrl_flag", declared["rviz_ctrl_flag"] is False, f"{declared['rviz_ctrl_flag']}",
                            "start it with -p rviz_ctrl_flag:=false: true doubles joint_ctrl_single position[6] (the "
                            "gripper)"))
    if "auto_enable" in declared:
        checks.append(Check(f"{name} auto_enable", declared["auto_enable"] is False, f"{declared['auto_enable']}",
                            "start it with -p auto_enable:=false: the bridge enables the arm on ~/enable"))
    return checks


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

    def enable(self, timeout: float = 2.0, resend_period: float = 0.1) -> tuple[bool, str]:
        """Enable all six drivers and confirm each one's enable bit in fresh low-speed feedback
        (MotorEnableWatch), resending EnableArm(7) every resend_period [s]; then enable the gripper.
        On a timeout every driver is disabled again (DisableArm(7): support the arm) and the message names
        the drivers that did not come up. Returns (ok, one line)."""
        watch = MotorEnableWatch(timeout)
        watch.start(time.monotonic(), self._piper.GetArmLowSpdInfoMsgs().time_stamp)
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= next_send:
                self._piper.EnableArm(7)
                next_send = now + resend_period
            time.sleep(0.005)
            low = self._piper.GetArmLowSpdInfoMsgs()
            bits = [getattr(low, f"motor_{i}").foc_status.driver_enable_status for i in range(1, MOTORS + 1)]
            verdict = watch.observe(time.monotonic(), low.time_stamp, bits)
            if verdict:
                self._piper.GripperCtrl(0, self.gripper_effort, 0x01, 0)
                return True, "enabled: all six drivers report enabled"
            if verdict is False:
                self._piper.DisableArm(7)
                return False, f"{self.can_name}: {watch.reason()}; all drivers disabled again"

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

    def __init__(self, channel: str, joints_rad: Sequence[float] = (0, 0, 0, 0, 0, 0), rate_hz: float = 200.0,
                 stuck_motors: Sequence[int] = (), low_speed_feedback: bool = True):
        """stuck_motors: drivers (1..6) that never enable (a fault); low_speed_feedback False: no 0x261..0x266."""
        import can

        self._can = can
        self.bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
        self.joints = np.array([rad_to_sdk_joint(v) for v in joints_rad], dtype=float)  # 0.001 deg
        self.target = self.joints.copy()
        self.gripper = 0.0          # 0.001 mm
        self.gripper_target = 0.0
        self.motor_enabled = [False] * MOTORS
        self.stuck_motors = set(stuck_motors)
        self.low_speed_feedback = low_speed_feedback
        self.can_mode = False       # 0x151 ctrl_mode 0x01 and move_mode MOVE J
        self.speed_percent = 0
        self.estopped = False
        self.frames = Counter()     # CAN id -> frames consumed
        self._period = 1.0 / rate_hz
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sim-piper-{channel}", daemon=True)
        self._thread.start()

    @property
    def enabled(self) -> bool:
        """Every driver enabled (the arm moves only then)."""
        return all(self.motor_enabled)

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
        if cid == 0x471 and d[1] in (0x01, 0x02):  # motor 1..6, or 7 / 0xFF: all; 0x02 enable, 0x01 disable
            motors = range(1, MOTORS + 1) if d[0] in (7, 0xFF) else [d[0]] if 1 <= d[0] <= MOTORS else []
            for m in motors:
                self.motor_enabled[m - 1] = d[1] == 0x02 and m not in self.stuck_motors
        elif cid == 0x150 and d[0] == 0x01:
            self.estopped = True
        elif cid == 0x150 and d[0] == 0x02:
            self.estopped = False
            self.motor_enabled = [False] * MOTORS
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
        status = 0x40 if self.enabled else 0x00  # gripper driver status, bit 6: enabled
        frames.append(Message(arbitration_id=0x2A8, is_extended_id=False,
                              data=struct.pack(">ihBB", int(round(self.gripper)), 0, status, 0)))
        for motor in range(MOTORS if self.low_speed_feedback else 0):
            bit = 0x40 if self.motor_enabled[motor] else 0x00  # bit 6: driver enabled
            frames.append(Message(arbitration_id=0x261 + motor, is_extended_id=False,
                                  data=struct.pack(">HhbBH", 240, 30, 30, bit, 0)))
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
