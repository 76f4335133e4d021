"""Real-time factor of the simulated lab (figures, not a test).

Runs scripted-expert episodes as fast as possible with the config's rates (physics 500 Hz, controller 50 Hz,
targets 10 Hz, state 50 Hz) and both cameras rendered at camera_rate_hz, and prints:
  - RTF = simulated seconds / wall seconds (>= 1: the lab keeps real time on this machine),
  - the same without cameras, and the render time per image.

    .venv/bin/python benchmarks/sim_rtf.py [--episodes 3] [--width 320 --height 240] [--config FILE]
"""
from __future__ import annotations

import argparse
import os
import time

from hybridvla_core.sim.config import load_config
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.runner import Rates, run_expert_episode


class RenderOnly:
    """An episode sink that renders every camera when due and measures it (what the node does per frame,
    minus the DDS publish)."""

    def __init__(self):
        self.render_s = 0.0
        self.images = 0

    def start(self, env, t):
        pass

    def state(self, env, t):
        for arm in env.arms:
            env.read(arm)

    def camera(self, env, t, name):
        t0 = time.perf_counter()
        env.render(name)
        self.render_s += time.perf_counter() - t0
        self.images += 1

    def command(self, env, t, commands):
        pass

    def stop(self, env, t, success):
        pass


def measure(env: SimEnv, rates: Rates, episodes: int, cameras: bool):
    sink = RenderOnly()
    sim_s, t0 = 0.0, time.perf_counter()
    for seed in range(episodes):
        sim_s += run_expert_episode(env, seed, rates=rates, sink=sink, cameras=cameras).duration
    wall = time.perf_counter() - t0
    return sim_s / wall, sim_s, wall, sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--config", help="sim parameter file (default config/sim_franka.yaml)")
    args = parser.parse_args()
    cfg = load_config(args.config, robot="fr3")
    kwargs = cfg.env_kwargs()
    kwargs["image_width"] = args.width or cfg.camera_width
    kwargs["image_height"] = args.height or cfg.camera_height
    rates = Rates(cfg.control_rate_hz, cfg.state_rate_hz, cfg.camera_rate_hz)
    env = SimEnv(**kwargs)
    print(f"FR3 pick_place, {args.episodes} expert episodes, physics {cfg.physics_rate_hz:g} Hz, controller "
          f"{cfg.controller_rate_hz:g} Hz, state {cfg.state_rate_hz:g} Hz, cameras {list(env.cameras)} at "
          f"{cfg.camera_rate_hz:g} Hz, {kwargs['image_width']}x{kwargs['image_height']}, "
          f"MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {os.cpu_count()} CPUs")
    rtf, sim_s, wall, sink = measure(env, rates, args.episodes, cameras=True)
    print(f"with cameras:    RTF {rtf:.2f}  ({sim_s:.1f} s simulated in {wall:.1f} s); "
          f"render {1000 * sink.render_s / max(sink.images, 1):.1f} ms/image over {sink.images} images")
    rtf, sim_s, wall, _ = measure(env, rates, args.episodes, cameras=False)
    print(f"without cameras: RTF {rtf:.2f}  ({sim_s:.1f} s simulated in {wall:.1f} s)")
    env.close()


if __name__ == "__main__":
    main()
