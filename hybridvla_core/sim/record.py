"""Recording simulated episodes as rosbag2 (MCAP) bags with exactly the topics and types of a real
teleoperated recording (names from the sim config), through hybridvla_core.recording.bags.

Per episode: cameras (sensor_msgs/Image rgb8 + CameraInfo), joint states, TCP pose, ArmState, the commanded
ArmTarget (source TELEOP: the expert stands in for the teleoperator) and EpisodeEvent start/stop with the
instruction. Beyond a real recording, pick_place episodes carry the privileged training labels
(topics.privileged, geometry_msgs/PoseArray at the state rate: SimEnv.privileged_offsets; docs/recording.md). Every stamp is simulation time offset to the wall clock (`epoch_ns` + sim time), the same
clock as the bag's receive times; the bag's metadata holds instruction, seed, task, robot and success.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hybridvla_core.recording import bags
from hybridvla_core.recording.bags import EpisodeWriter, msg
from hybridvla_core.robots.piper_can import PIPER_ROS_JOINT_STATE_NAMES
from hybridvla_core.sim.config import SimConfig
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.experts import ExpertCommand

EVENT = "hybridvla_msgs/msg/EpisodeEvent"


def camera_frame(camera: str) -> str:
    """Optical frame id of a camera, realsense-ros style."""
    return f"camera_{camera}_color_optical_frame"


def joint_state_message(env: SimEnv, arm: str, t_ns: int):
    """The arm's JointState as its driver publishes it: FR3 /joint_states = 7 joints + 2 fingers [rad, m];
    Piper joint_states_single as piper_ros (humble) names it: joint0..joint5 [rad] + joint6 = gripper width [m]."""
    r = env.read(arm)
    if env.robot == "fr3":
        return msg.joint_state(t_ns, r.joint_names + r.finger_names, np.concatenate([r.q, r.fingers]))
    return msg.joint_state(t_ns, PIPER_ROS_JOINT_STATE_NAMES, np.concatenate([r.q, [r.gripper_width]]))


def privileged_message(t_ns: int, frame_id: str, offsets: np.ndarray):
    """geometry_msgs/PoseArray of the privileged labels: one pose per row of SimEnv.privileged_offsets (block -
    TCP, bowl - TCP) [m] in frame_id, orientation identity."""
    return msg._types()["geometry_msgs/msg/PoseArray"](
        header=msg.header(t_ns, frame_id), poses=[msg.pose(p, (0.0, 0.0, 0.0, 1.0)) for p in offsets])


class BagRecorder:
    """An EpisodeSink (hybridvla_core.sim.runner) writing one bag per episode into `directory`
    (compression: bags.COMPRESSIONS, default chunk-zstd: MCAP chunk compression)."""

    def __init__(self, directory: str | Path, config: SimConfig, epoch_ns: int,
                 compression: str = bags.DEFAULT_COMPRESSION):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cfg = config
        self.epoch_ns = int(epoch_ns)  # wall-clock ns that simulation time 0 maps to
        self.compression = compression
        self.episode_index = 0
        self.writer: EpisodeWriter | None = None
        self.paths: list[Path] = []

    def _ns(self, t: float) -> int:
        return self.epoch_ns + int(round(t * 1e9))

    def start(self, env: SimEnv, t: float) -> None:
        path = self.directory / f"episode_{self.episode_index:04d}_seed{env.seed}"
        self.writer = EpisodeWriter(path, metadata={
            "instruction": env.instruction, "seed": env.seed, "task": env.task.name, "robot": env.robot,
            "episode_index": self.episode_index, "source": "sim_expert"}, compression=self.compression)
        self.paths.append(path)
        t_ns = self._ns(t)
        self.writer.write(self.cfg.topics_episode_events, t_ns,
                          msg.episode_event(t_ns, bags.constant(EVENT, "START"), self.episode_index, env.instruction))

    def state(self, env: SimEnv, t: float) -> None:
        t_ns, w, cfg = self._ns(t), self.writer, self.cfg
        for arm, controller in env.arms.items():
            r = env.read(arm)
            frame = controller.spec.root_link
            if env.robot == "fr3":
                w.write(cfg.topics_joint_states, t_ns, joint_state_message(env, arm, t_ns))
                w.write(cfg.topics_current_pose, t_ns, msg.pose_stamped(t_ns, frame, r.position, r.quaternion))
            else:
                w.write(cfg.arm_topic(cfg.topics_arm_joint_states, arm), t_ns, joint_state_message(env, arm, t_ns))
            w.write(cfg.arm_topic(cfg.topics_arm_state, arm), t_ns,
                    msg.arm_state(t_ns, frame, arm, r.position, r.quaternion, r.gripper, r.gripper_width,
                                  r.joint_names, r.q))
            offsets = env.privileged_offsets(arm)
            if offsets is not None:  # pick_place only (the frame of current_pose above)
                w.write(cfg.topics_privileged, t_ns, privileged_message(t_ns, frame, offsets))

    def camera(self, env: SimEnv, t: float, name: str) -> None:
        t_ns, frame = self._ns(t), camera_frame(name)
        w, h = env.image_size
        self.writer.write(self.cfg.camera_topic(self.cfg.topics_camera_image, name), t_ns,
                          msg.image(t_ns, frame, env.render(name)))
        self.writer.write(self.cfg.camera_topic(self.cfg.topics_camera_info, name), t_ns,
                          msg.camera_info(t_ns, frame, w, h, *env.intrinsics(name)))

    def command(self, env: SimEnv, t: float, commands: dict[str, ExpertCommand]) -> None:
        t_ns = self._ns(t)
        teleop = bags.constant("hybridvla_msgs/msg/ArmTarget", "SOURCE_TELEOP")
        for arm, c in commands.items():
            self.writer.write(self.cfg.arm_topic(self.cfg.topics_arm_target, arm), t_ns,
                              msg.arm_target(t_ns, env.arms[arm].spec.root_link, arm, c.position, c.quaternion,
                                             c.gripper, 1.0, teleop))

    def stop(self, env: SimEnv, t: float, success: bool) -> None:
        t_ns = self._ns(t)
        kind = bags.constant(EVENT, "STOP_SUCCESS" if success else "STOP_FAILURE")
        self.writer.write(self.cfg.topics_episode_events, t_ns,
                          msg.episode_event(t_ns, kind, self.episode_index, env.instruction))
        self.writer.set_metadata("success", str(bool(success)).lower())
        self.writer.close()
        self.writer = None
        self.episode_index += 1


def recorded_seeds(directory: Path) -> tuple[set[int], list[Path]]:
    """Seeds with a finished episode bag in `directory` (its metadata.yaml is written when the bag closes), and
    the bag directories of episodes that were interrupted (no metadata.yaml)."""
    done, unfinished = set(), []
    for path in sorted(Path(directory).glob("episode_*_seed*")):
        if (path / "metadata.yaml").is_file():
            done.add(int(path.name.rsplit("_seed", 1)[1]))
        else:
            unfinished.append(path)
    return done, unfinished
