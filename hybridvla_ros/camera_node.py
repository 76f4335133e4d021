"""camera_node: one camera (RealSense, Orbbec or a video source) published the way realsense-ros does.

Topics (depth 1, reliable or best effort: qos_reliability), with <ns>/<name> = camera_namespace/camera_name:
  /<ns>/<name>/color/image_raw (sensor_msgs/Image rgb8), /<ns>/<name>/color/camera_info
  /<ns>/<name>/aligned_depth_to_color/image_raw (16UC1, millimetres) + camera_info, when enable_depth
Stamps: capture time from the device clock mapped to host wall time. frame_id: the colour optical frame.
"""
from __future__ import annotations

import threading

from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image

from hybridvla_core.robots.cameras import (BACKENDS, CameraConfigError, CameraStream, EndOfStream, Intrinsics, Profile,
                                    make_backend)
from hybridvla_ros.common import COMMAND_QOS, SENSOR_QOS, ParameterError, declare_parameters, run_node
from hybridvla_ros.images import numpy_to_image

READ_TIMEOUT_S = 0.5
# Depth 1 either way. Reliable (the default, as realsense-ros publishes) loses no frame to a recorder;
# best-effort subscribers such as the policy node receive from it too. Best effort lost 59-81% of
# 640x480 frames to the recorder on loopback (benchmarks/recorder_load.py).
QOS_BY_NAME = {"reliable": COMMAND_QOS, "best_effort": SENSOR_QOS}


def _profile_ok(text: str) -> bool:
    try:
        Profile.parse(text)
    except CameraConfigError:
        return False
    return True


def camera_info(intrinsics: Intrinsics, header) -> CameraInfo:
    i = intrinsics
    info = CameraInfo()
    info.header = header
    info.width, info.height = i.width, i.height
    info.distortion_model = i.distortion_model
    info.d = [float(c) for c in i.coeffs]
    info.k = [i.fx, 0.0, i.cx, 0.0, i.fy, i.cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [i.fx, 0.0, i.cx, 0.0, 0.0, i.fy, i.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class CameraNode(Node):
    def __init__(self):
        super().__init__("camera")
        p = declare_parameters(self, {
            "backend": ("realsense", lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"),
            "camera_namespace": ("camera", lambda v: bool(v.strip("/")), "a non-empty name"),
            "camera_name": ("camera", lambda v: bool(v.strip("/")), "a non-empty name (the view, e.g. front)"),
            "frame_id": ("", None, "the colour optical frame; empty = <camera_name>_color_optical_frame"),
            "serial_no": ("", None, "the device serial number (empty = the only connected device)"),
            "color_profile": ("640x480x30", _profile_ok, "WIDTHxHEIGHTxFPS, e.g. 640x480x30"),
            "enable_depth": (False, None, "true to publish depth aligned to colour"),
            "path": ("", None, "video file or image folder (video), or a recording to play back (realsense)"),
            "fps": (30.0, lambda v: v > 0, "frames per second > 0 (video backend)"),
            "loop": (True, None, "true to loop the video source"),
            "retry_period_s": (1.0, lambda v: v > 0, "seconds > 0 between reconnect attempts"),
            "qos_reliability": ("reliable", lambda v: v in QOS_BY_NAME, "reliable or best_effort"),
        })
        base = f"/{p['camera_namespace'].strip('/')}/{p['camera_name'].strip('/')}"
        qos = QOS_BY_NAME[p["qos_reliability"]]
        self.frame_id = p["frame_id"] or f"{p['camera_name'].strip('/')}_color_optical_frame"
        self.image_pub = self.create_publisher(Image, f"{base}/color/image_raw", qos)
        self.info_pub = self.create_publisher(CameraInfo, f"{base}/color/camera_info", qos)
        self.depth_pub = self.depth_info_pub = None
        if p["enable_depth"]:
            self.depth_pub = self.create_publisher(Image, f"{base}/aligned_depth_to_color/image_raw", qos)
            self.depth_info_pub = self.create_publisher(
                CameraInfo, f"{base}/aligned_depth_to_color/camera_info", qos)
        try:
            backend = make_backend(p["backend"], serial=p["serial_no"], profile=p["color_profile"],
                                   depth=p["enable_depth"], path=p["path"], fps=p["fps"], loop=p["loop"])
        except CameraConfigError as exc:
            raise ParameterError(str(exc)) from exc
        self.stream = CameraStream(backend, p["retry_period_s"], on_event=self._event)
        self.frames_published = 0
        # A fatal error in the capture thread is re-raised in the executor's thread, where run_node reports it.
        self._fatal: BaseException | None = None
        self._fatal_signal = self.create_guard_condition(self._raise_fatal)
        self._running = True
        self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
        self._thread.start()
        self.get_logger().info(f"{backend.name} -> {base}/color/image_raw (frame {self.frame_id})")

    def _event(self, level: str, text: str) -> None:
        (self.get_logger().error if level == "error" else self.get_logger().info)(text)

    def _capture(self) -> None:
        try:
            while self._running:
                frame = self.stream.next_frame(READ_TIMEOUT_S)
                if frame is not None and self._running:
                    self._publish(frame)
        except CameraConfigError as exc:
            self._fatal = ParameterError(f"camera: {exc}")
        except EndOfStream as exc:
            self.get_logger().info(str(exc))
            self._fatal = SystemExit(0)
        except Exception as exc:  # noqa: BLE001 - hand anything unexpected to the main thread
            self._fatal = exc
        if self._fatal is not None:
            self._fatal_signal.trigger()

    def _raise_fatal(self) -> None:
        raise self._fatal

    def _publish(self, frame) -> None:
        stamp = Time(nanoseconds=int(frame.stamp * 1e9)).to_msg()
        image = numpy_to_image(frame.rgb, "rgb8", stamp=stamp, frame_id=self.frame_id)
        info = camera_info(self.stream.intrinsics, image.header)
        self.image_pub.publish(image)
        self.info_pub.publish(info)
        if self.depth_pub is not None and frame.depth is not None:
            self.depth_pub.publish(numpy_to_image(frame.depth, "16UC1", stamp=stamp, frame_id=self.frame_id))
            self.depth_info_pub.publish(info)
        self.frames_published += 1

    def close(self) -> None:
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        self.stream.close()


def main(args=None) -> int:
    return run_node(CameraNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
