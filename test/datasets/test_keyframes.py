"""`dataset build --keyframes`: each step is labelled with the target of the next keyframe (arrived, about to
move again, gripper command changed, last step)."""
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.actions import ActionConvention
from hybridvla_core.datasets.build import idle_steps, keyframe_after
from hybridvla_core.datasets.extract import Episode

DOWN = Rotation.from_euler("x", np.pi).as_quat()


def _episode(path_xyz, grippers, yaws=None) -> Episode:
    """One arm whose commanded target walks through path_xyz (m) with these gripper commands; measured poses
    lag one step behind the targets."""
    yaws = np.zeros(len(path_xyz)) if yaws is None else yaws
    quats = [(Rotation.from_euler("z", y) * Rotation.from_quat(DOWN)).as_quat() for y in yaws]
    targets = [[(np.asarray(p, float), q, g)] for p, q, g in zip(path_xyz, quats, grippers)]
    poses = [[(np.asarray(path_xyz[max(k - 1, 0)], float), quats[max(k - 1, 0)], 1.0)] for k in range(len(path_xyz))]
    count = len(path_xyz)
    return Episode(Path("synthetic"), "pick it", "success", ["fr3"], ["front"], np.arange(count) * 100_000_000,
                   np.zeros((count, 7)), targets, poses, {"front": [np.zeros((4, 4, 3), np.uint8)] * count})


def test_labels_point_at_the_next_keyframe():
    x = [0.30, 0.32, 0.34, 0.36, 0.36, 0.36, 0.36, 0.36, 0.36, 0.36, 0.36]
    z = [0.40, 0.40, 0.40, 0.40, 0.40, 0.38, 0.36, 0.36, 0.36, 0.36, 0.36]
    g = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    #   moving into steps 1-3, still at 4, moving into 5-6 (down), still 7, gripper closes at 8, held to 10
    episode = _episode(list(zip(x, [0.0] * 11, z)), g)
    after = keyframe_after(episode, idle_m=0.001, idle_rad=0.005)
    # keyframes: 3 (arrived), 4 (about to move), 6 (arrived), 8 (gripper), 10 (last)
    np.testing.assert_array_equal(after, [3, 3, 3, 4, 6, 6, 8, 8, 10, 10, 10])
    actions = episode.actions(ActionConvention(translation="absolute"), after)
    # From the start the label is where the arm arrives, 6 cm away, not the next 2 cm step.
    np.testing.assert_allclose(actions[0, :3], [0.36, 0.0, 0.40])
    np.testing.assert_allclose(actions[7, [2, 6]], [0.36, 0.0])  # step 7: close the gripper where it is
    # --drop-idle reads motion the same way: still steps are idle, a gripper change is not.
    np.testing.assert_array_equal(np.flatnonzero(idle_steps(episode, 0.001, 0.005)), [4, 7, 9, 10])
    # Without keyframes each step keeps its own target.
    np.testing.assert_allclose(episode.actions(ActionConvention(translation="absolute"))[0, :3], [0.30, 0.0, 0.40])


def test_rotation_alone_is_motion():
    yaws = [0.0, 0.1, 0.2, 0.2, 0.2]
    episode = _episode([(0.4, 0.0, 0.3)] * 5, [1.0] * 5, yaws)
    np.testing.assert_array_equal(keyframe_after(episode, 0.001, 0.005), [2, 2, 4, 4, 4])
