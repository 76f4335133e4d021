"""DAgger for the FR3 pick_place demo policy: run a checkpoint closed loop (through the franka_bridge's guards,
hybridvla_core.sim.policy_eval) and label every state it visits with the keyframe the scripted expert would
command from there, so that fine-tuning teaches the policy to recover from its own mistakes, which the
expert's demonstrations never show (Ross et al., 2011, "A reduction of imitation learning ... to no-regret
online learning").

    python -m hybridvla_core.sim.dagger CHECKPOINT --out DIR --episodes 200 --start 40000 [--part 0/2]

writes DIR, a training set (model/trainset.py) in the checkpoint's convention, keyframe labels, its views
cropped and resized as the checkpoint reads them, and DIR/dagger.json (what was run, the seeds, the phases);
`hybridvla dataset merge --statistics-from` joins it to the
demonstrations without changing the checkpoint's normalisation.

The labels follow PickPlaceExpert's plan (experts.py), re-planned from the measured state: above the block,
down to it, close, lift, over the bowl, down, open, up; a block that is not held sends the plan back to the
start with the gripper open. A keyframe label is the waypoint the expert is heading for (as
datasets/build.py keyframe_after labels the recorded demonstrations).

    python -m hybridvla_core.sim.dagger CHECKPOINT --out DIR --episodes 1000 --start 70000 --executor perturbed-expert

labels the same way, but the arm executes the expert's plan pushed off the block on its way down (DART: Laskey
et al., 2017, "DART: noise injection for robust imitation learning"): no policy runs (the checkpoint only
gives the set's convention, views and crops), and every state near the block with the arm off it is labelled
"to the block", which the demonstrations, always straight above the block, never show.
"""
from __future__ import annotations

import argparse
import json
import sys
from enum import IntEnum
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hybridvla_core.sim.experts import (CARRY_Z, DROP_Z, GRASP_WAIT_S, GRASP_Z, RELEASE_WAIT_S, RETREAT_Z,
                                        grasp_rotation, step_toward)
from hybridvla_core.sim.tasks import BLOCK_HALF, BOWL_RADIUS, BOWL_WALL

ARM = "fr3"


class Phase(IntEnum):
    APPROACH = 0   # to above the block, gripper open
    DESCEND = 1    # down to the grasp height
    CLOSE = 2      # close on the block and wait
    LIFT = 3       # up to the carry height
    CARRY = 4      # over the bowl
    LOWER = 5      # down to the drop height
    RELEASE = 6    # open and wait
    RETREAT = 7    # up


class PickPlaceLabeller:
    """The expert's next keyframe (position m and quaternion xyzw in the arm's base frame, gripper 0 closed
    .. 1 open) for the state the simulated lab is in now; call `label(dt)` once per control step."""

    def __init__(self, env, tolerance: float = 0.012, column: float = 0.03, lost: float = 0.04):
        self.env = env
        self.tolerance = tolerance  # m: measured TCP this close to the waypoint = arrived (the expert's 1 cm + slack)
        # m: TCP below the carry height this close (x, y) to the block, gripper open: go down to it, correcting
        # x, y on the way (the open
        # fingers clear a 4 cm block by 2 cm a side). Wider than the expert's 1 cm so that a state near the grasp
        # is not labelled both "down" (demonstrations) and "up" (here): an MSE-trained denoiser averages the two
        # and hovers.
        self.column = column
        self.lost = lost            # m: further than this (x, y) from the block while going down: up again

    def reset(self) -> None:
        self.phase = Phase.APPROACH
        self.timer = 0.0  # s in CLOSE or RELEASE
        self.grasp_xy = None
        self.rotation = None

    def _block(self):
        env = self.env
        colour = env.layout.block
        return env.task.block_position(env.model, env.data, colour), env.task.block_yaw(env.model, env.data, colour)

    @staticmethod
    def _holding(reading, block) -> bool:
        """The commanded block is between the closed fingers (held askew too: lifted off the table near the TCP)."""
        near = float(np.linalg.norm(block - reading.position))
        closed_on_it = 0.015 < reading.gripper_width < 0.05
        return bool(closed_on_it and (near < 0.03 or (near < 0.06 and block[2] > BLOCK_HALF + 0.01)))

    def label(self, dt: float) -> tuple[np.ndarray, np.ndarray, float]:
        env = self.env
        reading = env.read(ARM)
        p = reading.position
        block, yaw = self._block()
        bowl = np.array(env.layout.bowls[env.layout.bowl])
        held = self._holding(reading, block)
        phase = self.phase
        if not held and np.linalg.norm(block[:2] - bowl) < BOWL_RADIUS and block[2] < BOWL_WALL:
            if phase == Phase.LOWER:  # in the bowl already: let go where the arm is, then up
                phase, self.timer = Phase.RELEASE, 0.0
            elif phase < Phase.LOWER:
                phase = Phase.RETREAT
        elif phase in (Phase.LIFT, Phase.CARRY, Phase.LOWER) and not held:
            phase = Phase.APPROACH  # dropped: start over
        xy_to_block = float(np.linalg.norm(p[:2] - block[:2]))
        if phase == Phase.APPROACH and block[2] < BLOCK_HALF + 0.01:
            above = np.linalg.norm(p - [block[0], block[1], CARRY_Z]) < self.tolerance  # the expert's own rule
            below_carry = p[2] < CARRY_Z - 0.02 and xy_to_block < self.column  # where demonstrations only descend
            if above or below_carry:
                phase = Phase.DESCEND
        if phase == Phase.DESCEND:
            if xy_to_block > self.lost:
                phase = Phase.APPROACH
            elif np.linalg.norm(p - [block[0], block[1], GRASP_Z]) < self.tolerance:
                phase, self.timer, self.grasp_xy = Phase.CLOSE, 0.0, block[:2].copy()
        if phase == Phase.CLOSE:
            self.timer += dt
            if self.timer >= GRASP_WAIT_S:
                phase = Phase.LIFT if held else Phase.APPROACH
        if phase == Phase.LIFT and p[2] > CARRY_Z - self.lost:  # high enough: on to the bowl, however it went up
            phase = Phase.CARRY
        xy_to_bowl = float(np.linalg.norm(p[:2] - bowl))
        if phase == Phase.CARRY and xy_to_bowl < self.tolerance:
            phase = Phase.LOWER
        if phase == Phase.LOWER:
            if xy_to_bowl > self.lost:
                phase = Phase.CARRY
            elif np.linalg.norm(p - [*bowl, DROP_Z]) < self.tolerance:
                phase, self.timer = Phase.RELEASE, 0.0
        if phase == Phase.RELEASE:
            self.timer += dt
            if self.timer >= RELEASE_WAIT_S:
                phase = Phase.RETREAT
        self.phase = phase
        if phase <= Phase.DESCEND or self.rotation is None:
            self.rotation = grasp_rotation(yaw, env.grasp_axis)  # follows a pushed block; kept from the grasp on
        position, gripper = self._waypoint(phase, block, bowl)
        return np.array(position, dtype=float), self.rotation.as_quat(), gripper

    def _waypoint(self, phase: Phase, block, bowl) -> tuple[list, float]:
        """The phase's waypoint: TCP position (m, base frame) and gripper command (0 closed .. 1 open)."""
        if phase == Phase.APPROACH:
            return [*block[:2], CARRY_Z], 1.0
        if phase == Phase.DESCEND:
            return [*block[:2], GRASP_Z], 1.0
        if phase == Phase.CLOSE:
            return [*self.grasp_xy, GRASP_Z], 0.0
        if phase == Phase.LIFT:
            return [*self.grasp_xy, CARRY_Z], 0.0
        height = {Phase.CARRY: CARRY_Z, Phase.LOWER: DROP_Z, Phase.RELEASE: DROP_Z, Phase.RETREAT: RETREAT_Z}[phase]
        return [*bowl, height], 0.0 if phase < Phase.RELEASE else 1.0


class PerturbedApproach:
    """Where the arm goes instead of the expert's label on the way to the block: three waypoints off the block
    (up to `max_offset_x`, `max_offset_y` m): at the carry height, partway down (TCP 0.08..0.13 m above the
    table) and just above the block (0.055..0.075 m: the fingertips still clear its top), each half the time
    straight below the one before; then the expert's plan (down to the block, close, ...). Up to the grasp the
    target is streamed at `speed` (slower than the expert), so that there are many steps near the block.
    A `clean_share` of episodes is not perturbed (still streamed slowly). The labeller's column has to hold the
    largest offset (`column`), so that the labels on the way down say "down to the block", not "back up"."""
    column = 0.045  # m: PickPlaceLabeller's column for these episodes (offsets up to 4.3 cm)
    heights = ((CARRY_Z, CARRY_Z), (0.08, 0.13), (0.055, 0.075))  # m, TCP height range of each waypoint

    def __init__(self, rng: np.random.Generator, period: float, max_offset_x: float = 0.025,
                 max_offset_y: float = 0.035, clean_share: float = 0.2, speed: float = 0.1, tolerance: float = 0.015,
                 max_steps: int = 60):
        self.rng = rng
        self.period = period           # s per control step
        self.max_offset_x, self.max_offset_y = max_offset_x, max_offset_y  # m, |x|, |y| from the block
        self.clean_share = clean_share
        self.speed = speed             # m/s of the streamed target up to the grasp
        self.tolerance = tolerance     # m: measured TCP this close = arrived
        self.max_steps = max_steps     # control steps per waypoint before giving up on it (a blocked arm)
        self.waypoints: list[tuple[np.ndarray, float]] = []

    def _offset(self) -> np.ndarray:
        """m, block to waypoint (x, y): y, across the fingers and the front camera's horizontal axis, the
        larger (where the policy was found to miss)."""
        sign = self.rng.choice([-1.0, 1.0], size=2)
        return sign * np.array([self.rng.uniform(0.0, self.max_offset_x), self.rng.uniform(0.01, self.max_offset_y)])

    def reset(self) -> None:
        self.steps = 0
        self.streamed = None
        self.waypoints = []
        if self.rng.random() < self.clean_share:
            return
        offset = self._offset()
        for low, high in self.heights:
            if self.waypoints and self.rng.random() < 0.5:
                offset = self._offset()
            self.waypoints.append((offset, float(self.rng.uniform(low, high))))

    def position(self, label_position: np.ndarray, phase: Phase, block: np.ndarray,
                 measured: np.ndarray) -> np.ndarray:
        """The TCP position (m, base frame) to execute this step, given the expert's label and the measured TCP."""
        if phase > Phase.DESCEND:
            self.waypoints = []  # the expert's plan, at its pace, from the grasp on
            return label_position
        goal = label_position
        while self.waypoints:
            offset, z = self.waypoints[0]
            goal = np.array([block[0] + offset[0], block[1] + offset[1], z])
            self.steps += 1
            if np.linalg.norm(measured - goal) >= self.tolerance and self.steps <= self.max_steps:
                break
            self.waypoints.pop(0)
            self.steps = 0
            goal = label_position
        start = np.array(measured, dtype=float) if self.streamed is None else self.streamed
        self.streamed = step_toward(start, goal, self.speed * self.period)
        return self.streamed.copy()


class _ExpertOnly:
    """Stands in for the policy in run_policy_episode when the perturbed expert drives: the checkpoint's config,
    no inference (the step hook decides every action)."""

    def __init__(self, config):
        self.config = config

    def predict(self, observation):
        return SimpleNamespace(action=None, source="expert", mean_confidence=1.0)  # as teleop: a confident source


EXECUTORS = ("policy", "perturbed-expert")


def collect(checkpoint: str | Path, out: str | Path, seeds, *, mode: str = "hybrid", expert_share: float = 0.25,
            time_limit_s: float = 20.0, sim_config=None, bridge_parameters=None, progress: bool = True,
            rng_seed: int = 0, executor: str = "policy") -> dict:
    """Roll out `checkpoint` on `seeds`; at each control step the expert's action replaces the policy's with
    probability `expert_share` (so that later phases are reached too). With executor "perturbed-expert" no
    policy runs: the arm executes the expert's label pushed off the block by PerturbedApproach. Every step is
    written with the expert's label. Returns a summary."""
    from tqdm import tqdm

    from hybridvla_core.actions import from_absolute_targets
    from hybridvla_core.model.checkpoint import load_config as load_model_config
    from hybridvla_core.model.policy import Policy
    from hybridvla_core.model.trainset import TrainsetWriter
    from hybridvla_core.model.vision import resize_frames
    from hybridvla_core.sim.config import load_config
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.policy_eval import franka_bridge_parameters, run_policy_episode

    cfg = sim_config or load_config(None, robot="fr3")
    bridge = bridge_parameters or franka_bridge_parameters()
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    period = 1.0 / cfg.control_rate_hz
    perturbed = None
    if executor == "perturbed-expert":  # no inference: the checkpoint's config alone, not its weights
        perturbed = PerturbedApproach(np.random.default_rng(rng_seed), period)
        policy = _ExpertOnly(load_model_config(checkpoint))
    else:
        policy = Policy.from_checkpoint(checkpoint, mode=mode)
    config = policy.config
    crops = {v.name: v.crop for v in config.views if v.crop is not None}
    size = config.vision.image_size
    env = SimEnv(**cfg.env_kwargs())
    labeller = PickPlaceLabeller(env) if perturbed is None else PickPlaceLabeller(
        env, column=PerturbedApproach.column, lost=PerturbedApproach.column + 0.01)
    rng = np.random.default_rng(rng_seed)
    writer = TrainsetWriter(out, list(config.view_names), config.action_dim, convention=config.convention,
                            unnorm_key=config.unnorm_key, crops=crops, labels="keyframes")
    summary = {"episodes": 0, "samples": 0, "successes": 0, "expert_steps": 0, "perturbed_steps": 0,
               "phases": [0] * len(Phase)}
    try:
        name = mode if perturbed is None else executor
        bar = tqdm(list(seeds), desc=f"dagger {name}", unit="ep", disable=not progress)
        for episode, seed in enumerate(bar):
            def hook(observation, pose, action, episode=episode):
                position, quaternion, gripper = labeller.label(period)
                label = from_absolute_targets([(position, quaternion, gripper)], [pose], config.convention)
                images = {v: resize_frames([observation["images"][v]], size, crop=crops.get(v))[0]
                          for v in config.view_names}
                writer.add(images, observation["state"], label, observation["instruction"], episode=episode)
                summary["samples"] += 1
                summary["phases"][labeller.phase] += 1
                if perturbed is not None:
                    block = env.task.block_position(env.model, env.data, env.layout.block)
                    executed = perturbed.position(position, labeller.phase, block, pose.position)
                    if not np.array_equal(executed, position):
                        summary["perturbed_steps"] += 1
                    return from_absolute_targets([(executed, quaternion, gripper)], [pose], config.convention)
                if rng.random() < expert_share:
                    summary["expert_steps"] += 1
                    return label
                return action

            labeller.reset()
            if perturbed is not None:
                perturbed.reset()
            result = run_policy_episode(env, policy, int(seed), guard_parameters=bridge, time_limit_s=time_limit_s,
                                        control_rate_hz=cfg.control_rate_hz, step_hook=hook)
            summary["episodes"] += 1
            summary["successes"] += int(result.success)
            bar.set_postfix(success=f"{summary['successes']}/{summary['episodes']}", samples=summary["samples"])
    finally:
        env.close()
        writer.close()
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hybridvla_core.sim.dagger", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="FR3 pick_place checkpoint directory")
    parser.add_argument("--out", type=Path, required=True, help="training set directory to write (must not exist)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes (default 100)")
    parser.add_argument("--start", type=int, required=True,
                        help="seeds of the demo's variants (hybridvla_core.demo.VARIANTS) from this one on; keep clear "
                             "of the recorded demonstrations' seeds and of the held-out ones (>= 100000)")
    parser.add_argument("--part", default="0/1", help="K/N: this process takes every N-th seed from the K-th")
    parser.add_argument("--executor", default="policy", choices=EXECUTORS,
                        help="who moves the arm: the checkpoint (DAgger) or the expert pushed off the block on its "
                             "way down (DART-style; the checkpoint only gives convention, views and crops)")
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "diffusion", "autoregressive"])
    parser.add_argument("--expert-share", type=float, default=0.25,
                        help="probability that a step executes the expert's action instead of the policy's")
    parser.add_argument("--time-limit", type=float, default=20.0, help="simulation seconds per episode (default 20)")
    args = parser.parse_args(argv)
    try:
        k, n = (int(x) for x in args.part.split("/"))
        if not 0 <= k < n:
            raise ValueError
    except ValueError:
        parser.error(f"--part must be K/N with 0 <= K < N, got {args.part!r}")
    if not 0.0 <= args.expert_share <= 1.0:
        parser.error(f"--expert-share must be in [0, 1], got {args.expert_share}")
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.out.exists():
        parser.error(f"--out {args.out} exists; give a new directory")
    from hybridvla_core import demo

    seeds = demo.variant_seeds(-(-args.episodes // len(demo.VARIANTS)), args.start)[:args.episodes]
    if seeds[-1] >= demo.HELD_OUT_SEED_START:
        parser.error(f"seeds {seeds[0]}..{seeds[-1]} reach the demo's held-out seeds (>= {demo.HELD_OUT_SEED_START})")
    summary = collect(args.checkpoint, args.out, seeds[k::n], mode=args.mode, expert_share=args.expert_share,
                      time_limit_s=args.time_limit, rng_seed=args.start + k, executor=args.executor)
    summary["phases"] = dict(zip([p.name.lower() for p in Phase], summary["phases"]))
    summary.update(checkpoint=str(args.checkpoint), executor=args.executor, mode=args.mode,
                   expert_share=args.expert_share,
                   seeds=seeds[k::n])
    (args.out / "dagger.json").write_text(json.dumps(summary))  # the seeds it used: keep them out of evaluations
    print(json.dumps({key: value for key, value in summary.items() if key != "seeds"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
