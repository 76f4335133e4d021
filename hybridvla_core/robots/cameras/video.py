"""Video backend: a video file (imageio) or a folder of images, looping, paced at a set rate.
For replays and demos, and the camera source of the integration tests."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hybridvla_core.robots.cameras.base import CameraConfigError, EndOfStream, Frame, Intrinsics

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm")


def _to_rgb(image: np.ndarray, source: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise CameraConfigError(f"{source}: frames must be 8-bit, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise CameraConfigError(f"{source}: frames must be HxW, HxWx3 or HxWx4, got {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


class VideoBackend:
    """Frames of `path` (a video file or a directory of images, sorted by name) at `fps` frames per
    second of wall time; loops when `loop`, else raises EndOfStream after the last frame."""

    def __init__(self, path: str, fps: float, loop: bool = True, clock=time.time, sleep=time.sleep):
        if fps <= 0:
            raise CameraConfigError(f"video fps must be > 0, got {fps}")
        self.path = Path(path).expanduser()
        self.name = f"video {self.path}"
        self.fps = float(fps)
        self.loop = loop
        self._clock, self._sleep = clock, sleep
        self._frames: list[np.ndarray] | None = None
        self._index = 0
        self._next_due = 0.0

    def _load(self) -> list[np.ndarray]:
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise CameraConfigError(f"{self.path}: no images ({', '.join(IMAGE_SUFFIXES)})")
            from PIL import Image

            frames = []
            for p in files:
                try:
                    frames.append(_to_rgb(np.asarray(Image.open(p).convert("RGB")), str(p)))
                except OSError as exc:  # PIL.UnidentifiedImageError, a truncated file
                    raise CameraConfigError(f"{p}: not a readable image ({exc.__class__.__name__}): replace or "
                                            f"remove it") from None
            return frames
        if not self.path.is_file():
            raise CameraConfigError(f"{self.path}: no such video file or image folder")
        import imageio.v3 as iio

        try:
            frames = [_to_rgb(frame, str(self.path)) for frame in iio.imiter(self.path)]
        except (OSError, ValueError, RuntimeError) as exc:  # imageio reports unreadable files with these
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise CameraConfigError(f"{self.path}: cannot read video ({first})") from None
        if not frames:
            raise CameraConfigError(f"{self.path}: the video has no frames")
        return frames

    def open(self) -> Intrinsics:
        if self._frames is None:  # decoded once, kept across reconnects
            self._frames = self._load()
            shapes = {f.shape for f in self._frames}
            if len(shapes) != 1:
                raise CameraConfigError(f"{self.path}: frames differ in size {sorted(shapes)}")
        self._next_due = self._clock()
        height, width = self._frames[0].shape[:2]
        return Intrinsics.from_fov(width, height)

    def read(self, timeout_s: float) -> Frame | None:
        wait = self._next_due - self._clock()
        if wait > timeout_s:
            self._sleep(timeout_s)
            return None
        if wait > 0:
            self._sleep(wait)
        if self._index >= len(self._frames) and not self.loop:
            raise EndOfStream(f"{self.path}: end of the recording ({len(self._frames)} frames)")
        rgb = self._frames[self._index % len(self._frames)]
        number = self._index
        self._index += 1
        now = self._clock()
        # Pace on the schedule, but never try to catch up a backlog after a stall.
        self._next_due = max(self._next_due + 1.0 / self.fps, now - 1.0 / self.fps)
        return Frame(rgb=rgb, stamp=now, number=number)

    def close(self) -> None:
        pass
