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
from dataclasses import dataclass, field
from importlib.metadata import version
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

    from hybridvla_core.runtime.kinematics import load_arm
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
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool

    from hybridvla_core.runtime.kinematics import load_arm
    from hybridvla_ros.common import COMMAND_QOS, arrays_to_pose, bridge_executor_class, stamp_s

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
    # Every target sent and every command seen, analysed per window (after the fact: no matching under the lock).
    targets: list[tuple[str, float, np.ndarray]] = []        # (arm, publish time [s, wall], position [m])
    commands: list[tuple[str, float, float, np.ndarray]] = []  # (arm, bridge stamp [s, wall], receipt [s, wall], values)
    # Commands are read with a deep queue so that this Python process never drops one it was late to take.
    deep = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)

    def on_command(arm, msg, values):
        with lock:
            commands.append((arm, stamp_s(msg.header.stamp), time.time(), np.asarray(values, dtype=float)))

    if args.robot == "fr3":
        node.create_subscription(PoseStamped, "/target_pose", lambda m: on_command(
            "fr3", m, (m.pose.position.x, m.pose.position.y, m.pose.position.z)), deep)
    else:
        for arm in arms:
            node.create_subscription(JointState, f"/{arm}/joint_ctrl_single",
                                     lambda m, a=arm: on_command(a, m, m.position), deep)
    target_pubs = {a: node.create_publisher(ArmTarget, f"/hybridvla/{a}/target", COMMAND_QOS) for a in arms}
    enable = node.create_client(SetBool, f"/{'franka' if args.robot == 'fr3' else 'agilex'}_bridge/enable")
    executor = SingleThreadedExecutor()
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
              f"{args.target_hz:g} Hz per arm, {args.seconds:g} s in {args.window:g} s windows; the bridge runs "
              f"{bridge_executor_class().__name__} (rclpy {version('rclpy')})")
        print(HEADER)
        start, wall_start = time.monotonic(), time.time()
        window_start, cpu_start, steal_start = wall_start, cpu_seconds(bridge.pid), cpu_times()
        cpu_first, steal_first = cpu_start, steal_start
        rows, k = [], 0
        next_at = start
        while time.monotonic() - start < args.seconds:
            for arm in arms:
                position, quaternion = base[arm]
                # Within every guard (up to 8 mm along x, 1 cm along y around the measured pose), unique per target
                # (the FR3's command carries the guarded position: that is how a command is matched to its target).
                p = position + np.array([0.002 * (k % 5), 1e-6 * (k % 10000), 0.0])
                msg = ArmTarget(arm=arm, pose=arrays_to_pose(p, quaternion), gripper=1.0, confidence=1.0)
                msg.header.stamp = node.get_clock().now().to_msg()
                msg.header.frame_id = "base" if arm == "fr3" else f"{arm}_base_link"
                with lock:
                    targets.append((arm, stamp_s(msg.header.stamp), p))
                target_pubs[arm].publish(msg)
            k += 1
            next_at += 1.0 / args.target_hz
            time.sleep(max(0.0, next_at - time.monotonic()))
            if time.time() - window_start >= args.window:
                now, cpu, steal = time.time(), cpu_seconds(bridge.pid), cpu_times()
                rows.append(report(f"{now - wall_start:6.0f} s", 100 * (cpu - cpu_start) / (now - window_start),
                                   steal_share(steal_start, steal), analyse(args.robot, arms, targets, commands,
                                                                            lock, window_start, now)))
                window_start, cpu_start, steal_start = now, cpu, steal
        time.sleep(0.5)
        end, cpu_end, steal_end = time.time(), cpu_seconds(bridge.pid), cpu_times()
        print("-" * len(HEADER))
        result = analyse(args.robot, arms, targets, commands, lock, wall_start, end - 0.5)
        whole = report("all", 100 * (cpu_end - cpu_first) / (end - wall_start), steal_share(steal_first, steal_end),
                       result)
        print(f"targets: {result.commanded} commanded, {result.superseded} superseded (a newer target reached the "
              f"bridge first; it passes on the newest), {result.lost} without a command; the bridge's longest gap "
              f"between two commands {result.longest_gap * 1000:.0f} ms (its {args.robot} output runs at 50 Hz)")
        if len(result.per_arm) > 1:
            print("per arm, p50 / p99 ms: " + ", ".join(
                f"{arm} {np.percentile(v, 50) * 1000:.2f} / {np.percentile(v, 99) * 1000:.2f}"
                for arm, v in result.per_arm.items()))
        if len(rows) >= 2:
            print(f"median latency growth, first -> last window: {rows[-1][2] - rows[0][2]:+.2f} ms; "
                  f"CPU {rows[0][0]:.1f} -> {rows[-1][0]:.1f} %")
        print(f"goal (issue 27): CPU < 30 % of a core, p99 < 5 ms, no growth -> CPU {whole[0]:.1f} %, "
              f"p99 {whole[3]:.2f} ms (in the bridge), {whole[1]:.0f} % of the machine's CPU time stolen by its host")
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


HEADER = (f"{'window':>8s} {'bridge CPU %':>13s} {'steal %':>8s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'delivered p99':>14s} {'targets':>8s}")


@dataclass
class Window:
    latencies: list       # s: target publish -> the bridge's command publish (both stamps on this machine's clock)
    delivered: list       # s: target publish -> the command's receipt in this process (adds DDS + this process)
    commanded: int
    superseded: int
    lost: int
    longest_gap: float    # s between two consecutive commands of an arm (a stall of the bridge)
    per_arm: dict = field(default_factory=dict)  # arm -> latencies (s): a step's second arm waits for the first


def analyse(robot: str, arms: list, targets: list, commands: list, lock, t0: float, t1: float) -> Window:
    """Match each target published in [t0, t1) to the first command that carries it.

    fr3: the first command whose position equals the target's (1 um: within the limits the guards pass it on
    unchanged). agilex: a joint command that differs from the one before carries the newest target published
    before it went out (the bridge passes on the newest; consecutive targets differ by 2 mm, so do their joints)."""
    with lock:
        targets, commands = list(targets), list(commands)
    result = Window([], [], 0, 0, 0, 0.0)
    for arm in arms:
        sent_t = np.array([t for a, t, _ in targets if a == arm])
        sent_p = np.array([p for a, _, p in targets if a == arm]).reshape(-1, 3)
        mine = sorted((s, r, v) for a, s, r, v in commands if a == arm)
        if not mine or not len(sent_t):
            continue
        stamps = np.array([s for s, _, _ in mine])
        receipts = np.array([r for _, r, _ in mine])
        values = np.array([v for _, _, v in mine])
        inside = (stamps[1:] >= t0) & (stamps[1:] < t1)
        if inside.any():
            result.longest_gap = max(result.longest_gap, float(np.diff(stamps)[inside].max()))
        carried = np.full(len(sent_t), -1)  # index of the command that carries each target
        if robot == "fr3":
            for i, (t, p) in enumerate(zip(sent_t, sent_p)):
                lo, hi = np.searchsorted(stamps, [t, t + 5.0])
                hits = np.nonzero(np.abs(values[lo:hi] - p).max(axis=1) < 1e-6)[0]
                if len(hits):
                    carried[i] = lo + hits[0]
        else:
            changed = [0] + [j for j in range(1, len(mine)) if not np.allclose(values[j], values[j - 1])]
            for j in changed:
                i = int(np.searchsorted(sent_t, stamps[j], side="right")) - 1
                if i >= 0 and carried[i] < 0:
                    carried[i] = j
        matched = np.nonzero(carried >= 0)[0]
        last_matched = matched.max() if len(matched) else -1
        for i in np.nonzero((sent_t >= t0) & (sent_t < t1))[0]:
            if carried[i] >= 0:
                result.commanded += 1
                result.latencies.append(stamps[carried[i]] - sent_t[i])
                result.per_arm.setdefault(arm, []).append(stamps[carried[i]] - sent_t[i])
                result.delivered.append(receipts[carried[i]] - sent_t[i])
            elif i < last_matched:
                result.superseded += 1
            else:
                result.lost += 1
    return result


def cpu_times() -> list[int]:
    """The machine's CPU time counters (/proc/stat: user nice system idle iowait irq softirq steal)."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]


def steal_share(before: list[int], after: list[int]) -> float:
    """% of the machine's CPU time its host took for others (a virtual machine's 'steal')."""
    d = [b - a for a, b in zip(before, after)]
    return 100.0 * d[7] / max(1, sum(d))


def report(label: str, cpu: float, steal: float, w: Window) -> tuple[float, float, float, float]:
    def pct(values, q):
        return float(np.percentile(values, q)) * 1000 if values else float("nan")
    p50, p99 = pct(w.latencies, 50), pct(w.latencies, 99)
    print(f"{label:>8s} {cpu:13.1f} {steal:8.1f} {p50:8.2f} {p99:8.2f} {pct(w.delivered, 99):14.2f} "
          f"{w.commanded:8d}")
    return cpu, steal, p50, p99


if __name__ == "__main__":
    sys.exit(main())
