"""Load on an arm bridge at the vendor stacks' state rates, through real DDS (figures, not a test).

  fr3:    franka_bridge (config/franka.yaml, gripper off) fed /joint_states and /current_pose at --state-hz each
          (crisp's FR3 demo: 1 kHz each), policy targets at 10 Hz; the controller's /target_pose is read here.
  agilex: agilex_bridge (config/agilex.yaml, backend piper_ros) fed /left|right/joint_states_single at
          --state-hz each (piper_ros: 200 Hz), targets at 10 Hz per arm; /left|right/joint_ctrl_single read here.

Three processes: the bridge, a feeder that only publishes the state topics (a paced loop), and this one (the
policy's targets and the controller's side). Printed per window: the bridge's CPU (% of one core, from
/proc/<pid>/stat), target-to-command latency p50/p99 (ms: a target's publish here -> the first command that
carries it arriving here; same clock), the state rates the feeder achieved; at the end the whole run and the
growth of the median latency from the first to the last window (a growing lag would show there).

    .venv/bin/python benchmarks/bridge_load.py --robot fr3 [--seconds 120] [--state-hz 1000]
    .venv/bin/python benchmarks/bridge_load.py --robot agilex [--seconds 120] [--state-hz 200]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 200)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")

FR3_READY = [0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4]
PIPER_READY = [0.0, 1.2, -1.2, 0.0, 0.9, 0.0]
ARMS = ("left", "right")


def feeder(robot: str, hz: float, seconds: float) -> None:
    """Child process: publish the state topics at hz each, paced on the monotonic clock; print achieved counts."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from sensor_msgs.msg import JointState

    from hybridvla_core.kinematics import load_arm
    from hybridvla_ros.common import COMMAND_QOS, arrays_to_pose

    rclpy.init()
    node = Node("bench_state_feeder")
    pubs = []
    if robot == "fr3":
        position, quaternion = load_arm("fr3").fk(np.array(FR3_READY))
        pose = PoseStamped(pose=arrays_to_pose(position, quaternion))
        pose.header.frame_id = "base"  # crisp's FR3 demo base_frame
        joints = JointState(name=[f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"],
                            position=FR3_READY + [0.02, 0.02])
        pubs = [(node.create_publisher(PoseStamped, "/current_pose", COMMAND_QOS), pose),
                (node.create_publisher(JointState, "/joint_states", COMMAND_QOS), joints)]
    else:
        for arm in ARMS:
            js = JointState(name=[f"joint{i}" for i in range(7)], position=PIPER_READY + [0.03])
            pubs.append((node.create_publisher(JointState, f"/{arm}/joint_states_single", COMMAND_QOS), js))
    time.sleep(2.0)  # discovery
    period, sent = 1.0 / hz, 0
    start = next_at = time.monotonic()
    clock = node.get_clock()
    while time.monotonic() - start < seconds:
        stamp = clock.now().to_msg()
        for pub, msg in pubs:
            msg.header.stamp = stamp
            pub.publish(msg)
        sent += 1
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.05:
            next_at = time.monotonic()  # fell behind: do not burst
    print(f"FEEDER {sent / (time.monotonic() - start):.1f}", flush=True)
    node.destroy_node()
    rclpy.shutdown()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", choices=("fr3", "agilex"), required=True)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--state-hz", type=float, default=None, help="per state topic (default: fr3 1000, agilex 200)")
    parser.add_argument("--target-hz", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=20.0, help="s per printed window")
    parser.add_argument("--feeder", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    hz = args.state_hz or (1000.0 if args.robot == "fr3" else 200.0)
    if args.feeder:
        feeder(args.robot, hz, args.seconds)
        return 0

    import rclpy
    from geometry_msgs.msg import PoseStamped
    from hybridvla_msgs.msg import ArmTarget
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool

    from hybridvla_core.kinematics import load_arm
    from hybridvla_ros.common import COMMAND_QOS, arrays_to_pose

    if args.robot == "fr3":
        module, params, overrides = "hybridvla_ros.franka_bridge_node", "franka.yaml", ["gripper.enabled:=false"]
        arms = ["fr3"]
        base = {"fr3": load_arm("fr3").fk(np.array(FR3_READY))}
    else:
        module, params, overrides = "hybridvla_ros.agilex_bridge_node", "agilex.yaml", []
        arms = list(ARMS)
        chain = load_arm("piper")
        base = {a: chain.fk(np.array(PIPER_READY)) for a in arms}
    command = [sys.executable, "-m", module, "--ros-args", "--params-file", str(ROOT / "config" / params)]
    for o in overrides:
        command += ["-p", o]
    bridge = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
    total = args.seconds + 12.0
    feed = subprocess.Popen([sys.executable, __file__, "--robot", args.robot, "--feeder", "--seconds", str(total),
                             "--state-hz", str(hz)], stdout=subprocess.PIPE, text=True, cwd=ROOT)

    rclpy.init()
    node = Node("bench_policy_and_controller")
    lock = threading.Lock()
    sent: dict[tuple, float] = {}            # (arm, key) -> publish time (monotonic)
    latencies: list[tuple[float, float]] = []  # (publish time, latency s)
    last_joints: dict[str, tuple] = {}
    pending: dict[str, list] = {a: [] for a in arms}   # agilex: targets awaiting their command, in order

    def key(p) -> tuple:
        return tuple(round(float(v), 7) for v in p)

    def on_pose(msg):
        now = time.monotonic()
        k = ("fr3", key((msg.pose.position.x, msg.pose.position.y, msg.pose.position.z)))
        with lock:
            t = sent.pop(k, None)
            if t is not None:
                latencies.append((t, now - t))

    def on_joints(arm, msg):
        now = time.monotonic()
        joints = key(msg.position)
        with lock:
            changed = last_joints.get(arm) != joints
            last_joints[arm] = joints
            if changed and pending[arm]:
                t = pending[arm].pop(0)
                pending[arm].clear()  # superseded targets (none at 10 Hz unless the bridge lags)
                latencies.append((t, now - t))

    if args.robot == "fr3":
        node.create_subscription(PoseStamped, "/target_pose", on_pose, COMMAND_QOS)
    else:
        for arm in arms:
            node.create_subscription(JointState, f"/{arm}/joint_ctrl_single", lambda m, a=arm: on_joints(a, m), COMMAND_QOS)
    target_pubs = {a: node.create_publisher(ArmTarget, f"/hybridvla/{a}/target", COMMAND_QOS) for a in arms}
    enable = node.create_client(SetBool, f"/{'franka' if args.robot == 'fr3' else 'agilex'}_bridge/enable")
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    try:
        assert enable.wait_for_service(timeout_sec=30), "the bridge's ~/enable did not appear"
        deadline = time.monotonic() + 20
        while True:
            response = enable.call(SetBool.Request(data=True))
            if response.success:
                break
            assert time.monotonic() < deadline, f"enable refused: {response.message}"
            time.sleep(0.5)
        print(f"{args.robot}: bridge enabled ({response.message}); state {hz:g} Hz per topic, targets "
              f"{args.target_hz:g} Hz per arm, {args.seconds:g} s in {args.window:g} s windows")
        print(f"{'window':>8s} {'bridge CPU %':>13s} {'p50 ms':>8s} {'p99 ms':>8s} {'targets':>8s}")
        start = time.monotonic()
        window_start, cpu_start = start, cpu_seconds(bridge.pid)
        cpu_first = cpu_start
        rows, k = [], 0
        next_at = start
        while time.monotonic() - start < args.seconds:
            for arm in arms:
                position, quaternion = base[arm]
                # Within every guard (1 mm steps around the measured pose), unique per target.
                p = position + np.array([0.002 * (k % 5), 1e-5 * (k % 1000), 0.0])
                msg = ArmTarget(arm=arm, pose=arrays_to_pose(p, quaternion), gripper=1.0, confidence=1.0)
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.header.frame_id = "base" if arm == "fr3" else f"{arm}_base_link"
                with lock:
                    now = time.monotonic()
                    if args.robot == "fr3":
                        sent[("fr3", key(p))] = now
                    else:
                        pending[arm].append(now)
                target_pubs[arm].publish(msg)
            k += 1
            next_at += 1.0 / args.target_hz
            time.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - window_start >= args.window:
                now, cpu = time.monotonic(), cpu_seconds(bridge.pid)
                with lock:
                    lat = [l for t, l in latencies if window_start <= t < now]
                rows.append(report(f"{now - start:6.0f} s", 100 * (cpu - cpu_start) / (now - window_start), lat))
                window_start, cpu_start = now, cpu
        time.sleep(0.3)
        end, cpu_end = time.monotonic(), cpu_seconds(bridge.pid)
        with lock:
            lat = [l for t, l in latencies if t >= start]
        print("-" * 42)
        whole = report("all", 100 * (cpu_end - cpu_first) / (end - start), lat)
        targets = k * len(arms)
        print(f"commands seen for {len(lat)}/{targets} targets")
        if len(rows) >= 2:
            print(f"median latency growth, first -> last window: {rows[-1][1] - rows[0][1]:+.2f} ms; "
                  f"CPU {rows[0][0]:.1f} -> {rows[-1][0]:.1f} %")
        print(f"goal (issue 27): CPU < 30 % of a core, p99 < 5 ms, no growth -> CPU {whole[0]:.1f} %, "
              f"p99 {whole[2]:.2f} ms")
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
        bridge.send_signal(2)
        try:
            bridge.wait(timeout=10)
        except subprocess.TimeoutExpired:
            bridge.kill()
        out = feed.communicate(timeout=30)[0]
        for line in out.splitlines():
            if line.startswith("FEEDER"):
                print(f"state feeder achieved {float(line.split()[1]):.0f} Hz per topic (asked {hz:g})")
    return 0


def report(label: str, cpu: float, latencies: list[float]) -> tuple[float, float, float]:
    if latencies:
        p50, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 99))
    else:
        p50 = p99 = float("nan")
    print(f"{label:>8s} {cpu:13.1f} {p50:8.2f} {p99:8.2f} {len(latencies):8d}")
    return cpu, p50, p99


if __name__ == "__main__":
    sys.exit(main())
