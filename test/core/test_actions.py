"""Action layout, convention, BOUNDS_Q99 normalisation and absolute-target conversions."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hybridvla_core.actions import (ActionConvention, DatasetStatistics, NormStats, default_mask,
                                    from_absolute_targets, gripper_indices, load_dataset_statistics,
                                    save_dataset_statistics, select_statistics, state_from_poses,
                                    to_absolute_targets)

CONVENTIONS = [ActionConvention("delta", "absolute_euler"), ActionConvention("absolute", "delta_euler"),
               ActionConvention("delta", "delta_euler", "1=closed"), ActionConvention("absolute", "absolute_euler")]


def random_poses(rng, arms):
    return [(rng.uniform(-0.5, 0.5, 3), Rotation.random(random_state=rng.integers(1 << 30)).as_quat())
            for _ in range(arms)]


def test_gripper_layout():
    assert gripper_indices(7) == [6]
    assert gripper_indices(14) == [6, 13]
    assert default_mask(14).tolist().count(False) == 2
    with pytest.raises(ValueError, match="7 .* or 14"):
        gripper_indices(8)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("action_dim", [7, 14])
def test_absolute_targets_round_trip(convention, action_dim):
    rng = np.random.default_rng(action_dim)
    for _ in range(20):
        poses = random_poses(rng, action_dim // 7)
        action = rng.uniform(-1.0, 1.0, action_dim)
        action[gripper_indices(action_dim)] = rng.integers(0, 2, action_dim // 7)
        targets = to_absolute_targets(action, poses, convention)
        assert len(targets) == action_dim // 7
        back = from_absolute_targets(targets, poses, convention)
        # Euler angles are compared as rotations (several triples name one rotation).
        for arm in range(action_dim // 7):
            sl = slice(arm * 7, arm * 7 + 7)
            np.testing.assert_allclose(back[sl][:3], action[sl][:3], atol=1e-9)
            assert back[sl][6] == pytest.approx(action[sl][6])
            relative = Rotation.from_euler("xyz", back[sl][3:6]).inv() * Rotation.from_euler("xyz", action[sl][3:6])
            assert relative.magnitude() < 1e-9


def test_delta_translation_adds_to_measured_position_and_gripper_meaning():
    pose = (np.array([0.3, 0.0, 0.5]), np.array([0.0, 0.0, 0.0, 1.0]))
    action = np.array([0.01, -0.02, 0.03, 0.0, 0.0, np.pi / 2, 1.0])
    (target,) = to_absolute_targets(action, [pose], ActionConvention("delta", "absolute_euler", "1=open"))
    np.testing.assert_allclose(target.position, [0.31, -0.02, 0.53])
    np.testing.assert_allclose(Rotation.from_quat(target.quaternion_xyzw).as_euler("xyz"), [0, 0, np.pi / 2], atol=1e-12)
    assert target.gripper == 1.0
    (closed,) = to_absolute_targets(action, [pose], ActionConvention(gripper="1=closed"))
    assert closed.gripper == 0.0


def test_bad_inputs_name_the_problem():
    pose = (np.zeros(3), np.array([0, 0, 0, 1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        to_absolute_targets(np.array([np.nan] * 7), [pose], ActionConvention())
    with pytest.raises(ValueError, match="expected 2 measured"):
        to_absolute_targets(np.zeros(14), [pose], ActionConvention())
    with pytest.raises(ValueError, match="convention.translation"):
        ActionConvention(translation="relative")


def test_state_from_poses_layout():
    quat = Rotation.from_euler("xyz", [0.1, -0.2, 0.3]).as_quat()
    state = state_from_poses([(np.array([1.0, 2.0, 3.0]), quat, 0.0), (np.zeros(3), quat, 1.0)])
    np.testing.assert_allclose(state, [1, 2, 3, 0.1, -0.2, 0.3, 0, 0, 0, 0, 0.1, -0.2, 0.3, 1])


def test_normalisation_round_trip_and_mask(tmp_path):
    rng = np.random.default_rng(0)
    actions = rng.normal(0, [0.01, 0.02, 0.03, 0.5, 0.5, 1.0, 0.3], size=(2000, 7))
    actions[:, 6] = rng.integers(0, 2, 2000)
    stats = DatasetStatistics.from_samples(actions, actions, num_trajectories=10)
    inside = np.clip(actions, stats.action.q01, stats.action.q99)
    normalised = stats.action.normalize(inside)
    assert normalised.min() >= -1 and normalised.max() <= 1
    np.testing.assert_array_equal(normalised[:, 6], inside[:, 6])  # gripper unnormalised
    np.testing.assert_allclose(stats.action.unnormalize(normalised), inside, atol=1e-7)
    # Reference schema on disk, selected by unnorm key.
    save_dataset_statistics(tmp_path / "dataset_statistics.json", {"lab": stats})
    raw = json.loads((tmp_path / "dataset_statistics.json").read_text())
    assert set(raw["lab"]["action"]) == {"mean", "std", "max", "min", "q01", "q99", "mask", "angle_centre"}
    assert raw["lab"]["action"]["angle_centre"][:3] == [None] * 3 and raw["lab"]["action"]["angle_centre"][6] is None
    assert raw["lab"]["num_trajectories"] == 10
    loaded = select_statistics(load_dataset_statistics(tmp_path / "dataset_statistics.json"), "lab")
    np.testing.assert_allclose(loaded.action.normalize(inside), normalised)
    with pytest.raises(ValueError, match="unnorm_key 'other'"):
        select_statistics({"lab": stats}, "other")


def test_statistics_without_a_mask_normalise_every_dim_as_the_reference_does():
    """PKU-HMI-Lab/Hybrid-VLA models/vlas/hybridvla.py: mask = stats.get("mask", np.ones_like(q01, dtype=bool)),
    then 2 * (x - q01) / (q99 - q01 + 1e-8) - 1 clipped to [-1, 1] on masked dims; unnormalize: 0.5 * (a + 1) *
    (q99 - q01) + q01. Values below worked by hand."""
    entry = {"q01": [0.0] * 6 + [0.0], "q99": [2.0] * 6 + [0.08]}
    stats = NormStats.from_dict(entry)
    state = np.array([0.5, 1.0, 1.5, 2.0, 3.0, -1.0, 0.02])
    expected = np.array([-0.5, 0.0, 0.5, 1.0, 1.0, -1.0, -0.5])  # the gripper too: 2 * 0.02 / 0.08 - 1
    np.testing.assert_allclose(stats.normalize(state), expected, atol=1e-6)
    # A binarised gripper of 1 (open) comes back as q99 of the gripper, 0 as its midpoint.
    np.testing.assert_allclose(stats.unnormalize(np.array([0.0] * 6 + [1.0]))[6], 0.08)
    np.testing.assert_allclose(stats.unnormalize(np.array([0.0] * 6 + [0.0]))[6], 0.04)
    # With the mask a reference statistics file carries (gripper False), the gripper passes through.
    masked = NormStats.from_dict({**entry, "mask": [True] * 6 + [False]})
    assert masked.normalize(state)[6] == pytest.approx(0.02)


def test_normalisation_clips_outliers():
    stats = NormStats.from_samples(np.linspace(-1, 1, 101)[:, None].repeat(7, 1))
    out = stats.normalize(np.array([5.0, 5.0, 5.0, 1.5, 1.5, 1.5, 5.0]))
    assert np.all(out[:6] == 1.0) and out[6] == 5.0
    # An angle is an angle: 5 rad is -1.28 rad, below this range.
    assert np.all(stats.normalize(np.full(7, 5.0))[3:6] == -1.0)


def test_angles_wrapped_about_their_circular_mean():
    # A top-down TCP: roll hovers around +-pi and flips sign with the smallest tilt.
    rng = np.random.default_rng(1)
    states = np.zeros((1000, 7))
    states[:, 0] = rng.uniform(0.3, 0.6, 1000)
    roll = np.pi + rng.normal(0, 0.01, 1000)
    states[:, 3] = np.arctan2(np.sin(roll), np.cos(roll))  # what as_euler reports: both signs
    states[:, 5] = rng.uniform(-0.7, 0.7, 1000)
    assert (states[:, 3] > 0).any() and (states[:, 3] < 0).any()
    stats = NormStats.from_samples(states)
    assert abs(abs(stats.angle_centre[3]) - np.pi) < 0.01 and abs(stats.angle_centre[5]) < 0.1
    assert stats.q99[3] - stats.q01[3] < 0.1  # one tight range, not [-pi, pi]
    tilt = np.zeros((2, 7)); tilt[:, 3] = [np.pi - 0.002, -np.pi + 0.002]  # 0.004 rad apart, not 2 pi
    normalised = stats.normalize(tilt)[:, 3]
    assert abs(normalised[0] - normalised[1]) < 0.5
    # Round trip through the file, and a reference file without angle_centre normalises unwrapped.
    loaded = NormStats.from_dict(stats.to_dict())
    np.testing.assert_allclose(loaded.normalize(tilt), stats.normalize(tilt))
    plain = {k: v for k, v in stats.to_dict().items() if k != "angle_centre"}
    assert NormStats.from_dict(plain).angle_centre is None
