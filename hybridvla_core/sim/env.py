"""The simulated lab: one MuJoCo world with its arms, a task, cameras, and the controllers the real robots
run (a Cartesian pose tracker for the FR3 behind crisp_controllers' target_pose, a joint servo for Piper's
joint_ctrl_single, position-controlled grippers).

Units: metres, radians, seconds, newtons. Arm poses and targets are in the arm's base frame (fr3_link0,
left_base_link, ...): position (3,) and quaternion (x, y, z, w). Gripper openings: width in metres between
the fingers, or dimensionless 0 (closed) .. 1 (open) where noted.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from hybridvla_core.runtime.kinematics import load_arm
from hybridvla_core.sim.scene import FR3, ArmSpec, CameraSpec, build_mjcf, piper_arm
from hybridvla_core.sim.tasks import make_task

SETTLE_S = 0.3  # s of physics after a reset so that objects come to rest before the episode starts


@dataclass(frozen=True)
class SimArmState:
    """Measured state of one arm at one instant."""
    joint_names: list[str]
    q: np.ndarray                 # rad, arm joints in joint_names order
    finger_names: list[str]
    fingers: np.ndarray           # m, each finger's opening
    position: np.ndarray          # m, TCP in the arm's base frame
    quaternion: np.ndarray        # xyzw, TCP orientation in the arm's base frame
    gripper_width: float          # m, distance between the fingers (sum of the two finger joints)
    gripper_max: float            # m, widest opening

    @property
    def gripper(self) -> float:
        """Opening 0 (closed) .. 1 (open)."""
        return float(np.clip(self.gripper_width / self.gripper_max, 0.0, 1.0))


class ArmController:
    """One arm: Cartesian target -> speed-bounded setpoint -> IK (hybridvla_core.runtime.kinematics, the guards' own
    solver) -> joint position servos; or joint targets directly. And its gripper."""

    def __init__(self, spec: ArmSpec, model: mujoco.MjModel, *, max_linear_speed: float, max_angular_speed: float,
                 gripper_speed: float):
        self.spec = spec
        self.model = model
        self.chain = load_arm(spec.kinematics)
        self.max_linear_speed = max_linear_speed     # m/s
        self.max_angular_speed = max_angular_speed   # rad/s
        self.default_gripper_speed = gripper_speed   # m/s of width
        self.qadr = np.array([model.joint(j).qposadr[0] for j in self.chain.joint_names])
        self.dadr = np.array([model.joint(j).dofadr[0] for j in self.chain.joint_names])
        self.act = np.array([model.actuator(j).id for j in self.chain.joint_names])
        self.finger_qadr = np.array([model.joint(j).qposadr[0] for j in spec.finger_joints])
        self.finger_dadr = np.array([model.joint(j).dofadr[0] for j in spec.finger_joints])
        self.gripper_act = model.actuator(f"{spec.name}_gripper").id
        self.default_forcerange = model.actuator_forcerange[self.gripper_act].copy()
        self.tcp_site = model.site(spec.tcp_link).id
        self.base_body = model.body(spec.root_link).id
        self.finger_geoms = {g for link in spec.finger_links for g in np.flatnonzero(model.geom_bodyid == model.body(link).id)}
        self.gripper_max = 2 * spec.finger_max

    # --- state -------------------------------------------------------------------------------------------
    def reset(self, data: mujoco.MjData, q=None) -> None:
        """At rest in joint configuration q [rad] (default: the spec's home), gripper open."""
        q = np.array(self.spec.home if q is None else q, dtype=float)
        data.qpos[self.qadr] = q
        data.qpos[self.finger_qadr] = self.spec.finger_max
        data.ctrl[self.act] = q
        data.ctrl[self.gripper_act] = self.spec.finger_max
        self.model.actuator_forcerange[self.gripper_act] = self.default_forcerange
        self.q_cmd = q.copy()
        self.joint_target: np.ndarray | None = None
        self.joint_speed_fraction = 1.0
        p, quat = self.chain.fk(self.q_cmd)
        self.sp_p, self.sp_R = p, Rotation.from_quat(quat)
        self.target_p, self.target_R = p.copy(), self.sp_R
        self.setpoint_solved = False
        self.width_goal = self.gripper_max
        self.width_sp = self.gripper_max
        self.gripper_speed = self.default_gripper_speed

    def read(self, data: mujoco.MjData) -> SimArmState:
        base_R = data.xmat[self.base_body].reshape(3, 3)
        base_p = data.xpos[self.base_body]
        tcp_R = base_R.T @ data.site_xmat[self.tcp_site].reshape(3, 3)
        tcp_p = base_R.T @ (data.site_xpos[self.tcp_site] - base_p)
        fingers = data.qpos[self.finger_qadr].copy()
        return SimArmState(
            joint_names=list(self.chain.joint_names), q=data.qpos[self.qadr].copy(),
            finger_names=list(self.spec.finger_joints), fingers=fingers,
            position=tcp_p, quaternion=Rotation.from_matrix(tcp_R).as_quat(),
            gripper_width=float(fingers.sum()), gripper_max=self.gripper_max)

    # --- commands ----------------------------------------------------------------------------------------
    def set_target(self, position, quaternion) -> None:
        """Absolute TCP target in the arm's base frame (m, xyzw); followed at bounded speed."""
        position = np.asarray(position, dtype=float)
        quaternion = np.asarray(quaternion, dtype=float)
        if position.shape != (3,) or quaternion.shape != (4,) or not (np.all(np.isfinite(position))
                                                                      and np.all(np.isfinite(quaternion))):
            raise ValueError("target needs a finite position (3,) and quaternion (4,)")
        if self.joint_target is not None:  # leaving joint mode: start from where the arm is commanded
            p, quat = self.chain.fk(self.q_cmd)
            self.sp_p, self.sp_R = p, Rotation.from_quat(quat)
            self.joint_target = None
        self.target_p, self.target_R = position, Rotation.from_quat(quaternion)

    def set_joint_target(self, q, speed_fraction: float = 1.0) -> None:
        """Absolute joint target (rad), clamped to the limits and followed at speed_fraction (0 < f <= 1) of the
        joints' speed limits (a Piper's MotionCtrl_2 speed %)."""
        q = np.asarray(q, dtype=float)
        if q.shape != (self.chain.dof,) or not np.all(np.isfinite(q)):
            raise ValueError(f"joint target needs {self.chain.dof} finite values")
        if not 0 < speed_fraction <= 1:
            raise ValueError(f"speed_fraction must be in (0, 1], got {speed_fraction}")
        self.joint_target = np.clip(q, self.chain.lower, self.chain.upper)
        self.joint_speed_fraction = float(speed_fraction)

    def set_gripper_width(self, width: float, speed: float | None = None, force: float | None = None) -> None:
        """Move the fingers to `width` m (0..gripper_max) at `speed` m/s, pushing with at most `force` N."""
        self.width_goal = float(np.clip(width, 0.0, self.gripper_max))
        self.gripper_speed = self.default_gripper_speed if speed is None or speed <= 0 else float(speed)
        limit = self.default_forcerange if force is None or force <= 0 else np.array([-2 * force, 2 * force])
        self.model.actuator_forcerange[self.gripper_act] = limit

    def gripper_busy(self, data: mujoco.MjData) -> bool:
        """Whether the fingers are still on their way (setpoint moving, or fingers faster than 2 mm/s)."""
        return abs(self.width_sp - self.width_goal) > 1e-9 or float(np.abs(data.qvel[self.finger_dadr]).max()) > 2e-3

    # --- control tick ------------------------------------------------------------------------------------
    def update(self, data: mujoco.MjData, dt: float) -> None:
        """One controller period: move the setpoints toward the targets, solve IK, write the servos."""
        if self.joint_target is not None:
            limit = self.joint_speed_fraction * self.chain.max_velocity * dt
            step = np.clip(self.joint_target - self.q_cmd, -limit, limit)
            self.q_cmd = self.q_cmd + step
        else:
            dp = self.target_p - self.sp_p
            dist = np.linalg.norm(dp)
            moved = dist > 1e-6
            if dist > self.max_linear_speed * dt:
                dp *= self.max_linear_speed * dt / dist
            self.sp_p = self.sp_p + dp
            angle = (self.target_R * self.sp_R.inv()).magnitude()
            if angle > 1e-6:
                moved = True
                frac = min(1.0, self.max_angular_speed * dt / angle)
                self.sp_R = Slerp([0.0, 1.0], Rotation.concatenate([self.sp_R, self.target_R]))(frac)
            if moved or not self.setpoint_solved:  # a still setpoint needs no new IK
                result = self.chain.ik(self.sp_p, self.sp_R.as_quat(), self.q_cmd, max_iterations=30,
                                       position_tolerance=2e-4, rotation_tolerance=2e-3)
                if result.position_error < 0.02:
                    limit = self.chain.max_velocity * dt
                    self.q_cmd = self.q_cmd + np.clip(result.q - self.q_cmd, -limit, limit)
                else:  # unreachable: the arm holds, and the setpoint stays with it (no wind-up toward the target)
                    p, quat = self.chain.fk(self.q_cmd)
                    self.sp_p, self.sp_R = p, Rotation.from_quat(quat)
                self.setpoint_solved = True
        data.ctrl[self.act] = self.q_cmd
        dw = np.clip(self.width_goal - self.width_sp, -self.gripper_speed * dt, self.gripper_speed * dt)
        self.width_sp += dw
        data.ctrl[self.gripper_act] = self.width_sp / 2


ROBOTS = {"fr3": [FR3], "agilex": [piper_arm("left"), piper_arm("right")]}

CAMERAS = {
    "fr3": [
        CameraSpec("front", None, (1.35, 0.0, 0.8), (0.4, 0.0, 0.12), (0, 0, 1), 50.0),
        # A RealSense on the hand, looking past the fingers; hand frame: z toward the fingertips.
        CameraSpec("wrist", "fr3_hand", (0.08, 0.0, 0.03), (0.0, 0.0, 0.2), (1, 0, 0), 70.0),
    ],
    "agilex": [
        CameraSpec("high", None, (-0.15, 0.0, 0.75), (0.3, 0.0, 0.0), (1, 0, 0), 60.0),
        # On each gripper base (z toward the fingertips), looking past the fingers.
        CameraSpec("left_wrist", "left_gripper_base", (0.08, 0.0, 0.06), (0.0, 0.0, 0.24), (1, 0, 0), 70.0),
        CameraSpec("right_wrist", "right_gripper_base", (0.08, 0.0, 0.06), (0.0, 0.0, 0.24), (1, 0, 0), 70.0),
    ],
}


class SimEnv:
    """A simulated lab for one robot and one task.

    Loop: reset(seed) -> set targets (set_target / set_joint_target / set_gripper) -> advance(seconds) ->
    read(arm), render(camera), success(). `time` is simulation time in seconds, monotonic across resets.
    """

    def __init__(self, robot: str = "fr3", task: str = "pick_place", *, physics_rate_hz: float = 500.0,
                 controller_rate_hz: float = 50.0, image_width: int = 320, image_height: int = 240,
                 max_linear_speed: float = 0.5, max_angular_speed: float = 1.5, gripper_speed: float = 0.1,
                 start_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)):
        """start_jitter: half-ranges of the seeded random start pose around each arm's home TCP: x, y, z [m] in
        the arm's base frame and a turn about the base z axis [rad]; zeros = always home. A policy trained
        from one start pose can read the goal off the line from there to its TCP (start_pose)."""
        if robot not in ROBOTS:
            raise ValueError(f"unknown robot {robot!r}; known: {', '.join(ROBOTS)}")
        self.robot = robot
        self.start_jitter = tuple(float(v) for v in start_jitter)
        if len(self.start_jitter) != 4 or any(not np.isfinite(v) or v < 0 for v in self.start_jitter):
            raise ValueError(f"start_jitter must be 4 half-ranges >= 0 (x, y, z m, yaw rad), got {start_jitter}")
        self.task = make_task(task)
        if self.task.robot != robot:
            raise ValueError(f"task {task!r} is for robot {self.task.robot!r}, not {robot!r}")
        self.cameras = {c.name: c for c in CAMERAS[robot]}
        self.image_size = (int(image_width), int(image_height))
        xml = build_mjcf(ROBOTS[robot], CAMERAS[robot], self.task.objects_xml(), physics_rate_hz=physics_rate_hz,
                         image_width=image_width, image_height=image_height)
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        # Physics steps per controller period; the controller runs at physics_rate / substeps.
        self.substeps = max(1, int(round(physics_rate_hz / controller_rate_hz)))
        self.control_dt = self.substeps * self.model.opt.timestep
        self.arms = {spec.name: ArmController(spec, self.model, max_linear_speed=max_linear_speed,
                                              max_angular_speed=max_angular_speed, gripper_speed=gripper_speed)
                     for spec in ROBOTS[robot]}
        self._renderer: mujoco.Renderer | None = None
        self._time_offset = 0.0
        self.seed: int | None = None
        self.layout = None
        self.instruction = ""

    @property
    def time(self) -> float:
        """Simulation time [s] since the environment was built (monotonic across resets)."""
        return self._time_offset + float(self.data.time)

    def reset(self, seed: int) -> str:
        """Start the episode of this seed (same seed, same episode) and return its instruction."""
        self._time_offset += float(self.data.time)
        mujoco.mj_resetData(self.model, self.data)
        self.seed = int(seed)
        self.layout = self.task.sample(np.random.default_rng(self.seed))
        self.instruction = self.task.instruction(self.layout)
        for name, arm in self.arms.items():
            arm.reset(self.data, self.start_pose(name))
        self.task.apply(self.model, self.data, self.layout)
        mujoco.mj_forward(self.model, self.data)
        self.advance(SETTLE_S)
        return self.instruction

    def start_pose(self, arm: str) -> np.ndarray:
        """Joint configuration [rad] that `arm` starts this seed's episode in: home, or with start_jitter a
        TCP pose drawn uniformly around home's (its own random stream, so the layout of a seed is the same
        with or without jitter)."""
        controller = self.arms[arm]
        home = np.array(controller.spec.home, dtype=float)
        if not any(self.start_jitter):
            return home
        rng = np.random.default_rng([self.seed, 1 + list(self.arms).index(arm)])
        jx, jy, jz, jyaw = self.start_jitter
        offset = rng.uniform(-1.0, 1.0, 4) * np.array([jx, jy, jz, jyaw])
        position, quaternion = controller.chain.fk(home)
        turned = Rotation.from_euler("z", offset[3]) * Rotation.from_quat(quaternion)
        solution = controller.chain.ik(position + offset[:3], turned.as_quat(), home, margin=0.05)
        if not solution.success:
            raise ValueError(f"start_jitter {self.start_jitter}: seed {self.seed} drew a start pose of {arm} "
                             f"that IK cannot reach ({solution.position_error * 100:.1f} cm off); use smaller ranges")
        return solution.q

    def advance(self, seconds: float) -> None:
        """Run the controllers and the physics for `seconds` (rounded to whole controller periods)."""
        for _ in range(max(1, int(round(seconds / self.control_dt)))):
            for arm in self.arms.values():
                arm.update(self.data, self.control_dt)
            mujoco.mj_step(self.model, self.data, nstep=self.substeps)

    # --- commands (see ArmController) -----------------------------------------------------------------------
    def set_target(self, arm: str, position, quaternion) -> None:
        self.arms[arm].set_target(position, quaternion)

    def set_joint_target(self, arm: str, q, speed_fraction: float = 1.0) -> None:
        self.arms[arm].set_joint_target(q, speed_fraction)

    def set_gripper(self, arm: str, opening: float) -> None:
        """Gripper command 0 (closed) .. 1 (open), as in ArmTarget.gripper, with the default speed and force."""
        a = self.arms[arm]
        a.set_gripper_width(float(np.clip(opening, 0.0, 1.0)) * a.gripper_max)

    def set_gripper_width(self, arm: str, width: float, speed: float | None = None, force: float | None = None) -> None:
        self.arms[arm].set_gripper_width(width, speed, force)

    def gripper_busy(self, arm: str) -> bool:
        return self.arms[arm].gripper_busy(self.data)

    # --- observations ------------------------------------------------------------------------------------
    def read(self, arm: str) -> SimArmState:
        return self.arms[arm].read(self.data)

    def success(self) -> bool:
        fingers = set().union(*(a.finger_geoms for a in self.arms.values()))
        return self.task.success(self.model, self.data, self.layout, fingers)

    def milestones(self, arm: str) -> dict:
        """The task's progress measures now (PickPlaceTask.milestones), seen from `arm`'s TCP."""
        return self.task.milestones(self.model, self.data, self.layout, self.read(arm).position)

    def privileged_offsets(self, arm: str) -> np.ndarray | None:
        """Privileged training labels (simulation only; a policy never reads them): where the instruction's block
        and bowl are seen from `arm`'s TCP, shape (2, 3) = [block - TCP, bowl - TCP] [m] in the axes of the arm's
        base frame (the frame of read(arm).position), from the same MuJoCo kinematics as read(arm). None when the
        task has no block and bowl (lift_ball) or before the first reset."""
        if self.layout is None:
            return None
        bodies = self.task.privileged_bodies(self.layout)
        if bodies is None:
            return None
        c = self.arms[arm]
        base_R = self.data.xmat[c.base_body].reshape(3, 3)
        tcp = self.data.site_xpos[c.tcp_site]
        return np.stack([base_R.T @ (self.data.xpos[self.model.body(b).id] - tcp) for b in bodies])

    def state_vector(self) -> np.ndarray:
        """Full physical state (time, qpos, qvel, mocap): equal vectors mean equal episodes."""
        return np.concatenate([[self.data.time], self.data.qpos, self.data.qvel, self.data.mocap_pos.ravel()])

    def render(self, camera: str) -> np.ndarray:
        """RGB image (height, width, 3) uint8 of one camera, rows top to bottom."""
        if camera not in self.cameras:
            raise ValueError(f"unknown camera {camera!r}; this scene has {', '.join(self.cameras)}")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, height=self.image_size[1], width=self.image_size[0])
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def intrinsics(self, camera: str) -> tuple[float, float, float, float]:
        """Pinhole (fx, fy, cx, cy) in pixels of a camera at the configured image size (square pixels)."""
        width, height = self.image_size
        fy = (height / 2) / np.tan(np.deg2rad(self.cameras[camera].fovy) / 2)
        return fy, fy, width / 2, height / 2

    def optical_pose(self, camera: str) -> tuple[np.ndarray, np.ndarray]:
        """A camera's optical frame in the world (ROS convention: z forward, x right, y down in the image):
        position [m] and quaternion xyzw. MuJoCo's camera frame looks along -z with +y up, i.e. the optical
        frame turned half a turn about x."""
        cam = self.model.camera(camera).id
        R = self.data.cam_xmat[cam].reshape(3, 3) @ np.diag([1.0, -1.0, -1.0])
        return self.data.cam_xpos[cam].copy(), Rotation.from_matrix(R).as_quat()

    def base_pose(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """An arm's base frame (its root link) in the world: position [m] and quaternion xyzw."""
        body = self.arms[arm].base_body
        return self.data.xpos[body].copy(), Rotation.from_matrix(self.data.xmat[body].reshape(3, 3)).as_quat()

    def project(self, camera: str, point_world) -> tuple[float, float]:
        """Pixel (u right, v down) where a world point appears in a camera."""
        cam = self.model.camera(camera).id
        R = self.data.cam_xmat[cam].reshape(3, 3)
        p = R.T @ (np.asarray(point_world, float) - self.data.cam_xpos[cam])  # camera frame: -z forward
        fx, fy, cx, cy = self.intrinsics(camera)
        return cx + fx * p[0] / -p[2], cy - fy * p[1] / -p[2]

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
