"""`hybridvla sim ...`: the simulated lab without ROS.

    hybridvla sim run-experts --task pick_place --episodes 50 --seed 0 [--record DIR] [--realtime]

runs the task's scripted expert on seeds S, S+1, ..., prints the success rate (with a progress bar), and
with --record writes one rosbag2 (MCAP) per episode, with the topics of a real teleoperated recording.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
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
