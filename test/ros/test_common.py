"""Shared node pieces: parameter validation gives one clear error for a bad value or a bad type."""
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.parameter import Parameter  # noqa: E402

from hybridvla_ros.common import ParameterError, arrays_to_pose, declare_parameters, pose_to_arrays  # noqa: E402


@pytest.fixture
def make_node():
    rclpy.init()
    nodes = []

    def make(**overrides):
        node = rclpy.create_node("hvtest_params", parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown()


SPEC = {"rate_hz": (10.0, lambda v: v > 0, "a rate > 0 Hz"), "name": ("front", None, "a view name")}


def test_valid_and_default_values(make_node):
    assert declare_parameters(make_node(rate_hz=30.0), SPEC) == {"rate_hz": 30.0, "name": "front"}


def test_invalid_value_names_the_parameter(make_node):
    with pytest.raises(ParameterError, match=r"parameter 'rate_hz' = -1.0 is invalid: expected a rate > 0 Hz"):
        declare_parameters(make_node(rate_hz=-1.0), SPEC)


def test_wrong_type_is_a_parameter_error(make_node):
    with pytest.raises(ParameterError, match=r"parameter 'rate_hz' has the wrong type"):
        declare_parameters(make_node(rate_hz=10), SPEC)  # an integer where a float is declared


def test_pose_round_trip():
    position, quaternion = pose_to_arrays(arrays_to_pose([0.1, -0.2, 0.3], [0.0, 1.0, 0.0, 0.0]))
    assert list(position) == [0.1, -0.2, 0.3] and list(quaternion) == [0.0, 1.0, 0.0, 0.0]


class ShutdownBeforeWait(rclpy.executors.SingleThreadedExecutor):
    """A SIGTERM's shutdown landing after run_node's rclpy.ok() check and before the executor builds its wait set
    (the race that ended a sim_lab node in CI with 'failed to initialize wait set')."""

    def spin_once(self, timeout_sec=None):
        rclpy.shutdown()
        super().spin_once(timeout_sec=timeout_sec)


def test_run_node_treats_a_shutdown_racing_the_wait_as_a_normal_stop(capsys):
    from hybridvla_ros.common import run_node

    assert run_node(lambda: rclpy.create_node("hvtest_race"), args=[], executor_factory=ShutdownBeforeWait) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert not rclpy.ok()


@pytest.mark.parametrize("ros_args, named", [
    (["--params-file", "/nonexistent/policy.yaml"], "/nonexistent/policy.yaml"),
    (["--params-file", "BAD_YAML"], "BAD_YAML"),
    (["-p", "checkpoint"], "-p name:=value")])
def test_run_node_refuses_bad_ros_arguments_in_one_line(ros_args, named, tmp_path, capsys):
    """rcl refuses these in rclpy.init, before any node exists: one line and exit 2, never a traceback."""
    from hybridvla_ros.common import run_node

    if "BAD_YAML" in ros_args:
        bad = tmp_path / "bad.yaml"
        bad.write_text("policy:\n  ros__parameters:\n    image_topics: [/a, /b\n")
        ros_args, named = [a.replace("BAD_YAML", str(bad)) for a in ros_args], str(bad)
    built = []
    assert run_node(lambda: built.append(1), args=["node", "--ros-args", *ros_args]) == 2
    err = capsys.readouterr().err
    assert not built and "Traceback" not in err
    ours = [line for line in err.splitlines() if line.startswith("[") and "error:" in line]
    assert len(ours) == 1 and named in ours[0], err
    assert not rclpy.ok()
