"""Guard pipeline cost per target (figures, not a test): the IK on every accepted target dominates.

For each arm model: targets a few millimetres from the measured pose (what a 10 Hz policy sends), targets far
away (clamped to one step), any orientation (clamped to one rotation step), and targets that need a joint
inside its limit margin (the solver runs all its iterations before refusing); prints the median and 99th percentile time per submit() and per bare IK call.

    .venv/bin/python benchmarks/guard_pipeline.py [--n 500]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.runtime.guards import GuardConfig, GuardPipeline, Target

ARMS = {
    "fr3": (GuardConfig("fr3", "fr3", (0.2, -0.5, 0.01), (0.8, 0.5, 0.8)),
            np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])),
    "piper": (GuardConfig("left", "piper", (0.1, -0.4, 0.01), (0.6, 0.4, 0.55), max_translation_step=0.02,
                          max_rotation_step=0.1), np.array([0.0, 1.2, -1.2, 0.0, 0.9, 0.0])),
}


def ms(samples) -> str:
    a = np.array(samples) * 1e3
    return f"median {np.median(a):6.2f} ms, p99 {np.percentile(a, 99):6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="targets per kind and arm")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for name, (config, home) in ARMS.items():
        g = GuardPipeline(config)
        g.set_measured(home, 0.0)
        g.enable(0.0)
        m = g.measured
        # The wrist joint next to the end of its range, and a pose that needs it past the margin.
        j = 4 if name == "piper" else 6
        near = home.copy()
        near[j] = g.chain.upper[j] - config.joint_margin - 0.01
        past = near.copy()
        past[j] = g.chain.upper[j] - config.joint_margin / 2
        beyond = g.chain.fk(past)
        kinds = {
            "near (accepted)": lambda: Target(m.position + rng.normal(0, 0.003, 3), m.quaternion, 0.5, 0.0),
            "far (step-clamped)": lambda: Target(m.position + rng.normal(0, 0.3, 3), m.quaternion, 0.5, 0.0),
            "any orientation": lambda: Target(m.position, Rotation.random(random_state=rng).as_quat(), 0.5, 0.0),
            "past a joint margin": lambda: Target(*beyond, 0.5, 0.0),
        }
        for kind, make in kinds.items():
            g.set_measured(near if "margin" in kind else home, 0.0)
            m = g.measured
            times, held = [], 0
            for _ in range(args.n):
                target = make()
                t0 = time.perf_counter()
                held += g.submit(target, 0.0).command.hold
                times.append(time.perf_counter() - t0)
            print(f"{name:5s} submit, {kind:22s} {ms(times)}  ({held}/{args.n} refused)")
        times, iterations = [], []
        for _ in range(args.n):
            q = np.clip(home + rng.normal(0, 0.01, g.chain.dof), g.chain.lower, g.chain.upper)
            p, quat = g.chain.fk(q)
            t0 = time.perf_counter()
            r = g.chain.ik(p, quat, home, margin=config.joint_margin, max_iterations=config.ik_iterations,
                           position_tolerance=config.ik_position_tolerance, rotation_tolerance=config.ik_rotation_tolerance)
            times.append(time.perf_counter() - t0)
            iterations.append(r.iterations)
        print(f"{name:5s} IK alone, 1 cm away: {ms(times)}, {np.mean(iterations):.1f} iterations on average")


if __name__ == "__main__":
    main()
