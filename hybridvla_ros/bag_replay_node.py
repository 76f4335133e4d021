"""bag_replay: publishes a bag's recorded topics into the live graph at recorded pace, as the recorded
serialized bytes (raw CDR, never decoded and re-serialized), so that the live policy node can run on recordings.

Publishers are reliable (a reliable publisher also serves best-effort subscribers such as the policy node's
cameras). Leave out the topics the node under test publishes itself (e.g. exclude_topics:
[/hybridvla/fr3/target]), or move everything under topic_prefix.

    ros2 run hybridvla_ros bag_replay --ros-args -p bag:=recordings/episode_0003 -p rate:=1.0
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from hybridvla_core.recording import bags
from hybridvla_ros.common import ParameterError, declare_parameters, run_node
from hybridvla_ros.recorder_node import message_class

PARAMETERS = {
    "bag": ("", lambda v: isinstance(v, str) and Path(v).is_dir(), "an existing bag directory"),
    "topics": (Parameter.Type.STRING_ARRAY, None, "topics to replay (unset = every topic of the bag)"),
    "exclude_topics": (Parameter.Type.STRING_ARRAY, None, "topics not to replay"),
    "topic_prefix": ("", lambda v: v == "" or (v.startswith("/") and not v.endswith("/")),
                     "empty or a namespace like /replay"),
    "rate": (1.0, lambda v: isinstance(v, float) and v > 0, "speed factor > 0 (1.0 = recorded pace)"),
    "loop": (False, lambda v: isinstance(v, bool), "true or false"),
    "start_delay_s": (1.0, lambda v: isinstance(v, float) and v >= 0, "seconds >= 0 for subscribers to connect"),
    "wait_for_subscribers": (0, lambda v: isinstance(v, int) and v >= 0,
                             "start only when every replayed topic has this many subscribers (0 = do not wait)"),
    "queue_depth": (100, lambda v: isinstance(v, int) and v >= 1, "messages per topic, >= 1"),
    "exit_when_done": (True, lambda v: isinstance(v, bool), "true or false"),
}


class BagReplay(Node):
    def __init__(self):
        super().__init__("bag_replay")
        self.p = declare_parameters(self, PARAMETERS)
        problem = bags.bag_problem(self.p["bag"])
        if problem is not None:  # a crashed, cut short or half-copied bag: one line, and what to do
            raise ParameterError(f"parameter 'bag': {problem}")
        summary = bags.topic_summary(self.p["bag"])
        excluded = set(self.p["exclude_topics"] or [])
        wanted = self.p["topics"] or list(summary)
        self.topics = [t for t in wanted if t in summary and t not in excluded]
        absent = [t for t in wanted if t not in summary]
        if not self.topics:  # nothing would be replayed: a typo in topics, or everything excluded
            raise ParameterError(f"parameter 'topics': none of {wanted} is in {self.p['bag']} and not excluded; "
                                 f"the bag has {sorted(summary)}")
        if absent:
            self.get_logger().warn(f"not in the bag, not replayed: {', '.join(absent)}")
        qos = QoSProfile(depth=self.p["queue_depth"], history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE)
        self.publishers_by_topic = {t: self.create_publisher(message_class(summary[t][0]), self.p["topic_prefix"] + t, qos)
                                    for t in self.topics}
        self.counts = {t: 0 for t in self.topics}
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._replay, daemon=True)
        self._thread.start()
        self.create_timer(0.2, self._check_done)

    def _replay(self) -> None:
        while any(pub.get_subscription_count() < self.p["wait_for_subscribers"]
                  for pub in self.publishers_by_topic.values()):
            if self._stop.wait(0.1):
                return
        if self._stop.wait(self.p["start_delay_s"]):
            return
        while True:
            start_wall, first_t = time.monotonic(), None
            for topic, _, t_ns, raw in bags.read_raw(self.p["bag"], self.topics):
                first_t = t_ns if first_t is None else first_t
                delay = start_wall + (t_ns - first_t) / 1e9 / self.p["rate"] - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                self.publishers_by_topic[topic].publish(bytes(raw))
                self.counts[topic] += 1
            self.get_logger().info(f"replayed {sum(self.counts.values())} messages of {len(self.topics)} topics "
                                   f"from {self.p['bag']} in {time.monotonic() - start_wall:.1f} s")
            if not self.p["loop"] or self._stop.is_set():
                break
        self.finished.set()

    def _check_done(self) -> None:
        if self.finished.is_set() and self.p["exit_when_done"]:
            raise KeyboardInterrupt  # leave spin the way Ctrl-C does

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def main(args=None) -> int:
    return run_node(BagReplay, args)


if __name__ == "__main__":
    sys.exit(main())
