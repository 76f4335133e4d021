"""Tasks of the simulated lab: their objects, seeded episode layouts, instructions and success detectors.

A task owns the objects it adds to the scene (MJCF), draws a layout from a numpy Generator (so one seed is
one episode), places the objects, and says whether the episode succeeded. Positions in metres in the world
frame (table top at z = 0), angles in radians.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from hybridvla_core.sim.scene import TABLE_HEIGHT

COLOURS = {  # rgba
    "red": (0.85, 0.1, 0.1, 1.0),
    "green": (0.1, 0.65, 0.15, 1.0),
    "blue": (0.1, 0.25, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
}
BLOCK_HALF = 0.02      # m: 4 cm cubes
BLOCK_MASS = 0.05      # kg
BOWL_RADIUS = 0.065    # m, inner radius
BOWL_WALL = 0.035      # m, wall height above the table
BOWL_WALL_THICKNESS = 0.008
BALL_RADIUS = 0.04     # m
BALL_MASS = 0.04       # kg
BOX_HALF = (0.07, 0.07)  # m, inner half sizes of the target box (x, y)
BOX_WALL = 0.05        # m, wall height
LIFTED = 0.03          # m above its resting height: an object counts as lifted (milestones)


def _set_free_pose(model, data, joint: str, pos, yaw: float = 0.0) -> None:
    adr = model.joint(joint).qposadr[0]
    data.qpos[adr:adr + 3] = pos
    data.qpos[adr + 3:adr + 7] = np.roll(Rotation.from_euler("z", yaw).as_quat(), 1)  # wxyz
    dadr = model.joint(joint).dofadr[0]
    data.qvel[dadr:dadr + 6] = 0.0


def _free_pos(model, data, joint: str) -> np.ndarray:
    adr = model.joint(joint).qposadr[0]
    return data.qpos[adr:adr + 3].copy()


def _free_speed(model, data, joint: str) -> float:
    dadr = model.joint(joint).dofadr[0]
    return float(np.linalg.norm(data.qvel[dadr:dadr + 3]))


def _touching(model, data, geom_ids: set[int], body_ids: set[int]) -> bool:
    """Whether any of geom_ids is in contact with a geom of body_ids."""
    for c in data.contact[: data.ncon]:
        g1, g2 = int(c.geom1), int(c.geom2)
        if (g1 in geom_ids and model.geom_bodyid[g2] in body_ids) or (g2 in geom_ids and model.geom_bodyid[g1] in body_ids):
            return True
    return False


def _sample_positions(rng, radii: list[float], x_range, y_range, tries: int = 200) -> list[np.ndarray]:
    """One point per radius in the box, pairwise farther apart than the sum of their radii: placed one after
    the other by rejection sampling, starting over when a point finds no room."""
    for _ in range(tries):
        pts: list[np.ndarray] = []
        for r in radii:
            for _ in range(100):
                p = np.array([rng.uniform(*x_range), rng.uniform(*y_range)])
                if all(np.linalg.norm(p - q) > r + rq for q, rq in zip(pts, radii)):
                    pts.append(p)
                    break
            else:
                break
        if len(pts) == len(radii):
            return pts
    raise RuntimeError("could not place the objects apart; the workspace is too small for them")


@dataclass
class PickPlaceLayout:
    """One episode of "put the <block> block in the <bowl> bowl"."""
    block: str                                             # colour of the commanded block
    bowl: str                                              # colour of the commanded bowl
    blocks: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # colour -> (x m, y m, yaw rad)
    bowls: dict[str, tuple[float, float]] = field(default_factory=dict)          # colour -> (x m, y m)


class PickPlaceTask:
    """FR3 tabletop: four coloured blocks and four coloured bowls exist in the model; each episode puts the
    commanded block, 1..3 distractor blocks, the commanded bowl and 0..1 distractor bowl on the table and
    parks the rest on the floor, out of view."""
    name = "pick_place"
    robot = "fr3"
    x_range = (0.36, 0.62)   # m, in front of the robot, inside comfortable reach
    y_range = (-0.28, 0.28)

    def objects_xml(self) -> str:
        parts = []
        for colour, rgba in COLOURS.items():
            c = " ".join(map(str, rgba))
            parts.append(
                f'<body name="block_{colour}" pos="0 0 0"><freejoint name="block_{colour}"/>'
                f'<geom name="block_{colour}" type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" rgba="{c}" '
                f'mass="{BLOCK_MASS}" condim="4" friction="1 0.01 0.0001"/></body>')
            walls = []
            n = 16
            r = BOWL_RADIUS + BOWL_WALL_THICKNESS / 2
            half_len = np.pi * r / n * 1.05
            for i in range(n):
                a = 2 * np.pi * i / n
                walls.append(f'<geom type="box" size="{BOWL_WALL_THICKNESS / 2} {half_len:.5f} {BOWL_WALL / 2}" '
                             f'pos="{r * np.cos(a):.5f} {r * np.sin(a):.5f} {BOWL_WALL / 2}" euler="0 0 {a:.5f}" rgba="{c}"/>')
            parts.append(
                f'<body name="bowl_{colour}" mocap="true" pos="0 0 0">'
                f'<geom name="bowl_{colour}_base" type="cylinder" size="{BOWL_RADIUS + BOWL_WALL_THICKNESS} 0.002" '
                f'pos="0 0 0.002" rgba="{c}"/>' + "".join(walls) + "</body>")
        return "\n".join(parts)

    def sample(self, rng: np.random.Generator) -> PickPlaceLayout:
        colours = list(COLOURS)
        block = colours[rng.integers(len(colours))]
        bowl = colours[rng.integers(len(colours))]
        others = [c for c in colours if c != block]
        distractor_blocks = list(rng.choice(others, size=rng.integers(1, 4), replace=False))
        other_bowls = [c for c in colours if c != bowl]
        distractor_bowls = list(rng.choice(other_bowls, size=rng.integers(0, 2), replace=False))
        block_colours = [block] + [str(c) for c in distractor_blocks]
        bowl_colours = [bowl] + [str(c) for c in distractor_bowls]
        # Keep-out radii: bowl outer radius + margin; block half diagonal + finger clearance.
        radii = [0.085] * len(bowl_colours) + [0.04] * len(block_colours)
        pts = _sample_positions(rng, radii, self.x_range, self.y_range)
        layout = PickPlaceLayout(block=block, bowl=bowl)
        for colour, p in zip(bowl_colours, pts):
            layout.bowls[colour] = (float(p[0]), float(p[1]))
        for colour, p in zip(block_colours, pts[len(bowl_colours):]):
            layout.blocks[colour] = (float(p[0]), float(p[1]), float(rng.uniform(-np.pi / 4, np.pi / 4)))
        return layout

    def instruction(self, layout: PickPlaceLayout) -> str:
        return f"put the {layout.block} block in the {layout.bowl} bowl"

    def apply(self, model, data, layout: PickPlaceLayout) -> None:
        for i, colour in enumerate(COLOURS):
            if colour in layout.blocks:
                x, y, yaw = layout.blocks[colour]
                _set_free_pose(model, data, f"block_{colour}", (x, y, BLOCK_HALF + 1e-4), yaw)
            else:  # parked on the floor behind the robot
                _set_free_pose(model, data, f"block_{colour}", (-1.5, 1.0 + 0.2 * i, -TABLE_HEIGHT + BLOCK_HALF))
            mocap = model.body(f"bowl_{colour}").mocapid[0]
            if colour in layout.bowls:
                data.mocap_pos[mocap] = (*layout.bowls[colour], 0.0)
            else:
                data.mocap_pos[mocap] = (-1.5, -1.0 - 0.3 * i, -TABLE_HEIGHT)

    def block_position(self, model, data, colour: str) -> np.ndarray:
        return _free_pos(model, data, f"block_{colour}")

    def privileged_bodies(self, layout: PickPlaceLayout) -> tuple[str, str]:
        """The MuJoCo bodies of the instruction's block and bowl (the privileged training labels,
        SimEnv.privileged_offsets): the block body's origin is the cube's centre, the bowl's the centre of its
        floor on the table top."""
        return f"block_{layout.block}", f"bowl_{layout.bowl}"

    def block_yaw(self, model, data, colour: str) -> float:
        adr = model.joint(f"block_{colour}").qposadr[0]
        return float(Rotation.from_quat(np.roll(data.qpos[adr + 3:adr + 7], -1)).as_euler("xyz")[2])

    def success(self, model, data, layout: PickPlaceLayout, finger_geoms: set[int]) -> bool:
        """The commanded block rests inside the commanded bowl and no finger touches it."""
        p = self.block_position(model, data, layout.block)
        bowl = np.array(layout.bowls[layout.bowl])
        inside = np.linalg.norm(p[:2] - bowl) < BOWL_RADIUS and p[2] < BOWL_WALL + BLOCK_HALF
        released = not _touching(model, data, finger_geoms, {model.body(f"block_{layout.block}").id})
        resting = _free_speed(model, data, f"block_{layout.block}") < 0.05
        return bool(inside and released and resting)

    def milestones(self, model, data, layout: PickPlaceLayout, tcp_position) -> dict:
        """How far an episode got at this moment, to tell failures apart: the TCP's distance to the commanded
        block [m] and where the block is from the TCP (block minus TCP, world frame, x y z [m]), whether that
        block is lifted (bottom > LIFTED above the table) and lifted over its bowl."""
        p = self.block_position(model, data, layout.block)
        lifted = bool(p[2] > BLOCK_HALF + LIFTED)
        over_bowl = lifted and bool(np.linalg.norm(p[:2] - np.array(layout.bowls[layout.bowl])) < BOWL_RADIUS)
        offset = p - np.asarray(tcp_position, dtype=float)
        return {"tcp_to_block_m": float(np.linalg.norm(offset)), "block_from_tcp_m": offset.tolist(),
                "lifted": lifted, "over_bowl": over_bowl}


@dataclass
class LiftBallLayout:
    """One episode of "lift the ball with both arms and put it in the box" (world frame, m)."""
    ball: tuple[float, float]
    box: tuple[float, float]


class LiftBallTask:
    """Dual Piper: a light ball on the table between the arms and an open box further forward. Neither
    gripper can hold the ball alone (8 cm > 7 cm opening): the arms squeeze it from both sides."""
    name = "lift_ball"
    robot = "agilex"
    instruction_text = "lift the ball with both arms and put it in the box"

    def objects_xml(self) -> str:
        hx, hy = BOX_HALF
        t = 0.005  # m, half wall thickness
        walls = "".join(
            f'<geom type="box" size="{sx} {sy} {BOX_WALL / 2}" pos="{px} {py} {BOX_WALL / 2}" rgba="0.2 0.45 0.8 1"/>'
            for sx, sy, px, py in ((t, hy + 2 * t, hx + t, 0), (t, hy + 2 * t, -hx - t, 0),
                                   (hx, t, 0, hy + t), (hx, t, 0, -hy - t)))
        return (f'<body name="ball" pos="0 0 0"><freejoint name="ball"/>'
                f'<geom name="ball" type="sphere" size="{BALL_RADIUS}" mass="{BALL_MASS}" rgba="0.95 0.45 0.1 1" '
                f'condim="6" friction="1.2 0.02 0.002"/></body>'
                f'<body name="box" mocap="true" pos="0 0 0"><geom type="box" size="{hx} {hy} 0.002" pos="0 0 0.002" '
                f'rgba="0.2 0.45 0.8 1"/>{walls}</body>')

    def sample(self, rng: np.random.Generator) -> LiftBallLayout:
        ball = (rng.uniform(0.19, 0.24), rng.uniform(-0.03, 0.03))
        box = (ball[0] + rng.uniform(0.14, 0.17), rng.uniform(-0.03, 0.03))
        return LiftBallLayout(ball=(float(ball[0]), float(ball[1])), box=(float(box[0]), float(box[1])))

    def instruction(self, layout: LiftBallLayout) -> str:
        return self.instruction_text

    def apply(self, model, data, layout: LiftBallLayout) -> None:
        _set_free_pose(model, data, "ball", (*layout.ball, BALL_RADIUS + 1e-4))
        data.mocap_pos[model.body("box").mocapid[0]] = (*layout.box, 0.0)

    def privileged_bodies(self, layout: LiftBallLayout) -> None:
        """No block and bowl: this task has no privileged labels (SimEnv.privileged_offsets)."""
        return None

    def ball_position(self, model, data) -> np.ndarray:
        return _free_pos(model, data, "ball")

    def success(self, model, data, layout: LiftBallLayout, finger_geoms: set[int]) -> bool:
        """The ball rests inside the box and no gripper touches it."""
        p = self.ball_position(model, data)
        inside = (abs(p[0] - layout.box[0]) < BOX_HALF[0] and abs(p[1] - layout.box[1]) < BOX_HALF[1]
                  and p[2] < BOX_WALL + BALL_RADIUS)
        released = not _touching(model, data, finger_geoms, {model.body("ball").id})
        return bool(inside and released and _free_speed(model, data, "ball") < 0.05)

    def milestones(self, model, data, layout: LiftBallLayout, tcp_position) -> dict:
        """As PickPlaceTask.milestones for the ball and the box, seen from one arm's TCP."""
        p = self.ball_position(model, data)
        lifted = bool(p[2] > BALL_RADIUS + LIFTED)
        over_box = lifted and abs(p[0] - layout.box[0]) < BOX_HALF[0] and abs(p[1] - layout.box[1]) < BOX_HALF[1]
        return {"tcp_to_ball_m": float(np.linalg.norm(np.asarray(tcp_position) - p)), "lifted": lifted,
                "over_box": bool(over_box)}


TASKS = {"pick_place": PickPlaceTask, "lift_ball": LiftBallTask}


def make_task(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]()
