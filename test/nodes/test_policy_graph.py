"""The live graph over Fast DDS, node processes started as the launch files start them (the same console
scripts, the same config/ parameter files, node names from those files): camera_node (video backend on
generated frames) -> policy_node (tiny checkpoint) -> ArmTarget, with this process standing in for the
arm bridges (it publishes ArmState and receives the targets)."""
import math
import shutil
import threading
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from hybridvla_msgs.msg import ArmState, ArmTarget, PolicyAction  # noqa: E402
from hybridvla_msgs.srv import SetInstruction  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS, arrays_to_pose  # noqa: E402

from node_process import CONFIG, NodeProcess  # noqa: E402

pytestmark = pytest.mark.ros


def policy_parameters(setup: str) -> dict:
    return yaml.safe_load((CONFIG / f"policy_{setup}.yaml").read_text())["policy"]["ros__parameters"]


class FakeBridges(Node):
    """Publishes every arm's ArmState at 50 Hz (TCP 0.4, 0, 0.3 m in <arm>_base) and records what arrives."""

    def __init__(self, params: dict):
        super().__init__("fake_bridges")
        self.arms = params["arm_names"]
        self.targets = {arm: [] for arm in self.arms}  # (receive time [s, monotonic], ArmTarget)
        self.actions: list[PolicyAction] = []
        self.state_pubs = [self.create_publisher(ArmState, t, COMMAND_QOS) for t in params["state_topics"]]
        for arm, topic in zip(self.arms, params["target_topics"]):
            self.create_subscription(ArmTarget, topic, lambda m, a=arm: self.targets[a].append((time.monotonic(), m)),
                                     COMMAND_QOS)
        self.create_subscription(PolicyAction, params["policy_action_topic"], self.actions.append, EVENT_QOS)
        self.create_timer(0.02, self._publish_states)

    def _publish_states(self) -> None:
        stamp = self.get_clock().now().to_msg()
        for arm, pub in zip(self.arms, self.state_pubs):
            msg = ArmState(arm=arm, pose=arrays_to_pose([0.4, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0]), gripper=1.0)
            msg.header.stamp, msg.header.frame_id = stamp, f"{arm}_base"
            pub.publish(msg)

    def call(self, srv_type, name, request, timeout=20.0):
        client = self.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not found"
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert future.done(), f"no answer from {name}"
            return future.result()
        finally:
            self.destroy_client(client)


def camera_names(setup: str) -> list[str]:
    return list(yaml.safe_load((CONFIG / f"cameras_{setup}.yaml").read_text()))


def start_camera(setup: str, name: str, folder) -> NodeProcess:
    return NodeProcess("camera_node", CONFIG / f"cameras_{setup}.yaml", name,
                       {"backend": "video", "path": folder, "fps": 30.0})


class Graph:
    def __init__(self, setup: str, checkpoint, folder):
        self.setup, self.folder = setup, folder
        self.params = policy_parameters(setup)
        self.cameras = {name: start_camera(setup, name, folder) for name in camera_names(setup)}
        self.policy = NodeProcess("policy_node", CONFIG / f"policy_{setup}.yaml", None,
                                  {"checkpoint": checkpoint, "instruction": "pick up the red cube",
                                   "start_enabled": "true"})
        self.bridges = FakeBridges(self.params)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.bridges)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    @property
    def period(self) -> float:
        return 1.0 / self.params["control_rate_hz"]

    def targets_since(self, arm: str, t: float) -> list:
        return [(r, m) for r, m in list(self.bridges.targets[arm]) if r >= t]

    def wait_for_targets(self, timeout=90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.bridges.targets[a] for a in self.bridges.arms):
                return
            assert self.policy.process.poll() is None, f"policy_node exited:\n{self.policy.output}"
            time.sleep(0.1)
        raise AssertionError(f"no targets for every arm within {timeout} s; policy output:\n{self.policy.output}")

    def close(self) -> None:
        for process in [self.policy, *self.cameras.values()]:
            process.stop()
        self.executor.shutdown()
        self.bridges.destroy_node()


@pytest.fixture(scope="module")
def ros():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture(scope="module")
def franka(ros, checkpoints, image_folder):
    graph = Graph("franka", checkpoints["franka"], image_folder)
    try:
        graph.wait_for_targets()
        yield graph
    finally:
        graph.close()


def assert_rate(graph: Graph, seconds: float = 3.0) -> None:
    start, actions_before = time.monotonic(), len(graph.bridges.actions)
    time.sleep(seconds)
    requested = graph.params["control_rate_hz"]
    # The node's own step time (its stages, wall ms) says what this machine allowed during the window:
    # on 2 shared cores under a full test run a step can take longer than the period, and then the node
    # acts on the first grid point after each step ends; that is the machine, not the schedule.
    stages = [dict(zip(a.stage_names, a.stage_ms)) for a in graph.bridges.actions[actions_before:]]
    totals = [s["observation"] + s["predict_total"] + s["targets"] for s in stages]
    step_s = float(np.median(totals)) / 1000.0 if totals else 0.0
    achievable = requested / max(1, math.ceil(step_s * requested))
    for arm in graph.bridges.arms:
        times = [r for r, _ in graph.targets_since(arm, start)]
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
        # Never faster than configured (not free-running), and as fast as the steps allow up to it.
        assert rate <= 1.1 * requested, f"{arm}: {rate:.1f} Hz, configured {requested} Hz"
        assert rate >= 0.6 * achievable, \
            f"{arm}: {rate:.1f} Hz, configured {requested} Hz, steps take {step_s * 1000:.0f} ms"
        if step_s < 0.5 * graph.period:  # steps on the period grid (the median: delivery bunches single gaps)
            assert np.median(np.diff(times)) == pytest.approx(graph.period, rel=0.35)


def test_franka_targets_arrive_at_the_configured_rate(franka):
    assert_rate(franka)
    _, target = franka.bridges.targets["fr3"][-1]
    assert target.arm == "fr3" and target.header.frame_id == "fr3_base"
    assert 0.0 <= target.confidence <= 1.0 and target.source in (ArmTarget.SOURCE_ENSEMBLE, ArmTarget.SOURCE_DIFFUSION)
    position = np.array([target.pose.position.x, target.pose.position.y, target.pose.position.z])
    assert np.linalg.norm(position - [0.4, 0.0, 0.3]) < 0.2  # the tiny checkpoint's small deltas on the measured TCP
    action = franka.bridges.actions[-1]
    assert action.mode == "hybrid" and len(action.action) == 7 and len(action.diffusion_action) == 7
    assert len(action.autoregressive_action) == 7 and len(action.token_confidence) == 7
    assert action.instruction == "pick up the red cube" and action.theta == pytest.approx(0.96)
    assert action.action_convention == "translation=delta rotation=absolute_euler(xyz) gripper=1=open"
    assert [t.arm for t in action.targets] == ["fr3"]
    assert {"input_wait", "observation", "prefill", "denoise", "predict_total", "targets"} <= set(action.stage_names)
    assert len(action.stage_ms) == len(action.stage_names) and all(ms >= 0 for ms in action.stage_ms)


def test_instruction_service_changes_the_instruction_used(franka):
    answer = franka.bridges.call(SetInstruction, "/policy/set_instruction",
                                 SetInstruction.Request(instruction="stack the blue cup"))
    assert answer.success and answer.message == "instruction in force: stack the blue cup"
    refused = franka.bridges.call(SetInstruction, "/policy/set_instruction", SetInstruction.Request(instruction=" "))
    assert not refused.success and "stack the blue cup" in refused.message
    start = len(franka.bridges.actions)
    time.sleep(5 * franka.period)
    assert {a.instruction for a in franka.bridges.actions[start + 2:]} == {"stack the blue cup"}


def test_disabled_policy_reports_but_sends_no_targets(franka):
    answer = franka.bridges.call(SetBool, "/policy/enable", SetBool.Request(data=False))
    assert answer.success and answer.message == "disabled: reporting only"
    time.sleep(2 * franka.period)
    start, reports = time.monotonic(), len(franka.bridges.actions)
    time.sleep(8 * franka.period)
    assert franka.targets_since("fr3", start) == []
    assert len(franka.bridges.actions) - reports >= 4  # PolicyAction goes on
    franka.bridges.call(SetBool, "/policy/enable", SetBool.Request(data=True))
    time.sleep(5 * franka.period)
    assert franka.targets_since("fr3", time.monotonic() - 3 * franka.period)


def test_a_stopped_camera_stops_the_targets_within_two_periods(franka):
    camera = franka.cameras["wrist_camera"]
    camera.stop()
    stopped = time.monotonic()
    time.sleep(1.0)
    after = franka.targets_since("fr3", stopped)
    last = after[-1][0] - stopped if after else 0.0
    assert last <= 2 * franka.period, f"targets went on {last * 1000:.0f} ms after the camera stopped"
    assert franka.targets_since("fr3", stopped + 2 * franka.period) == []
    franka.cameras["wrist_camera"] = start_camera("franka", "wrist_camera", franka.folder)
    deadline = time.monotonic() + 30.0
    while not franka.targets_since("fr3", stopped + 1.0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert franka.targets_since("fr3", stopped + 1.0), "targets did not resume with the camera back"


@pytest.mark.parametrize("executable, params, overrides, expected", [
    ("policy_node", "policy_franka.yaml", {"mode": "fast"},
     "[PolicyNode] error: parameter 'mode' = 'fast' is invalid: expected one of hybrid, diffusion, autoregressive"),
    ("policy_node", "policy_franka.yaml", {"ensemble_gripper": "vote"},
     "[PolicyNode] error: parameter 'ensemble_gripper' = 'vote' is invalid: expected one of average, autoregressive, "
     "or empty for the checkpoint's"),
    ("policy_node", "policy_franka.yaml", {"control_rate_hz": "10"},
     "[PolicyNode] error: parameter 'control_rate_hz' has the wrong type: expected Hz in (0, 1000]"),
    ("policy_node", "policy_franka.yaml", {"checkpoint": "/nonexistent"},
     "[PolicyNode] error: parameter 'checkpoint' = '/nonexistent' is invalid: expected a checkpoint directory"),
    ("policy_node", "policy_agilex.yaml", {"checkpoint": "FRANKA"},
     "do not match the checkpoint's views ['front', 'wrist']"),
    ("policy_node", "policy_franka.yaml", {"max_image_age_s": ".inf"},  # would disable the stale-frame check
     "[PolicyNode] error: parameter 'max_image_age_s' = inf is invalid: expected 0 < seconds <= 2.0"),
    ("policy_node", "policy_franka.yaml", {"thetaa": "0.5"},  # a typo: theta would keep its default
     "[PolicyNode] error: unknown parameter(s) for node 'policy': thetaa (did you mean theta?)"),
    ("policy_node", "policy_franka.yaml", {"checkpoint": "DAMAGED"},  # a half-copied model.safetensors
     "model.safetensors: not a readable safetensors file"),
    ("camera_node", "cameras_franka.yaml", {"color_profile": "640x480"},
     "[CameraNode] error: parameter 'color_profile' = '640x480' is invalid: expected WIDTHxHEIGHTxFPS"),
    ("camera_node", "cameras_franka.yaml", {"backend": "video", "path": "/nonexistent"},
     "[CameraNode] error: camera: /nonexistent: no such video file or image folder"),
])
def test_a_bad_parameter_stops_the_node_with_one_clear_line(checkpoints, executable, params, overrides, expected,
                                                            tmp_path):
    base = {"checkpoint": "FRANKA"} if executable == "policy_node" else {}  # as the launch files pass it
    damaged = tmp_path / "damaged"
    if "DAMAGED" in overrides.values():
        shutil.copytree(checkpoints["franka"], damaged)
        weights = damaged / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4096])
    named = {"FRANKA": str(checkpoints["franka"]), "DAMAGED": str(damaged)}
    overrides = {k: named.get(v, v) for k, v in {**base, **overrides}.items()}
    node_name = camera_names("franka")[0] if executable == "camera_node" else None
    process = NodeProcess(executable, CONFIG / params, node_name, overrides)
    code = process.wait(timeout=90)
    errors = [line for line in process.lines if "error" in line.lower()]
    assert code == 2, process.output
    assert len(errors) == 1 and expected in errors[0], process.output
    assert "Traceback" not in process.output

