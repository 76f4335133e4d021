"""Scripted experts: they solve a task from the simulator's privileged object poses by streaming what a
policy or a teleoperator streams: absolute TCP targets in the arm's base frame (position m, quaternion xyzw)
and a gripper command 0 (closed) .. 1 (open), one per control step.

An expert walks through waypoints; the streamed target moves toward the current waypoint by at most
`speed` per second (teleop-like small steps), and the next waypoint starts once the arm has arrived (or
after the waypoint's wait time for gripper actions).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.tasks import BLOCK_HALF, BOWL_WALL

# TCP pointing at the table (180 deg about x), fingers closing along the base's y axis: the FR3 "ready" pose.
TOP_DOWN = Rotation.from_euler("x", np.pi)


@dataclass(frozen=True)
class Command:
    """One control step's command for one arm."""
    position: np.ndarray       # m, TCP in the arm's base frame
    quaternion: np.ndarray     # xyzw, in the arm's base frame
    gripper: float             # 0 closed .. 1 open


@dataclass(frozen=True)
class Waypoint:
    position: np.ndarray       # m, arm base frame
    rotation: Rotation
    gripper: float             # 0 closed .. 1 open
    wait: float = 0.0          # s to hold here after arriving (gripper motion)


class WaypointExpert:
    """Streams targets through a list of waypoints for one arm."""

    def __init__(self, arm: str, speed: float = 0.25, angular_speed: float = 1.0, tolerance: float = 0.01,
                 max_waypoint_s: float = 6.0):
        self.arm = arm
        self.speed = speed                  # m/s of the streamed target
        self.angular_speed = angular_speed  # rad/s
        self.tolerance = tolerance          # m: measured TCP this close to a waypoint = arrived
        self.max_waypoint_s = max_waypoint_s  # s: give up on arriving (a blocked arm) and go on
        self.waypoints: list[Waypoint] = []

    def start(self, env: SimEnv, waypoints: list[Waypoint]) -> None:
        reading = env.read(self.arm)
        self.waypoints = waypoints
        self.index = 0
        self.p = reading.position.copy()
        self.R = Rotation.from_quat(reading.quaternion)
        self.gripper = 1.0
        self.elapsed = 0.0     # s at the current waypoint
        self.arrived_for = 0.0  # s since arrival

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

    def act(self, env: SimEnv, dt: float) -> Command:
        """The command for the next control step (dt s long)."""
        if not self.done:
            wp = self.waypoints[self.index]
            d = wp.position - self.p
            n = np.linalg.norm(d)
            self.p = wp.position.copy() if n <= self.speed * dt else self.p + d * (self.speed * dt / n)
            angle = (wp.rotation * self.R.inv()).magnitude()
            if angle > 1e-9:
                step = min(1.0, self.angular_speed * dt / angle)
                self.R = Rotation.from_rotvec((wp.rotation * self.R.inv()).as_rotvec() * step) * self.R
            self.gripper = wp.gripper
            self.elapsed += dt
            measured = env.read(self.arm).position
            arrived = n <= self.speed * dt and np.linalg.norm(measured - wp.position) < self.tolerance
            if arrived:
                self.arrived_for += dt
            if (arrived and self.arrived_for >= wp.wait) or self.elapsed > self.max_waypoint_s:
                self.index += 1
                self.elapsed = self.arrived_for = 0.0
        return Command(self.p.copy(), self.R.as_quat(), self.gripper)


def _grasp_rotation(yaw: float) -> Rotation:
    """Top-down TCP orientation whose fingers close across a block of this yaw (rad); a cube has 90 deg
    symmetry, so the closest equivalent yaw to the ready pose is used."""
    yaw = (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
    return Rotation.from_euler("z", yaw) * TOP_DOWN


class PickPlaceExpert:
    """FR3 "put the <block> block in the <bowl> bowl": approach, descend, grasp, lift, carry over the bowl,
    lower, release, retreat."""

    def __init__(self, env: SimEnv):
        self.env = env
        self.stream = WaypointExpert("fr3")

    def reset(self) -> None:
        env = self.env
        layout = env.layout
        block = env.task.block_position(env.model, env.data, layout.block)
        R = _grasp_rotation(env.task.block_yaw(env.model, env.data, layout.block))
        bowl = np.array([*layout.bowls[layout.bowl], 0.0])
        carry_z = 0.2
        grasp_z = BLOCK_HALF + 0.004     # TCP a little above the block centre: fingertips below it
        drop_z = BOWL_WALL + 0.06        # block bottom clear of the bowl wall
        top = lambda p, z: np.array([p[0], p[1], z])  # noqa: E731
        self.stream.start(env, [
            Waypoint(top(block, carry_z), R, 1.0),
            Waypoint(top(block, grasp_z), R, 1.0),
            Waypoint(top(block, grasp_z), R, 0.0, wait=0.6),
            Waypoint(top(block, carry_z), R, 0.0),
            Waypoint(top(bowl, carry_z), R, 0.0),
            Waypoint(top(bowl, drop_z), R, 0.0),
            Waypoint(top(bowl, drop_z), R, 1.0, wait=0.5),
            Waypoint(top(bowl, carry_z + 0.05), R, 1.0),
        ])

    @property
    def done(self) -> bool:
        return self.stream.done

    def act(self, dt: float) -> dict[str, Command]:
        return {"fr3": self.stream.act(self.env, dt)}


EXPERTS = {"pick_place": PickPlaceExpert}


def make_expert(env: SimEnv):
    return EXPERTS[env.task.name](env)
