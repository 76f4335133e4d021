"""bag_replay publishes a bag's messages into the live graph from its own process: the very bytes of the
bag, every message of the chosen topics once, in order and no faster than recorded."""
import subprocess
import sys
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from hybridvla_msgs.msg import ArmState  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from hybridvla_core.recording import bags  # noqa: E402
from hybridvla_core.recording.bags import msg  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]
IMAGE, STATE, TARGET = "/camera/front/color/image_raw", "/hybridvla/fr3/arm_state", "/hybridvla/fr3/target"


def write_bag(path):
    t0 = 1_700_000_000_000_000_000
    rng = np.random.default_rng(0)
    with bags.EpisodeWriter(path, metadata={"instruction": "replay me"}) as w:
        for k in range(150):  # 1.5 s: state at 100 Hz, camera at 15 Hz, target at 10 Hz
            t = t0 + k * 10_000_000
            w.write(STATE, t, msg.arm_state(t, "fr3_link0", "fr3", [0.3, 0.01 * k, 0.4], [1, 0, 0, 0], 1.0, 0.08,
                                            [f"fr3_joint{i}" for i in range(1, 8)], np.zeros(7)))
            if k % 7 == 0:
                w.write(IMAGE, t, msg.image(t, "cam", rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)))
            if k % 10 == 0:
                w.write(TARGET, t, msg.arm_target(t, "fr3_link0", "fr3", [0.3, 0, 0.4], [1, 0, 0, 0], 1.0, 1.0, 3))


def test_replay_publishes_recorded_bytes_at_recorded_pace(tmp_path):
    write_bag(tmp_path / "bag")
    recorded = {}
    for topic, _, t, raw in bags.read_raw(tmp_path / "bag"):
        recorded.setdefault(topic, []).append((t, bytes(raw)))
    rclpy.init()
    node = Node("hvtest_replay_client")
    got = {IMAGE: [], STATE: []}
    qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
    for topic, cls in ((IMAGE, Image), (STATE, ArmState)):
        node.create_subscription(cls, topic, lambda data, t=topic: got[t].append((time.monotonic(), data)), qos, raw=True)
    proc = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.bag_replay_node", "--ros-args",
                             "-p", f"bag:={tmp_path / 'bag'}", "-p", f"exclude_topics:=[{TARGET}]",
                             "-p", "wait_for_subscribers:=1", "-p", "start_delay_s:=0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None or len(got[STATE]) < len(recorded[STATE]):
            assert time.monotonic() < deadline, f"replay incomplete: {[len(v) for v in got.values()]}"
            rclpy.spin_once(node, timeout_sec=0.05)
    finally:
        if proc.poll() is None:
            proc.terminate()
        output = proc.communicate(timeout=30)[0]
        node.destroy_node()
        rclpy.shutdown()
    assert proc.returncode == 0, output
    for topic in (IMAGE, STATE):
        # The same bytes in the same order; DDS pads a serialized message to a multiple of 4 bytes.
        padded = [raw + b"\0" * (-len(raw) % 4) for _, raw in recorded[topic]]
        assert [data for _, data in got[topic]] == padded
    recorded_span = (recorded[STATE][-1][0] - recorded[STATE][0][0]) / 1e9
    assert got[STATE][-1][0] - got[STATE][0][0] >= 0.9 * recorded_span  # paced, not a burst
    assert "replayed 172 messages of 2 topics" in output


def test_topics_none_of_which_is_in_the_bag_stop_the_node_in_one_line(tmp_path):
    """A typo in topics replayed nothing and exited 0, as if the bag had been replayed."""
    write_bag(tmp_path / "bag")
    done = subprocess.run([sys.executable, "-m", "hybridvla_ros.bag_replay_node", "--ros-args",
                           "-p", f"bag:={tmp_path / 'bag'}", "-p", "topics:=[/camera/frnot/color/image_raw]"],
                          capture_output=True, text=True, timeout=60)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, lines
    assert "/camera/frnot/color/image_raw" in lines[0] and IMAGE in lines[0], lines
