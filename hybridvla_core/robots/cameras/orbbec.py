"""Orbbec backend (pyorbbecsdk 1.x, the API that still drives the DaBai; OrbbecSDK v2 dropped it).

Colour in RGB when the device offers it, else MJPG (the DaBai's 640x480@30 colour) decoded here;
depth (Y16, millimetres after the frame's depth scale) optionally, aligned to colour by the device.
Stamps: the device clock [ms] mapped to host wall time by DeviceClock. Verified on hardware only.
"""
from __future__ import annotations

import io
import time

import numpy as np

from hybridvla_core.robots.cameras.base import (CameraConfigError, CameraError, DeviceClock, Frame, Intrinsics,
                                         Profile)

STALL_S = 2.0


def import_pyorbbecsdk():
    try:
        import pyorbbecsdk as ob
    except ImportError as exc:
        raise CameraConfigError(
            f"the orbbec backend needs pyorbbecsdk 1.x ({exc}); install it (pip install 'pyorbbecsdk<2' or the "
            "v1 wheel from Orbbec), or use OrbbecSDK_ROS2 (v1 branch) and set use_our_cameras:=false") from exc
    return ob


def _decode(frame, ob) -> np.ndarray:
    width, height = frame.get_width(), frame.get_height()
    data = np.asanyarray(frame.get_data())
    fmt = frame.get_format()
    if fmt == ob.OBFormat.RGB:
        return data.reshape(height, width, 3).copy()
    if fmt == ob.OBFormat.BGR:
        return np.ascontiguousarray(data.reshape(height, width, 3)[:, :, ::-1])
    if fmt == ob.OBFormat.MJPG:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(data.tobytes())).convert("RGB"))
    raise CameraError(f"unexpected colour format {fmt}")


class OrbbecBackend:
    def __init__(self, serial: str = "", profile: Profile = Profile(640, 480, 30), depth: bool = False,
                 stall_s: float = STALL_S):
        self.serial = serial
        self.profile = profile
        self.depth = depth
        self.stall_s = stall_s
        self.name = f"Orbbec {serial or '(first found)'}"
        self._ob = None
        self._pipeline = None
        self._clock = DeviceClock()
        self._last_frame_at = 0.0

    def _device(self, ob):
        devices = ob.Context().query_devices()
        count = devices.get_count()
        if count == 0:
            raise CameraError("no Orbbec camera connected")
        if self.serial:
            try:
                return devices.get_device_by_serial_number(self.serial)
            except ob.OBError as exc:
                raise CameraError(f"no Orbbec camera with serial {self.serial} ({exc})") from exc
        if count > 1:
            raise CameraConfigError(f"{count} Orbbec cameras are connected: set serial_no")
        return devices.get_device_by_index(0)

    def _colour_profile(self, ob, pipeline):
        profiles = pipeline.get_stream_profile_list(ob.OBSensorType.COLOR_SENSOR)
        p = self.profile
        for fmt in (ob.OBFormat.RGB, ob.OBFormat.MJPG):
            try:
                return profiles.get_video_stream_profile(p.width, p.height, fmt, p.fps)
            except ob.OBError:
                continue
        raise CameraConfigError(f"{self.name}: colour profile {p} is offered neither as RGB nor as MJPG")

    def open(self) -> Intrinsics:
        ob = self._ob = self._ob or import_pyorbbecsdk()
        try:
            pipeline = ob.Pipeline(self._device(ob))
            config = ob.Config()
            config.enable_stream(self._colour_profile(ob, pipeline))
            if self.depth:
                depth_profiles = pipeline.get_stream_profile_list(ob.OBSensorType.DEPTH_SENSOR)
                config.enable_stream(depth_profiles.get_default_video_stream_profile())
                config.set_align_mode(ob.OBAlignMode.HW_MODE)
            pipeline.start(config)
            intr = pipeline.get_camera_param().rgb_intrinsic
        except ob.OBError as exc:
            raise CameraError(f"{self.name}: cannot start ({exc})") from exc
        self._pipeline = pipeline
        self._clock.reset()
        self._last_frame_at = time.monotonic()
        return Intrinsics(intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy)

    def read(self, timeout_s: float) -> Frame | None:
        ob = self._ob
        try:
            frames = self._pipeline.wait_for_frames(int(timeout_s * 1000))
        except ob.OBError as exc:
            raise CameraError(str(exc)) from exc
        arrival = time.time()
        color = frames.get_color_frame() if frames is not None else None
        if color is None:
            if time.monotonic() - self._last_frame_at > self.stall_s:
                raise CameraError(f"no frames for {self.stall_s:g} s (unplugged?)")
            return None
        self._last_frame_at = time.monotonic()
        depth = None
        if self.depth:
            depth_frame = frames.get_depth_frame()
            if depth_frame is not None:
                raw = np.asanyarray(depth_frame.get_data()).view(np.uint16)
                raw = raw.reshape(depth_frame.get_height(), depth_frame.get_width())
                depth = np.clip(np.rint(raw * depth_frame.get_depth_scale()), 0, 65535).astype(np.uint16)
        return Frame(rgb=_decode(color, ob), stamp=self._clock.to_host(color.get_timestamp(), arrival),
                     number=int(color.get_index()), depth=depth)

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except Exception:  # noqa: BLE001 - the SDK raises its own types when the device is already gone
                pass
            self._pipeline = None
