"""ROS pieces both arm bridges share: message conversions around hybridvla_core.runtime.guards and the control services."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from geometry_msgs.msg import Pose
from hybridvla_msgs.msg import ArmState, ArmTarget, GuardEvent
from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from hybridvla_core.runtime.guards import GuardEventRecord, GuardPipeline, GuardResult, Target
from hybridvla_core.robots.preflight import SequenceRate
from hybridvla_ros.common import arrays_to_pose, pose_to_arrays, stamp_s


class LatestSample:
    """A state topic read when the bridge needs it, not message by message: at 1 kHz (crisp / franka_ros2 at the
    controller rate) even a callback that only stores the message costs the Python bridge most of a core in
    rclpy's executor. The subscription lives on a node that no executor spins (`reader`), the middleware keeps
    the newest sample (KEEP_LAST, depth 1) and take() removes it: per call, the newest message since the last
    call or None. Its age comes from the middleware's receipt time, its rate from the publishers' sequence
    numbers (rate())."""

    def __init__(self, reader: Node, msg_type, topic: str, qos, window: float = 2.0):
        self.topic = topic
        self.subscription = reader.create_subscription(msg_type, topic, lambda _msg: None, qos)
        self._rate = SequenceRate(window)

    def take(self):
        """(message, age [s] since the middleware received it) or None when nothing new arrived."""
        got = self.subscription.handle.take_message(self.subscription.msg_type, False)
        if got is None:
            return None
        msg, info = got
        now = time.monotonic()
        publisher = bytes((info.get("publisher_gid") or {}).get("data", b""))
        self._rate.add(now, publisher, info.get("publication_sequence_number"), info.get("source_timestamp", 0) * 1e-9)
        received = info.get("received_timestamp") or 0
        age = max(0.0, time.time() - received * 1e-9) if received else 0.0
        return msg, age

    def rate(self) -> float:
        """Messages per second published on the topic (sampled since the last window), 0 without samples."""
        return self._rate.rate(time.monotonic())


def now_s(node: Node) -> float:
    """The node's clock in seconds (the time base of target stamps and the watchdog)."""
    return node.get_clock().now().nanoseconds * 1e-9


def target_from_msg(msg: ArmTarget) -> Target:
    """ArmTarget -> guard Target (m, xyzw, 0..1, header stamp in s, confidence 0..1); values pass unchecked:
    the guards check."""
    position, quaternion = pose_to_arrays(msg.pose)
    return Target(position, quaternion, float(msg.gripper), stamp_s(msg.header.stamp), float(msg.confidence))


def _pose_or_identity(position, quaternion) -> Pose:
    if position is None or quaternion is None:
        return arrays_to_pose(np.zeros(3), [0.0, 0.0, 0.0, 1.0])
    return arrays_to_pose(position, quaternion)


def event_msg(node: Node, arm: str, record: GuardEventRecord, frame_id: str) -> GuardEvent:
    """GuardEventRecord -> GuardEvent (requested values as asked, even NaN: the report says what came in)."""
    m = GuardEvent(arm=arm, kind=int(record.kind), detail=record.detail,
                   magnitude=float(record.magnitude),
                   requested=_pose_or_identity(record.requested_position, record.requested_quaternion),
                   sent=_pose_or_identity(record.sent_position, record.sent_quaternion),
                   requested_gripper=float(record.requested_gripper), sent_gripper=float(record.sent_gripper))
    m.header.stamp = node.get_clock().now().to_msg()
    m.header.frame_id = frame_id
    return m


def arm_state_msg(node: Node, arm: str, frame_id: str, guards: GuardPipeline, joint_names: list[str],
                  gripper_width: float, gripper_max_width: float) -> ArmState | None:
    """The measured state of one arm as ArmState, or None before the first measurement."""
    m = guards.measured
    if m is None:
        return None
    msg = ArmState(arm=arm, pose=arrays_to_pose(m.position, m.quaternion),
                   gripper=float(np.clip(gripper_width / gripper_max_width, 0.0, 1.0)),
                   gripper_width=float(gripper_width), joint_names=list(joint_names),
                   joint_positions=[float(v) for v in m.joints], enabled=guards.enabled)
    msg.header.stamp = node.get_clock().now().to_msg()
    msg.header.frame_id = frame_id
    return msg


class ControlServices:
    """~/enable (SetBool), ~/hold, ~/estop, ~/clear_estop (Trigger) over one or more guard pipelines.

    on_result(result) publishes the events of a transition; on_estop() lets a backend stop the hardware.
    precheck() runs first on ~/enable true: a reason (one line) refuses the enable before any arm is touched
    (the bridge's bring-up checks: frames, rates, the controller's subscription, action servers);
    on_enable(arm) runs after an arm's guards accepted and may refuse it (the backend's enable sequence)."""

    def __init__(self, node: Node, pipelines: dict[str, GuardPipeline], on_result: Callable[[str, GuardResult], None],
                 on_enable: Callable[[str], tuple[bool, str]] | None = None, on_estop: Callable[[], None] | None = None,
                 precheck: Callable[[], str | None] | None = None):
        self.node, self.pipelines, self.on_result = node, pipelines, on_result
        self.on_enable, self.on_estop, self.precheck = on_enable, on_estop, precheck
        node.create_service(SetBool, "~/enable", self._enable)
        node.create_service(Trigger, "~/hold", self._hold)
        node.create_service(Trigger, "~/estop", self._estop)
        node.create_service(Trigger, "~/clear_estop", self._clear)

    def _enable(self, request, response):
        now = now_s(self.node)
        if not request.data:
            for arm, g in self.pipelines.items():
                self.on_result(arm, g.disable(now, "disabled by ~/enable false"))
            response.success, response.message = True, "disabled: holding"
            return response
        estopped = any(g.estopped for g in self.pipelines.values())  # the guards say so first
        refusal = self.precheck() if self.precheck is not None and not estopped else None
        if refusal:
            for arm, g in self.pipelines.items():
                if g.enabled:
                    self.on_result(arm, g.disable(now, "bring-up check failed"))
            response.success, response.message = False, f"not enabled: {refusal}"
            self.node.get_logger().error(f"enable refused: {refusal}")
            return response
        messages, ok = [], True
        for arm, g in self.pipelines.items():
            arm_ok, why = g.enable(now)
            if arm_ok and self.on_enable is not None:
                arm_ok, why = self.on_enable(arm)
                if not arm_ok:
                    self.on_result(arm, g.disable(now, f"backend refused: {why}"))
            ok &= arm_ok
            messages.append(f"{arm}: {why}")
        if not ok:  # all arms or none
            for arm, g in self.pipelines.items():
                if g.enabled:
                    self.on_result(arm, g.disable(now, "another arm could not be enabled"))
        response.success, response.message = ok, "; ".join(messages)
        self.node.get_logger().info(f"enable: {response.message}")
        return response

    def _hold(self, _request, response):
        now = now_s(self.node)
        for arm, g in self.pipelines.items():
            self.on_result(arm, g.disable(now, "hold requested"))
        response.success, response.message = True, "holding; ~/enable true resumes"
        return response

    def _estop(self, _request, response):
        now = now_s(self.node)
        if self.on_estop is not None:
            self.on_estop()
        for arm, g in self.pipelines.items():
            self.on_result(arm, g.estop(now))
        self.node.get_logger().error("e-stop latched")
        response.success, response.message = True, "e-stop latched; ~/clear_estop then ~/enable true"
        return response

    def _clear(self, _request, response):
        for g in self.pipelines.values():
            g.clear_estop()
        response.success, response.message = True, "e-stop cleared; still disabled"
        return response
