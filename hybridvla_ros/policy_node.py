"""policy_node: HybridVLA at a fixed control rate on the newest frame per view and the newest arm states.

Subscribes (sensor-data QoS): image_topics[i] (sensor_msgs/Image, view view_names[i]), state_topics[j]
(hybridvla_msgs/ArmState of arm arm_names[j]). Publishes: /hybridvla/policy_action (PolicyAction, every
step, also while disabled), target_topics[j] (ArmTarget, reliable depth 1, only while enabled),
/diagnostics (DiagnosticArray). Services: ~/set_instruction (SetInstruction), ~/enable (std_srvs/SetBool).
The logic lives in hybridvla_core.runtime.control; this file only moves messages.
"""
from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy._rclpy_pybind11 import RCLError
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import SetBool

from hybridvla_core.actions import ArmPose
from hybridvla_core.runtime.control import (SOURCE_CODES, ArmReading, Controller, RateMeter, Skip, Ticker, WarnLimiter,
                                    convention_label)
from hybridvla_core.modes import GRIPPER_RULES, MODES, PRESETS  # not hybridvla_core.model's: importing it loads torch
from hybridvla_msgs.msg import ArmState, ArmTarget, PolicyAction
from hybridvla_msgs.srv import SetInstruction
from hybridvla_ros.common import (COMMAND_QOS, EVENT_QOS, SENSOR_QOS, ParameterError, arrays_to_pose,
                                  declare_parameters, pose_to_arrays, run_node, stamp_s)
from hybridvla_ros.images import image_to_rgb


def camera_info_topic(image_topic: str) -> str:
    """/camera/front/color/image_raw -> /camera/front/color/camera_info (the image_transport convention)."""
    return image_topic.rsplit("/", 1)[0] + "/camera_info"
MAX_INPUT_AGE_S = 2.0
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _names(values) -> bool:
    return len(values) > 0 and all(isinstance(v, str) and v.strip() for v in values) and len(set(values)) == len(values)


class PolicyNode(Node):
    def __init__(self):
        super().__init__("policy")
        spec = {
            "checkpoint": ("", lambda v: (Path(v).expanduser() / "config.json").is_file(),
                           "a checkpoint directory (with config.json)"),
            "view_names": (["front", "wrist"], _names, "distinct non-empty view names"),
            "image_topics": (["/camera/front/color/image_raw", "/camera/wrist/color/image_raw"], _names,
                             "one sensor_msgs/Image topic per view_names entry"),
            "arm_names": (["fr3"], _names, "distinct non-empty arm names"),
            "state_topics": (["/hybridvla/fr3/arm_state"], _names, "one ArmState topic per arm_names entry"),
            "target_topics": (["/hybridvla/fr3/target"], _names, "one ArmTarget topic per arm_names entry"),
            "policy_action_topic": ("/hybridvla/policy_action", lambda v: bool(v), "a topic name"),
            "mode": ("hybrid", lambda v: v in MODES, f"one of {', '.join(MODES)}"),
            "preset": ("", lambda v: v in ("", *PRESETS),
                       f"one of {', '.join(PRESETS)}, or empty for the checkpoint's own settings"),
            "theta": (-1.0, lambda v: v == -1.0 or 0.0 <= v <= 1.0, "0..1, or -1 for the preset's or checkpoint's"),
            "ddim_steps": (0, lambda v: v >= 0, "DDIM steps >= 1, or 0 for the checkpoint's"),
            "ensemble_gripper": ("", lambda v: v in ("", *GRIPPER_RULES),
                                 f"one of {', '.join(GRIPPER_RULES)}, or empty for the checkpoint's"),
            "control_rate_hz": (10.0, lambda v: 0.0 < v <= 1000.0, "Hz in (0, 1000]"),
            # A frame or state older than a few seconds is no observation of now; .inf would disable the check.
            "max_image_age_s": (0.2, lambda v: 0.0 < v <= MAX_INPUT_AGE_S, f"0 < seconds <= {MAX_INPUT_AGE_S}"),
            "max_state_age_s": (0.2, lambda v: 0.0 < v <= MAX_INPUT_AGE_S, f"0 < seconds <= {MAX_INPUT_AGE_S}"),
            "device": ("auto", lambda v: v in ("auto", "cpu") or v.startswith("cuda"), "auto, cpu, cuda or cuda:N"),
            "dtype": ("auto", lambda v: v in DTYPES, f"one of {', '.join(DTYPES)} (auto: float32 on CPU, bfloat16 on CUDA)"),
            "unnorm_key": ("", None, "the dataset_statistics.json entry; empty = the checkpoint's"),
            "seed": (0, None, "the diffusion noise seed"),
            "instruction": ("", None, "the initial instruction (empty: none until ~/set_instruction)"),
            "start_enabled": (False, None, "true to send targets to the arms from the start"),
            "diagnostics_period_s": (1.0, lambda v: v > 0.0, "seconds > 0"),
        }
        p = declare_parameters(self, spec)
        for names, topics in (("view_names", "image_topics"), ("arm_names", "state_topics"),
                              ("arm_names", "target_topics")):
            if len(p[names]) != len(p[topics]):
                raise ParameterError(f"parameter '{topics}' has {len(p[topics])} entries but '{names}' has "
                                     f"{len(p[names])}: expected one topic per name")
        self.policy = self._load_policy(p)
        try:
            self.controller = Controller(self.policy, p["view_names"], p["arm_names"], p["instruction"],
                                         p["max_image_age_s"], p["max_state_age_s"], image_to_rgb,
                                         enabled=p["start_enabled"])
        except ValueError as exc:
            raise ParameterError(f"checkpoint {p['checkpoint']}: {exc}") from exc
        self.rate_hz = p["control_rate_hz"]
        self.convention = convention_label(self.controller.convention)

        for view, topic in zip(p["view_names"], p["image_topics"]):
            self.create_subscription(Image, topic, lambda msg, v=view: self._on_image(v, msg), SENSOR_QOS)
            # The camera's declared size, beside its image as every ROS camera driver publishes it.
            self.create_subscription(CameraInfo, camera_info_topic(topic),
                                     lambda msg, v=view: self._on_camera_info(v, msg), SENSOR_QOS)
        for arm, topic in zip(p["arm_names"], p["state_topics"]):
            self.create_subscription(ArmState, topic, lambda msg, a=arm: self._on_state(a, msg), SENSOR_QOS)
        self.target_pubs = [self.create_publisher(ArmTarget, t, COMMAND_QOS) for t in p["target_topics"]]
        self.action_pub = self.create_publisher(PolicyAction, p["policy_action_topic"], EVENT_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetInstruction, "~/set_instruction", self._on_set_instruction)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)

        self.warn = WarnLimiter(1.0)
        self.rate = RateMeter(5.0)
        self.last_skip = ""
        self.last_confidence = math.nan
        self._stop = threading.Event()
        self.get_logger().info(
            f"policy ready: {p['checkpoint']} mode={self.policy.mode} preset={p['preset'] or 'checkpoint'} "
            f"ar_schedule={self.policy.ar_schedule} theta={self.policy.theta:g} "
            f"ddim_steps={self.policy.ddim_steps} ensemble_gripper={self.policy.ensemble_gripper} at "
            f"{self.rate_hz:g} Hz; views {p['view_names']}, arms {p['arm_names']}; "
            f"{'ENABLED' if p['start_enabled'] else 'disabled (call ~/enable)'}")
        self._ticker: Ticker | None = None  # made by the loop once the clock runs
        self._thread = threading.Thread(target=self._loop, name="inference", daemon=True)
        self._thread.start()

    def _load_policy(self, p):
        from hybridvla_core.model import Policy  # torch: imported only once the parameters are valid

        import torch

        device = p["device"]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise ParameterError(f"parameter 'device' = {device!r} is invalid: no CUDA device here")
        try:
            policy = Policy.from_checkpoint(
                Path(p["checkpoint"]).expanduser(), device=device,
                dtype=None if p["dtype"] == "auto" else p["dtype"], mode=p["mode"],
                theta=None if p["theta"] == -1.0 else p["theta"], ddim_steps=p["ddim_steps"] or None,
                ensemble_gripper=p["ensemble_gripper"] or None, preset=p["preset"] or None,
                unnorm_key=p["unnorm_key"] or None, seed=p["seed"])
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise ParameterError(f"checkpoint {p['checkpoint']}: {exc}") from exc
        # One prediction before the loop starts, so the first real step is not slowed by lazy initialisation.
        config = policy.config
        policy.predict({"images": {v: np.zeros((64, 64, 3), np.uint8) for v in config.view_names},
                        "state": np.zeros(config.action_dim), "instruction": "warm up"})
        return policy

    # ---------------------------------------------------------------------------------- inputs
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, view: str, msg: Image) -> None:
        self.controller.put_image(view, msg, stamp_s(msg.header.stamp), self._now(), (msg.width, msg.height))

    def _on_camera_info(self, view: str, msg: CameraInfo) -> None:
        if msg.width > 0 and msg.height > 0:
            self.controller.declare_image_size(view, msg.width, msg.height)

    def _on_state(self, arm: str, msg: ArmState) -> None:
        position, quaternion = pose_to_arrays(msg.pose)
        reading = ArmReading(ArmPose(position, quaternion, float(msg.gripper)), msg.header.frame_id)
        self.controller.put_state(arm, reading, stamp_s(msg.header.stamp), self._now())

    def _on_set_instruction(self, request, response):
        response.success, response.message = self.controller.set_instruction(request.instruction)
        self.get_logger().info(response.message)
        return response

    def _on_enable(self, request, response):
        self.controller.enabled = bool(request.data)
        response.success = True
        response.message = "enabled: targets go to the arms" if request.data else "disabled: reporting only"
        self.get_logger().info(response.message)
        return response

    # ---------------------------------------------------------------------------------- the loop
    def _loop(self) -> None:
        while self._now() == 0.0 and not self._stop.wait(0.01):
            pass  # use_sim_time and no /clock yet
        # On the node's clock: simulation time under use_sim_time, so a slowed simulation slows the policy too.
        self._ticker = Ticker(self.rate_hz, self._now, poll_s=0.002)
        while not self._stop.is_set():
            self._ticker.wait(self._stop)
            if self._stop.is_set():
                break
            outcome = self.controller.step(self._now())
            if isinstance(outcome, Skip):
                self.last_skip = "; ".join(outcome.problems)
                if self.warn.allow(outcome.kind):
                    self.get_logger().warning(f"no action this step: {self.last_skip}")
                continue
            self.last_skip = ""
            self.rate.add(self._now())
            try:
                self._publish(outcome)
            except RCLError:
                if self.context.ok():
                    raise
                break  # shutdown (Ctrl-C) invalidated the publishers while this step ran

    def _publish(self, step) -> None:
        result = step.result
        stamp = Time(nanoseconds=round(step.stamp * 1e9)).to_msg()
        source = SOURCE_CODES[result.source]
        targets = []
        for arm, frame_id, target in zip(self.controller.arm_names, step.frame_ids, step.targets):
            msg = ArmTarget(arm=arm, pose=arrays_to_pose(target.position, target.quaternion_xyzw),
                            gripper=float(target.gripper), confidence=float(step.confidence), source=source)
            msg.header.stamp, msg.header.frame_id = stamp, frame_id
            targets.append(msg)
        if step.send:
            for pub, msg in zip(self.target_pubs, targets):
                pub.publish(msg)
        self.last_confidence = step.confidence
        action = PolicyAction(
            step=self.controller.counters.steps, instruction=step.instruction, mode=self.policy.mode,
            action_convention=self.convention, action=_floats(result.action),
            diffusion_action=_floats(result.diffusion_action), autoregressive_action=_floats(result.ar_action),
            token_confidence=_floats(result.token_confidence), mean_confidence=float(step.confidence),
            theta=float(self.policy.theta), source=source, targets=targets,
            stage_names=list(step.stages_ms), stage_ms=[float(v) for v in step.stages_ms.values()])
        action.header.stamp = stamp
        self.action_pub.publish(action)

    def _publish_diagnostics(self) -> None:
        c = self.controller.counters
        achieved = self.rate.rate()
        status = DiagnosticStatus(name=f"{self.get_name()}: policy control loop", hardware_id=self.policy.mode)
        if self.last_skip:
            status.level, status.message = DiagnosticStatus.WARN, f"no action: {self.last_skip}"
        elif achieved < 0.9 * self.rate_hz:
            status.level = DiagnosticStatus.WARN
            status.message = f"acting at {achieved:.1f} Hz, below the requested {self.rate_hz:g} Hz"
        else:
            status.level, status.message = DiagnosticStatus.OK, f"acting at {achieved:.1f} Hz"
        if not self.controller.enabled:
            status.message += " (disabled: reporting only)"
        values = {
            "requested_rate_hz": self.rate_hz, "achieved_rate_hz": round(achieved, 2),
            "enabled": self.controller.enabled, "instruction": self.controller.instruction,
            "mode": self.policy.mode, "theta": self.policy.theta, "ensemble_gripper": self.policy.ensemble_gripper,
            "mean_confidence": self.last_confidence,
            "steps": c.steps, "actions": c.actions, "targets_sent_steps": c.sent, "stale_steps": c.stale,
            "error_steps": c.errors, "frames_superseded": self.controller.inputs.superseded,
            "missed_ticks": self._ticker.missed if self._ticker is not None else 0,
        }
        values.update({f"latency_{name}_ms": round(ms, 2)
                       for name, ms in self.controller.stage_times.means().items()})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)


def _floats(values) -> list[float]:
    return [] if values is None else [float(v) for v in values]


def main(args=None) -> int:
    return run_node(PolicyNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
