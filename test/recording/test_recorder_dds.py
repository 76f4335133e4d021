"""The recorder as its own process records episodes from another process over Fast DDS with zero loss, its
bags open with rosbags and carry their message definitions, and a SIGKILL mid-episode leaves the earlier
episodes intact and the open one marked and recoverable (bags in the default MCAP chunk zstd, which an
independent MCAP reader decodes completely)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from hybridvla_msgs.msg import EpisodeEvent  # noqa: E402
from hybridvla_msgs.srv import EpisodeControl  # noqa: E402
from rclpy.node import Node  # noqa: E402
from mcap.reader import make_reader  # noqa: E402
from mcap_ros2.decoder import DecoderFactory  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from hybridvla_core.recording import bags, recorder, recovery  # noqa: E402

HELPERS = Path(__file__).parent / "helpers"
CAMERAS = ["/camera/front/color/image_raw", "/camera/wrist/color/image_raw"]
STATES = ["/joint_states", "/hybridvla/fr3/arm_state"]
TARGET = "/hybridvla/fr3/target"
EVENTS = "/hybridvla/episode_events"
TOPICS = CAMERAS + STATES + [TARGET, EVENTS]
pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


class Lab:
    """The publisher process, the recorder process and a client node in this process."""

    def __init__(self, tmp_path: Path, name: str):
        self.out = tmp_path / "bags"
        params = tmp_path / "recorder.yaml"
        params.write_text(yaml.safe_dump({"recorder": {"ros__parameters": {
            "output_dir": str(self.out), "robot": "fr3", "topics": TOPICS,
            "expected_hz": [15.0, 15.0, 100.0, 100.0, 10.0, 0.0], "min_free_gb": 0.0, "status_period_s": 0.2}}}))
        env = {**os.environ, "CI": "true"}
        self.publisher = subprocess.Popen([sys.executable, str(HELPERS / "lab_publisher.py")], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True, env=env)
        assert self.publisher.stdout.readline().strip() == "ready"
        self.recorder = subprocess.Popen(
            [sys.executable, "-m", "hybridvla_ros.recorder_node", "--ros-args", "--params-file", str(params)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.node = Node(name)
        self.status = {}
        self.events = []
        self.node.create_subscription(String, "/recorder/status", self._on_status, 10)
        self.node.create_subscription(EpisodeEvent, EVENTS, self.events.append, 50)
        self.client = self.node.create_client(EpisodeControl, "/recorder/episode")
        assert self.client.wait_for_service(timeout_sec=60), "recorder service did not come up"
        # Every topic subscribed before the first episode (the recorder discovers publishers every 0.5 s).
        self.spin_until(lambda: self.node.count_subscribers(CAMERAS[0]) and self.node.count_subscribers(TARGET)
                        and self.node.count_subscribers(STATES[1]), "recorder never subscribed")

    def _on_status(self, msg):
        self.status = json.loads(msg.data)

    def spin_until(self, done, what, timeout=90.0):
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, what
            rclpy.spin_once(self.node, timeout_sec=0.05)

    def call(self, command, instruction=""):
        future = self.client.call_async(EpisodeControl.Request(command=command, instruction=instruction))
        self.spin_until(future.done, f"no answer to command {command}")
        return future.result()

    def publish(self, seconds):
        self.publisher.stdin.write(f"run {seconds}\n")
        self.publisher.stdin.flush()
        line = self.publisher.stdout.readline()
        assert line.startswith("done "), line
        return json.loads(line[5:])

    def wait_received(self, counts):
        """Until the recorder's live statistics show every published message (or fail with the numbers)."""
        def got():
            topics = self.status.get("topics", {})
            return all(topics.get(t, {}).get("count", 0) >= n for t, n in counts.items())
        self.spin_until(got, f"recorder did not receive everything: published {counts}, status {self.status}")

    def close(self):
        self.node.destroy_node()
        self.publisher.stdin.close()
        self.publisher.wait(timeout=30)
        if self.recorder.poll() is None:
            self.recorder.send_signal(signal.SIGINT)
            self.recorder.wait(timeout=30)


@pytest.fixture
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def bag_counts(path):
    with AnyReader([path], default_typestore=bags.typestore()) as reader:
        return {c.topic: c.msgcount for c in reader.connections}, {c.topic: c.msgdef for c in reader.connections}


def decode_with_mcap(mcap_path):
    """topic -> decoded messages in log time order, through the PyPI mcap + mcap_ros2 packages alone (what
    Foxglove-style tools read), never the project's or rosbags' readers."""
    decoded = {}
    with open(mcap_path, "rb") as f:
        for _, channel, _, ros_msg in make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(
                log_time_order=True):
            decoded.setdefault(channel.topic, []).append(ros_msg)
    return decoded


def stamp_ns(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def test_episodes_recorded_without_loss(ros, tmp_path):
    lab = Lab(tmp_path, "hvtest_rec_client")
    try:
        published = []
        instructions = ["put the red block in the blue bowl", "put the green block in the red bowl", "wave"]
        for i, instruction in enumerate(instructions):
            reply = lab.call(EpisodeControl.Request.START, instruction)
            assert reply.success and reply.episode_index == i, reply.message
            counts = lab.publish(2.0)
            lab.wait_received(counts)
            reply = lab.call(EpisodeControl.Request.STOP_FAILURE if i == 1 else EpisodeControl.Request.STOP_SUCCESS)
            assert reply.success, reply.message
            published.append(counts)
        # A discarded episode leaves nothing on disk and its index is used again.
        assert lab.call(EpisodeControl.Request.START, "discard me").episode_index == 3
        lab.publish(0.5)
        assert lab.call(EpisodeControl.Request.DISCARD).success
        assert not lab.call(EpisodeControl.Request.STOP_SUCCESS).success  # nothing open
        lab.spin_until(lambda: len(lab.events) >= 8, "episode events not published live")
    finally:
        lab.close()
    assert lab.recorder.returncode == 0, lab.recorder.stdout.read()
    kinds = [(e.kind, e.episode_index) for e in lab.events]
    assert kinds == [(0, 0), (1, 0), (0, 1), (2, 1), (0, 2), (1, 2), (0, 3), (3, 3)]

    paths = recorder.episode_dirs(lab.out)
    assert [p.name for p in paths] == ["episode_0000", "episode_0001", "episode_0002"]
    for path, counts, instruction in zip(paths, published, instructions):
        assert not recorder.is_incomplete(path)
        in_bag, definitions = bag_counts(path)
        assert {t: n for t, n in in_bag.items() if t != EVENTS} == counts  # every published message, no more
        assert in_bag[EVENTS] == 2
        assert counts[CAMERAS[0]] == 30 and counts[STATES[0]] == 200
        assert "uint32 height" in definitions[CAMERAS[0]].data
        assert "float32 confidence" in definitions[TARGET].data  # the custom type's definition travels along
        meta = bags.bag_metadata(path)
        assert meta["instruction"] == instruction and meta["robot"] == "fr3"
        stats = json.loads(meta["topic_stats"])
        assert all(stats[t]["drops"] == 0 and stats[t]["refused"] == 0 for t in counts)
        # Every message of the episode decodes in an independent MCAP reader, with what lab_publisher sent.
        decoded = decode_with_mcap(path / f"{path.name}.mcap")
        assert {t: len(v) for t, v in decoded.items()} == in_bag
        pixels = np.random.default_rng(0).integers(0, 255, 240 * 320 * 3, dtype=np.uint8).tobytes()
        for cam in CAMERAS:
            frames = decoded[cam]
            assert all((m.height, m.width, m.encoding, bytes(m.data)) == (240, 320, "rgb8", pixels) for m in frames)
            assert [stamp_ns(m.header) - stamp_ns(frames[0].header) for m in frames] == [
                int(round(k * 1e9 / 15.0)) for k in range(len(frames))]
        for k, m in enumerate(decoded[STATES[0]]):
            assert list(m.name) == [f"fr3_joint{i}" for i in range(1, 8)]
            np.testing.assert_allclose(m.position, [0.01 * k] * 7)
        assert all((m.arm, m.header.frame_id, m.pose.position.x) == ("fr3", "fr3_link0", 0.3)
                   for m in decoded[STATES[1]])
        assert all((m.source, m.confidence, m.pose.orientation.w) == (3, 1.0, 1.0) for m in decoded[TARGET])
        assert [(m.kind, m.instruction) for m in decoded[EVENTS]] == [
            (0, instruction), (1 if instruction != instructions[1] else 2, instruction)]
    assert [bags.bag_metadata(p)["outcome"] for p in paths] == ["success", "failure", "success"]
    events = [m.message for m in bags.read_messages(paths[1], [EVENTS])]
    assert [(e.kind, e.instruction) for e in events] == [(0, instructions[1]), (2, instructions[1])]


def test_sigkill_mid_episode_keeps_earlier_episodes(ros, tmp_path):
    lab = Lab(tmp_path, "hvtest_kill_client")
    try:
        assert lab.call(EpisodeControl.Request.START, "first").success
        first = lab.publish(1.0)
        lab.wait_received(first)
        assert lab.call(EpisodeControl.Request.STOP_SUCCESS).success
        assert lab.call(EpisodeControl.Request.START, "second").success
        second = lab.publish(2.0)
        lab.wait_received(second)
        lab.recorder.send_signal(signal.SIGKILL)
        lab.recorder.wait(timeout=30)
    finally:
        lab.close()
    done, open_one = recorder.episode_dirs(lab.out)
    assert not recorder.is_incomplete(done) and recorder.is_incomplete(open_one)
    in_bag, _ = bag_counts(done)
    assert {t: n for t, n in in_bag.items() if t != EVENTS} == first
    assert bags.bag_compression(done) == ("zstd", "chunk")
    # The open episode: its completed chunks come back as a proper bag marked incomplete.
    recovered, count = recovery.recover_episode(open_one)
    assert recovered == open_one and (lab.out / "episode_0001.crashed").is_dir()
    in_bag, _ = bag_counts(recovered)
    meta = bags.bag_metadata(recovered)
    assert meta["outcome"] == "incomplete" and meta["instruction"] == "second"
    assert bags.bag_compression(recovered) == ("zstd", "chunk")
    assert all(m.message.height == 240 for m in bags.read_messages(recovered, [CAMERAS[0]]))
    assert 0 < count == sum(in_bag.values()) <= sum(second.values()) + 1
    assert in_bag[CAMERAS[0]] > 0


@pytest.mark.parametrize("value, starts", [("off", True), ("false", True), ("auto", False)])
def test_keys_off_as_written_on_the_command_line_starts_the_recorder(value, starts, tmp_path):
    """ROS reads a bare `off` as the boolean false: `keys:=off`, the natural spelling, once refused to start."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridvla_ros.recorder_node", "--ros-args", "-p", f"output_dir:={tmp_path}",
         "-p", "min_free_gb:=0.0", "-p", f"topics:=[{TARGET}]", "-p", f"keys:={value}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            lines.append(proc.stdout.readline())
            if "terminal keys off" in lines[-1]:
                break
        text = "".join(lines) + (proc.stdout.read() if proc.poll() is not None else "")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    if starts:
        assert "terminal keys off" in text and "error" not in text, text
    else:
        assert proc.returncode == 2 and "'keys'" in text and "false / off" in text, text
