"""`hybridvla demo` (`make demo`): the trained policy closing the loop through the whole ROS graph.

This module is the command; processes.py starts and stops the nodes, node.py is the demo's own ROS node,
episode.py plays one episode, viewer.py shows the front camera, plots.py draws the report.

Starts the real nodes as processes with the launch files' parameter files plus config/demo_fr3.yaml:
sim_lab (config/sim_franka.yaml), franka_bridge (config/franka.yaml), policy_node (config/policy_franka.yaml,
once per mode) and the recorder (one bag per episode). For each mode and held-out seed: set the seed, reset
the lab, start a bag, set the instruction, enable bridge and policy, wait for success or the time limit,
disable, close the bag. Then summary.json, PNG plots and one GIF per mode in the report directory.

    hybridvla demo [--episodes 10] [--seed 100000] [--mode hybrid|diffusion|autoregressive|all]
                   [--checkpoint DIR] [--time-limit 25] [--output DIR] [--domain-id N]

The simulated lab is the FR3's (there is no dual-arm demo checkpoint). Registered in hybridvla_core.cli and
imported only when the subcommand runs.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from hybridvla_core import options
from hybridvla_core.modes import MODES
from hybridvla_core.resources import resource_path
from hybridvla_core.sim import episodes as demo_episodes
from hybridvla_core.tools import demo_report as core
from hybridvla_ros.demo.episode import run_episode, slow_note
from hybridvla_ros.demo.node import GIF_EVERY, DemoNode
from hybridvla_ros.demo.plots import write_plots
from hybridvla_ros.demo.processes import Processes, ros_environment
from hybridvla_ros.demo.viewer import viewer_possible

REPO_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
FR3_CHECKPOINT = "sim_fr3_pick_place"


def domain_id(text: str) -> int:
    """A ROS_DOMAIN_ID Fast DDS can open on Linux: 0..232 (its ports overflow above 232)."""
    value = options.seed(text)
    if value > 232:
        raise argparse.ArgumentTypeError(f"expected a ROS domain id 0..232, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    start = demo_episodes.HELD_OUT_SEED_START
    parser.add_argument("--episodes", type=options.positive_int, default=10, help="episodes per mode (default 10)")
    parser.add_argument("--seed", type=options.seed, default=start,
                        help=f"first seed searched for held-out episodes of the trained instruction variants, "
                             f"skipping the checkpoint's training_seeds.json (default {start})")
    parser.add_argument("--mode", default="all", choices=(*MODES, "all"),
                        help="the policy's mode, or each mode in turn (all; default)")
    parser.add_argument("--checkpoint", type=Path, help=f"checkpoint directory (default checkpoints/{FR3_CHECKPOINT})")
    parser.add_argument("--time-limit", type=options.positive_float, default=25.0,
                        help="simulated seconds per episode (default 25)")
    parser.add_argument("--output", type=Path, help="report directory (default outputs/demo-<time>)")
    parser.add_argument("--domain-id", type=domain_id,
                        help="ROS_DOMAIN_ID, 0..232 (default: $ROS_DOMAIN_ID or a random one in 101..215)")


def run(args: argparse.Namespace) -> int:
    """A damaged checkpoint raises its UserError before anything starts (hybridvla_core.cli says it in one line)."""
    checkpoint = (args.checkpoint or REPO_CHECKPOINTS / FR3_CHECKPOINT).resolve()
    if not (checkpoint / "config.json").is_file():
        print(f"hybridvla demo: no checkpoint at {checkpoint} (train one with scripts/train_demo_policy.sh)",
              file=sys.stderr)
        return 2
    from hybridvla_core.model.checkpoint import load_checkpoint

    load_checkpoint(checkpoint)  # a damaged checkpoint is said here in one line, not by a policy node exiting later
    modes = list(MODES) if args.mode == "all" else [args.mode]
    seeds = demo_episodes.untrained_seeds(checkpoint, args.episodes, args.seed)
    out = (args.output or Path("outputs") / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    ros_environment(args.domain_id)

    procs = Processes(out / "logs")
    graph = None
    interrupted = False
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        config = resource_path("config", "")
        overlay = str(config / "demo_fr3.yaml")
        procs.start("sim_lab", "hybridvla_ros.sim_lab_node", [str(config / "sim_franka.yaml"), overlay], {})
        procs.start("franka_bridge", "hybridvla_ros.franka_bridge_node", [str(config / "franka.yaml"), overlay], {})
        procs.start("recorder", "hybridvla_ros.recorder_node", [overlay], {"output_dir": str(out / "bags")})
        graph = DemoNode(viewer=viewer_possible())
        print(f"hybridvla demo: {checkpoint.name}, modes {', '.join(modes)}, {len(seeds)} held-out seeds per mode "
              f"({', '.join(map(str, seeds))}), {args.time_limit:g} s per episode; report in {out}", flush=True)
        results: dict[str, dict] = {}
        latencies: dict[str, list[float]] = {}
        for mode in modes:
            procs.start("policy", "hybridvla_ros.policy_node", [str(config / "policy_franka.yaml"), overlay],
                        {"checkpoint": str(checkpoint), "mode": mode})
            episodes, actions, guards = [], [], []
            for i, seed in enumerate(seeds):
                r = run_episode(graph, procs, seed, args.time_limit, film=i == 0, label=mode)
                episodes.append(r["episode"])
                actions += r["actions"]
                guards += r["guards"]
                if r["frames"]:
                    import imageio.v2 as imageio

                    imageio.mimsave(out / f"episode_{mode}.gif", r["frames"], duration=GIF_EVERY / 15.0, loop=0)
                e = r["episode"]
                print(f"  {mode:<15} seed {seed:>6}  {'SUCCESS' if e['success'] else 'failure'}  "
                      f"{e['duration_s']:5.1f} s  {e['steps']:3d} steps  TCP moved {100 * e['ee_travel_m']:.1f} cm  "
                      f"{e['instruction']!r}{slow_note(e['real_time_factor'])}", flush=True)
            procs.stop("policy")
            results[mode] = {**core.summarize_mode(episodes, actions, guards), "episode_details": episodes}
            latencies[mode] = [a["total_ms"] for a in actions]
        summary = {"checkpoint": str(checkpoint), "robot": "fr3", "episodes_per_mode": len(seeds),
                   "time_limit_s": args.time_limit, "held_out_seed_start": args.seed, "modes": results}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        plots = write_plots(summary, latencies, out)
        print("\n" + core.table(summary))
        print(f"\nreport: {out} (summary.json, {', '.join(p.name for p in plots)}, "
              f"{', '.join(f'episode_{m}.gif' for m in modes)}, bags/)")
        return 0
    except RuntimeError:  # a service that never appeared: a node that stopped says why in its own line
        procs.check()
        raise
    except KeyboardInterrupt:
        interrupted = True
        print("\nhybridvla demo: interrupted; stopping the nodes", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        procs.stop_all()
        if graph is not None:
            graph.close()
        if interrupted:
            print(f"hybridvla demo: partial report and logs in {out}", file=sys.stderr)
