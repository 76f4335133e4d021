"""The one home of rosbag2 I/O for the whole suite (pure Python through `rosbags`; no ROS needed).

- `typestore()`: the standard ROS 2 message types plus hybridvla_msgs, registered from the .msg files
  (source tree or <prefix>/share/hybridvla_msgs/msg), so bags carry the same definitions as the built package.
- `EpisodeWriter`: one episode = one rosbag2 directory with MCAP storage, full message definitions per
  connection (ros2msg text, as `ros2 bag record` writes them) and string metadata in metadata.yaml's
  custom_data (instruction, seed, ...). Accepts rosbags message objects (`write`) or serialized CDR bytes
  (`write_cdr`, e.g. what an rclpy raw subscription delivers). Compression (`COMPRESSIONS`):
  "chunk-zstd" (the default) is MCAP's own chunk compression, what
  `ros2 bag record -s mcap --storage-preset-profile zstd_fast` (or zstd_small) writes: the storage compresses
  its ~1 MiB chunks, metadata.yaml says compression_format '' and compression_mode '' (rosbag2 records only
  its own compression layer there), and every MCAP reader (Foxglove, the `mcap` package, `ros2 bag`) decodes
  the messages without knowing about rosbag2. "message-zstd" (older name "zstd", the default before) is
  rosbag2's message mode, each message its own zstd frame, what
  `ros2 bag record -s mcap --compression-mode message --compression-format zstd` writes (metadata.yaml:
  compression_format zstd, compression_mode message): `ros2 bag` reads it through rosbag2_compression_zstd,
  but plain MCAP readers hand out zstd frames instead of CDR. "none" stores the CDR bytes as they are.
- `msg`: builders of the message objects the suite records, every unit stated.
- Readers: `read_messages`, `read_raw` (undecoded CDR), `topic_summary`, `bag_metadata`,
  `bag_compression`; `stored_to_cdr` undoes message-mode compression for readers of raw storage records;
  `mcap_chunk_compression` says how an MCAP file's chunks are compressed. Every reader accepts all three kinds.

Timestamps are integer nanoseconds (the bag's receive time and every header stamp); the caller decides the
clock (simulation time or wall time) and uses it consistently within a bag.
"""
from __future__ import annotations

import functools
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from hybridvla_core.resources import SOURCE_ROOT

DISTROS = {"humble": Stores.ROS2_HUMBLE, "jazzy": Stores.ROS2_JAZZY, "kilted": Stores.ROS2_KILTED}
DEFAULT_DISTRO = "kilted"  # definitions of the types the suite records are identical in humble..kilted
INTERFACE_PACKAGES = ("hybridvla_msgs",)
# chunk-zstd: MCAP chunk compression (zstd); message-zstd: rosbag2 message-mode zstd; none: raw CDR
COMPRESSIONS = ("chunk-zstd", "message-zstd", "none")
COMPRESSION_ALIASES = {"zstd": "message-zstd"}  # "zstd" named message mode while it was the default
DEFAULT_COMPRESSION = "chunk-zstd"
MCAP_MAGIC = b"\x89MCAP0\r\n"
INCOMPLETE_MARKER = "RECORDING_INCOMPLETE"  # the recorder's file in an episode it has not closed yet
CRASHED_SUFFIX = ".crashed"  # `hybridvla dataset recover NAME` keeps the crashed original as NAME.crashed
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # first bytes of every zstd frame; CDR starts with 0x00 (encapsulation id)


def zstd_module():
    """The zstd module rosbags itself uses: compression.zstd (Python >= 3.14) or its backport."""
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return zstd


def check_compression(compression: str) -> str:
    """The name in COMPRESSIONS that `compression` means (an old name, COMPRESSION_ALIASES, gives its new one),
    else a one-line ValueError naming it."""
    name = COMPRESSION_ALIASES.get(compression, compression) if isinstance(compression, str) else compression
    if name not in COMPRESSIONS:
        aliases = ", ".join(f"{old} = {new}" for old, new in COMPRESSION_ALIASES.items())
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)} ({aliases}), got {compression!r}")
    return name


def is_zstd_frame(data: bytes) -> bool:
    """True for a message stored message-mode compressed (CDR's first byte, of the encapsulation id, is 0)."""
    return data[:4] == ZSTD_MAGIC


def stored_to_cdr(data: bytes) -> bytes:
    """The CDR bytes of a message as stored in a bag's storage: message-mode compressed bags hold one zstd
    frame per message, others the CDR itself."""
    return zstd_module().decompress(data) if is_zstd_frame(data) else data


def interface_dir(package: str) -> Path:
    """Directory holding `package`'s msg/ folder: the source tree first, then share/<package> under this
    interpreter's prefix and every AMENT_PREFIX_PATH entry."""
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [SOURCE_ROOT / package] + [Path(p) / "share" / package for p in prefixes]
    for c in candidates:
        # A Python install puts the generated module hybridvla_msgs/msg/ (no .msg files) next to this package.
        if any((c / "msg").glob("*.msg")):
            return c
    raise FileNotFoundError(f"{package}/msg not found; searched: {', '.join(str(c) for c in candidates)}")


@functools.lru_cache(maxsize=None)
def typestore(distro: str = DEFAULT_DISTRO, packages: tuple[str, ...] = INTERFACE_PACKAGES) -> Typestore:
    """A rosbags typestore with the distro's standard types and the suite's own interface packages."""
    if distro not in DISTROS:
        raise ValueError(f"unknown ROS 2 distro {distro!r}; known: {', '.join(DISTROS)}")
    store = get_typestore(DISTROS[distro])
    types = {}
    for package in packages:
        for path in sorted((interface_dir(package) / "msg").glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


class EpisodeWriter:
    """Writes one episode into a rosbag2 directory (MCAP storage).

        with EpisodeWriter("bags/episode_0000", metadata={"instruction": "...", "seed": "3"}) as bag:
            bag.write("/joint_states", t_ns, msg.joint_state(...))

    Topics are registered on first use with the message's own type. The directory must not exist yet.
    If the body raises, the bag is still closed properly, so what was written stays readable.
    compression (see COMPRESSIONS): "chunk-zstd" (MCAP chunks zstd compressed, as
    `ros2 bag record -s mcap --storage-preset-profile zstd_fast`; what MCAP tools such as Foxglove read),
    "message-zstd" or its old name "zstd" (rosbag2 message mode, each message compressed on its own, as
    `ros2 bag record --compression-mode message --compression-format zstd`) or "none".
    """

    def __init__(self, path: str | Path, *, metadata: dict[str, str] | None = None,
                 store: Typestore | None = None, compression: str = DEFAULT_COMPRESSION):
        self.compression = check_compression(compression)
        self.path = Path(path)
        self.store = store or typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        if self.compression == "chunk-zstd":  # rosbags' MCAP storage compresses each chunk; metadata '' and ''
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        elif self.compression == "message-zstd":
            self._writer.set_compression(CompressionMode.MESSAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        for key, value in (metadata or {}).items():
            self.set_metadata(key, value)

    def set_metadata(self, key: str, value: Any) -> None:
        """Store key -> str(value) in metadata.yaml's custom_data (any time before close)."""
        self._writer.set_custom_data(key, str(value))

    def _connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store)
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} already carries {conn.msgtype}, not {msgtype}")
        return conn

    def write(self, topic: str, t_ns: int, message: Any) -> None:
        """Serialize a rosbags message object (e.g. from `msg`) and write it at receive time t_ns."""
        self.write_cdr(topic, message.__msgtype__, t_ns, self.store.serialize_cdr(message, message.__msgtype__))

    def write_cdr(self, topic: str, msgtype: str, t_ns: int, data: bytes) -> None:
        """Write already serialized CDR bytes (e.g. from an rclpy subscription with raw=True)."""
        self._writer.write(self._connection(topic, msgtype), int(t_ns), bytes(data))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- message builders -------------------------------------------------------------------------------------
class msg:  # noqa: N801 - a namespace of builders, used as msg.image(...)
    """Builders of rosbags message objects; t_ns is the header stamp in nanoseconds."""

    @staticmethod
    def _types(store: Typestore | None = None):
        return (store or typestore()).types

    @staticmethod
    def time(t_ns: int):
        T = msg._types()["builtin_interfaces/msg/Time"]
        return T(sec=int(t_ns // 1_000_000_000), nanosec=int(t_ns % 1_000_000_000))

    @staticmethod
    def header(t_ns: int, frame_id: str = ""):
        return msg._types()["std_msgs/msg/Header"](stamp=msg.time(t_ns), frame_id=frame_id)

    @staticmethod
    def pose(position, quaternion):
        """position [m] (3,), quaternion (x, y, z, w)."""
        t = msg._types()
        p, q = [float(v) for v in position], [float(v) for v in quaternion]
        return t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=p[0], y=p[1], z=p[2]),
                                           orientation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))

    @staticmethod
    def pose_stamped(t_ns: int, frame_id: str, position, quaternion):
        return msg._types()["geometry_msgs/msg/PoseStamped"](header=msg.header(t_ns, frame_id),
                                                             pose=msg.pose(position, quaternion))

    @staticmethod
    def image(t_ns: int, frame_id: str, rgb: np.ndarray):
        """sensor_msgs/Image rgb8 from an (H, W, 3) uint8 array."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb8 image needs shape (H, W, 3), got {rgb.shape}")
        h, w = rgb.shape[:2]
        return msg._types()["sensor_msgs/msg/Image"](header=msg.header(t_ns, frame_id), height=h, width=w,
                                                     encoding="rgb8", is_bigendian=0, step=w * 3,
                                                     data=rgb.reshape(-1))

    @staticmethod
    def camera_info(t_ns: int, frame_id: str, width: int, height: int, fx: float, fy: float, cx: float, cy: float):
        """Pinhole camera without distortion; fx, fy, cx, cy in pixels."""
        t = msg._types()
        return t["sensor_msgs/msg/CameraInfo"](
            header=msg.header(t_ns, frame_id), height=int(height), width=int(width), distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([fx, 0, cx, 0, fy, cy, 0, 0, 1], float), r=np.eye(3).ravel(),
            p=np.array([fx, 0, cx, 0, 0, fy, cy, 0, 0, 0, 1, 0], float), binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    @staticmethod
    def joint_state(t_ns: int, names: list[str], position, velocity=None, effort=None, frame_id: str = ""):
        """positions in rad (revolute) or m (prismatic); velocity and effort optional (empty)."""
        empty = np.zeros(0)
        return msg._types()["sensor_msgs/msg/JointState"](
            header=msg.header(t_ns, frame_id), name=list(names), position=np.asarray(position, float),
            velocity=empty if velocity is None else np.asarray(velocity, float),
            effort=empty if effort is None else np.asarray(effort, float))

    @staticmethod
    def arm_state(t_ns: int, frame_id: str, arm: str, position, quaternion, gripper: float, gripper_width: float,
                  joint_names: list[str], joint_positions, enabled: bool = True):
        """hybridvla_msgs/ArmState: TCP pose [m, xyzw] in frame_id, gripper 0 closed..1 open, width [m]."""
        return msg._types()["hybridvla_msgs/msg/ArmState"](
            header=msg.header(t_ns, frame_id), arm=arm, pose=msg.pose(position, quaternion), gripper=float(gripper),
            gripper_width=float(gripper_width), joint_names=list(joint_names),
            joint_positions=np.asarray(joint_positions, float), enabled=bool(enabled))

    @staticmethod
    def arm_target(t_ns: int, frame_id: str, arm: str, position, quaternion, gripper: float, confidence: float,
                   source: int):
        """hybridvla_msgs/ArmTarget: absolute TCP target [m, xyzw] in frame_id, gripper 0 closed..1 open."""
        return msg._types()["hybridvla_msgs/msg/ArmTarget"](
            header=msg.header(t_ns, frame_id), arm=arm, pose=msg.pose(position, quaternion), gripper=float(gripper),
            confidence=float(confidence), source=int(source))

    @staticmethod
    def episode_event(t_ns: int, kind: int, episode_index: int, instruction: str):
        return msg._types()["hybridvla_msgs/msg/EpisodeEvent"](
            header=msg.header(t_ns), kind=int(kind), episode_index=int(episode_index), instruction=instruction)


def constant(msgtype: str, name: str) -> int:
    """A constant of a registered message type, e.g. constant("hybridvla_msgs/msg/ArmTarget", "SOURCE_TELEOP")."""
    return getattr(typestore().types[msgtype], name)


def stamp_ns(header) -> int:
    """Header stamp of a deserialized message, in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# --- readers ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    t_ns: int          # receive time recorded in the bag
    message: Any       # deserialized rosbags message object


def _wanted_connections(reader: AnyReader, topics: Iterable[str] | None) -> list:
    """The reader's connections on the wanted topics (all of them when topics is None). rosbags reads
    every connection when given an empty list, so callers read nothing when this is empty."""
    wanted = set(topics) if topics is not None else None
    return [c for c in reader.connections if wanted is None or c.topic in wanted]


def read_messages(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[BagMessage]:
    """Every message of a bag (any storage rosbags reads), in time order, optionally only some topics."""
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        conns = _wanted_connections(reader, topics)
        if conns:
            for conn, t_ns, raw in reader.messages(connections=conns):
                yield BagMessage(conn.topic, conn.msgtype, t_ns, reader.deserialize(raw, conn.msgtype))


def read_raw(path: str | Path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, msgtype, receive time ns, serialized CDR bytes) of every message, in time order, undecoded
    (bag replay publishes these bytes as they are; the reader has undone message-mode compression)."""
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        conns = _wanted_connections(reader, topics)
        if conns:
            for conn, t_ns, raw in reader.messages(connections=conns):
                yield conn.topic, conn.msgtype, t_ns, raw


def topic_summary(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic -> (message type, message count)."""
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        out: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            _, count = out.get(c.topic, (c.msgtype, 0))
            out[c.topic] = (c.msgtype, count + c.msgcount)
        return out


def bag_problem(path: str | Path) -> str | None:
    """None for a bag directory that opens; else one line saying what is wrong and what to do (a crashed or cut
    short recording points at `hybridvla dataset recover`, which keeps its intact part)."""
    path = Path(path)
    recover = f"`hybridvla dataset recover {path}` keeps its intact part"
    if not path.is_dir():
        return f"{path}: no such bag directory"
    if path.name.endswith(CRASHED_SUFFIX):
        return (f"{path}: the original of a crashed recording, kept by `hybridvla dataset recover`; its recovered "
                f"bag is {path.name[:-len(CRASHED_SUFFIX)]} beside it")
    if not any(path.glob("*.mcap")) and not any(path.glob("*.db3")):
        return f"{path}: not a bag (no .mcap or .db3 file in it)"
    if (path / INCOMPLETE_MARKER).exists():
        return f"{path}: recording never closed (the recorder crashed or was killed): {recover}"
    if not (path / "metadata.yaml").is_file():
        return f"{path}: no metadata.yaml (an interrupted recording or copy): {recover} and rebuilds it"
    try:
        with AnyReader([path], default_typestore=typestore()):
            pass
    except Exception as exc:  # noqa: BLE001 - rosbags raises several types for damaged bags
        reason = " ".join(str(exc).split())[:160]
        return f"{path}: cannot open bag ({type(exc).__name__}: {reason}); if it was cut short, {recover}"
    return None


def _bag_info(path: str | Path) -> dict:
    return yaml.safe_load((Path(path) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def bag_metadata(path: str | Path) -> dict[str, str]:
    """The custom_data of a rosbag2 directory's metadata.yaml (empty if none)."""
    return dict(_bag_info(path).get("custom_data") or {})


def mcap_chunk_compression(path: str | Path) -> str:
    """How the chunks of an MCAP file are compressed: the compression its first compressed chunk names ("zstd",
    "lz4"), "" when no chunk is compressed (or the file has no chunks). Reads record headers only (seeking past
    their bodies), up to the data section's end; a file cut short (a crashed recording) is read as far as it goes."""
    with Path(path).open("rb") as f:
        if f.read(8) != MCAP_MAGIC:
            raise ValueError(f"{path}: not an MCAP file")
        while True:
            head = f.read(9)
            if len(head) < 9 or head[0] in (0x0F, 0x02):  # end of file, data end, footer
                return ""
            op, length = head[0], struct.unpack_from("<Q", head, 1)[0]
            start = f.tell()
            if op == 0x06:  # chunk: start time, end time, uncompressed size, crc, compression, ...
                body = f.read(min(length, 32))
                if len(body) == 32:
                    (n,) = struct.unpack_from("<I", body, 28)
                    compression = f.read(n).decode(errors="replace") if 0 < n <= 64 else ""
                    if compression:
                        return compression
            f.seek(start + length)


def bag_compression(path: str | Path) -> tuple[str, str]:
    """(format, mode) of a rosbag2 directory's compression, lower case, "none" where there is none:
    ("zstd", "chunk") for chunk-zstd (MCAP chunk compression, found in the .mcap file: rosbag2 records it
    nowhere, metadata.yaml's compression fields stay empty), otherwise what metadata.yaml records:
    ("zstd", "message") for message-zstd, ("zstd", "file") for file mode, ("none", "none") for none."""
    path = Path(path)
    info = _bag_info(path)
    fmt, mode = str(info.get("compression_format") or "").lower(), str(info.get("compression_mode") or "").lower()
    if not fmt and not mode:
        for name in info.get("relative_file_paths") or []:
            file = path / Path(str(name)).name
            if file.suffix == ".mcap" and file.is_file():
                chunk = mcap_chunk_compression(file)
                if chunk:
                    return chunk.lower(), "chunk"
    return fmt or "none", mode or "none"
