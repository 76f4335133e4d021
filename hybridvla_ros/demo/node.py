"""The demo's own ROS node: service clients of the lab, bridge, policy and recorder, and what it watches of the loop
(targets, policy actions, guard events, the front camera)."""
from __future__ import annotations

import threading
import time

import numpy as np

from hybridvla_core.runtime.guards import EventKind
from hybridvla_ros.demo.viewer import FrontCameraViewer


SOURCE_NAMES = {0: "fused", 1: "diffusion", 2: "autoregressive"}
GUARD_KINDS = {kind.value: kind.name.lower() for kind in EventKind}  # GuardEvent.kind -> name in the summary
LATENCY_STAGES = ("input_wait", "observation", "predict_total", "targets")  # observation in -> target out
GIF_EVERY = 3  # keep every 3rd front frame (15 Hz camera -> 5 fps GIF)


class DemoNode:
    """The demo's own ROS node: service clients of the nodes, and what it watches of the loop."""

    def __init__(self, viewer: bool):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from hybridvla_msgs.msg import ArmTarget, GuardEvent, PolicyAction
        from hybridvla_msgs.srv import EpisodeControl, SetInstruction
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool
        from std_srvs.srv import SetBool, Trigger

        from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS, SENSOR_QOS

        rclpy.init()
        self.node = rclpy.create_node("hybridvla_demo")
        n = self.node
        self.lock = threading.Lock()
        self.active = False      # an episode is running: what arrives counts for it
        self.reset_episode()
        self.success = False
        self.success_stamp = 0.0  # wall time of the newest success message
        self.sim_time = 0.0       # s, simulation time: the stamp of the newest /current_pose (50 Hz)
        self.pose: np.ndarray | None = None
        self.frame: np.ndarray | None = None
        self.capture: list[np.ndarray] | None = None  # front frames of the episode being filmed
        self._frame_count = 0
        n.create_subscription(PolicyAction, "/hybridvla/policy_action", self._on_action, EVENT_QOS)
        n.create_subscription(GuardEvent, "/hybridvla/guard_events", self._on_guard, EVENT_QOS)
        n.create_subscription(ArmTarget, "/hybridvla/fr3/target", lambda _m: self._count("arm_targets"), COMMAND_QOS)
        n.create_subscription(PoseStamped, "/target_pose", lambda _m: self._count("bridge_outputs"), COMMAND_QOS)
        n.create_subscription(PoseStamped, "/current_pose", self._on_pose, SENSOR_QOS)
        n.create_subscription(Bool, "/sim_lab/success", self._on_success, COMMAND_QOS)
        n.create_subscription(Image, "/camera/front/color/image_raw", self._on_image, SENSOR_QOS)
        self.clients = {
            "seed": n.create_client(SetParameters, "/sim_lab/set_parameters"),
            "reset": n.create_client(Trigger, "/sim_lab/reset"),
            "bridge": n.create_client(SetBool, "/franka_bridge/enable"),
            "policy": n.create_client(SetBool, "/policy/enable"),
            "instruction": n.create_client(SetInstruction, "/policy/set_instruction"),
            "episode": n.create_client(EpisodeControl, "/recorder/episode"),
        }
        self.types = {"SetBool": SetBool, "Trigger": Trigger, "SetInstruction": SetInstruction,
                      "EpisodeControl": EpisodeControl, "SetParameters": SetParameters}
        # One thread: every callback is short, and rclpy's multi-threaded executor costs CPU the nodes need.
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self.viewer = FrontCameraViewer() if viewer else None

    def reset_episode(self) -> None:
        with self.lock:
            self.actions: list[dict] = []
            self.guards: list[str] = []
            self.counts = {"arm_targets": 0, "bridge_outputs": 0}
            self.start_pose: np.ndarray | None = None
            self.travel = 0.0  # m, largest distance of the TCP from where the episode started

    # -- subscriptions
    def _count(self, key: str) -> None:
        with self.lock:
            if self.active:
                self.counts[key] += 1

    def _on_action(self, m) -> None:
        from hybridvla_ros.common import stamp_s

        stages = dict(zip(m.stage_names, (float(v) for v in m.stage_ms)))
        record = {"stamp_s": stamp_s(m.header.stamp), "stages": stages,  # simulation time: the control period
                  "total_ms": sum(stages.get(s, 0.0) for s in LATENCY_STAGES),
                  "source": SOURCE_NAMES.get(m.source, str(m.source))}
        with self.lock:
            if self.active:
                self.actions.append(record)

    def _on_guard(self, m) -> None:
        with self.lock:
            if self.active:
                self.guards.append(GUARD_KINDS.get(m.kind, str(m.kind)))

    def _on_pose(self, m) -> None:
        from hybridvla_ros.common import stamp_s

        p = np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
        with self.lock:
            self.sim_time = stamp_s(m.header.stamp)
            self.pose = p
            if self.active:
                if self.start_pose is None:
                    self.start_pose = p
                self.travel = max(self.travel, float(np.linalg.norm(p - self.start_pose)))

    def _on_success(self, m) -> None:
        self.success, self.success_stamp = bool(m.data), time.monotonic()

    def _on_image(self, m) -> None:
        from hybridvla_ros.images import image_to_rgb

        self._frame_count += 1
        if self.capture is None and self.viewer is None:
            return
        rgb = image_to_rgb(m)
        self.frame = rgb
        if self.capture is not None and self._frame_count % GIF_EVERY == 0:
            self.capture.append(rgb[::2, ::2].copy())

    # -- services
    def call(self, name: str, request, timeout: float = 30.0):
        client = self.clients[name]
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {client.srv_name} did not appear within {timeout:.0f} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
            time.sleep(0.01)
        return future.result()

    def request(self, service: str, **fields):
        return self.types[service].Request(**fields)

    def close(self) -> None:
        import rclpy

        # The spin thread must have left the executor before rclpy goes, or the process aborts at exit.
        rclpy.try_shutdown()
        self.executor.shutdown()
        self._spin.join(timeout=5.0)
        self.node.destroy_node()
