"""The AgileX graph (three cameras, two arms) over Fast DDS, in a module of its own so that no FR3 graph
runs beside it."""
import pytest

from test_policy_graph import Graph, assert_rate

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def ros():
    rclpy = pytest.importorskip("rclpy")
    rclpy.init()
    yield
    rclpy.shutdown()


def test_agilex_graph_drives_both_arms_at_the_configured_rate(ros, checkpoints, image_folder):
    graph = Graph("agilex", checkpoints["agilex"], image_folder)
    try:
        graph.wait_for_targets()
        assert_rate(graph)
        action = graph.bridges.actions[-1]
        assert len(action.action) == 14 and [t.arm for t in action.targets] == ["left", "right"]
        assert [t.header.frame_id for t in action.targets] == ["left_base", "right_base"]
    finally:
        graph.close()
