"""policy_node never acts on a frame unlike the one its camera declares (camera_info), over DDS against its own
process. Its own module: the module-scoped graph of test_policy_graph.py (its own policy node publishing targets)
must be gone, or its targets would arrive here."""
import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from hybridvla_ros.common import SENSOR_QOS  # noqa: E402
from test_policy_graph import FakeBridges, policy_parameters  # noqa: E402

from node_process import CONFIG, NodeProcess  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


def test_frames_unlike_their_cameras_declared_size_are_never_acted_on(ros, checkpoints):
    """camera_info declares 64x48; a front camera sending 200x100 frames (a wrong profile) gets no target until its
    frames match (and 1x1 frames never would)."""
    from sensor_msgs.msg import CameraInfo, Image

    params = policy_parameters("franka")
    policy = NodeProcess("policy_node", CONFIG / "policy_franka.yaml", None,
                         {"checkpoint": checkpoints["franka"], "instruction": "pick up the red cube",
                          "start_enabled": "true"})
    bridges = FakeBridges(params)
    sizes = {"front": (200, 100), "wrist": (64, 48)}
    images = {view: bridges.create_publisher(Image, topic, SENSOR_QOS)
              for view, topic in zip(params["view_names"], params["image_topics"])}
    infos = {view: bridges.create_publisher(CameraInfo, topic.rsplit("/", 1)[0] + "/camera_info", SENSOR_QOS)
             for view, topic in zip(params["view_names"], params["image_topics"])}

    def publish():
        stamp = bridges.get_clock().now().to_msg()
        for view, pub in images.items():
            width, height = sizes[view]
            msg = Image(width=width, height=height, encoding="rgb8", step=3 * width, data=bytes(3 * width * height))
            msg.header.stamp = stamp
            pub.publish(msg)
            info = CameraInfo(width=64, height=48)
            info.header.stamp = stamp
            infos[view].publish(info)

    bridges.create_timer(0.05, publish)
    executor = SingleThreadedExecutor()
    executor.add_node(bridges)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        policy.wait_for("policy ready", timeout=90)
        time.sleep(3.0)
        assert bridges.targets["fr3"] == [], "a target from a 200x100 frame its camera declares 64x48"
        sizes["front"] = (64, 48)
        deadline = time.monotonic() + 30
        while not bridges.targets["fr3"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert bridges.targets["fr3"], policy.output
    finally:
        policy.stop()
        executor.shutdown()
        bridges.destroy_node()
