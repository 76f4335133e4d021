"""Episode recording without ROS: the recorder node feeds serialized messages in, this module writes them.

- `EpisodeRecorder`: the episode state machine (idle -> recording -> idle) over one rosbag2 MCAP bag per
  episode (bags.EpisodeWriter), a writer thread so that slow disks never block message
  callbacks, per-topic rate and drop statistics, and a free-disk-space check.
- Crash safety: every open episode directory holds INCOMPLETE_MARKER until its bag is closed. A SIGKILL or a
  power cut leaves finished episodes untouched and the open one clearly marked (recovery.recover_episode
  mends it). Ctrl-C (SIGINT) is not a crash: `close()` finishes the open episode with outcome "interrupted".
The terminal keys are recording/terminal_keys.py.

Times: integer nanoseconds of the caller's clock (wall time, or simulation time under use_sim_time).
"""
from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hybridvla_core.recording import bags

EPISODE_EVENT = "hybridvla_msgs/msg/EpisodeEvent"
INCOMPLETE_MARKER = bags.INCOMPLETE_MARKER
EPISODE_PREFIX = "episode_"
OUTCOMES = ("success", "failure", "interrupted")
# Messages of a stream whose header stamps jump by more than this many expected periods count as drops.
_GAP_TOLERANCE = 1.5
_RATE_WINDOW_S = 2.0


# --- per-topic statistics ---------------------------------------------------------------------------------
def cdr_header_stamp(data: bytes) -> int:
    """Header stamp [ns] of a CDR-serialized message whose first field is std_msgs/Header: the 4-byte
    encapsulation, then int32 sec and uint32 nanosec (endianness from the encapsulation id)."""
    endian = "<" if data[1] & 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def has_header(msgtype: str) -> bool:
    """True when the type's first field is a std_msgs/Header (so its stamp can be read without decoding)."""
    fields = bags.typestore().fielddefs[msgtype][1]
    return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"


@dataclass
class TopicStats:
    """Counts of one topic within one episode. expected_hz > 0 enables drop counting from header stamps:
    a stamp gap of g expected periods (g >= 1.5) means round(g) - 1 messages never arrived."""

    expected_hz: float = 0.0
    count: int = 0
    bytes: int = 0
    drops: int = 0               # messages missing between arrivals (stamp gaps), estimated as above
    refused: int = 0             # messages the recorder itself dropped (write queue over its limit)
    last_stamp_ns: int | None = None
    arrivals: collections.deque = field(default_factory=collections.deque)  # receive times [ns], last window

    def add(self, t_ns: int, size: int, stamp_ns: int | None) -> None:
        self.count += 1
        self.bytes += size
        self.arrivals.append(t_ns)
        while self.arrivals and self.arrivals[0] < t_ns - _RATE_WINDOW_S * 1e9:
            self.arrivals.popleft()
        if stamp_ns is not None and self.expected_hz > 0:
            if self.last_stamp_ns is not None:
                gap = (stamp_ns - self.last_stamp_ns) * self.expected_hz / 1e9
                if gap >= _GAP_TOLERANCE:
                    self.drops += int(round(gap)) - 1
            self.last_stamp_ns = stamp_ns

    def rate_hz(self, now_ns: int) -> float:
        """Arrival rate over the last window [Hz]."""
        recent = [t for t in self.arrivals if t >= now_ns - _RATE_WINDOW_S * 1e9]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return 0.0
        return (len(recent) - 1) * 1e9 / (recent[-1] - recent[0])

    def summary(self) -> dict:
        return {"count": self.count, "bytes": self.bytes, "drops": self.drops, "refused": self.refused,
                "expected_hz": self.expected_hz}


# --- the episode state machine ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Reply:
    """Answer to a command, mirroring hybridvla_msgs/srv/EpisodeControl's response."""

    success: bool
    message: str
    episode_index: int


@dataclass
class _Episode:
    index: int
    instruction: str
    path: Path
    start_ns: int
    writer: bags.EpisodeWriter
    stats: dict[str, TopicStats]


def episode_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).glob(f"{EPISODE_PREFIX}[0-9]*")
                  if p.is_dir() and not p.name.endswith(bags.CRASHED_SUFFIX))


def is_incomplete(path: str | Path) -> bool:
    """True for a bag whose recorder never closed it (crash, kill, power cut)."""
    return (Path(path) / INCOMPLETE_MARKER).exists()


def free_bytes(directory: Path) -> int:
    return shutil.disk_usage(directory).free


class EpisodeRecorder:
    """One bag per episode in `directory` (episode_0000, episode_0001, ... continuing after existing ones).

        rec = EpisodeRecorder("bags", expected_hz={"/camera/front/color/image_raw": 15.0})
        rec.start("put the red block in the blue bowl", t_ns)
        rec.offer(topic, msgtype, t_ns, cdr_bytes)        # from any thread, e.g. raw rclpy callbacks
        rec.stop("success", t_ns)                          # or "failure"; rec.discard(t_ns) deletes it

    Episode events (START, STOP_*) are written into the bag by the recorder itself on `events_topic`, and
    returned so that the caller can publish them live. Messages on events_topic offered by others are ignored
    (the recorder's own events would otherwise be recorded twice).
    """

    def __init__(self, directory: str | Path, *, robot: str = "", expected_hz: dict[str, float] | None = None,
                 events_topic: str = "/hybridvla/episode_events", min_free_bytes: int = 2 * 1024**3,
                 max_queue_bytes: int = 1024**3, max_episode_s: float = 0.0, metadata: dict | None = None,
                 free_space: Callable[[Path], int] = free_bytes, compression: str = bags.DEFAULT_COMPRESSION):
        self.compression = bags.check_compression(compression)  # checked now, not at the first episode
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.robot = robot
        self.expected_hz = dict(expected_hz or {})
        self.events_topic = events_topic
        self.min_free_bytes = int(min_free_bytes)
        self.max_queue_bytes = int(max_queue_bytes)
        self.max_episode_s = float(max_episode_s)
        self.metadata = dict(metadata or {})
        self._free_space = free_space
        self._header_types: dict[str, bool] = {}
        self._episode: _Episode | None = None
        self._lock = threading.Lock()      # guards _episode and the statistics
        self._queue: queue.Queue = queue.Queue()
        self._queued_bytes = 0
        self._errors: list[str] = []
        self.finished: list[dict] = []     # summaries of the closed episodes of this session
        self._thread = threading.Thread(target=self._write_loop, name="episode-writer", daemon=True)
        self._thread.start()
        self.next_index = self._first_free_index()

    def _first_free_index(self) -> int:
        indices = [int(p.name[len(EPISODE_PREFIX):len(EPISODE_PREFIX) + 4]) for p in episode_dirs(self.directory)
                   if p.name[len(EPISODE_PREFIX):len(EPISODE_PREFIX) + 4].isdigit()]
        return max(indices) + 1 if indices else 0

    def incomplete_episodes(self) -> list[Path]:
        """Episodes left open by an earlier crash (marked, recoverable with recover_episode)."""
        current = self._episode.path if self._episode else None
        return [p for p in episode_dirs(self.directory) if is_incomplete(p) and p != current]

    # -- state
    @property
    def recording(self) -> bool:
        return self._episode is not None

    @property
    def episode_index(self) -> int:
        return self._episode.index if self._episode else self.next_index

    def _event(self, kind: str, episode: _Episode, t_ns: int):
        return bags.msg.episode_event(t_ns, bags.constant(EPISODE_EVENT, kind), episode.index, episode.instruction)

    # -- commands (from the service or the keys; any thread)
    def start(self, instruction: str, t_ns: int) -> tuple[Reply, object | None]:
        """Open a new episode. Returns the reply and the START event to publish (None when refused)."""
        with self._lock:
            if self._episode is not None:
                return Reply(False, f"episode {self._episode.index} is still recording; stop or discard it first",
                             self._episode.index), None
            if not instruction.strip():
                return Reply(False, "no instruction: give one with START or set the recorder's instruction",
                             self.next_index), None
            free = self._free_space(self.directory)
            if free < self.min_free_bytes:
                return Reply(False, f"only {free / 1e9:.1f} GB free in {self.directory}, need "
                                    f"{self.min_free_bytes / 1e9:.1f} GB (min_free_gb)", self.next_index), None
            index = self.next_index
            path = self.directory / f"{EPISODE_PREFIX}{index:04d}"
            writer = bags.EpisodeWriter(path, metadata={
                **self.metadata, "instruction": instruction, "episode_index": index, "robot": self.robot,
                "start_ns": t_ns, "recorder": "hybridvla recorder"}, compression=self.compression)
            (path / INCOMPLETE_MARKER).write_text(
                f"episode {index} was being recorded by pid {os.getpid()} and never closed (crash or kill).\n"
                f"Recover the completed part with: hybridvla dataset recover {path}\n")
            episode = _Episode(index, instruction, path, t_ns, writer,
                               {topic: TopicStats(hz) for topic, hz in self.expected_hz.items()})
            self._episode = episode
            self.next_index = index + 1
            event = self._event("START", episode, t_ns)
            self._put(("event", episode, t_ns, event))
            return Reply(True, str(path), index), event

    def stop(self, outcome: str, t_ns: int, reason: str = "") -> tuple[Reply, object | None]:
        """Close the open episode with outcome success, failure or interrupted; its bag stays on disk."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        return self._finish("STOP_SUCCESS" if outcome == "success" else "STOP_FAILURE", t_ns, outcome, reason)

    def discard(self, t_ns: int) -> tuple[Reply, object | None]:
        """Close the open episode and delete its bag; its index is used again by the next episode."""
        return self._finish("DISCARD", t_ns, "discarded", "")

    def _finish(self, kind: str, t_ns: int, outcome: str, reason: str) -> tuple[Reply, object | None]:
        with self._lock:
            episode = self._episode
            if episode is None:
                return Reply(False, "no episode is recording", self.next_index), None
            self._episode = None
            if kind == "DISCARD":
                self.next_index = episode.index
            event = self._event(kind, episode, t_ns)
        done = threading.Event()
        self._put(("close", episode, t_ns, event, outcome, reason, done))
        done.wait()
        if kind == "DISCARD":
            return Reply(True, f"episode {episode.index} discarded", episode.index), event
        return Reply(True, str(episode.path), episode.index), event

    def offer(self, topic: str, msgtype: str, t_ns: int, data: bytes) -> bool:
        """A serialized message received at t_ns. Recorded when an episode is open; False when not recorded."""
        if topic == self.events_topic and msgtype == EPISODE_EVENT:
            return False
        with self._lock:
            episode = self._episode
            if episode is None:
                return False
            stats = episode.stats.setdefault(topic, TopicStats(self.expected_hz.get(topic, 0.0)))
            if self._queued_bytes + len(data) > self.max_queue_bytes:
                stats.refused += 1
                return False
            if topic not in self._header_types:
                self._header_types[topic] = msgtype in bags.typestore().fielddefs and has_header(msgtype)
            stamp = cdr_header_stamp(data) if self._header_types[topic] and len(data) >= 12 else None
            stats.add(t_ns, len(data), stamp)
            self._queued_bytes += len(data)
            self._put(("data", episode, topic, msgtype, t_ns, data))
            return True

    def tick(self, t_ns: int) -> tuple[Reply, object | None] | None:
        """Periodic checks (call about once a second): a disk running full or the episode time limit stops
        the open episode as a failure. Returns the stop's (reply, event) when it stopped one."""
        episode = self._episode
        if episode is None:
            return None
        if self._free_space(self.directory) < self.min_free_bytes:
            return self.stop("failure", t_ns, reason="free disk space fell below min_free_gb")
        if self.max_episode_s > 0 and (t_ns - episode.start_ns) / 1e9 >= self.max_episode_s:
            return self.stop("failure", t_ns, reason=f"episode reached max_episode_s = {self.max_episode_s}")
        return None

    def close(self, t_ns: int) -> None:
        """Shut down: an open episode is closed with outcome "interrupted" (kept, intact), the writer stops."""
        if self._episode is not None:
            self.stop("interrupted", t_ns, reason="recorder shut down while recording")
        self._put(None)
        self._thread.join()

    def take_errors(self) -> list[str]:
        """Write errors since the last call (one line each), for the node to log."""
        errors, self._errors = self._errors, []
        return errors

    # -- the writer thread
    def _put(self, item) -> None:
        self._queue.put(item)

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
            except Exception as exc:  # noqa: BLE001 - a write error must not kill the thread: report it
                self._errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                if item[0] == "close":
                    item[-1].set()

    def _handle(self, item) -> None:
        kind, episode = item[0], item[1]
        if kind == "data":
            _, _, topic, msgtype, t_ns, data = item
            with self._lock:
                self._queued_bytes -= len(data)
            episode.writer.write_cdr(topic, msgtype, t_ns, data)
        elif kind == "event":
            _, _, t_ns, event = item
            episode.writer.write(self.events_topic, t_ns, event)
        elif kind == "close":
            _, _, t_ns, event, outcome, reason, _ = item
            episode.writer.write(self.events_topic, t_ns, event)
            summary = {"episode_index": episode.index, "path": str(episode.path), "instruction": episode.instruction,
                       "outcome": outcome, "reason": reason, "duration_s": (t_ns - episode.start_ns) / 1e9,
                       "topics": {t: s.summary() for t, s in sorted(episode.stats.items())}}
            episode.writer.set_metadata("outcome", outcome)
            episode.writer.set_metadata("success", str(outcome == "success").lower())
            episode.writer.set_metadata("duration_s", f"{summary['duration_s']:.3f}")
            episode.writer.set_metadata("stop_reason", reason)
            episode.writer.set_metadata("topic_stats", json.dumps(summary["topics"], sort_keys=True))
            episode.writer.close()
            (episode.path / INCOMPLETE_MARKER).unlink()
            if outcome == "discarded":
                shutil.rmtree(episode.path)
            else:
                self.finished.append(summary)

    # -- the live line
    def status(self, t_ns: int) -> dict:
        """Snapshot for the live line and the ~/status topic."""
        with self._lock:
            episode = self._episode
            out = {"recording": episode is not None, "episode_index": self.episode_index,
                   "free_gb": round(self._free_space(self.directory) / 1e9, 2),
                   "queue_mb": round(self._queued_bytes / 1e6, 2), "episodes_done": len(self.finished)}
            if episode is not None:
                out.update(instruction=episode.instruction, duration_s=round((t_ns - episode.start_ns) / 1e9, 2),
                           topics={t: {**s.summary(), "rate_hz": round(s.rate_hz(t_ns), 2)}
                                   for t, s in sorted(episode.stats.items())})
            return out


def status_line(status: dict, width: int = 160) -> str:
    """One terminal line: episode, duration, per-topic rate [Hz] and drops, free disk [GB]."""
    if not status["recording"]:
        text = (f"idle | next episode {status['episode_index']} | {status['episodes_done']} recorded | "
                f"disk {status['free_gb']:.1f} GB free | s=start q=quit")
    else:
        parts = []
        for topic, s in status["topics"].items():
            lost = s["drops"] + s["refused"]
            parts.append(f"{_short(topic)} {s['rate_hz']:.0f}Hz" + (f" DROP {lost}" if lost else ""))
        text = (f"REC ep {status['episode_index']} {status['duration_s']:.1f}s | " + " | ".join(parts)
                + f" | disk {status['free_gb']:.1f} GB | queue {status['queue_mb']:.0f} MB")
    return text if len(text) <= width else text[:width - 1] + "~"


def _short(topic: str) -> str:
    """/camera/front/color/image_raw -> camera/front; /hybridvla/fr3/arm_state -> fr3/arm_state."""
    parts = [p for p in topic.split("/") if p and p not in ("color", "image_raw", "hybridvla")]
    return "/".join(parts[-2:]) if parts else topic
