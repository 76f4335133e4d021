"""The small interface every camera backend implements, and the pieces they share (no ROS here).

A backend opens one colour stream (optionally a depth stream aligned to it), hands out frames with host
timestamps, and raises CameraError when the device goes away; CameraStream owns the reconnect loop.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from hybridvla_core.errors import UserError


class CameraError(RuntimeError):
    """The camera failed or disappeared (unplugged, timed out). CameraStream reconnects after it."""


class CameraConfigError(UserError):
    """A camera setting can never work (bad profile, unsupported device, missing SDK): no retry helps."""


class EndOfStream(Exception):
    """A finite source (a recording played once) has no more frames: the node ends normally."""


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour stream, in pixels (sensor_msgs/CameraInfo K, D)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    coeffs: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)

    @classmethod
    def from_fov(cls, width: int, height: int, horizontal_fov_deg: float = 69.0) -> "Intrinsics":
        """Nominal intrinsics for sources without calibration (video files); 69 deg = D435 colour HFOV."""
        fx = 0.5 * width / np.tan(np.radians(horizontal_fov_deg) / 2.0)
        return cls(width, height, fx, fx, (width - 1) / 2.0, (height - 1) / 2.0)


@dataclass
class Frame:
    rgb: np.ndarray  # HxWx3 uint8 RGB
    stamp: float  # capture time [s], host wall clock (time.time() epoch), comparable with ROS system time
    number: int  # the backend's frame counter, increasing
    depth: np.ndarray | None = None  # HxW uint16 depth in millimetres aligned to rgb, or None


@dataclass(frozen=True)
class Profile:
    """A colour profile as realsense-ros writes it: WIDTHxHEIGHTxFPS, e.g. 640x480x30."""

    width: int
    height: int
    fps: int

    @classmethod
    def parse(cls, text: str) -> "Profile":
        match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*[xX,]\s*(\d+)\s*", text or "")
        if not match or 0 in (values := tuple(int(v) for v in match.groups())):
            raise CameraConfigError(f"colour profile {text!r} is not WIDTHxHEIGHTxFPS (e.g. 640x480x30)")
        return cls(*values)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}x{self.fps}"


class CameraBackend(Protocol):
    name: str  # what the backend talks to, for logs (model + serial, file path)

    def open(self) -> Intrinsics:
        """Start streaming. CameraConfigError if it can never work, CameraError if it may work later."""

    def read(self, timeout_s: float) -> Frame | None:
        """The next new frame, or None when none arrived within timeout_s. CameraError when the device is gone."""

    def close(self) -> None:
        """Stop streaming; safe to call twice and after a failed open."""


class DeviceClock:
    """Maps a device clock [ms] to host wall time [s].

    The host receives a frame some latency after the device stamped it; the smallest observed
    (host arrival - device stamp) over a sliding window is the best estimate of the clock offset (the
    minimum-latency sample), and the window lets it follow slow drift between the two clocks."""

    def __init__(self, window_s: float = 10.0):
        self.window_s = window_s
        self._samples: list[tuple[float, float]] = []  # (arrival host s, offset s)

    def to_host(self, device_ms: float, arrival_s: float) -> float:
        offset = arrival_s - device_ms / 1000.0
        if self._samples and abs(offset - self._samples[0][1]) > 1.0:
            # The device clock jumped by more than any plausible latency (device reset): start over.
            self._samples.clear()
        self._samples = [s for s in self._samples if s[0] >= arrival_s - self.window_s and s[1] < offset]
        self._samples.append((arrival_s, offset))
        # Kept samples are increasing in offset: the first is the window's minimum.
        return device_ms / 1000.0 + self._samples[0][1]

    def reset(self) -> None:
        self._samples.clear()


@dataclass
class StreamStatus:
    frames: int = 0
    reconnects: int = 0
    last_error: str = ""
    connected: bool = False


class CameraStream:
    """Keeps a backend streaming: opens it, reads frames, and after a CameraError closes it and retries
    every retry_period_s until it comes back (an unplugged camera plugged in again)."""

    def __init__(self, backend: CameraBackend, retry_period_s: float = 1.0,
                 on_event: Callable[[str, str], None] | None = None, sleep: Callable[[float], None] = time.sleep):
        self.backend = backend
        self.retry_period_s = retry_period_s
        self.on_event = on_event or (lambda level, text: None)
        self.status = StreamStatus()
        self.intrinsics: Intrinsics | None = None
        self._sleep = sleep

    def next_frame(self, timeout_s: float) -> Frame | None:
        """A new frame, or None (timeout, or the camera is away and a retry is pending).
        CameraConfigError propagates: the node must stop."""
        if not self.status.connected:
            try:
                self.intrinsics = self.backend.open()
            except CameraError as exc:
                self._lost(f"cannot open {self.backend.name}: {exc}")
                return None
            if self.status.frames or self.status.last_error:
                self.status.reconnects += 1
                self.on_event("info", f"{self.backend.name}: streaming again")
            self.status.connected = True
        try:
            frame = self.backend.read(timeout_s)
        except CameraError as exc:
            self._lost(f"{self.backend.name} lost: {exc}")
            return None
        if frame is not None:
            self.status.frames += 1
        return frame

    def _lost(self, text: str) -> None:
        self.backend.close()
        if text != self.status.last_error:
            self.on_event("error", f"{text}; retrying every {self.retry_period_s:g} s")
        self.status.last_error = text
        self.status.connected = False
        self._sleep(self.retry_period_s)

    def close(self) -> None:
        self.backend.close()
        self.status.connected = False
