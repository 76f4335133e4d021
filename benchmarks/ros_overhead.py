"""ROS overhead of the policy node and its sustained control rate (figures, not a test).

The AgileX graph with three cameras: three camera_node processes (video backend, 640x480 rgb8 at 30 Hz),
policy_node with config/policy_agilex.yaml and a tiny random-weight checkpoint, and this process as the
two arm bridges (ArmState at 10 Hz, ArmTargets received). Per control step:
  end-to-end  = target received - stamp of the newest input the step used (a camera frame's capture time),
  ROS overhead = end-to-end - predict_total - input_wait, where input_wait is the time that input waited in
                 the node for the control tick (a consequence of sampling at the control rate, not overhead).
What remains: image conversion + DDS to the node, decoding, observation, target math, messages, DDS out.

    .venv/bin/python benchmarks/ros_overhead.py [--rates 10 30] [--seconds 20] [--max-image-age 0.5]
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "test" / "nodes"))

import rclpy  # noqa: E402
import yaml  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402

from conftest import CONFIG, NodeProcess, make_checkpoint  # noqa: E402
from hybridvla_msgs.msg import ArmState, ArmTarget, PolicyAction  # noqa: E402
from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS, arrays_to_pose  # noqa: E402


class Bridges(Node):
    def __init__(self, params: dict, state_rate_hz: float):
        super().__init__("overhead_bench")
        self.arms = params["arm_names"]
        self.state_stamps: set[int] = set()  # ns, to tell steps whose newest input was a state
        self.targets: list[tuple[float, ArmTarget]] = []  # (received, ROS time [s]) of the first arm's targets
        self.actions: dict[int, PolicyAction] = {}  # header stamp [ns] -> PolicyAction
        self.state_pubs = [self.create_publisher(ArmState, t, COMMAND_QOS) for t in params["state_topics"]]
        self.create_subscription(ArmTarget, params["target_topics"][0], self._on_target, COMMAND_QOS)
        self.create_subscription(PolicyAction, params["policy_action_topic"], self._on_action, EVENT_QOS)
        self.create_timer(1.0 / state_rate_hz, self._publish_states)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_target(self, msg: ArmTarget) -> None:
        self.targets.append((self._now(), msg))

    def _on_action(self, msg: PolicyAction) -> None:
        self.actions[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg

    def _publish_states(self) -> None:
        now = self.get_clock().now()
        stamp = now.to_msg()
        self.state_stamps.add(now.nanoseconds)
        for arm, pub in zip(self.arms, self.state_pubs):
            msg = ArmState(arm=arm, pose=arrays_to_pose([0.3, 0.0, 0.2], [1.0, 0.0, 0.0, 0.0]), gripper=1.0)
            msg.header.stamp, msg.header.frame_id = stamp, f"{arm}_base"
            pub.publish(msg)


def frames(folder: Path, width: int, height: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def run(rate_hz: float, seconds: float, checkpoint: Path, folder: Path, max_image_age: float | None) -> None:
    params = yaml.safe_load((CONFIG / "policy_agilex.yaml").read_text())["policy"]["ros__parameters"]
    cameras = [NodeProcess("camera_node", CONFIG / "cameras_agilex.yaml", name,
                           {"backend": "video", "path": folder, "fps": 30.0})
               for name in yaml.safe_load((CONFIG / "cameras_agilex.yaml").read_text())]
    policy = NodeProcess("policy_node", CONFIG / "policy_agilex.yaml", None,
                         {"checkpoint": checkpoint, "instruction": "hand the block over", "start_enabled": "true",
                          "control_rate_hz": float(rate_hz), "device": "cpu",
                          **({"max_image_age_s": max_image_age} if max_image_age else {})})
    bridges = Bridges(params, state_rate_hz=10.0)
    executor = SingleThreadedExecutor()
    executor.add_node(bridges)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        policy.wait_for("policy ready", timeout=120)
        deadline = time.monotonic() + 60
        while not bridges.targets and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)  # settle
        start = bridges._now()
        time.sleep(seconds)
        window = [(r, m) for r, m in list(bridges.targets) if r >= start]
    finally:
        for process in [policy, *cameras]:
            process.stop()
        executor.shutdown()
        bridges.destroy_node()
    e2e, overhead, predict, wait, internal, state_newest = [], [], [], [], [], 0
    for received, target in window:
        key = target.header.stamp.sec * 10**9 + target.header.stamp.nanosec
        action = bridges.actions.get(key)
        if action is None:
            continue
        if any(abs(key - s) < 1000 for s in bridges.state_stamps):
            state_newest += 1  # newest input was an arm state, not a frame: not an observation-to-target sample
            continue
        stages = dict(zip(action.stage_names, action.stage_ms))
        latency = (received - key * 1e-9) * 1000.0
        e2e.append(latency)
        predict.append(stages["predict_total"])
        wait.append(stages["input_wait"])
        internal.append(stages["observation"] + stages["targets"])
        overhead.append(latency - stages["predict_total"] - stages["input_wait"])
    skips = [line.split("no action this step: ", 1)[1] for line in policy.lines if "no action this step" in line]
    times = np.array([r for r, _ in window])
    sustained = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    med = lambda v: f"{np.median(v):6.2f}"  # noqa: E731
    p90 = lambda v: f"{np.percentile(v, 90):6.2f}"  # noqa: E731
    age = max_image_age or params["max_image_age_s"]
    print(f"\nrequested {rate_hz:g} Hz, 3 cameras 640x480 @ 30 Hz, max image age {age:g} s, "
          f"{len(window)} targets in {seconds:g} s")
    print(f"  sustained control rate      {sustained:6.2f} Hz ({100 * sustained / rate_hz:.0f} % of requested)")
    if skips:
        print(f"  skipped-step warnings (at most 1/s): {len(skips)}, e.g. {skips[-1]}")
    if not e2e:
        print("  no frame-stamped steps to measure")
        return
    print(f"  samples                     {len(e2e)} (+{state_newest} steps whose newest input was a state)")
    print("                               median    p90  [ms]")
    print(f"  end-to-end frame->target    {med(e2e)} {p90(e2e)}")
    print(f"  predict_total               {med(predict)} {p90(predict)}")
    print(f"  input_wait (until the tick) {med(wait)} {p90(wait)}")
    print(f"  ROS overhead                {med(overhead)} {p90(overhead)}   (goal: median <= 5 ms)")
    print(f"  in-node observation+targets {med(internal)} {p90(internal)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0], help="requested control rates [Hz]")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per rate [s]")
    parser.add_argument("--max-image-age", type=float, default=None,
                        help="override max_image_age_s [s] (default: config/policy_agilex.yaml)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = make_checkpoint(tmp / "ckpt", ("high", "left_wrist", "right_wrist"), 14)
        (tmp / "frames").mkdir()
        folder = frames(tmp / "frames", 640, 480)
        rclpy.init()
        try:
            for rate in args.rates:
                run(rate, args.seconds, checkpoint, folder, args.max_image_age)
        finally:
            rclpy.shutdown()


if __name__ == "__main__":
    main()
