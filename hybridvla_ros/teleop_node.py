"""teleop: a human drives the arms through the same ArmTarget topic and guards as the policy
(hybridvla_core.robots.teleop does the math).

  device spacemouse | keyboard (one arm, e.g. the FR3):
     in   <arm_state_topic>  hybridvla_msgs/ArmState: the target starts at the measured pose and is re-anchored
                             to it while the bridge reports the arm disabled
     out  <target_topic>     hybridvla_msgs/ArmTarget, source TELEOP, confidence 1, at rate_hz, reliable depth 1
     SpaceMouse: button 0 closes the gripper, button 1 opens it; keyboard: see teleop.KEYBOARD_HELP (a terminal
     is needed: run it with `ros2 run` in its own terminal, not under launch)
  device leader (AgileX dual arm, Cobot Magic style):
     in   <leader_topic>     sensor_msgs/JointState of each leader arm: joint1..6 [rad], gripper opening [m]
     out  <target_topic>     one ArmTarget per arm, as each leader message arrives

  {arm} in a topic or frame name is replaced by each entry of `arms`.
"""
from __future__ import annotations

import sys

from hybridvla_msgs.msg import ArmState, ArmTarget
from rclpy.node import Node
from sensor_msgs.msg import JointState

from hybridvla_core.robots import teleop
from hybridvla_core.recording import terminal_keys
from hybridvla_ros.common import (COMMAND_QOS, SENSOR_QOS, ParameterError, arrays_to_pose, declare_parameters,
                                  pose_to_arrays, run_node)

_pos = lambda v: isinstance(v, float) and v > 0  # noqa: E731


def _axis_map(value) -> bool:
    try:
        teleop.parse_axis_map(value)
    except ValueError:
        return False
    return True

PARAMETERS = {
    "device": ("keyboard", lambda v: v in ("spacemouse", "keyboard", "leader"), "spacemouse, keyboard or leader"),
    "arms": (["fr3"], lambda v: isinstance(v, list) and 1 <= len(v) <= 2, "one or two arm names"),
    "frame_id": ("base", lambda v: isinstance(v, str) and v != "", "the arm's base frame (franka_bridge frame_id), may hold {arm}"),
    "target_topic": ("/hybridvla/{arm}/target", lambda v: v.startswith("/"), "an absolute topic name"),
    "arm_state_topic": ("/hybridvla/{arm}/arm_state", lambda v: v.startswith("/"), "an absolute topic name"),
    "leader_topic": ("/master/joint_{arm}", lambda v: v.startswith("/"), "an absolute topic name"),
    "rate_hz": (50.0, _pos, "Hz > 0 (spacemouse, keyboard)"),
    "max_linear_speed": (0.10, _pos, "m/s > 0 at full deflection"),
    "max_angular_speed": (0.5, _pos, "rad/s > 0 at full deflection"),
    "deadband": (0.1, lambda v: isinstance(v, float) and 0 <= v < 1, "0..1 of the SpaceMouse range"),
    "axis_map": (list(teleop.OPERATOR_BEHIND_THE_ARM), _axis_map,
                 "for base x, y, z, roll, pitch, yaw the signed SpaceMouse axis each follows (device x right, y away, "
                 "z up), signed: [+y, -x, +z, +pitch, -roll, +yaw] for an operator behind the arm"),
    "max_lead_m": (0.05, _pos, "m the target may lead the measured position"),
    "max_lead_rad": (0.3, _pos, "rad the target may lead the measured orientation"),
    "spacemouse_device": ("", lambda v: isinstance(v, str), "device name for pyspacemouse, empty = first found"),
    "leader_model": ("piper", lambda v: isinstance(v, str), "kinematic model of the leader arms (kinematics.ARMS)"),
    "gripper_max_width": (0.07, _pos, "m: leader gripper opening that means fully open"),
}


class Teleop(Node):
    def __init__(self):
        super().__init__("teleop")
        p = self.p = declare_parameters(self, PARAMETERS)
        self.arms = list(p["arms"])
        self.targets = {a: self.create_publisher(ArmTarget, p["target_topic"].format(arm=a), COMMAND_QOS)
                        for a in self.arms}
        self.keys = self.mouse = None
        if p["device"] == "leader":
            try:
                self.leader = teleop.LeaderArm(p["leader_model"], p["gripper_max_width"])
            except ValueError as exc:
                raise ParameterError(f"parameter 'leader_model': {exc}") from None
            for arm in self.arms:
                self.create_subscription(JointState, p["leader_topic"].format(arm=arm),
                                         lambda m, a=arm: self._on_leader(a, m), SENSOR_QOS)
            self.get_logger().info(f"leader arms {[p['leader_topic'].format(arm=a) for a in self.arms]} -> targets")
            return
        if len(self.arms) != 1:
            raise ParameterError(f"parameter 'arms' = {self.arms}: {p['device']} drives one arm")
        self.integrator = teleop.PoseIntegrator(p["max_lead_m"], p["max_lead_rad"])
        self.measured = None
        self.create_subscription(ArmState, p["arm_state_topic"].format(arm=self.arms[0]), self._on_state, SENSOR_QOS)
        if p["device"] == "spacemouse":
            try:
                self.mouse = teleop.SpaceMouse(p["spacemouse_device"])
            except RuntimeError as exc:
                raise ParameterError(str(exc)) from None
        else:
            ok, why = terminal_keys.keys_available()
            if not ok:
                raise ParameterError(f"device keyboard needs a terminal ({why}); run `ros2 run hybridvla_ros "
                                     f"teleop` in its own terminal")
            self.keyboard = teleop.KeyboardTwist(p["max_linear_speed"], p["max_angular_speed"])
            self.keys = terminal_keys.KeyReader(self._on_key, keymap=None)
            self.get_logger().info(teleop.KEYBOARD_HELP)
        self.create_timer(1.0 / p["rate_hz"], self._tick)

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _publish(self, arm: str, position, quaternion, gripper: float) -> None:
        msg = ArmTarget(arm=arm, pose=arrays_to_pose(position, quaternion), gripper=float(gripper), confidence=1.0,
                        source=ArmTarget.SOURCE_TELEOP)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p["frame_id"].format(arm=arm)
        self.targets[arm].publish(msg)

    def _on_leader(self, arm: str, msg: JointState) -> None:
        try:
            position, quaternion, gripper = self.leader.target(msg.position)
        except ValueError as exc:
            self.get_logger().error(f"{arm} leader: {exc}", throttle_duration_sec=5.0)
            return
        self._publish(arm, position, quaternion, gripper)

    def _on_state(self, msg: ArmState) -> None:
        self.measured = pose_to_arrays(msg.pose)
        if not msg.enabled or not self.integrator.ready:  # start (again) where the arm is
            self.integrator.reset(*self.measured, msg.gripper)

    def _on_key(self, key: str) -> None:
        if self.keyboard.press(key, self._now_s()) == "gripper" and self.integrator.ready:
            self.integrator.gripper = 0.0 if self.integrator.gripper > 0.5 else 1.0

    def _tick(self) -> None:
        if not self.integrator.ready:
            self.get_logger().info("waiting for the measured arm state", throttle_duration_sec=5.0)
            return
        if self.mouse is not None:
            axes, buttons = self.mouse.read()
            twist = teleop.spacemouse_twist(axes, self.p["max_linear_speed"], self.p["max_angular_speed"],
                                            self.p["deadband"], self.p["axis_map"])
            if buttons[:1] == [1]:
                self.integrator.gripper = 0.0
            elif buttons[1:2] == [1]:
                self.integrator.gripper = 1.0
        else:
            twist = self.keyboard.twist(self._now_s())
        target = self.integrator.step(twist, 1.0 / self.p["rate_hz"], *self.measured)
        self._publish(self.arms[0], *target)

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()
        if self.mouse is not None:
            self.mouse.close()


def main(args=None) -> int:
    return run_node(Teleop, args)


if __name__ == "__main__":
    sys.exit(main())
