"""Every hybridvla message type crosses Fast DDS between two processes with every field intact, and
the services answer across processes."""
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.node import Node  # noqa: E402

import hybridvla_msgs.msg as msgs  # noqa: E402
from hybridvla_msgs.srv import EpisodeControl, SetInstruction  # noqa: E402
from msg_fill import fill  # noqa: E402

HELPER = Path(__file__).parent / "helpers" / "echo_peer.py"
TYPES = ["ArmTarget", "ArmState", "PolicyAction", "GuardEvent", "EpisodeEvent"]


@pytest.fixture(scope="module")
def peer():
    proc = subprocess.Popen([sys.executable, str(HELPER)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout.readline().strip() == "echo peer ready"
    rclpy.init()
    node = Node("hvtest_client")
    yield node
    node.destroy_node()
    rclpy.shutdown()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # a helper that will not stop is not what this module tests
        proc.kill()
        proc.wait()


def _spin_until(node, done, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    return done()


@pytest.mark.ros
@pytest.mark.parametrize("type_name", TYPES)
def test_message_round_trip(peer, type_name):
    from echo_peer import QOS

    cls = getattr(msgs, type_name)
    sent = fill(cls(), random.Random(type_name))
    received = []
    sub = peer.create_subscription(cls, f"/hvtest/out/{type_name}", received.append, QOS)
    pub = peer.create_publisher(cls, f"/hvtest/in/{type_name}", QOS)
    try:
        pub.publish(sent)
        assert _spin_until(peer, lambda: received), f"no {type_name} came back over DDS"
        got = received[0]
        for field in cls.get_fields_and_field_types():
            assert getattr(got, field) == getattr(sent, field), f"{type_name}.{field} changed in transit"
        assert got == sent
    finally:
        peer.destroy_subscription(sub)
        peer.destroy_publisher(pub)


def _call(node, srv_type, name, request):
    client = node.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=20.0), f"service {name} not found"
        future = client.call_async(request)
        assert _spin_until(node, future.done), f"no answer from {name}"
        return future.result()
    finally:
        node.destroy_client(client)


@pytest.mark.ros
def test_set_instruction_service(peer):
    ok = _call(peer, SetInstruction, "/hvtest/set_instruction", SetInstruction.Request(instruction="put the red block in the blue bowl"))
    assert ok.success and ok.message == "instruction set: put the red block in the blue bowl"
    refused = _call(peer, SetInstruction, "/hvtest/set_instruction", SetInstruction.Request(instruction="  "))
    assert not refused.success and refused.message == "empty instruction"


@pytest.mark.ros
def test_episode_control_service(peer):
    answer = _call(peer, EpisodeControl, "/hvtest/episode_control",
                   EpisodeControl.Request(command=EpisodeControl.Request.STOP_FAILURE, instruction="lift the ball"))
    assert answer.success and answer.episode_index == EpisodeControl.Request.STOP_FAILURE
    assert answer.message == "lift the ball"
