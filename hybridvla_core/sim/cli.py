"""`hybridvla sim ...`: the simulated lab without ROS.

    hybridvla sim run-experts --task pick_place --episodes 50 --seed 0 [--record DIR] [--realtime]

runs the task's scripted expert on seeds S, S+1, ..., prints the success rate (with a progress bar), and
with --record writes one rosbag2 (MCAP) per episode, with the topics of a real teleoperated recording.

    hybridvla sim record-demos --out DIR [--per-variant 100] [--start 0] [--part I/N]

records the expert demonstrations of the demo's instruction variants (hybridvla_core.sim.episodes: the first
PER_VARIANT seeds of each variant from --start on, one MCAP bag per episode, the topics of run-experts
--record) into DIR/partI and writes DIR/seeds.json with the seeds it used; an interrupted run continues.
`hybridvla eval sim CHECKPOINT` runs a checkpoint closed loop (hybridvla_core.tools.evaluation).

    hybridvla sim probe-targets CHECKPOINT [--episodes 20] [--height 0.10] [--offset 0.03]

holds the arm beside the block (+-x, +-y, or straight above) and says whether each branch's target goes to the
block or copies where the arm is: the shortcut of a policy that reads its goal off the arm in the images.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tqdm import tqdm

from hybridvla_core import options
from hybridvla_core.files import check_output_dir, check_output_file
from hybridvla_core.sim import episodes
from hybridvla_core.sim.config import ROBOT_TASKS, fr3_pick_place_config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("run-experts", help="run the scripted experts, print the success rate, optionally record bags")
    tasks = [t for ts in ROBOT_TASKS.values() for t in ts]
    p.add_argument("--task", required=True, choices=tasks,
                   help="the task, which also picks the robot: "
                        + ", ".join(f"{t} ({robot})" for robot, ts in ROBOT_TASKS.items() for t in ts))
    p.add_argument("--episodes", type=options.positive_int, default=10, help="number of episodes (default 10)")
    p.add_argument("--seed", type=options.seed, default=0,
                   help="seed of the first episode; the others follow (default 0)")
    p.add_argument("--record", type=Path, metavar="DIR", help="write one rosbag2 MCAP bag per episode into DIR")
    p.add_argument("--realtime", action="store_true", help="pace simulation time to wall time")
    p.add_argument("--config", type=Path, help="sim parameter file (default: config/sim_franka.yaml or "
                                               "config/sim_agilex.yaml, by the task's robot)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write per-episode results as JSON")

    r = sub.add_parser("record-demos", help="record the expert demonstrations of the demo's instruction variants "
                                            "(the training data of scripts/train_demo_policy.sh)")
    r.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output directory: bags in DIR/partI, the seeds used in DIR/seeds.json")
    r.add_argument("--per-variant", type=options.positive_int, default=100,
                   help="episodes per instruction variant (default 100)")
    r.add_argument("--start", type=options.seed, default=episodes.TRAIN_SEED_START,
                   help=f"first seed considered (default {episodes.TRAIN_SEED_START}); the seeds must stay below the "
                        f"demo's held-out seeds ({episodes.HELD_OUT_SEED_START})")
    r.add_argument("--part", default="0/1", metavar="I/N",
                   help="record every N-th seed from the I-th (parallel runs); seeds already recorded in OUT/partI "
                        "are skipped, so an interrupted run continues (default 0/1)")
    r.add_argument("--config", type=Path, help="sim parameter file (default config/sim_franka.yaml)")

    q = sub.add_parser("probe-targets", help="does an FR3 checkpoint aim at the block or copy where its arm is? "
                                             "(the arm held beside the block, one prediction each)")
    q.add_argument("checkpoint", type=Path, help="checkpoint directory (config.json, model.safetensors, ...)")
    q.add_argument("--episodes", type=options.positive_int, default=20, help="layouts (default 20)")
    q.add_argument("--seed", type=options.seed, default=50000,
                   help="first seed searched for layouts of the trained instruction variants, skipping the "
                        "checkpoint's training_seeds.json (default 50000: neither trained on nor held out)")
    q.add_argument("--height", type=float, default=0.10, help="TCP height above the block [m] (default 0.10)")
    q.add_argument("--offset", type=float, default=0.03, help="TCP offset from the block along +-x, +-y [m] "
                                                              "(default 0.03)")
    q.add_argument("--config", type=Path, help="sim parameter file (default config/sim_franka.yaml)")


def run(args: argparse.Namespace) -> int:
    if args.action == "record-demos":
        return record_demos(args)
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
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.record is not None:
        check_output_dir(args.record, "--record")
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


def _checkpoint_and_config(args: argparse.Namespace, command: str):
    """The sim config for a command that runs an FR3 pick_place checkpoint, or None after printing one line
    naming what is wrong (no checkpoint at args.checkpoint, an unreadable file, another scene)."""
    if not (args.checkpoint / "config.json").is_file():
        print(f"error: {args.checkpoint} is not a checkpoint directory (no config.json)", file=sys.stderr)
        return None
    try:
        return fr3_pick_place_config(args.config, command)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def record_demos(args: argparse.Namespace) -> int:
    """`hybridvla sim record-demos`: the expert demonstrations of the demo's instruction variants."""
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.record import BagRecorder, recorded_seeds
    from hybridvla_core.sim.runner import Rates, run_expert_episode

    try:
        index, parts = (int(x) for x in args.part.split("/"))
        if not 0 <= index < parts:
            raise ValueError
    except ValueError:
        print(f"error: --part must be I/N with 0 <= I < N, got {args.part!r}", file=sys.stderr)
        return 2
    if args.per_variant < 1:
        print("error: --per-variant must be >= 1", file=sys.stderr)
        return 2
    seeds = episodes.variant_seeds(args.per_variant, args.start)
    if seeds and seeds[-1] >= episodes.HELD_OUT_SEED_START:
        print(f"error: training seeds reach {seeds[-1]}, into the held-out range", file=sys.stderr)
        return 2
    try:
        cfg = fr3_pick_place_config(args.config, "record-demos")
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mine = seeds[index::parts]
    args.out.mkdir(parents=True, exist_ok=True)
    part_dir = args.out / f"part{index}"
    done, unfinished = recorded_seeds(part_dir)
    for path in unfinished:  # an interrupted episode: recorded again below
        shutil.rmtree(path)
    if done:
        print(f"part {index}/{parts}: {len(done & set(mine))} of {len(mine)} episodes already recorded, continuing")
    todo = [seed for seed in mine if seed not in done]
    if index == 0:
        (args.out / "seeds.json").write_text(json.dumps({"variants": episodes.VARIANTS, "seeds": seeds}))
    env = SimEnv(**cfg.env_kwargs())
    recorder = BagRecorder(part_dir, cfg, epoch_ns=time.time_ns())
    recorder.episode_index = len(done)  # bag names keep counting
    rates = Rates(control=cfg.control_rate_hz, state=cfg.state_rate_hz, camera=cfg.camera_rate_hz)
    ok = 0
    try:
        for seed in tqdm(todo, desc=f"demos part {index}/{parts}", unit="ep"):
            ok += run_expert_episode(env, seed, rates=rates, timeout_s=cfg.episode_timeout_s, sink=recorder).success
    finally:
        env.close()
    print(f"part {index}/{parts}: {ok}/{len(todo)} expert successes, bags in {part_dir}")
    return 0


def probe_policy_targets(args: argparse.Namespace) -> int:
    from hybridvla_core.model.checkpoint import CheckpointError
    from hybridvla_core.model.policy import Policy
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.policy_eval import copied_share, probe_targets

    if args.episodes < 1 or not 0.0 <= args.offset <= 0.10 or not 0.03 <= args.height <= 0.30:
        print("error: need --episodes >= 1, --offset in [0, 0.10] m and --height in [0.03, 0.30] m", file=sys.stderr)
        return 2
    cfg = _checkpoint_and_config(args, "probe-targets")
    if cfg is None:
        return 2
    seeds = episodes.untrained_seeds(args.checkpoint, args.episodes, args.seed)
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
