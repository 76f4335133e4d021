"""Scripted experts solve their tasks: >= 95% of 50 seeded episodes (no rendering, as fast as possible)."""
import pytest

from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.runner import run_expert_episode


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
