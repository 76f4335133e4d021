"""The keypoint tower: spatial-softmax readout geometry, a tower that follows what it sees, config refusals,
and a keypoint model that saves, loads and predicts like any other."""
import numpy as np
import pytest
import torch

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import Policy, build_model
from hybridvla_core.model.checkpoint import save_checkpoint
from hybridvla_core.model.config import ModelConfig, VisionConfig
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.vision import KeypointTower, spatial_softmax_points


def peak_maps(h, w, peaks):
    maps = torch.zeros(1, len(peaks), h, w)
    for k, (row, col) in enumerate(peaks):
        maps[0, k, row, col] = 50.0
    return maps


def test_spatial_softmax_points_are_x_right_y_down_in_minus_one_one():
    points = spatial_softmax_points(peak_maps(8, 16, [(0, 0), (7, 15), (0, 15), (7, 0)]))[0]
    expected = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    torch.testing.assert_close(points, expected, atol=1e-4, rtol=0)
    # A flat map reads out the centre; a low temperature flattens a peak towards it.
    assert spatial_softmax_points(torch.zeros(1, 1, 5, 5)).abs().max() < 1e-6
    soft = spatial_softmax_points(peak_maps(8, 8, [(7, 7)]), temperature=0.01)[0, 0]
    assert 0 < soft[0] < 0.2 and 0 < soft[1] < 0.2


def test_tower_keypoints_follow_a_moving_spot():
    """A tower whose first channel detects red: its keypoint tracks a red square across the image."""
    torch.manual_seed(0)
    tower = KeypointTower(image_size=32, channels=8, keypoints=4, width=16)
    with torch.no_grad():
        for conv in (tower.features[0], tower.features[3]):
            conv.weight.zero_(); conv.bias.zero_()
        tower.features[0].weight[0, 0, 2, 2] = 1.0    # red minus green at the kernel centre
        tower.features[0].weight[0, 1, 2, 2] = -1.0
        tower.features[3].weight[0, 0, 1, 1] = 1.0
        tower.features[6].weight.zero_(); tower.features[6].bias.zero_()
        tower.features[6].weight[0, 0] = 1.0
        tower.log_temperature.fill_(3.0)
    xs = []
    for col in (4, 14, 24):
        image = torch.full((1, 3, 32, 32), 0.5)
        image[0, :, 12:16, col:col + 4] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
        xs.append(tower.points(image)[0, 0].tolist())
    assert xs[0][0] < xs[1][0] < xs[2][0], xs
    assert all(abs(p[1] - xs[0][1]) < 1e-3 for p in xs)  # same row throughout
    assert tower(image).shape == (1, 4, 16)


def keypoint_config(**views):
    base = tiny_config().to_dict()
    base["vision"] = {"kind": "keypoints", "image_size": 32, "keypoints": {"channels": 8, "keypoints": 4, "width": 16}}
    base["views"] = [{"name": "front"}, {"name": "wrist", **views}]
    base.pop("tokens")
    return ModelConfig.from_dict(base)


def test_keypoint_config_refuses_pooling_and_non_square_counts():
    with pytest.raises(ValueError, match="keypoints cannot be pooled"):
        keypoint_config(tokens=1)
    config = keypoint_config(tokens=4)
    config.vision.keypoints["keypoints"] = 6
    with pytest.raises(ValueError, match="perfect square"):
        build_model(config)


@pytest.mark.parametrize("size, good", [([16, 32], True), ([16], False), ([16, 0], False), ([16, 2.5], False),
                                        (True, False), ("64", False)])
def test_image_size_is_s_or_height_width(size, good):
    if good:
        assert VisionConfig(kind="keypoints", image_size=size).image_size == size
        with pytest.raises(ValueError, match="needs vision.kind keypoints; 'small' takes a square S"):
            VisionConfig(kind="small", image_size=size)
    else:
        with pytest.raises(ValueError, match=r"vision.image_size must be S or \[height, width\], positive whole pixels"):
            VisionConfig(kind="keypoints", image_size=size)
    assert VisionConfig(kind="small", image_size=[32, 32]).image_size == 32  # a square given as a pair


def test_keypoint_model_round_trips_and_predicts(tmp_path):
    torch.manual_seed(0)
    model = build_model(keypoint_config())
    assert model.tokens_per_image == 8
    samples = np.random.default_rng(0).normal(size=(40, 7))
    out = save_checkpoint(model, tmp_path / "ck", {"sim": DatasetStatistics.from_samples(samples, samples, 4)})
    rng = np.random.default_rng(1)
    observation = {"images": {v: rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for v in ("front", "wrist")},
                   "state": samples[0], "instruction": "put the red block in the green bowl"}
    noise = torch.randn(1, 1, 7)
    first = Policy.from_checkpoint(out).predict(observation, noise=noise)
    again = Policy.from_checkpoint(out).predict(observation, noise=noise)
    np.testing.assert_array_equal(first.action, again.action)
    assert np.all(np.isfinite(first.action))
