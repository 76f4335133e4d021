"""A view's region of interest (views[].crop): validated in one line, cut out before the resize by the policy, the
training set reader and the builder alike, so the pixels a policy sees live are those it was trained on."""
import numpy as np
import pytest
import torch

from hybridvla_core.model import Policy, build_model
from hybridvla_core.model.config import ModelConfig
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.config import check_crop
from hybridvla_core.model.vision import crop_frame, images_to_pixels, resize_frames

CROP = [0.25, 0.75, 0.5, 1.0]


def test_crop_frame_keeps_the_named_rows_and_columns():
    frame = np.arange(8 * 10).reshape(8, 10)
    np.testing.assert_array_equal(crop_frame(frame, CROP), frame[2:6, 5:10])
    assert crop_frame(frame, None) is frame
    # Edges rounded to the nearest pixel; a sliver never comes out empty.
    assert crop_frame(frame, [0.3, 0.31, 0.0, 1.0]).shape == (1, 10)


@pytest.mark.parametrize("bad, match", [([0.5, 0.4, 0, 1], "top < bottom"), ([0, 1, -0.1, 1], "0 <= left"),
                                        ([0, 1.2, 0, 1], "bottom <= 1"), ([0, 1, 0], "fractions"),
                                        ("front", "fractions")])
def test_bad_crops_are_refused_with_one_line(bad, match):
    with pytest.raises(ValueError, match=match):
        check_crop(bad)
    data = tiny_config().to_dict()
    data["views"][0]["crop"] = bad
    with pytest.raises(ValueError, match="view 'front': crop") as info:
        ModelConfig.from_dict(data)
    assert "\n" not in str(info.value)


def test_images_to_pixels_crops_then_resizes_and_resize_frames_agrees():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    cropped = images_to_pixels(list(frames), 16, "cpu", torch.float32, [CROP] * 3)
    expected = images_to_pixels([f[10:30, 30:60] for f in frames], 16, "cpu", torch.float32)
    assert torch.equal(cropped, expected)
    assert not torch.allclose(cropped, images_to_pixels(list(frames), 16, "cpu", torch.float32))
    stored = resize_frames(frames, 16, batch=2, crop=CROP)  # what the builder writes
    np.testing.assert_array_equal(stored, np.round(cropped.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))


def test_the_policy_crops_each_view_as_its_config_says():
    config = tiny_config().to_dict()
    config["views"][0]["crop"] = CROP
    torch.manual_seed(0)
    policy = Policy(build_model(ModelConfig.from_dict(config)).eval(), _statistics())
    rng = np.random.default_rng(1)
    images = {v: rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for v in ("front", "wrist")}
    obs = policy._validate({"images": images, "state": np.zeros(7), "instruction": "pick"})
    pixels = policy._pixels(obs)[0]
    assert torch.equal(pixels[0], images_to_pixels([images["front"][12:36, 20:40]], 32, "cpu", torch.float32)[0])
    assert torch.equal(pixels[1], images_to_pixels([images["wrist"]], 32, "cpu", torch.float32)[0])
    # The crop travels with the checkpoint's config.
    assert ModelConfig.from_dict(policy.config.to_dict()).views[0].crop == CROP


def _statistics():
    from hybridvla_core.actions import DatasetStatistics

    samples = np.random.default_rng(0).normal(size=(50, 7))
    return DatasetStatistics.from_samples(samples, samples, num_trajectories=2)
