"""Intel RealSense backend (pyrealsense2): a device by serial number, or a recording played back.

Colour is streamed as rgb8 at the requested WxHxFPS profile; depth (z16) optionally, aligned to colour
and reported in millimetres. Frame stamps come from the device: "global time" is already host wall
time, a raw hardware clock is mapped to host time by DeviceClock; playback frames are stamped on arrival
(their recorded stamps are in the past).
"""
from __future__ import annotations

import time

import numpy as np

from hybridvla_core.robots.cameras.base import (CameraConfigError, CameraError, DeviceClock, Frame, Intrinsics,
                                         Profile)

# The L500 family (L515) left librealsense in 2.55 (realsense-ros 4.55.1: "Remove ... L500 and SR300 support");
# 2.54.x, with realsense-ros 4.54.1, is the last series that drives it (pyrealsense2 2.54.1 reported working).
# No cp310 wheel exists below 2.53, so Humble (Python 3.10) labs pin 2.54.x.
L515_PIN = "pyrealsense2>=2.54,<2.55"
L515_DROPPED_IN = (2, 55)
# No frame for this long while streaming = the camera is gone (unplugged, USB reset).
STALL_S = 2.0


def sdk_version(rs) -> tuple[int, ...]:
    return tuple(int(part) for part in rs.__version__.split(".")[:3] if part.isdigit())


def check_device_supported(name: str, version: tuple[int, ...], serial: str = "") -> None:
    """CameraConfigError for an L515 on a librealsense that no longer drives it."""
    if "L515" in name.upper() and version >= L515_DROPPED_IN:
        raise CameraConfigError(
            f"{name} (serial {serial or '?'}) is not supported by librealsense {'.'.join(map(str, version))}: "
            f"support for the L515 ended in 2.55; install the last series that drives it: pip install \"{L515_PIN}\"")


def import_pyrealsense2():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise CameraConfigError(
            f"the realsense backend needs pyrealsense2 ({exc}); install it with `pip install pyrealsense2` "
            "(and libusb-1.0), or use realsense-ros and set use_our_cameras:=false") from exc
    return rs


class RealSenseBackend:
    def __init__(self, serial: str = "", profile: Profile = Profile(640, 480, 30), depth: bool = False,
                 playback_file: str = "", stall_s: float = STALL_S):
        self.serial = serial
        self.profile = profile
        self.depth = depth
        self.playback_file = playback_file
        self.stall_s = stall_s
        self.name = f"RealSense {serial or '(first found)'}" if not playback_file else f"RealSense recording {playback_file}"
        self._rs = None
        self._pipeline = None
        self._align = None
        self._depth_to_mm = 1.0
        self._clock = DeviceClock()
        self._last_number = None
        self._last_frame_at = 0.0

    def _find_device(self, rs) -> str:
        devices = [(d.get_info(rs.camera_info.serial_number), d.get_info(rs.camera_info.name))
                   for d in rs.context().query_devices()]
        found = ", ".join(f"{name} {serial}" for serial, name in devices) or "none"
        if not self.serial and len(devices) > 1:
            raise CameraConfigError(f"several RealSense cameras are connected ({found}): set serial_no")
        for serial, name in devices:
            if self.serial in ("", serial):
                check_device_supported(name, sdk_version(rs), serial)
                return serial
        hint = ""
        if sdk_version(rs) >= L515_DROPPED_IN:
            hint = f" (an L515 is not listed by librealsense >= 2.55: it needs pip install \"{L515_PIN}\")"
        raise CameraError(f"no RealSense with serial {self.serial or '(any)'} connected; found: {found}{hint}")

    def open(self) -> Intrinsics:
        rs = self._rs = self._rs or import_pyrealsense2()
        config = rs.config()
        if self.playback_file:
            config.enable_device_from_file(self.playback_file, repeat_playback=True)
        else:
            config.enable_device(self._find_device(rs))
        config.enable_stream(rs.stream.color, self.profile.width, self.profile.height, rs.format.rgb8,
                             self.profile.fps)
        if self.depth:
            config.enable_stream(rs.stream.depth, rs.format.z16, self.profile.fps)
        pipeline = rs.pipeline()
        try:
            started = pipeline.start(config)
        except RuntimeError as exc:
            if "resolve" in str(exc).lower():  # "Couldn't resolve requests": the profile does not exist
                raise CameraConfigError(f"{self.name}: colour profile {self.profile} rgb8"
                                        f"{' with depth' if self.depth else ''} is not offered ({exc})") from exc
            raise CameraError(f"{self.name}: cannot start ({exc})") from exc
        self._pipeline = pipeline
        device = started.get_device()
        check_device_supported(device.get_info(rs.camera_info.name), sdk_version(rs),
                               device.get_info(rs.camera_info.serial_number))
        if self.playback_file:
            device.as_playback().set_real_time(True)
        if self.depth:
            self._align = rs.align(rs.stream.color)
            self._depth_to_mm = device.first_depth_sensor().get_depth_scale() * 1000.0
        self._clock.reset()
        self._last_number = None
        self._last_frame_at = time.monotonic()
        intr = started.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        model = "plumb_bob" if intr.model in (rs.distortion.none, rs.distortion.brown_conrady,
                                               rs.distortion.inverse_brown_conrady,
                                               rs.distortion.modified_brown_conrady) else str(intr.model)
        return Intrinsics(intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy, model,
                          tuple(float(c) for c in intr.coeffs))

    def _stamp(self, color, arrival: float) -> float:
        rs = self._rs
        if self.playback_file:
            return arrival
        domain = color.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            return color.get_timestamp() / 1000.0  # host-synchronised milliseconds
        return self._clock.to_host(color.get_timestamp(), arrival)

    def read(self, timeout_s: float) -> Frame | None:
        try:
            ok, frames = self._pipeline.try_wait_for_frames(int(timeout_s * 1000))
        except RuntimeError as exc:
            raise CameraError(str(exc)) from exc
        arrival = time.time()
        if not ok:
            if time.monotonic() - self._last_frame_at > self.stall_s:
                raise CameraError(f"no frames for {self.stall_s:g} s (unplugged?)")
            return None
        if self._align is not None:
            frames = self._align.process(frames)
        color = frames.get_color_frame()
        if not color:
            return None
        number = color.get_frame_number()
        if number == self._last_number:  # playback hands the same frame out again
            return None
        self._last_number = number
        self._last_frame_at = time.monotonic()
        # Copy: the SDK recycles the frame's buffer once the frame object is released.
        rgb = np.array(np.asanyarray(color.get_data()), dtype=np.uint8, copy=True)
        depth = None
        if self._align is not None:
            depth_frame = frames.get_depth_frame()
            if depth_frame:
                raw = np.asanyarray(depth_frame.get_data())
                depth = (raw.copy() if abs(self._depth_to_mm - 1.0) < 1e-6
                         else np.clip(np.rint(raw * self._depth_to_mm), 0, 65535).astype(np.uint16))
        return Frame(rgb=rgb, stamp=self._stamp(color, arrival), number=int(number), depth=depth)

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass  # already stopped, or the device vanished
            self._pipeline = None
