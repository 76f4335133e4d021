"""DAgger for the demo policy (hybridvla_core.sim.dagger): the labeller gives the scripted expert's next keyframe
from any state, following the expert's plan when it is obeyed and starting over when the block is lost; the
collector writes the visited states with those labels as a training set the checkpoint can train on."""
import json
import subprocess
import sys
from pathlib import Path

import mujoco
import numpy as np
import pytest

from hybridvla_core import demo
from hybridvla_core.model.trainset import TrainsetDataset, read_index
from hybridvla_core.sim.config import load_config
from hybridvla_core.sim.dagger import PerturbedApproach, PickPlaceLabeller, Phase, collect
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.experts import CARRY_Z, DROP_Z, GRASP_Z, RETREAT_Z
from hybridvla_core.sim.tasks import BLOCK_HALF, _set_free_pose

CHECKPOINT = Path(__file__).resolve().parents[2] / "checkpoints" / "sim_fr3_pick_place"
SEED = demo.variant_seeds(1, 40000)[0]


@pytest.fixture(scope="module")
def env():
    env = SimEnv(**load_config(robot="fr3").env_kwargs())
    yield env
    env.close()


def _block(env):
    return env.task.block_position(env.model, env.data, env.layout.block)


def test_obeying_the_labels_solves_the_task_through_every_phase(tmp_path):
    out = tmp_path / "dagger"
    summary = collect(CHECKPOINT, out, [SEED], expert_share=1.0, time_limit_s=15.0, progress=False)
    assert summary["successes"] == 1 and summary["expert_steps"] == summary["samples"]
    assert all(n > 0 for n in summary["phases"]), summary["phases"]  # every phase was labelled on the way
    index = read_index(out)
    assert index["labels"] == "keyframes" and index["num_samples"] == summary["samples"]
    data = TrainsetDataset(out, 64, ["front", "wrist"], crops=index["crops"])  # cropped as the checkpoint reads
    sample = data[0]
    assert sample["pixels"].shape == (2, 3, 64, 64)
    actions = np.concatenate([np.load(d / "action.npy") for d in sorted(out.glob("shard-*"))])[:, 0]
    assert actions[0, 6] == 1.0 and actions[0, 2] == pytest.approx(CARRY_Z)  # first: above the block, open
    assert actions[-1, 6] == 1.0  # last: released


def test_the_perturbed_expert_goes_down_off_the_block_while_the_labels_point_at_it(tmp_path):
    out = tmp_path / "dart"
    summary = collect(CHECKPOINT, out, [SEED], time_limit_s=20.0, progress=False, executor="perturbed-expert",
                      rng_seed=0)  # rng 0: a perturbed episode (not one of the clean 20 %)
    assert summary["successes"] == 1 and summary["perturbed_steps"] > 0 and summary["expert_steps"] == 0
    shards = sorted(out.glob("shard-*"))
    states = np.concatenate([np.load(d / "state.npy") for d in shards])
    labels = np.concatenate([np.load(d / "action.npy") for d in shards])[:, 0]
    down = (np.abs(labels[:, 2] - GRASP_Z) < 1e-6) & (labels[:, 6] == 1.0)  # "down to the block", open
    assert down.sum() >= 10
    np.testing.assert_allclose(labels[down, :2], labels[down][:1, :2].repeat(down.sum(), 0), atol=0.005)
    off = np.linalg.norm(states[down, :2] - labels[down, :2], axis=1)
    low = states[down, 2] < 0.12
    assert (off[low] > 0.01).sum() >= 5, off  # the arm low and > 1 cm off the block, labelled "to the block"


def test_the_perturbation_streams_its_waypoints_slowly_and_ends_at_the_grasp():
    period = 0.1
    perturbed = PerturbedApproach(np.random.default_rng(0), period, clean_share=0.0)
    perturbed.reset()
    assert len(perturbed.waypoints) == 3
    block = np.array([0.5, 0.0, BLOCK_HALF])
    label = np.array([0.5, 0.0, CARRY_Z])
    first_offset, first_z = perturbed.waypoints[0]
    assert first_z == CARRY_Z and 0.01 <= abs(first_offset[1]) <= 0.035 and abs(first_offset[0]) <= 0.025
    arm = np.array([0.3, 0.2, 0.4])
    targets = [perturbed.position(label, Phase.APPROACH, block, arm) for _ in range(5)]
    steps = np.linalg.norm(np.diff([arm, *targets], axis=0), axis=1)
    np.testing.assert_allclose(steps, perturbed.speed * period)  # streamed from the measured pose at 0.1 m/s
    goal = np.array([*(block[:2] + first_offset), first_z])
    perturbed.position(label, Phase.APPROACH, block, goal)  # arrived: on to the next waypoint
    assert len(perturbed.waypoints) == 2
    grasp = np.array([0.5, 0.0, GRASP_Z])
    np.testing.assert_array_equal(perturbed.position(grasp, Phase.CLOSE, block, grasp), grasp)
    assert perturbed.waypoints == []  # from the grasp on: the expert's labels, unchanged


def test_the_labeller_sends_a_far_arm_above_the_block_then_down(env):
    env.reset(SEED)
    labeller = PickPlaceLabeller(env)
    labeller.reset()
    position, _, gripper = labeller.label(0.1)
    block = _block(env)
    assert labeller.phase == Phase.APPROACH and gripper == 1.0
    np.testing.assert_allclose(position, [block[0], block[1], CARRY_Z])
    # 2 cm beside the block at the carry height: not there yet (the expert descends from within 1 cm)
    env.set_target("fr3", np.array([block[0] + 0.02, block[1], CARRY_Z]), env.read("fr3").quaternion)
    env.advance(1.5)
    position, _, gripper = labeller.label(0.1)
    assert labeller.phase == Phase.APPROACH and position[2] == pytest.approx(CARRY_Z)
    # the same 2 cm off below the carry height, where demonstrations only ever go down: down to the block
    env.set_target("fr3", np.array([block[0] + 0.02, block[1], 0.12]), env.read("fr3").quaternion)
    env.advance(1.5)
    position, _, gripper = labeller.label(0.1)
    assert labeller.phase == Phase.DESCEND and gripper == 1.0
    np.testing.assert_allclose(position, [block[0], block[1], GRASP_Z], atol=1e-6)
    # 6 cm off on the way down: lost, up again
    env.set_target("fr3", np.array([block[0] + 0.06, block[1], 0.10]), env.read("fr3").quaternion)
    env.advance(1.5)
    labeller.label(0.1)
    assert labeller.phase == Phase.APPROACH


def test_a_lost_block_starts_over_and_a_block_in_the_bowl_is_let_go(env):
    env.reset(SEED)
    labeller = PickPlaceLabeller(env)
    labeller.reset()
    labeller.phase, labeller.grasp_xy = Phase.CARRY, _block(env)[:2].copy()
    labeller.label(0.1)  # nothing in the gripper: the carry is over
    assert labeller.phase == Phase.APPROACH
    bowl = env.layout.bowls[env.layout.bowl]
    _set_free_pose(env.model, env.data, f"block_{env.layout.block}", (bowl[0], bowl[1], BLOCK_HALF + 0.005))
    mujoco.mj_forward(env.model, env.data)
    position, _, gripper = labeller.label(0.1)
    assert labeller.phase == Phase.RETREAT and gripper == 1.0
    np.testing.assert_allclose(position, [bowl[0], bowl[1], RETREAT_Z])
    labeller.phase = Phase.LOWER  # lowering with the block already in the bowl: open there
    position, _, gripper = labeller.label(0.1)
    assert labeller.phase == Phase.RELEASE and gripper == 1.0 and position[2] == pytest.approx(DROP_Z)


def test_cli_writes_the_set_and_its_seeds_and_refuses_held_out_seeds_and_an_existing_output(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "hybridvla_core.sim.dagger", str(CHECKPOINT), *args],
                              capture_output=True, text=True, timeout=120)

    ok = run("--out", str(tmp_path / "set"), "--episodes", "1", "--start", "40000", "--time-limit", "1")
    assert ok.returncode == 0, ok.stderr
    written = json.loads((tmp_path / "set" / "dagger.json").read_text())
    assert written["seeds"] == [SEED] and written["samples"] == 10  # 10 Hz for 1 s
    assert read_index(tmp_path / "set")["num_samples"] == 10
    held_out = run("--out", str(tmp_path / "x"), "--episodes", "4", "--start", "99990")
    assert held_out.returncode == 2 and "reach the demo's held-out seeds" in held_out.stderr
    (tmp_path / "exists").mkdir()
    again = run("--out", str(tmp_path / "exists"), "--start", "40000")
    assert again.returncode == 2 and "exists; give a new directory" in again.stderr
    bad = run("--out", str(tmp_path / "y"), "--start", "40000", "--part", "2/2")
    assert bad.returncode == 2 and "--part must be K/N" in bad.stderr
