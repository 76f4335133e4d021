"""The one home of sensor_msgs/Image <-> numpy conversions.

cv_bridge is used where it is installed (a ROS 2 PC); elsewhere an equivalent numpy path does the same
for the encodings this suite uses. test/ros/test_images.py checks that both agree where both exist.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

try:  # cv_bridge ships with ROS 2 desktop installs, not on PyPI
    from cv_bridge import CvBridge

    _BRIDGE = CvBridge()
except ImportError:  # pragma: no cover - depends on the machine
    _BRIDGE = None

# encoding -> (dtype, channels)
ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "16UC1": (np.uint16, 1),   # depth in millimetres (realsense-ros, OrbbecSDK_ROS2)
    "32FC1": (np.float32, 1),  # depth in metres
}


def image_to_numpy(msg: Image) -> np.ndarray:
    """Image -> array in the message's own encoding (HxWxC, or HxW for single-channel)."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    itemsize = dt.itemsize * channels
    if msg.step < msg.width * itemsize or len(msg.data) < msg.step * msg.height:
        raise ValueError(
            f"image {msg.width}x{msg.height} {msg.encoding}: step {msg.step} / {len(msg.data)} bytes too small")
    rows = np.frombuffer(bytes(msg.data) if not isinstance(msg.data, (bytes, bytearray, memoryview)) else msg.data,
                         dtype=np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * itemsize].copy().view(dt).reshape(msg.height, msg.width, channels)
    pixels = pixels.astype(dt.newbyteorder("="), copy=False)
    return pixels[:, :, 0] if channels == 1 else pixels


def image_to_rgb(msg: Image) -> np.ndarray:
    """Image (rgb8, bgr8, rgba8, bgra8, mono8) -> HxWx3 uint8 RGB, what the policy consumes."""
    if _BRIDGE is not None and msg.encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8"):
        return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    return rgb_from_numpy(image_to_numpy(msg), msg.encoding)


def rgb_from_numpy(pixels: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "rgb8":
        return pixels
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if encoding == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    if encoding == "bgra8":
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    if encoding == "mono8":
        return np.repeat(pixels[:, :, None], 3, axis=2)
    raise ValueError(f"image encoding {encoding!r} is not a colour encoding")


def numpy_to_image(pixels: np.ndarray, encoding: str = "rgb8", stamp=None, frame_id: str = "") -> Image:
    """Array -> Image with the given encoding (rgb8 for colour, 16UC1 for depth in mm)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    pixels = np.ascontiguousarray(pixels)
    expected_ndim = 2 if channels == 1 else 3
    if pixels.dtype != dtype or pixels.ndim != expected_ndim or (channels > 1 and pixels.shape[2] != channels):
        raise ValueError(f"array {pixels.dtype} {pixels.shape} does not fit encoding {encoding}")
    if _BRIDGE is not None:
        msg = _BRIDGE.cv2_to_imgmsg(pixels, encoding=encoding)
    else:
        msg = Image()
        msg.height, msg.width = pixels.shape[:2]
        msg.encoding = encoding
        msg.is_bigendian = 0
        msg.step = msg.width * pixels.dtype.itemsize * channels
        msg.data = pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg
