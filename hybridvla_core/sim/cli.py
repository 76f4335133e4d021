"""`hybridvla sim ...`: the simulated lab without ROS.

    hybridvla sim run-experts --task pick_place --episodes 50 --seed 0 [--record DIR] [--realtime]

runs the task's scripted expert on seeds S, S+1, ..., prints the success rate (with a progress bar), and
with --record writes one rosbag2 (MCAP) per episode, with the topics of a real teleoperated recording.

    hybridvla sim eval-policy CHECKPOINT --episodes 20 [--mode hybrid|diffusion|autoregressive|all]

runs an FR3 pick_place checkpoint closed loop through the franka_bridge's guards on the demo's held-out seeds
(seeds of the trained instruction variants from 100000 on, or from --seed, skipping the checkpoint's
training_seeds.json), without ROS: the quick check before `make demo`.

    hybridvla sim probe-targets CHECKPOINT [--episodes 20] [--height 0.10] [--offset 0.03]

holds the arm beside the block (+-x, +-y, or straight above) and says whether each branch's target goes to the
block or copies where the arm is: the shortcut of a policy that reads its goal off the arm in the images.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from tqdm import tqdm

from hybridvla_core.sim.config import ROBOT_TASKS, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("run-experts", help="run the scripted experts, print the success rate, optionally record bags")
    tasks = [t for ts in ROBOT_TASKS.values() for t in ts]
    p.add_argument("--task", required=True, choices=tasks)
    p.add_argument("--episodes", type=int, default=10, help="number of episodes (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first episode; the others follow (default 0)")
    p.add_argument("--record", type=Path, metavar="DIR", help="write one rosbag2 MCAP bag per episode into DIR")
    p.add_argument("--realtime", action="store_true", help="pace simulation time to wall time")
    p.add_argument("--config", type=Path, help="sim parameter file (default: config/sim_franka.yaml or "
                                               "config/sim_agilex.yaml, by the task's robot)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write per-episode results as JSON")

    e = sub.add_parser("eval-policy", help="run an FR3 checkpoint closed loop (guards included) on held-out seeds")
    e.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, model.safetensors, ...)")
    e.add_argument("--episodes", type=int, default=20, help="episodes per mode (default 20)")
    e.add_argument("--seed", type=int, default=None,
                   help="first seed searched for episodes of the trained instruction variants, taken in turn, "
                        "skipping the checkpoint's training_seeds.json (default 100000: the demo's held-out seeds)")
    e.add_argument("--mode", default="hybrid", choices=["hybrid", "diffusion", "autoregressive", "all"])
    e.add_argument("--time-limit", type=float, default=25.0, help="simulation seconds per episode (default 25)")
    e.add_argument("--preset", choices=["reference", "single-prefill"], default=None,
                   help="named inference settings (README, 'Presets'; default: the checkpoint's own)")
    e.add_argument("--theta", type=float, default=None,
                   help="ensemble threshold 0..1 on the mean AR token confidence (default: the preset's, else "
                        "the checkpoint's)")
    e.add_argument("--ddim-steps", type=int, default=None,
                   help="DDIM denoising steps of the diffusion branch (default: the checkpoint's)")
    e.add_argument("--ensemble-gripper", choices=["average", "autoregressive"], default=None,
                   help="the gripper of a step that averages both branches: their binarised average "
                        "(a disagreement closes) or the autoregressive branch's (default: the checkpoint's)")
    e.add_argument("--config", type=Path, help="sim parameter file (default config/sim_franka.yaml)")
    e.add_argument("--bridge-config", type=Path, help="franka_bridge parameter file with the guards "
                                                      "(default config/franka.yaml)")
    e.add_argument("--json", type=Path, metavar="FILE", help="also write per-episode results as JSON")

    q = sub.add_parser("probe-targets", help="does an FR3 checkpoint aim at the block or copy where its arm is? "
                                             "(the arm held beside the block, one prediction each)")
    q.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, model.safetensors, ...)")
    q.add_argument("--episodes", type=int, default=20, help="layouts (default 20)")
    q.add_argument("--seed", type=int, default=50000,
                   help="first seed searched for layouts of the trained instruction variants, skipping the "
                        "checkpoint's training_seeds.json (default 50000: neither trained on nor held out)")
    q.add_argument("--height", type=float, default=0.10, help="TCP height above the block [m] (default 0.10)")
    q.add_argument("--offset", type=float, default=0.03, help="TCP offset from the block along +-x, +-y [m] "
                                                              "(default 0.03)")
    q.add_argument("--config", type=Path, help="sim parameter file (default config/sim_franka.yaml)")


def run(args: argparse.Namespace) -> int:
    if args.action == "eval-policy":
        return eval_policy(args)
    if args.action == "probe-targets":
        return probe_policy_targets(args)
    # Imported here so that `hybridvla --help` does not load MuJoCo.
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.record import BagRecorder
    from hybridvla_core.sim.runner import Pacer, Rates, run_expert_episode

    if args.episodes < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    robot = next(r for r, ts in ROBOT_TASKS.items() if args.task in ts)
    try:
        cfg = load_config(args.config, robot=robot)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.robot != robot:
        print(f"error: {args.config} configures robot {cfg.robot}, task {args.task} needs {robot}", file=sys.stderr)
        return 2
    if args.record is not None and args.record.exists() and any(args.record.iterdir()):
        print(f"error: --record directory {args.record} is not empty", file=sys.stderr)
        return 2
    env = SimEnv(**{**cfg.env_kwargs(), "task": args.task})
    recorder = BagRecorder(args.record, cfg, epoch_ns=time.time_ns()) if args.record is not None else None
    rates = Rates(control=cfg.control_rate_hz, state=cfg.state_rate_hz, camera=cfg.camera_rate_hz)
    results = []
    try:
        bar = tqdm(range(args.seed, args.seed + args.episodes), desc=f"{args.task} expert", unit="ep")
        for seed in bar:
            r = run_expert_episode(env, seed, rates=rates, timeout_s=cfg.episode_timeout_s, sink=recorder,
                                   pacer=Pacer(1.0) if args.realtime else None)
            results.append(r)
            bar.set_postfix(success=f"{sum(x.success for x in results)}/{len(results)}")
    finally:
        env.close()
    ok = sum(r.success for r in results)
    print(f"{args.task}: success {ok}/{len(results)} = {100.0 * ok / len(results):.1f}% "
          f"(seeds {args.seed}..{args.seed + args.episodes - 1})")
    failed = [r.seed for r in results if not r.success]
    if failed:
        print(f"failed seeds: {', '.join(map(str, failed))}")
    if recorder is not None:
        print(f"recorded {len(recorder.paths)} bags in {args.record}")
    if args.json is not None:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    return 0


def _first_grasp_summary(results) -> str:
    """Along which axis the first grasps missed: median |block - TCP| per world axis over the episodes whose
    first grasp command came within 10 cm of the block (the rest went for the wrong place)."""
    offsets = np.array([r.first_grasp_offset_m for r in results if r.first_grasp_offset_m is not None],
                       dtype=float).reshape(-1, 3)
    near = offsets[np.linalg.norm(offsets, axis=1) < 0.10]
    if not len(near):
        return "first grasp: none within 10 cm of the block"
    x, y, z = 100 * np.median(np.abs(near), axis=0)
    return (f"first grasp, block from TCP (world frame, {len(near)} within 10 cm): median |x| {x:.1f} cm, "
            f"|y| {y:.1f} cm, |z| {z:.1f} cm; over 2 cm off in x {int((np.abs(near[:, 0]) > 0.02).sum())}, "
            f"in y {int((np.abs(near[:, 1]) > 0.02).sum())}")


def _fr3_pick_place_config(args: argparse.Namespace, command: str):
    """The sim config for a command that runs an FR3 pick_place checkpoint, or None after printing one line
    naming what is wrong (no checkpoint at args.checkpoint, an unreadable file, another scene)."""
    if not (args.checkpoint / "config.json").is_file():
        print(f"error: {args.checkpoint} is not a checkpoint directory (no config.json)", file=sys.stderr)
        return None
    try:
        cfg = load_config(args.config, robot="fr3")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if cfg.robot != "fr3" or cfg.task != "pick_place":
        print(f"error: {command} runs the FR3 pick_place scene; the sim config says {cfg.robot}/{cfg.task}",
              file=sys.stderr)
        return None
    return cfg


def _untrained_seeds(checkpoint: Path, episodes: int, start: int) -> list[int]:
    """Seeds of the instruction variants the checkpoint was trained on (consecutive seeds would include colours
    it never saw) from `start` on, skipping its training_seeds.json, as hybridvla_demo picks them."""
    from hybridvla_core import demo

    seeds_file = checkpoint / "training_seeds.json"
    training = json.loads(seeds_file.read_text())["seeds"] if seeds_file.is_file() else []
    return demo.held_out_seeds(episodes, start, training_seeds=training)


def probe_policy_targets(args: argparse.Namespace) -> int:
    from hybridvla_core.model.checkpoint import CheckpointError
    from hybridvla_core.model.policy import Policy
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.policy_eval import copied_share, probe_targets

    if args.episodes < 1 or not 0.0 <= args.offset <= 0.10 or not 0.03 <= args.height <= 0.30:
        print("error: need --episodes >= 1, --offset in [0, 0.10] m and --height in [0.03, 0.30] m", file=sys.stderr)
        return 2
    cfg = _fr3_pick_place_config(args, "probe-targets")
    if cfg is None:
        return 2
    seeds = _untrained_seeds(args.checkpoint, args.episodes, args.seed)
    try:
        policy = Policy.from_checkpoint(args.checkpoint, mode="hybrid")
    except (OSError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = SimEnv(**cfg.env_kwargs())
    try:
        rows = probe_targets(env, policy, tqdm(seeds, desc="layouts", unit="layout"), height_m=args.height,
                             offset_m=args.offset)
    finally:
        env.close()
    print(f"TCP {100 * args.height:.0f} cm above the commanded block, offset {100 * args.offset:.1f} cm; "
          f"target - block, median |x| / |y| [cm], and the share of the arm's offset the target copies "
          f"(0 = aims at the block, 1 = copies the arm), over {len(seeds)} layouts:")
    for name, found in rows.items():
        parts = []
        for branch in ("autoregressive", "diffusion"):
            if branch in found:
                x, y = 100 * np.median(np.abs(found[branch]), axis=0)
                share = copied_share(found, branch)
                parts.append(f"{branch} {x:.1f} / {y:.1f}" + ("" if np.isnan(share) else f", copies {share:.2f}"))
        print(f"  arm {name:>7}: " + ";  ".join(parts))
    return 0


def _fused_percent(results) -> float:
    """Share of steps where the ensemble averaged both branches (hybrid mode)."""
    steps = sum(sum(r.sources.values()) for r in results)
    return 100.0 * sum(r.sources.get("average", 0) for r in results) / max(steps, 1)


def eval_policy(args: argparse.Namespace) -> int:
    from hybridvla_core import demo
    from hybridvla_core.sim.policy_eval import as_dicts, evaluate, franka_bridge_parameters

    if args.episodes < 1:
        print("error: --episodes must be >= 1", file=sys.stderr)
        return 2
    cfg = _fr3_pick_place_config(args, "eval-policy")
    if cfg is None:
        return 2
    if args.theta is not None and not 0.0 <= args.theta <= 1.0:
        print(f"error: --theta must be in [0, 1], got {args.theta}", file=sys.stderr)
        return 2
    from hybridvla_core.model.checkpoint import CheckpointError, load_config as load_model_config

    try:
        train_steps = load_model_config(args.checkpoint).diffusion.train_steps
    except (OSError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ddim_steps is not None and not 1 <= args.ddim_steps <= train_steps:
        print(f"error: --ddim-steps must be in 1..{train_steps} (the checkpoint's diffusion steps), "
              f"got {args.ddim_steps}", file=sys.stderr)
        return 2
    try:
        bridge = franka_bridge_parameters(args.bridge_config)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start = demo.HELD_OUT_SEED_START if args.seed is None else args.seed
    seeds = _untrained_seeds(args.checkpoint, args.episodes, start)
    modes = list(demo.MODES) if args.mode == "all" else [args.mode]
    report = {}
    for mode in modes:
        try:
            results = evaluate(args.checkpoint, seeds, mode=mode, sim_config=cfg, bridge_parameters=bridge,
                               time_limit_s=args.time_limit, theta=args.theta, ddim_steps=args.ddim_steps,
                               ensemble_gripper=args.ensemble_gripper, preset=args.preset)
        except CheckpointError as exc:  # the weights are checked when the policy loads
            print(f"error: {exc}", file=sys.stderr)
            return 2
        ok = sum(r.success for r in results)
        report[mode] = as_dicts(results)
        events: dict[str, int] = {}
        for r in results:
            for kind, n in r.guard_events.items():
                events[kind] = events.get(kind, 0) + n
        print(f"{mode}: success {ok}/{len(results)} = {100.0 * ok / len(results):.1f}%  "
              f"predict p50 {np.median([r.predict_ms_median for r in results]):.0f} ms  "
              f"fused {_fused_percent(results):.0f}%  "
              f"guard events {dict(sorted(events.items())) or 'none'}")
        closest = np.array([r.closest_to_block_m for r in results])
        print(f"{'':{len(mode)}}  got as far as: TCP within 2 cm of the block {int((closest < 0.02).sum())}, "
              f"block lifted {sum(r.lifted for r in results)}, over its bowl {sum(r.over_bowl for r in results)} "
              f"(of {len(results)}); closest approach median {100 * np.median(closest):.1f} cm")
        print(f"{'':{len(mode)}}  {_first_grasp_summary(results)}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0
