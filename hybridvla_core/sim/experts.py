"""Scripted experts: they solve a task from the simulator's privileged object poses by streaming what a
policy or a teleoperator streams: absolute TCP targets in the arm's base frame (position m, quaternion xyzw)
and a gripper command 0 (closed) .. 1 (open), one per control step.

An expert walks through waypoints; the streamed target moves toward the current waypoint by at most
`speed` per second (teleop-like small steps), and the next waypoint starts once the arm has arrived (or
after the waypoint's wait time for gripper actions).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.sim.tasks import BALL_RADIUS, BLOCK_HALF, BOWL_WALL, BOX_WALL

# TCP pointing at the table (180 deg about x), fingers closing along the base's y axis: the FR3 "ready" pose.
TOP_DOWN = Rotation.from_euler("x", np.pi)

# PickPlaceExpert's plan (TCP heights m above the table, waits s).
CARRY_Z = 0.2
GRASP_Z = BLOCK_HALF + 0.004     # TCP a little above the block centre: fingertips below it
DROP_Z = BOWL_WALL + 0.06        # block bottom clear of the bowl wall
RETREAT_Z = CARRY_Z + 0.05
GRASP_WAIT_S = 0.6               # closed on the block before lifting
RELEASE_WAIT_S = 0.5             # opened over the bowl before retreating

if TYPE_CHECKING:  # annotations only: the experts are given a built SimEnv
    from hybridvla_core.sim.env import SimEnv


def step_toward(current: np.ndarray, goal: np.ndarray, max_step: float) -> np.ndarray:
    """`current` moved toward `goal` by at most `max_step` (m): how a streamed target follows its waypoint."""
    d = goal - current
    n = float(np.linalg.norm(d))
    return goal.copy() if n <= max_step else current + d * (max_step / n)


@dataclass(frozen=True)
class ExpertCommand:
    """One control step's command for one arm."""
    position: np.ndarray       # m, TCP in the arm's base frame
    quaternion: np.ndarray     # xyzw, in the arm's base frame
    gripper: float             # 0 closed .. 1 open


@dataclass(frozen=True)
class Waypoint:
    """Where every arm goes next: arm -> (TCP position m in the arm's base frame, orientation), the gripper
    command (0 closed .. 1 open) on the way, and how long to hold after all arms arrived (s)."""
    poses: dict[str, tuple[np.ndarray, Rotation]]
    gripper: float
    wait: float = 0.0


class WaypointExpert:
    """Streams targets through a list of waypoints for one or more arms; with several arms the next
    waypoint starts only when all arms have arrived, so arms holding one object move together."""

    def __init__(self, arms: list[str], speed: float = 0.25, angular_speed: float = 1.0, tolerance: float = 0.01,
                 max_waypoint_s: float = 6.0):
        self.arms = arms
        self.speed = speed                  # m/s of the streamed target
        self.angular_speed = angular_speed  # rad/s
        self.tolerance = tolerance          # m: measured TCP this close to a waypoint = arrived
        self.max_waypoint_s = max_waypoint_s  # s: give up on arriving (a blocked arm) and go on
        self.waypoints: list[Waypoint] = []

    def start(self, env: SimEnv, waypoints: list[Waypoint]) -> None:
        self.waypoints = waypoints
        self.index = 0
        self.p = {arm: env.read(arm).position.copy() for arm in self.arms}
        self.R = {arm: Rotation.from_quat(env.read(arm).quaternion) for arm in self.arms}
        self.gripper = 1.0
        self.elapsed = 0.0      # s at the current waypoint
        self.arrived_for = 0.0  # s since all arms arrived

    @property
    def done(self) -> bool:
        return self.index >= len(self.waypoints)

    def act(self, env: SimEnv, dt: float) -> dict[str, ExpertCommand]:
        """The commands for the next control step (dt s long)."""
        if not self.done:
            wp = self.waypoints[self.index]
            arrived = True
            for arm in self.arms:
                goal, rotation = wp.poses[arm]
                n = np.linalg.norm(goal - self.p[arm])
                self.p[arm] = step_toward(self.p[arm], goal, self.speed * dt)
                delta = (rotation * self.R[arm].inv()).as_rotvec()
                angle = np.linalg.norm(delta)
                if angle > 1e-9:
                    self.R[arm] = Rotation.from_rotvec(delta * min(1.0, self.angular_speed * dt / angle)) * self.R[arm]
                measured = env.read(arm).position
                arrived &= bool(n <= self.speed * dt and np.linalg.norm(measured - goal) < self.tolerance)
            self.gripper = wp.gripper
            self.elapsed += dt
            if arrived:
                self.arrived_for += dt
            if (arrived and self.arrived_for >= wp.wait) or self.elapsed > self.max_waypoint_s:
                self.index += 1
                self.elapsed = self.arrived_for = 0.0
        return {arm: ExpertCommand(self.p[arm].copy(), self.R[arm].as_quat(), self.gripper) for arm in self.arms}


def grasp_rotation(yaw: float) -> Rotation:
    """Top-down TCP orientation whose fingers close across a block of this yaw (rad), roughly along the base's
    y axis (as in the ready pose; it reaches the workspace's corners at every block yaw, joint 7 within 0.4 rad
    of its limit at the worst corner); a cube has 90 deg symmetry, so the equivalent yaw within 45 deg of y is
    used."""
    yaw = (yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4
    return Rotation.from_euler("z", yaw) * TOP_DOWN


class PickPlaceExpert:
    """FR3 "put the <block> block in the <bowl> bowl": approach, descend, grasp, lift, carry over the bowl,
    lower, release, retreat."""

    def __init__(self, env: SimEnv):
        self.env = env
        self.stream = WaypointExpert(["fr3"])

    def reset(self) -> None:
        env = self.env
        layout = env.layout
        block = env.task.block_position(env.model, env.data, layout.block)
        R = grasp_rotation(env.task.block_yaw(env.model, env.data, layout.block))
        bowl = np.array([*layout.bowls[layout.bowl], 0.0])

        def at(p, z, gripper, wait=0.0):  # fr3_link0 is the world frame
            return Waypoint({"fr3": (np.array([p[0], p[1], z]), R)}, gripper, wait)

        self.stream.start(env, [
            at(block, CARRY_Z, 1.0),
            at(block, GRASP_Z, 1.0),
            at(block, GRASP_Z, 0.0, wait=GRASP_WAIT_S),
            at(block, CARRY_Z, 0.0),
            at(bowl, CARRY_Z, 0.0),
            at(bowl, DROP_Z, 0.0),
            at(bowl, DROP_Z, 1.0, wait=RELEASE_WAIT_S),
            at(bowl, RETREAT_Z, 1.0),
        ])

    @property
    def done(self) -> bool:
        return self.stream.done

    def act(self, dt: float) -> dict[str, ExpertCommand]:
        return self.stream.act(self.env, dt)


# Piper TCP tilted 150 deg about y (tool pointing forward and down: the posture both arms reach everywhere
# over the ball and the box), then turned about the tool axis so that the narrow side of each gripper faces
# the other arm (the wide sides would collide) and its camera side faces out.
SQUEEZE_ROTATION = {
    "left": Rotation.from_euler("y", np.deg2rad(150.0)) * Rotation.from_euler("z", np.pi / 2),
    "right": Rotation.from_euler("y", np.deg2rad(150.0)) * Rotation.from_euler("z", -np.pi / 2),
}


class LiftBallExpert:
    """Dual Piper "lift the ball with both arms and put it in the box": close both grippers, come down on
    either side of the ball, squeeze it between the fingers (targets a few mm inside the ball), lift, carry
    over the box, lower, let go by moving the arms apart, retreat."""
    squeeze = 0.004   # m: how far inside the ball surface each target lies

    def __init__(self, env: SimEnv):
        self.env = env
        self.stream = WaypointExpert(["left", "right"], speed=0.15, tolerance=0.012)

    def reset(self) -> None:
        env = self.env
        ball = env.task.ball_position(env.model, env.data)
        box = np.array([*env.layout.box, 0.0])
        bases = {arm: env.data.xpos[env.arms[arm].base_body].copy() for arm in ("left", "right")}
        side = {"left": 1.0, "right": -1.0}  # left arm on +y
        contact = BALL_RADIUS + 0.006 - self.squeeze  # closed fingers are 12 mm thick
        lift_z, drop_z = BALL_RADIUS + 0.1, BOX_WALL + BALL_RADIUS + 0.025

        def both(centre, offset, z, gripper=0.0, wait=0.0):
            """Both TCPs at `offset` m on either side of `centre` (world x, y), height z, in each base frame."""
            return Waypoint({arm: (np.array([centre[0], centre[1] + side[arm] * offset, z]) - bases[arm],
                                   SQUEEZE_ROTATION[arm]) for arm in bases}, gripper, wait)

        self.stream.start(env, [
            both(ball, 0.1, ball[2] + 0.06),
            both(ball, 0.1, ball[2]),
            both(ball, contact, ball[2], wait=0.4),
            both(ball, contact, lift_z),
            both(box, contact, lift_z),
            both(box, contact, drop_z, wait=0.2),
            both(box, 0.1, drop_z),
            both(box, 0.1, lift_z + 0.05),
        ])

    @property
    def done(self) -> bool:
        return self.stream.done

    def act(self, dt: float) -> dict[str, ExpertCommand]:
        return self.stream.act(self.env, dt)


EXPERTS = {"pick_place": PickPlaceExpert, "lift_ball": LiftBallExpert}


def make_expert(env: SimEnv):
    return EXPERTS[env.task.name](env)
