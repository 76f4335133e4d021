"""Scripted experts solve their tasks: >= 95% of 50 seeded episodes (no rendering, as fast as possible)."""
import numpy as np
import pytest

from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.experts import grasp_rotation
from hybridvla_core.sim.runner import run_expert_episode


def test_grasp_closes_the_fingers_across_the_block_within_45_degrees_of_the_base_y_axis():
    for yaw in np.linspace(-np.pi / 4 + 1e-3, np.pi / 4 - 1e-3, 9):
        R = grasp_rotation(yaw)
        closing = R.apply([0.0, 1.0, 0.0])          # the fingers close along the TCP's y axis
        assert np.isclose(abs(R.apply([0.0, 0.0, 1.0])[2]), 1.0)   # still pointing straight down
        assert abs(closing[1]) >= np.cos(np.pi / 4) - 1e-6         # within 45 deg of the base's y axis
        # ... and square to the block's faces (a cube: 90 deg symmetry)
        face_angle = np.arctan2(closing[1], closing[0]) - yaw
        assert np.isclose(np.sin(2 * face_angle), 0.0, atol=1e-9)


@pytest.mark.slow
def test_pick_place_expert_succeeds_on_95_percent_of_50_seeds():
    env = SimEnv("fr3", "pick_place")
    results = [run_expert_episode(env, seed) for seed in range(50)]
    env.close()
    failed = [r.seed for r in results if not r.success]
    assert len(failed) <= 2, f"failed seeds: {failed}"
    assert len({r.instruction for r in results}) > 8  # the seeds really vary the task


@pytest.mark.slow
def test_lift_ball_expert_succeeds_on_95_percent_of_50_seeds():
    env = SimEnv("agilex", "lift_ball")
    results = [run_expert_episode(env, seed) for seed in range(50)]
    env.close()
    failed = [r.seed for r in results if not r.success]
    assert len(failed) <= 2, f"failed seeds: {failed}"
