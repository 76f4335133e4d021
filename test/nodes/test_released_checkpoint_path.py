"""The README's path from a downloaded reference checkpoint to the robot, end to end, with a tiny stand-in: a .pt in
the reference's layout (generated from the manifest's key names at tiny sizes, random weights), imported with
`hybridvla import-checkpoint` as the README says, then served by policy_node in the simulated lab (sim_lab +
franka_bridge with the shipped parameter files, the policy file with the README's edits for a front-only
checkpoint). The policy runs the reference preset by default and its targets pass the bridge's guards."""
import math
import subprocess
import threading
import time

import numpy as np
import pytest
import torch
import yaml

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("mujoco")
pytest.importorskip("franka_msgs.action", reason="franka_msgs stand-in not built: run make setup")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from hybridvla_core.actions import DatasetStatistics, save_dataset_statistics  # noqa: E402
from hybridvla_core.model.presets import tiny_reference  # noqa: E402
from hybridvla_core.model.reference_manifest import random_reference_payload, reference_manifest  # noqa: E402
from hybridvla_msgs.msg import ArmTarget, PolicyAction  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS  # noqa: E402
from vendor_interfaces import CRISP_FR3_BASE_FRAME  # noqa: E402

from node_process import BIN, CONFIG, NodeProcess  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
INSTRUCTION = "put the red block in the green bowl"


def reference_run(folder):
    """What the authors' training run leaves: checkpoints/step-...pt and dataset_statistics.json."""
    spec, config = tiny_reference("7b-like", views=("front",))
    (folder / "checkpoints").mkdir(parents=True)
    pt = folder / "checkpoints" / "step-010000-epoch-300-loss=0.0100.pt"
    torch.save(random_reference_payload(reference_manifest(spec), seed=3), pt)
    rng = np.random.default_rng(0)
    actions = rng.normal(scale=0.01, size=(500, 7))  # small deltas [m] and angles [rad]; gripper column below
    actions[:, 6] = rng.integers(0, 2, 500)
    save_dataset_statistics(folder / "dataset_statistics.json",
                            {"rlbench": DatasetStatistics.from_samples(actions, actions, 10)})
    (folder / "model.yaml").write_text(yaml.safe_dump(config))
    return pt


class Watcher(Node):
    def __init__(self):
        super().__init__("released_checkpoint_watcher")
        self.targets, self.actions, self.commands = [], [], []
        self.create_subscription(ArmTarget, "/hybridvla/fr3/target", self.targets.append, COMMAND_QOS)
        self.create_subscription(PolicyAction, "/hybridvla/policy_action", self.actions.append, EVENT_QOS)
        self.create_subscription(PoseStamped, "/target_pose", self.commands.append, qos_profile_sensor_data)

    def enable(self, service: str, timeout: float = 60.0) -> str:
        """Enable as an operator would; a bridge refuses until the lab's measured state has reached it."""
        client = self.create_client(SetBool, service)
        assert client.wait_for_service(timeout_sec=timeout), f"{service} did not appear"
        deadline = time.monotonic() + timeout
        while True:
            future = client.call_async(SetBool.Request(data=True))
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert future.done(), f"{service} did not answer"
            if future.result().success or time.monotonic() > deadline:
                return future.result().message if not future.result().success else ""
            time.sleep(0.5)


def wait_until(predicate, timeout, processes):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        for process in processes:
            assert process.process.poll() is None, f"{' '.join(process.command)} exited:\n{process.output}"
        time.sleep(0.1)
    return False


def test_imported_reference_checkpoint_drives_the_simulated_fr3(tmp_path):
    pt = reference_run(tmp_path / "run")
    checkpoint = tmp_path / "hybridvla-tiny"
    imported = subprocess.run(
        [str(BIN / "hybridvla"), "import-checkpoint", str(pt), "--model-config", str(tmp_path / "run/model.yaml"),
         "--statistics", str(tmp_path / "run/dataset_statistics.json"), "--output", str(checkpoint)],
        capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stdout + imported.stderr

    rclpy.init()
    watcher = Watcher()
    executor = SingleThreadedExecutor()
    executor.add_node(watcher)
    threading.Thread(target=executor.spin, daemon=True).start()
    sim = NodeProcess("sim_lab", CONFIG / "sim_franka.yaml", None, {"use_sim_time": "true"})
    bridge = NodeProcess("franka_bridge", CONFIG / "franka.yaml", None, {"use_sim_time": "true"})
    # The README's edits of config/policy_franka.yaml for a front-only checkpoint, plus what
    # sim_franka.launch.py sets (simulation time, the simulated cameras' 15 Hz frames).
    policy = NodeProcess("policy_node", CONFIG / "policy_franka.yaml", "policy", {
        "checkpoint": str(checkpoint), "instruction": f'"{INSTRUCTION}"', "view_names": "[front]",
        "image_topics": "[/camera/front/color/image_raw]", "use_sim_time": "true", "max_image_age_s": "0.25"})
    processes = [sim, bridge, policy]
    try:
        policy.wait_for("policy ready", timeout=180)
        ready = next(line for line in policy.lines if "policy ready" in line)
        # config.json from the import carries the reference's settings: they run without a preset named.
        assert "preset=checkpoint ar_schedule=reference theta=0.966667" in ready, ready
        assert watcher.enable("/franka_bridge/enable") == ""
        assert watcher.enable("/policy/enable") == ""
        assert wait_until(lambda: len(watcher.targets) >= 5 and len(watcher.commands) >= 5, 120, processes), \
            f"targets {len(watcher.targets)}, bridge commands {len(watcher.commands)}\n{policy.output[-3000:]}" \
            f"\n{bridge.output[-3000:]}"
        target = watcher.targets[-1]
        position = [target.pose.position.x, target.pose.position.y, target.pose.position.z]
        assert target.arm == "fr3" and all(math.isfinite(v) for v in position)
        action = watcher.actions[-1]
        assert action.instruction == INSTRUCTION and len(action.action) == 7
        assert len(action.token_confidence) == 7  # the AR branch ran (hybrid mode)
        assert watcher.commands[-1].header.frame_id == CRISP_FR3_BASE_FRAME  # what the bridge sent the controller
    finally:
        for process in reversed(processes):
            process.stop()
        executor.shutdown()
        watcher.destroy_node()
        rclpy.shutdown()
