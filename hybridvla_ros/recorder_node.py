"""recorder: teleoperated demonstrations into one rosbag2 MCAP bag per episode (hybridvla_core.recording).

Subscribes raw (serialized CDR, never decoded) to every configured topic as soon as a publisher appears,
with the publishers' reliability (as `ros2 bag record` does) and a deep queue. Episode control:
  service ~/episode (hybridvla_msgs/srv/EpisodeControl), service ~/set_instruction (SetInstruction),
  terminal keys when run in a terminal (s, enter/space, f, d, i, q; see terminal_keys.KEY_HELP).
Publishes: events_topic (hybridvla_msgs/EpisodeEvent, reliable), ~/status (std_msgs/String, JSON with the
live statistics, every status_period_s).

    ros2 run hybridvla_ros recorder --ros-args --params-file config/record_franka.yaml
"""
from __future__ import annotations

import importlib
import json
import shutil
import sys

from hybridvla_msgs.msg import EpisodeEvent
from hybridvla_msgs.srv import EpisodeControl, SetInstruction
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from hybridvla_core.recording import bags, recorder, terminal_keys
from hybridvla_ros.common import EVENT_QOS, ParameterError, declare_parameters, run_node


def _topic_list(v) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(t, str) and t.startswith("/") for t in v)


PARAMETERS = {
    "output_dir": ("recordings", lambda v: isinstance(v, str) and v != "", "a directory path"),
    "robot": ("", lambda v: isinstance(v, str), "a robot name stored with each episode (fr3, agilex, sim_fr3)"),
    "instruction": ("", lambda v: isinstance(v, str), "the task instruction of the next episodes"),
    "topics": (Parameter.Type.STRING_ARRAY, _topic_list, "a non-empty list of absolute topic names"),
    "expected_hz": (Parameter.Type.DOUBLE_ARRAY, lambda v: v is None or all(x >= 0 for x in v),
                    "rates in Hz (0 = unknown), one per topic, or unset"),
    "events_topic": ("/hybridvla/episode_events", lambda v: isinstance(v, str) and v.startswith("/"),
                     "an absolute topic name"),
    "qos_reliability": ("auto", lambda v: v in ("auto", "reliable", "best_effort"),
                        "auto (match the publishers), reliable or best_effort"),
    "queue_depth": (200, lambda v: isinstance(v, int) and v >= 1, "messages per topic, >= 1"),
    "min_free_gb": (2.0, lambda v: isinstance(v, float) and v >= 0, "GB >= 0"),
    "max_queue_mb": (1024.0, lambda v: isinstance(v, float) and v > 0, "MB > 0 held in memory before refusing"),
    "max_episode_s": (0.0, lambda v: isinstance(v, float) and v >= 0, "seconds, 0 = no limit"),
    # A boolean, so that the natural `keys:=off` works: ROS reads a bare off / on as false / true.
    "keys": (True, lambda v: isinstance(v, bool), "true (terminal keys when stdin is a tty) or false / off"),
    "status_period_s": (1.0, lambda v: isinstance(v, float) and v > 0, "seconds > 0"),
    "compression": (bags.DEFAULT_COMPRESSION,
                    lambda v: isinstance(v, str) and (v in bags.COMPRESSIONS or v in bags.COMPRESSION_ALIASES),
                    "chunk-zstd (MCAP chunk compression, as ros2 bag record -s mcap --storage-preset-profile "
                    "zstd_fast; Foxglove and mcap tools read it), message-zstd (rosbag2 message mode, as ros2 bag "
                    "record --compression-mode message --compression-format zstd; zstd is its old name) or none"),
}


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class Recorder(Node):
    def __init__(self):
        super().__init__("recorder")
        p = declare_parameters(self, PARAMETERS)
        rates = p["expected_hz"] or []
        if rates and len(rates) != len(p["topics"]):
            raise ParameterError(f"parameter 'expected_hz' has {len(rates)} values for {len(p['topics'])} topics")
        self.p = p
        self.topics = [t for t in p["topics"] if t != p["events_topic"]]  # own events are written directly
        self.core = recorder.EpisodeRecorder(
            p["output_dir"], robot=p["robot"], expected_hz=dict(zip(p["topics"], rates)),
            events_topic=p["events_topic"], min_free_bytes=int(p["min_free_gb"] * 1e9),
            max_queue_bytes=int(p["max_queue_mb"] * 1e6), max_episode_s=p["max_episode_s"],
            compression=p["compression"])
        self.instruction = p["instruction"]
        self._subscriptions_by_topic: dict = {}
        self.events = self.create_publisher(EpisodeEvent, p["events_topic"], EVENT_QOS)
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.create_service(EpisodeControl, "~/episode", self._on_episode)
        self.create_service(SetInstruction, "~/set_instruction", self._on_instruction)
        self.create_timer(0.5, self._discover)
        self.create_timer(p["status_period_s"], self._on_status)
        self._quit = False
        self.keys = None
        ok, why = terminal_keys.keys_available()
        if p["keys"] and ok:
            self.keys = terminal_keys.KeyReader(self._on_key)
            self.get_logger().info(terminal_keys.KEY_HELP)
        else:
            self.get_logger().info(f"terminal keys off ({why or 'keys:=off'}); control by service "
                                   f"{self.get_fully_qualified_name()}/episode")
        for path in self.core.incomplete_episodes():
            self.get_logger().warn(f"{path} was left open by a crash; recover it with: hybridvla dataset recover {path}")
        self.get_logger().info(f"recording {len(self.topics)} topics into {p['output_dir']} "
                               f"(compression {p['compression']}), next episode "
                               f"{self.core.next_index}, instruction {self.instruction!r}")
        self._discover()

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    # -- subscriptions, created once a publisher shows its type and QoS
    def _discover(self) -> None:
        if self._quit:
            raise KeyboardInterrupt  # q pressed: leave spin the way Ctrl-C does, close() finishes the episode
        types = dict(self.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subscriptions_by_topic or topic not in types:
                continue
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtype = types[topic][0]
            try:
                cls = message_class(msgtype)
                if msgtype not in bags.typestore().fielddefs:  # the bag needs its definition
                    raise ValueError("no message definition for the bag")
            except (ImportError, AttributeError, ValueError) as exc:
                self.get_logger().error(f"{topic}: message type {msgtype} cannot be recorded here ({exc})")
                self._subscriptions_by_topic[topic] = None
                continue
            reliable = {pub.qos_profile.reliability for pub in publishers} == {ReliabilityPolicy.RELIABLE}
            mode = self.p["qos_reliability"]
            reliability = ReliabilityPolicy.RELIABLE if mode == "reliable" or (mode == "auto" and reliable) \
                else ReliabilityPolicy.BEST_EFFORT
            qos = QoSProfile(depth=self.p["queue_depth"], history=HistoryPolicy.KEEP_LAST, reliability=reliability)
            self._subscriptions_by_topic[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic, m=msgtype: self.core.offer(t, m, self.now_ns(), data), qos, raw=True)
            self.get_logger().info(f"subscribed {topic} [{msgtype}] {reliability.name.lower()}")

    # -- commands
    def command(self, command: str, instruction: str = "") -> recorder.Reply:
        t_ns = self.now_ns()
        if command == "start":
            if instruction.strip():
                self.instruction = instruction
            reply, event = self.core.start(self.instruction, t_ns)
        elif command in ("success", "failure"):
            reply, event = self.core.stop(command, t_ns)
        elif command == "discard":
            reply, event = self.core.discard(t_ns)
        else:
            raise ValueError(f"unknown command {command!r}")
        if event is not None:
            self._publish_event(event)
        log = self.get_logger().info if reply.success else self.get_logger().warn
        log(f"{command}: {reply.message}")
        return reply

    def _publish_event(self, event) -> None:
        # rclpy publishes serialized bytes as they are: the event is built once, by the core.
        self.events.publish(bytes(bags.typestore().serialize_cdr(event, recorder.EPISODE_EVENT)))

    def _on_episode(self, request, response):
        names = {EpisodeControl.Request.START: "start", EpisodeControl.Request.STOP_SUCCESS: "success",
                 EpisodeControl.Request.STOP_FAILURE: "failure", EpisodeControl.Request.DISCARD: "discard"}
        if request.command not in names:
            response.success, response.message = False, f"unknown command {request.command}"
            return response
        reply = self.command(names[request.command], request.instruction)
        response.success, response.message, response.episode_index = reply.success, reply.message, reply.episode_index
        return response

    def _on_instruction(self, request, response):
        if not request.instruction.strip():
            response.success, response.message = False, "empty instruction"
        else:
            self.instruction = request.instruction
            response.success, response.message = True, f"instruction for the next episode: {self.instruction}"
        return response

    def _on_key(self, command: str) -> None:
        if command == "quit":
            self._quit = True
        elif command == "instruction":
            text = self.keys.prompt(f"instruction [{self.instruction}]: ")
            if text:
                self.instruction = text
        else:
            self.command(command)

    # -- the live line
    def _on_status(self) -> None:
        t_ns = self.now_ns()
        stopped = self.core.tick(t_ns)
        if stopped is not None:
            reply, event = stopped
            self._publish_event(event)
            self.get_logger().error(f"episode {reply.episode_index} stopped as failure: {self.core.finished[-1]['reason']}")
        for error in self.core.take_errors():
            self.get_logger().error(f"bag write failed: {error}")
        status = self.core.status(t_ns)
        self.status_pub.publish(String(data=json.dumps(status)))
        if self.keys is not None:
            width = shutil.get_terminal_size((160, 20)).columns
            sys.stderr.write("\r\x1b[2K" + recorder.status_line(status, width - 1))
            sys.stderr.flush()

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()
            sys.stderr.write("\n")
        was_recording = self.core.recording
        self.core.close(self.now_ns())
        if was_recording:
            print(f"[recorder] open episode closed as 'interrupted': {self.core.finished[-1]['path']}",
                  file=sys.stderr, flush=True)


def main(args=None) -> int:
    return run_node(Recorder, args)


if __name__ == "__main__":
    sys.exit(main())
