"""Episodes out of rosbag2 bags: camera frames, measured arm state and commanded targets resampled at a fixed
rate, and the recorded actions derived in a chosen action convention (hybridvla_core.actions).

Reads our recorder's bags, `hybridvla sim run-experts --record` bags and plain `ros2 bag record` bags (MCAP or
sqlite3) through rosbags. Needed per bag (topic patterns configurable, {arm} / {camera} filled in):
  camera  sensor_msgs/Image                 /camera/{camera}/color/image_raw  (rgb8, bgr8, rgba8, bgra8, mono8)
  state   hybridvla_msgs/ArmState           /hybridvla/{arm}/arm_state        (measured TCP pose, gripper 0..1)
  target  hybridvla_msgs/ArmTarget          /hybridvla/{arm}/target           (commanded absolute TCP target)
  events  hybridvla_msgs/EpisodeEvent       /hybridvla/episode_events         (optional: START/STOP bound the episode)
  privileged geometry_msgs/PoseArray        /sim/privileged                   (optional, simulator bags only: labels
          for training, never an input of the policy; header.frame_id = the arm's base frame, poses[0].position =
          block - TCP, poses[1].position = bowl - TCP [m, base-frame axes], at the state rate)

Alignment (all times are the bag's receive times, one clock per bag): step k is at t0 + k / rate, t0 = the
first time every stream has a message (not before START), the last step at or before STOP (or the bag's
end). Each step takes the newest message of every stream at or before its time (zero-order hold); a step
whose newest camera frame or state is older than max_age_s is skipped and counted. The action of step k is
from_absolute_targets(target_k, measured pose_k): the command in force at the observation's time.

Privileged labels are optional and never decide the steps: step k takes the newest label at or before its time,
like the arm state; where there is none (topic absent or disabled, wrong type, fewer than two poses, non-finite
values, older than max_age_s, or a bag with more than one arm, for which the label is not defined) the step's
row is NaN, so real teleop recordings stay usable (the model masks the loss of such rows).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader

from hybridvla_core.recording import bags
from hybridvla_core.actions import ActionConvention, ArmPose, from_absolute_targets, state_from_poses
from hybridvla_core.errors import UserError

ARM_STATE = "hybridvla_msgs/msg/ArmState"
ARM_TARGET = "hybridvla_msgs/msg/ArmTarget"
IMAGE = "sensor_msgs/msg/Image"
POSE_ARRAY = "geometry_msgs/msg/PoseArray"
PRIVILEGED_FIELDS = ("block_dx", "block_dy", "block_dz", "bowl_dx", "bowl_dy", "bowl_dz")
EPISODE_EVENT = "hybridvla_msgs/msg/EpisodeEvent"
GOOD_OUTCOMES = ("success", "unknown")


class BagError(UserError):
    """A bag that cannot be used; the message is the one line to print."""


@dataclass(frozen=True)
class TopicLayout:
    camera: str = "/camera/{camera}/color/image_raw"
    state: str = "/hybridvla/{arm}/arm_state"
    target: str = "/hybridvla/{arm}/target"
    events: str = "/hybridvla/episode_events"
    privileged: str = "/sim/privileged"  # "" = do not read privileged labels

    @staticmethod
    def add_arguments(parser) -> None:
        """The --camera/state/target/events/privileged-topic options of the commands that read bags."""
        d = TopicLayout()
        parser.add_argument("--camera-topic", default=d.camera, help=f"Image topic pattern (default {d.camera})")
        parser.add_argument("--state-topic", default=d.state, help=f"ArmState topic pattern (default {d.state})")
        parser.add_argument("--target-topic", default=d.target, help=f"ArmTarget topic pattern (default {d.target})")
        parser.add_argument("--events-topic", default=d.events, help=f"EpisodeEvent topic (default {d.events})")
        parser.add_argument("--privileged-topic", default=d.privileged,
                            help="PoseArray topic of the simulator's privileged labels (block - TCP, bowl - TCP), "
                                 "stored for training only; bags without it get no labels; '' disables "
                                 f"(default {d.privileged})")

    @classmethod
    def from_arguments(cls, args) -> "TopicLayout":
        return cls(args.camera_topic, args.state_topic, args.target_topic, args.events_topic,
                   getattr(args, "privileged_topic", cls.privileged))

    def match(self, pattern: str, topics) -> list[str]:
        """Names filling the single {placeholder} of `pattern` among `topics`."""
        regex = re.compile("^" + re.sub(r"\\\{\w+\\\}", "([^/]+)", re.escape(pattern)) + "$")
        return sorted({m.group(1) for t in topics if (m := regex.match(t))})


@dataclass
class Episode:
    """One bag, resampled. Arrays are per step k; images[view][k] is HxWx3 uint8 RGB."""

    path: Path
    instruction: str
    outcome: str                      # success | failure | interrupted | incomplete | unknown
    arms: list[str]
    views: list[str]
    times_ns: np.ndarray              # (K,) receive times of the steps [ns]
    states: np.ndarray                # (K, D) [x, y, z m, roll, pitch, yaw rad (scipy "xyz"), gripper 0..1] per arm
    targets: list                     # K x arms x (position m, quaternion xyzw, gripper 0..1 open)
    poses: list                       # K x arms x ArmPose (measured)
    images: dict[str, list[np.ndarray]]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> steps left out
    privileged: np.ndarray | None = None  # (K, 6) float32 PRIVILEGED_FIELDS [m]; NaN rows = no label (None: all NaN)

    def __post_init__(self) -> None:
        if self.privileged is None:
            self.privileged = np.full((len(self.times_ns), len(PRIVILEGED_FIELDS)), np.nan, np.float32)

    def __len__(self) -> int:
        return len(self.times_ns)

    def actions(self, convention: ActionConvention, target_steps=None) -> np.ndarray:
        """(K, D) recorded actions in the convention, robot units: step k's measured pose to its target, or to
        the target of step target_steps[k] (e.g. the next keyframe's)."""
        targets = self.targets if target_steps is None else [self.targets[j] for j in target_steps]
        return np.stack([from_absolute_targets(t, p, convention) for t, p in zip(targets, self.poses)])


def outcome_of(metadata: dict[str, str]) -> str:
    if "outcome" in metadata:
        return metadata["outcome"]
    if "success" in metadata:
        return "success" if metadata["success"].lower() == "true" else "failure"
    return "unknown"  # a plain `ros2 bag record` bag


def to_rgb(image) -> np.ndarray:
    """A deserialized sensor_msgs/Image -> HxWx3 uint8 RGB (8-bit colour and mono encodings)."""
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(image.encoding)
    if channels is None:
        raise BagError(f"image encoding {image.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8, mono8)")
    rows = np.asarray(image.data, dtype=np.uint8)[:image.step * image.height].reshape(image.height, image.step)
    pixels = rows[:, :image.width * channels].reshape(image.height, image.width, channels)
    if image.encoding.startswith("bgr"):
        pixels = pixels[:, :, 2::-1]
    elif channels == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels[:, :, :3].copy()  # writable, detached from the message buffer


def _arm_order(arms: list[str]) -> list[str]:
    return ["left", "right"] if set(arms) == {"left", "right"} else sorted(arms)


def rate_problem(rate_hz) -> str | None:
    """Why `rate_hz` [Hz] cannot be a resampling rate (it must give a step period of at least 1 ns), or None."""
    if not 0 < rate_hz <= 1e9:  # also refuses NaN
        return f"must be > 0 and at most 1e9 steps per second, got {rate_hz:g}"
    return None


def extract_episode(path: str | Path, *, rate_hz: float = 10.0, layout: TopicLayout = TopicLayout(),
                    arms: list[str] | None = None, views: list[str] | None = None, max_age_s: float = 0.5,
                    instruction: str | None = None) -> Episode:
    """Read and resample one bag. Raises BagError with one line when the bag cannot be used, ValueError for a
    rate that gives no positive step period."""
    problem = rate_problem(rate_hz)
    if problem is not None:  # a period <= 0 would never advance the resampling loop
        raise ValueError(f"rate_hz {problem}")
    path = Path(path)
    problem = bags.bag_problem(path)
    if problem is not None:
        raise BagError(problem)
    try:
        reader = AnyReader([path], default_typestore=bags.typestore())
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for damaged bags
        raise BagError(f"{path}: cannot open bag ({type(exc).__name__}: {exc})") from None
    try:
        return _extract(reader, path, rate_hz, layout, arms, views, max_age_s, instruction)
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise BagError(f"{path}: cannot read bag ({type(exc).__name__}: {exc})") from None
    finally:
        reader.close()


def _extract(reader, path, rate_hz, layout, arms, views, max_age_s, instruction) -> Episode:
    types = {c.topic: c.msgtype for c in reader.connections}
    arms = list(arms) if arms else _arm_order(layout.match(layout.state, types))
    views = list(views) if views else layout.match(layout.camera, types)
    needed = {layout.camera.format(camera=v): IMAGE for v in views}
    needed.update({layout.state.format(arm=a): ARM_STATE for a in arms})
    needed.update({layout.target.format(arm=a): ARM_TARGET for a in arms})
    if not arms:
        raise BagError(f"{path}: lacks the topics {layout.state} ({ARM_STATE}) for any arm")
    if not views:
        raise BagError(f"{path}: lacks the topics {layout.camera} ({IMAGE}) for any camera")
    missing = [f"{t} ({m})" for t, m in needed.items() if types.get(t) != m]
    if missing:
        raise BagError(f"{path}: lacks the topics {', '.join(missing)}")
    metadata = _metadata(path)
    # Optional privileged labels: read along, but they neither start the episode nor make a step stale.
    labels = layout.privileged if layout.privileged and len(arms) == 1 and types.get(layout.privileged) == POSE_ARRAY \
        else None
    kinds = {**needed, **({labels: POSE_ARRAY} if labels else {})}
    event_conns = [c for c in reader.connections if c.topic == layout.events and c.msgtype == EPISODE_EVENT]
    # (an empty connection list would mean "every connection" to rosbags)
    events = [reader.deserialize(raw, EPISODE_EVENT) for _, _, raw in reader.messages(event_conns)] if event_conns else []
    text = instruction or metadata.get("instruction") or next((e.instruction for e in events if e.instruction), "")
    if not text:
        raise BagError(f"{path}: no instruction in the bag's metadata or episode events; pass --instruction")
    start = next((bags.stamp_ns(e.header) for e in events if e.kind == 0), None)
    stop = next((bags.stamp_ns(e.header) for e in events if e.kind in (1, 2)), None)

    period = int(round(1e9 / rate_hz))
    max_age = int(max_age_s * 1e9)
    latest: dict[str, tuple[int, object]] = {}  # topic -> (receive time, raw CDR)
    steps: list[tuple[int, dict]] = []
    skipped = {"stale": 0}
    next_t = None

    def emit_until(t_limit: int) -> None:
        nonlocal next_t
        while next_t is not None and next_t <= t_limit:
            # Targets are held as long as needed (a teleoperator may pause); sensors must be fresh.
            if all(next_t - latest[t][0] <= max_age for t in needed if needed[t] != ARM_TARGET):
                steps.append((next_t, dict(latest)))
            else:
                skipped["stale"] += 1
            next_t += period

    conns = [c for c in reader.connections if c.topic in kinds and c.msgtype == kinds[c.topic]]
    end = None
    for conn, t_ns, raw in reader.messages(conns):
        if stop is not None and t_ns > stop:
            break
        emit_until(t_ns - 1)  # steps strictly before this message see everything up to it
        latest[conn.topic] = (t_ns, raw)
        if next_t is None and all(t in latest for t in needed):
            next_t = max(t_ns, start or t_ns)
        if conn.topic in needed:  # the labels do not extend the episode either
            end = t_ns
    emit_until(stop if stop is not None else (end or 0))
    if not steps:
        raise BagError(f"{path}: no step at {rate_hz:g} Hz where every stream had a fresh message")

    cache: dict[int, object] = {}  # id(raw) -> decoded, so a message held over several steps is decoded once

    def decoded(topic, raw):
        if id(raw) not in cache:
            cache[id(raw)] = reader.deserialize(raw, kinds[topic])
        return cache[id(raw)]

    times, states, targets, poses = [], [], [], []
    privileged = np.full((len(steps), len(PRIVILEGED_FIELDS)), np.nan, np.float32)
    images: dict[str, list] = {v: [] for v in views}
    frames: dict[int, np.ndarray] = {}
    for k, (t_k, snap) in enumerate(steps):
        if labels in snap and t_k - snap[labels][0] <= max_age:
            privileged[k] = _privileged_row(decoded(labels, snap[labels][1]))
        arm_poses, arm_targets = [], []
        for arm in arms:
            s = decoded(layout.state.format(arm=arm), snap[layout.state.format(arm=arm)][1])
            g = decoded(layout.target.format(arm=arm), snap[layout.target.format(arm=arm)][1])
            arm_poses.append(ArmPose(_position(s.pose), _quaternion(s.pose), float(s.gripper)))
            arm_targets.append((_position(g.pose), _quaternion(g.pose), float(g.gripper)))
        for view in views:
            raw = snap[layout.camera.format(camera=view)][1]
            if id(raw) not in frames:
                frames[id(raw)] = to_rgb(decoded(layout.camera.format(camera=view), raw))
                cache.pop(id(raw))
            images[view].append(frames[id(raw)])
        times.append(t_k)
        poses.append(arm_poses)
        targets.append(arm_targets)
        states.append(state_from_poses(arm_poses))
    return Episode(path, text, outcome_of(metadata), arms, views, np.asarray(times, np.int64), np.stack(states),
                   targets, poses, images, skipped, privileged)


def _privileged_row(message) -> np.ndarray:
    """A PoseArray label -> [block - TCP, bowl - TCP] (6,) float32; all NaN unless both are there and finite."""
    if len(message.poses) < 2:
        return np.full(len(PRIVILEGED_FIELDS), np.nan, np.float32)
    row = np.concatenate([_position(message.poses[0]), _position(message.poses[1])]).astype(np.float32)
    return row if np.all(np.isfinite(row)) else np.full(len(PRIVILEGED_FIELDS), np.nan, np.float32)


def _position(pose) -> np.ndarray:
    return np.array([pose.position.x, pose.position.y, pose.position.z])


def _quaternion(pose) -> np.ndarray:
    return np.array([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])


def _metadata(path: Path) -> dict[str, str]:
    return bags.bag_metadata(path) if (path / "metadata.yaml").is_file() else {}


def find_bags(paths) -> list[Path]:
    """Bag directories among `paths`: a path holding metadata.yaml or a .mcap/.db3 file is a bag; any
    other directory is searched one level down (e.g. the recorder's output directory), where the originals that
    `hybridvla dataset recover` kept (NAME.crashed) are left out: their recovered bag NAME is the episode."""
    found: list[Path] = []
    for p in map(Path, paths):
        if _is_bag(p):
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(c for c in p.iterdir() if c.is_dir() and _is_bag(c)
                                and not c.name.endswith(bags.CRASHED_SUFFIX)))
        else:
            found.append(p)  # let the reader report it
    return found


def _is_bag(p: Path) -> bool:
    return p.is_dir() and ((p / "metadata.yaml").is_file() or any(p.glob("*.mcap")) or any(p.glob("*.db3")))
