"""`hybridvla eval sim`: the committed demo checkpoint closed loop in the simulated lab, through the
franka_bridge's guards, without ROS."""
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from pathlib import Path
from hybridvla_core.sim.config import load_config
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.policy_eval import (PROBE_DIRECTIONS, copied_share, franka_bridge_parameters, probe_targets,
                                            run_policy_episode)

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "sim_fr3_pick_place"


@pytest.fixture(scope="module")
def policy():
    from hybridvla_core.model.policy import Policy

    return Policy.from_checkpoint(CHECKPOINT, mode="hybrid")


@pytest.fixture(scope="module")
def env():
    env = SimEnv(**load_config(robot="fr3").env_kwargs())
    yield env
    env.close()


def test_the_policy_moves_the_arm_through_the_guards(env, policy):
    episode = run_policy_episode(env, policy, 100002, guard_parameters=franka_bridge_parameters(), time_limit_s=2.0)
    assert episode.steps == 20  # 10 Hz for 2 s of simulation time
    assert episode.tcp_path_m > 0.02
    assert episode.instruction.startswith("put the ")
    assert sum(episode.sources.values()) == episode.steps
    env.reset(100002)
    start = env.milestones("fr3")["tcp_to_block_m"]
    assert 0.0 < episode.closest_to_block_m <= start  # the closest approach, over the start and every step


def test_a_min_confidence_above_the_policys_holds_the_arm(env, policy):
    unsure = {**franka_bridge_parameters(), "guards.min_confidence": 0.999}  # the AR confidence is ~0.6-0.8
    episode = run_policy_episode(env, policy, 100002, guard_parameters=unsure, time_limit_s=1.0)
    assert episode.guard_events.get("low_confidence") == episode.steps == 10
    assert episode.tcp_path_m < 0.005  # held where it started (the controller settles a few mm at most)


def test_the_first_grasp_records_where_the_block_was_from_the_tcp(env, policy):
    def grasp_where_you_are(observation, pose, action):  # stay put, close the gripper from the first step
        held = np.array(action, copy=True)
        held[:3], held[6] = pose.position, 0.0
        return held

    env.reset(100002)
    expected = np.array(env.milestones("fr3")["block_from_tcp_m"])
    episode = run_policy_episode(env, policy, 100002, guard_parameters=franka_bridge_parameters(), time_limit_s=0.5,
                                 step_hook=grasp_where_you_are)
    assert np.linalg.norm(expected) > 0.05  # the random start pose is away from the block
    assert episode.first_grasp_offset_m == pytest.approx(expected.tolist(), abs=2e-3)

    def never_grasp(observation, pose, action):
        opened = np.array(action, copy=True)
        opened[6] = 1.0
        return opened

    episode = run_policy_episode(env, policy, 100002, guard_parameters=franka_bridge_parameters(), time_limit_s=0.5,
                                 step_hook=never_grasp)
    assert episode.first_grasp_offset_m is None


def test_probe_targets_holds_the_arm_beside_the_block_and_reads_both_branches(env, policy):
    rows = probe_targets(env, policy, [50000], height_m=0.10, offset_m=0.03)
    assert set(rows) == set(PROBE_DIRECTIONS)
    for name, (ux, uy) in PROBE_DIRECTIONS.items():
        assert rows[name]["arm"][0] == pytest.approx([0.03 * ux, 0.03 * uy], abs=5e-3), name  # the arm went there
        for branch in ("autoregressive", "diffusion"):
            assert rows[name][branch].shape == (1, 2) and np.isfinite(rows[name][branch]).all()


def test_probe_targets_reads_a_delta_translation_policy_from_the_measured_pose(env, policy):
    """A policy in the delta convention (target = measured TCP + action): its probe targets are arm + action."""
    from dataclasses import replace
    from types import SimpleNamespace

    from hybridvla_core.actions import ActionConvention

    step = np.array([0.01, 0.02, 0.0, np.pi, 0.0, 0.0, 1.0])  # m, m, m, rad (Euler xyz), gripper open
    delta = SimpleNamespace(config=replace(policy.config, convention=ActionConvention(translation="delta")),
                            predict=lambda observation: SimpleNamespace(ar_action=step, diffusion_action=step))
    rows = probe_targets(env, delta, [50000], height_m=0.10, offset_m=0.03)
    for name in PROBE_DIRECTIONS:
        for branch in ("autoregressive", "diffusion"):
            np.testing.assert_allclose(rows[name][branch], rows[name]["arm"] + step[:2], atol=1e-9, err_msg=name)


def test_copied_share_tells_a_target_at_the_block_from_one_that_copies_the_arm():
    arm = np.array([[0.03, 0.0], [0.0, -0.03]])
    assert copied_share({"arm": arm, "b": np.zeros((2, 2))}, "b") == pytest.approx(0.0)
    assert copied_share({"arm": arm, "b": arm + [[0.0, 0.01], [0.01, 0.0]]}, "b") == pytest.approx(1.0)
    assert np.isnan(copied_share({"arm": np.zeros((2, 2)), "b": arm}, "b"))


class NaNPolicy:
    """The real policy whose actions are replaced by NaN: nothing may reach the arm."""

    def __init__(self, policy):
        self.policy, self.config = policy, policy.config

    def predict(self, observation):
        result = self.policy.predict(observation)
        return replace(result, action=np.full_like(result.action, np.nan))


def test_a_nan_action_never_moves_the_arm(env, policy):
    env.reset(100002)
    start = env.read("fr3").position.copy()
    episode = run_policy_episode(env, NaNPolicy(policy), 100002, guard_parameters=franka_bridge_parameters(),
                                 time_limit_s=1.0)
    assert episode.guard_events.get("policy_error", 0) + episode.guard_events.get("non_finite", 0) == episode.steps
    assert np.linalg.norm(env.read("fr3").position - start) < 2e-3
    assert not episode.success


def test_a_tight_workspace_shows_up_as_guard_events(env, policy):
    parameters = {**franka_bridge_parameters(), "guards.max_translation_step": 0.002}
    episode = run_policy_episode(env, policy, 100002, guard_parameters=parameters, time_limit_s=1.0)
    assert episode.guard_events.get("step_clamp", 0) > 0
    assert episode.tcp_path_m < 0.002 * episode.steps + 0.01


def test_cli_writes_json_and_refuses_a_missing_checkpoint(tmp_path):
    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(CHECKPOINT),
                          "--episodes", "1", "--time-limit", "0.5", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "hybrid: success 0/1" in run.stdout or "hybrid: success 1/1" in run.stdout
    assert "first grasp" in run.stdout
    episode = json.loads(out.read_text())["hybrid"][0]
    assert episode["seed"] >= 100000 and episode["steps"] == 5
    assert episode["lifted"] is False and episode["closest_to_block_m"] > 0.02  # 0.5 s cannot reach the table
    assert "got as far as: TCP within 2 cm of the block 0, block lifted 0, over its bowl 0 (of 1)" in run.stdout
    fused = 100 * episode["sources"].get("average", 0) / episode["steps"]
    assert f"fused {fused:.0f}%" in run.stdout  # the share of steps that averaged both branches
    bad = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not a checkpoint directory" in bad.stderr


def test_cli_theta_sets_the_ensemble_threshold(tmp_path):
    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(CHECKPOINT),
                          "--episodes", "1", "--time-limit", "0.3", "--theta", "0", "--ensemble-gripper",
                          "autoregressive", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "fused 100%" in run.stdout  # any confidence is above 0: every step averages both branches
    assert json.loads(out.read_text())["hybrid"][0]["sources"] == {"average": 3}
    run = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(CHECKPOINT),
                          "--episodes", "1", "--time-limit", "0.3", "--theta", "1", "--ddim-steps", "1",
                          "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "fused 0%" in run.stdout  # no confidence is strictly above 1: every step follows the diffusion branch
    assert json.loads(out.read_text())["hybrid"][0]["sources"] == {"diffusion": 3}
    bad = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(CHECKPOINT),
                          "--theta", "1.5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --theta must be in [0, 1], got 1.5"
    bad = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(CHECKPOINT),
                          "--ddim-steps", "101"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --ddim-steps must be in 1..100 (the checkpoint's diffusion steps), got 101"


def test_cli_seed_picks_the_trained_variants_from_there(tmp_path):
    """--seed S searches from S for the instruction variants the checkpoint was trained on (consecutive seeds
    would include colours it never saw), as `hybridvla demo` does."""
    from hybridvla_core.sim import episodes

    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "eval", "sim", str(CHECKPOINT),
                          "--episodes", "2", "--seed", "100500", "--time-limit", "0.2", "--json", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    seeds = [e["seed"] for e in json.loads(out.read_text())["hybrid"]]
    assert seeds == episodes.held_out_seeds(2, 100500)
    assert all(episodes.variant_of(s) in episodes.VARIANTS for s in seeds) and min(seeds) >= 100500


def test_probe_targets_cli_prints_each_direction_and_refuses_a_bad_offset():
    command = [sys.executable, "-m", "hybridvla_core.cli", "sim", "probe-targets", str(CHECKPOINT), "--episodes", "1"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    for name in PROBE_DIRECTIONS:
        assert f"arm {name:>7}: autoregressive" in run.stdout
    bad = subprocess.run(command + ["--offset", "0.5"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--offset in [0, 0.10] m" in bad.stderr
    other = subprocess.run(command + ["--config", str(CHECKPOINT.parents[1] / "config" / "sim_agilex.yaml")],
                           capture_output=True, text=True, timeout=120)
    assert other.returncode == 2 and "runs the FR3 pick_place scene" in other.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("mistake, line, named", [
    ("guards:\n      max_translaton_step: 0.01", "max_translation_step", "guards.max_translaton_step"),
    ("rate_hz: -50.0", "", "rate_hz"),
    ("output_type: twist", "", "output_type"),
    ("guards:\n      workspace_min: [0.9, 0.6, 0.9]", "", "guards.workspace_max")])
def test_a_bridge_config_the_node_would_refuse_is_refused_by_eval_sim_too(mistake, line, named, tmp_path):
    """`eval sim --bridge-config` evaluates the guards a robot would run: a file franka_bridge refuses at start (the
    real node process, the expected side) is refused here in one line naming the parameter, not run with defaults."""
    pytest.importorskip("rclpy")
    bad = tmp_path / "franka.yaml"
    bad.write_text(f"franka_bridge:\n  ros__parameters:\n    {mistake}\n")
    node = subprocess.run([sys.executable, "-m", "hybridvla_ros.franka_bridge_node", "--ros-args", "--params-file",
                           str(bad), "-p", "gripper.enabled:=false"], capture_output=True, text=True, timeout=60)
    assert node.returncode == 2 and named in node.stderr, node.stderr
    with pytest.raises(ValueError) as refused:
        franka_bridge_parameters(bad)
    message = str(refused.value)
    assert "\n" not in message and str(bad) in message and named in message and line in message, message
    assert franka_bridge_parameters(CHECKPOINT.parents[1] / "config" / "franka.yaml")["guards.max_translation_step"] > 0
