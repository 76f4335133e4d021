"""Image conversions: numpy round trips for every encoding, and agreement with cv_bridge where it exists."""
import importlib.util

import numpy as np
import pytest

from hybridvla_ros import images


@pytest.mark.parametrize("encoding", list(images.ENCODINGS))
def test_round_trip(encoding):
    dtype, channels = images.ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    pixels = (rng.uniform(0, 1000, shape)).astype(dtype)
    msg = images.numpy_to_image(pixels, encoding, frame_id="cam")
    assert (msg.width, msg.height, msg.encoding, msg.header.frame_id) == (7, 5, encoding, "cam")
    np.testing.assert_array_equal(images.image_to_numpy(msg), pixels)


def test_colour_encodings_become_rgb():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    bgr = images.numpy_to_image(rgb[:, :, ::-1].copy(), "bgr8")
    np.testing.assert_array_equal(images.image_to_rgb(bgr), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((2, 3, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(images.image_to_rgb(images.numpy_to_image(bgra, "bgra8")), rgb)


def test_padded_rows_and_bad_input():
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    msg = images.numpy_to_image(rgb, "rgb8")
    padded = bytearray()
    for row in range(2):
        padded += bytes(msg.data[row * 9:(row + 1) * 9]) + b"\0\0\0"  # 3 bytes of row padding
    msg.step, msg.data = 12, bytes(padded)
    np.testing.assert_array_equal(images.image_to_rgb(msg), rgb)
    msg.encoding = "yuv422"
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        images.image_to_rgb(msg)
    with pytest.raises(ValueError, match="does not fit encoding rgb8"):
        images.numpy_to_image(np.zeros((2, 3), np.uint8), "rgb8")


@pytest.mark.skipif(importlib.util.find_spec("cv_bridge") is None,
                    reason="cv_bridge is not installed (it ships with ROS 2, not on PyPI)")
def test_numpy_path_agrees_with_cv_bridge(monkeypatch):
    rng = np.random.default_rng(1)
    for encoding in ("rgb8", "bgr8", "mono8", "16UC1"):
        dtype, channels = images.ENCODINGS[encoding]
        pixels = rng.integers(0, 255, (4, 6) if channels == 1 else (4, 6, channels)).astype(dtype)
        with_bridge = images.numpy_to_image(pixels, encoding)
        monkeypatch.setattr(images, "_BRIDGE", None)
        without = images.numpy_to_image(pixels, encoding)
        assert bytes(with_bridge.data) == bytes(without.data) and with_bridge.step == without.step
        if channels == 3:
            np.testing.assert_array_equal(images.image_to_rgb(with_bridge), images.image_to_rgb(without))
        monkeypatch.undo()
