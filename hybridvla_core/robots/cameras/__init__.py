"""Camera backends behind one small interface (see base.CameraBackend), chosen by name.

    realsense  pyrealsense2: a device by serial number, or a recording (.bag / .db3) played back
    orbbec     pyorbbecsdk 1.x (DaBai)
    video      a video file or an image folder, looping, at a set rate
The SDKs are imported when a backend opens, so the others work without them.
"""
from __future__ import annotations

from hybridvla_core.robots.cameras.base import (CameraBackend, CameraConfigError, CameraError, CameraStream, DeviceClock,
                                         EndOfStream, Frame, Intrinsics, Profile)

BACKENDS = ("realsense", "orbbec", "video")


def make_backend(kind: str, *, serial: str = "", profile: str = "640x480x30", depth: bool = False,
                 path: str = "", fps: float = 30.0, loop: bool = True) -> CameraBackend:
    """kind in BACKENDS; serial/profile/depth for devices, path (+ fps, loop) for video; for realsense a
    non-empty path plays that recording back instead of opening a device."""
    if kind == "realsense":
        from hybridvla_core.robots.cameras.realsense import RealSenseBackend

        return RealSenseBackend(serial, Profile.parse(profile), depth, playback_file=path)
    if kind == "orbbec":
        from hybridvla_core.robots.cameras.orbbec import OrbbecBackend

        return OrbbecBackend(serial, Profile.parse(profile), depth)
    if kind == "video":
        from hybridvla_core.robots.cameras.video import VideoBackend

        if not path:
            raise CameraConfigError("the video backend needs a path (a video file or an image folder)")
        return VideoBackend(path, fps, loop)
    raise CameraConfigError(f"unknown camera backend {kind!r}; expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "CameraBackend", "CameraConfigError", "CameraError", "CameraStream", "DeviceClock",
           "EndOfStream", "Frame", "Intrinsics", "Profile", "make_backend"]
