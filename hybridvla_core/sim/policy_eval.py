"""Closed-loop evaluation of a checkpoint in the simulated lab without ROS (`hybridvla eval sim`): the quick
check between training and `hybridvla demo` (which runs the same loop through the full ROS graph,
asynchronously, on wall time).

One episode: reset to a seed, then every control period (10 Hz by default) render the checkpoint's views,
read the measured TCP pose, Policy.predict, actions.to_absolute_targets, the FR3 guard pipeline with the
franka_bridge's parameter file (the very GuardPipeline and FrankaGripperCommander the bridge runs), and the
guarded command to the simulated arm and gripper. Synchronous: the action of an observation is applied at
once, where the ROS graph applies it one inference latency later.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hybridvla_core.actions import ArmPose, state_from_poses, to_absolute_targets
from hybridvla_core.errors import UserError
from hybridvla_core.files import read_yaml
from hybridvla_core.robots.arm_bridge import (FRANKA_BRIDGE_PARAMETERS, GUARD_PARAMETERS, FrankaGripperCommander,
                                             check_parameters, guard_config, guard_parameter_spec)
from hybridvla_core.runtime.guards import GuardPipeline, Target
from hybridvla_core.resources import resource_path
from hybridvla_core.sim.config import SimConfig
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.episodes import SETTLE_S

ARM = "fr3"


def franka_bridge_parameters(path: str | Path | None = None) -> dict:
    """The flattened ros__parameters of franka_bridge in a parameter file (default config/franka.yaml), checked as
    the node checks them at start (a name it lacks, a bad value, a bad guard combination: UserError / ValueError),
    so that the guards evaluated here are the ones the robot would run."""
    path = Path(path) if path is not None else resource_path("config", "franka.yaml")
    doc = read_yaml(path) or {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a ROS 2 parameter file (franka_bridge: ros__parameters: ...)")
    section = next((doc[k] for k in ("franka_bridge", "/franka_bridge") if k in doc), None)
    if section is None or "ros__parameters" not in section:
        raise ValueError(f"{path}: no 'franka_bridge: ros__parameters:' section")
    flat: dict = {}

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value
    walk(section["ros__parameters"], "")
    check_parameters(flat, {**FRANKA_BRIDGE_PARAMETERS, **guard_parameter_spec("guards.")}, str(path))
    values = {f"guards.{name}": flat.get(f"guards.{name}", default)
              for name, (default, _, _) in GUARD_PARAMETERS.items()}
    try:
        guard_config(ARM, flat.get("model", "fr3"), values, "guards.")  # combinations (e.g. the box's corners)
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None
    return flat


@dataclass
class PolicyEpisode:
    seed: int
    instruction: str
    success: bool
    duration_s: float                 # simulation seconds until success or the time limit
    steps: int                        # control steps (policy calls)
    tcp_path_m: float                 # length of the TCP's path [m]
    guard_events: dict[str, int] = field(default_factory=dict)  # EventKind name (or policy_error) -> count
    sources: dict[str, int] = field(default_factory=dict)       # ActionResult.source -> count
    predict_ms_median: float = 0.0
    closest_to_block_m: float = float("nan")  # the TCP's closest approach to the commanded block's centre [m]
    lifted: bool = False                      # the commanded block was lifted at some step
    over_bowl: bool = False                   # ... and carried over the commanded bowl
    # Where the commanded block was from the TCP (block minus TCP, world frame, x y z [m]) when the gripper was
    # first commanded to grasp; None if it never was. Tells along which axis grasps miss.
    first_grasp_offset_m: list[float] | None = None


def _observation(env: SimEnv, views: list[str], pose: ArmPose, instruction: str) -> dict:
    """What Policy.predict sees now: each view rendered, the measured TCP pose as the state, the instruction."""
    return {"images": {view: env.render(view) for view in views}, "state": state_from_poses([pose]),
            "instruction": instruction}


def run_policy_episode(env: SimEnv, policy, seed: int, *, guard_parameters: dict, time_limit_s: float = 25.0,
                       control_rate_hz: float = 10.0, settle_s: float = SETTLE_S, step_hook=None) -> PolicyEpisode:
    """One closed-loop FR3 episode; success is checked every control step and after the time limit.

    step_hook(observation, pose, action) -> action, when given, sees every step's observation, measured
    ArmPose and the policy's action (robot units, the checkpoint's convention) and returns the action to
    execute instead (through the same guards): how a test or a throw-away experiment steers the arm."""
    instruction = env.reset(seed)
    v = guard_parameters
    values = {f"guards.{name}": v.get(f"guards.{name}", default) for name, (default, _, _) in GUARD_PARAMETERS.items()}
    pipeline = GuardPipeline(guard_config(ARM, v.get("model", "fr3"), values, "guards."))
    max_width = float(v.get("gripper.max_width", 0.08))
    gripper = FrankaGripperCommander(max_width, float(v.get("gripper.close_below", 0.5)))
    speed, force = float(v.get("gripper.speed", 0.1)), float(v.get("gripper.force", 20.0))
    views = list(policy.config.view_names)
    period = 1.0 / control_rate_hz
    per_step = max(1, int(round(period / env.control_dt)))
    t0 = env.time
    events: dict[str, int] = {}
    sources: dict[str, int] = {}
    predict_ms: list[float] = []
    path, steps, success = 0.0, 0, False
    first_grasp = None
    closest, lifted, over_bowl = env.milestones(ARM)["tcp_to_block_m"], False, False
    reading = env.read(ARM)
    last_position = reading.position.copy()

    def measure(now: float):
        r = env.read(ARM)
        pipeline.set_measured(r.q, now, r.position, r.quaternion, r.gripper_width / max_width)
        return r

    measure(env.time)
    ok, message = pipeline.enable(env.time)
    if not ok:
        raise RuntimeError(f"guards refused to enable at the start pose: {message}")
    for _ in range(int(round(time_limit_s * control_rate_hz))):
        now = env.time
        reading = measure(now)
        pose = ArmPose(reading.position, reading.quaternion, reading.gripper)
        observation = _observation(env, views, pose, instruction)
        start = time.perf_counter()
        result = policy.predict(observation)
        predict_ms.append((time.perf_counter() - start) * 1000.0)
        sources[result.source] = sources.get(result.source, 0) + 1
        action = result.action if step_hook is None else step_hook(observation, pose, result.action)
        try:
            target = to_absolute_targets(action, [pose], policy.config.convention)[0]
        except ValueError:  # a non-finite action: skipped as the policy node skips it, the arm holds
            events["policy_error"] = events.get("policy_error", 0) + 1
            target = None
        command = None
        if target is not None:
            guarded = pipeline.submit(Target(target.position, target.quaternion_xyzw, target.gripper, now,
                                             float(result.mean_confidence)), now)
            for event in guarded.events:
                events[event.kind.name.lower()] = events.get(event.kind.name.lower(), 0) + 1
            command = guarded.command
        if command is not None and not command.hold:
            env.set_target(ARM, command.position, command.quaternion)
            goal = gripper.decide(command.gripper)
            if goal is not None:
                env.set_gripper_width(ARM, goal.width, speed, force if goal.action == "grasp" else None)
                if goal.action == "grasp" and first_grasp is None:
                    first_grasp = [round(v, 4) for v in env.milestones(ARM)["block_from_tcp_m"]]
        steps += 1
        for _ in range(per_step):
            env.advance(env.control_dt)
        position = env.read(ARM).position
        path += float(np.linalg.norm(position - last_position))
        last_position = position.copy()
        now_at = env.milestones(ARM)
        closest = min(closest, now_at["tcp_to_block_m"])
        lifted, over_bowl = lifted or now_at["lifted"], over_bowl or now_at["over_bowl"]
        if env.success():
            success = True
            break
    if not success:
        env.advance(settle_s)
        success = env.success()
    return PolicyEpisode(seed, instruction, success, round(env.time - t0, 2), steps, round(path, 3), events,
                         sources, round(float(np.median(predict_ms)), 1) if predict_ms else 0.0,
                         round(closest, 3), lifted or success, over_bowl or success, first_grasp)


def evaluate(checkpoint: str | Path, seeds, *, mode: str = "hybrid", sim_config: SimConfig,
             bridge_parameters: dict, time_limit_s: float = 25.0, progress: bool = True,
             theta: float | None = None, ddim_steps: int | None = None,
             ensemble_gripper: str | None = None, preset: str | None = None,
             device: str = "cpu") -> list[PolicyEpisode]:
    """Episodes of `checkpoint` (FR3 pick_place) on `seeds` in one mode (theta: the ensemble threshold,
    ddim_steps: the diffusion's denoising steps, ensemble_gripper: who decides an averaged step's gripper;
    None = the checkpoint's; device: where the policy runs)."""
    from tqdm import tqdm

    from hybridvla_core.model.policy import Policy

    policy = Policy.from_checkpoint(checkpoint, device=device, mode=mode, theta=theta, ddim_steps=ddim_steps,
                                    ensemble_gripper=ensemble_gripper, preset=preset)
    env = SimEnv(**sim_config.env_kwargs())
    results: list[PolicyEpisode] = []
    try:
        bar = tqdm(list(seeds), desc=f"{mode}", unit="ep", disable=not progress)
        for seed in bar:
            results.append(run_policy_episode(env, policy, int(seed), guard_parameters=bridge_parameters,
                                              time_limit_s=time_limit_s, control_rate_hz=sim_config.control_rate_hz))
            bar.set_postfix(success=f"{sum(r.success for r in results)}/{len(results)}")
    finally:
        env.close()
    return results


def as_dicts(results: list[PolicyEpisode]) -> list[dict]:
    return [asdict(r) for r in results]


# Where probe_targets holds the TCP, relative to the commanded block (unit xy directions in the world frame).
PROBE_DIRECTIONS = {"aligned": (0.0, 0.0), "+x": (1.0, 0.0), "-x": (-1.0, 0.0), "+y": (0.0, 1.0), "-y": (0.0, -1.0)}


def probe_targets(env: SimEnv, policy, seeds, *, height_m: float = 0.10, offset_m: float = 0.03,
                  settle_s: float = 2.0) -> dict:
    """Does the policy aim at the block or copy where its arm is? For each seed and PROBE_DIRECTIONS entry the
    TCP is driven to the commanded block + offset_m along that direction, height_m above it (the expert's grasp
    orientation, gripper open) and the policy predicts once. In the demonstrations the arm is always straight
    above the block there, so a policy that reads the target off the arm in the images looks right on them
    and wrong here. Returns direction -> {"arm": (n, 2) measured TCP - block xy [m], "<branch>": (n, 2) that
    branch's target - block xy [m]} for the branches the policy's mode computes (autoregressive, diffusion)."""
    from hybridvla_core.sim.experts import grasp_rotation

    views = list(policy.config.view_names)
    found: dict = {name: {} for name in PROBE_DIRECTIONS}
    for seed in seeds:
        instruction = env.reset(int(seed))
        colour = env.layout.block
        block = env.task.block_position(env.model, env.data, colour)
        rotation = grasp_rotation(env.task.block_yaw(env.model, env.data, colour)).as_quat()
        for name, (ux, uy) in PROBE_DIRECTIONS.items():
            env.set_target(ARM, block + np.array([ux * offset_m, uy * offset_m, height_m]), rotation)
            env.advance(settle_s)
            reading = env.read(ARM)
            pose = ArmPose(reading.position, reading.quaternion, reading.gripper)
            result = policy.predict(_observation(env, views, pose, instruction))
            here = {"arm": reading.position[:2] - block[:2]}
            for branch, action in (("autoregressive", result.ar_action), ("diffusion", result.diffusion_action)):
                if action is not None:  # in the checkpoint's convention: delta translation is from the pose
                    target = to_absolute_targets(action, [pose], policy.config.convention)[0]
                    here[branch] = np.asarray(target.position[:2], dtype=float) - block[:2]
            for key, value in here.items():
                found[name].setdefault(key, []).append(value)
    return {name: {key: np.array(values) for key, values in rows.items()} for name, rows in found.items()}


def copied_share(rows: dict, branch: str) -> float:
    """Median share of the arm's offset from the block that a branch's target repeats, along the offset:
    0 = it aims at the block, 1 = it copies the arm (nan for the aligned rows)."""
    arm, target = rows["arm"], rows[branch]
    norms = np.linalg.norm(arm, axis=1)
    if np.median(norms) < 1e-3:
        return float("nan")
    return float(np.median(np.sum(target * arm, axis=1) / norms**2))
