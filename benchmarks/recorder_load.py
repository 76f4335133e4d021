"""Recorder load: CPU of the recorder process and message loss with 3 cameras (640x480 rgb8 at 30 Hz) and
arm state at 100 Hz, published from another process over Fast DDS, recorded into one MCAP episode.

    .venv/bin/python benchmarks/recorder_load.py [--duration 120] [--qos sensor|reliable] [--keep DIR]

Prints the publisher's achieved rates, the recorder's CPU (user + system seconds / wall seconds, 100% = one
core), its peak resident memory, the written bag size and rate, and per topic: published, recorded, lost.
--qos sensor publishes the cameras as camera_node does (best effort, depth --camera-depth, default 1) and
the state reliably;
reliable publishes everything reliable with depth 100.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAMERAS = ["front", "wrist", "side"]


def publisher(args) -> None:
    """Child process: publishes for args.duration seconds, then prints a JSON line of counts."""
    import numpy as np
    import rclpy
    from hybridvla_msgs.msg import ArmState
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node("bench_publisher")
    reliable = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    sensor = QoSProfile(depth=args.camera_depth, history=HistoryPolicy.KEEP_LAST,
                        reliability=ReliabilityPolicy.BEST_EFFORT)
    cams = {c: node.create_publisher(Image, f"/camera/{c}/color/image_raw", reliable if args.qos == "reliable" else sensor)
            for c in CAMERAS}
    state = node.create_publisher(ArmState, "/hybridvla/fr3/arm_state", reliable)
    deadline = time.monotonic() + 30
    while any(p.get_subscription_count() == 0 for p in [*cams.values(), state]) and time.monotonic() < deadline:
        time.sleep(0.1)
    print("subscribed", flush=True)
    sys.stdin.readline()  # the episode is open
    frame = np.random.default_rng(0).integers(0, 255, 480 * 640 * 3, dtype=np.uint8)
    images = {}
    for c in CAMERAS:
        im = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
        im.header.frame_id = f"camera_{c}_color_optical_frame"
        im.data = frame.tobytes()
        images[c] = im
    counts = {f"/camera/{c}/color/image_raw": 0 for c in CAMERAS}
    counts["/hybridvla/fr3/arm_state"] = 0
    start = time.monotonic()
    k_cam = k_state = 0
    while True:
        now = time.monotonic() - start
        if now >= args.duration:
            break
        next_cam, next_state = k_cam / 30.0, k_state / 100.0
        wait = min(next_cam, next_state) - now
        if wait > 0:
            time.sleep(wait)
        stamp = node.get_clock().now().to_msg()
        if next_state <= next_cam:
            st = ArmState(arm="fr3")
            st.header.stamp, st.pose.orientation.w = stamp, 1.0
            state.publish(st)
            counts["/hybridvla/fr3/arm_state"] += 1
            k_state += 1
        else:
            for c, pub in cams.items():
                images[c].header.stamp = stamp
                pub.publish(images[c])
                counts[f"/camera/{c}/color/image_raw"] += 1
            k_cam += 1
    elapsed = time.monotonic() - start
    print(json.dumps({"counts": counts, "elapsed": elapsed}), flush=True)
    sys.stdin.readline()
    node.destroy_node()
    rclpy.shutdown()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of recording (default 120)")
    ap.add_argument("--qos", choices=("sensor", "reliable"), default="sensor")
    ap.add_argument("--camera-depth", type=int, default=1, help="history depth of best-effort cameras (1)")
    ap.add_argument("--keep", type=Path, help="keep the bag in this directory")
    ap.add_argument("--publish", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.publish:
        publisher(args)
        return 0
    os.environ.setdefault("ROS_DOMAIN_ID", "77")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    out = args.keep or Path(tempfile.mkdtemp(prefix="recorder_load_"))
    topics = [f"/camera/{c}/color/image_raw" for c in CAMERAS] + ["/hybridvla/fr3/arm_state"]
    params = out / "recorder.yaml"
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    params.write_text(yaml.safe_dump({"recorder": {"ros__parameters": {
        "output_dir": str(out / "bags"), "topics": topics, "expected_hz": [30.0, 30.0, 30.0, 100.0],
        "min_free_gb": 1.0, "keys": "off"}}}))
    env = {**os.environ, "CI": "true"}
    recorder = subprocess.Popen([sys.executable, "-m", "hybridvla_ros.recorder_node", "--ros-args", "--params-file",
                                 str(params)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    pub = subprocess.Popen([sys.executable, __file__, "--publish", "--duration", str(args.duration), "--qos", args.qos,
                            "--camera-depth", str(args.camera_depth)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert pub.stdout.readline().strip() == "subscribed", "the recorder never subscribed"
        import rclpy
        from hybridvla_msgs.srv import EpisodeControl
        from rclpy.node import Node
        from std_msgs.msg import String

        rclpy.init()
        node = Node("bench_control")
        status = {}
        node.create_subscription(String, "/recorder/status", lambda m: status.update(json.loads(m.data)), 10)
        client = node.create_client(EpisodeControl, "/recorder/episode")
        assert client.wait_for_service(timeout_sec=30), "no recorder service"

        def command(kind):
            future = client.call_async(EpisodeControl.Request(command=kind, instruction="benchmark"))
            rclpy.spin_until_future_complete(node, future, timeout_sec=300)
            return future.result()

        command(EpisodeControl.Request.START)
        cpu0, wall0 = cpu_seconds(recorder.pid), time.monotonic()
        pub.stdin.write("go\n")
        pub.stdin.flush()
        result = json.loads(pub.stdout.readline())
        # Until the recorder has taken in everything that is still coming (its counts stop growing for 3 s).
        last, since = None, time.monotonic()
        while time.monotonic() - since < 3.0:
            rclpy.spin_once(node, timeout_sec=0.1)
            counts = {t: v["count"] for t, v in status.get("topics", {}).items()}
            if counts != last:
                last, since = counts, time.monotonic()
        cpu1, wall1 = cpu_seconds(recorder.pid), time.monotonic()
        rss = peak_rss_mb(recorder.pid)
        lag = wall1 - wall0 - result["elapsed"] - 3.0
        command(EpisodeControl.Request.STOP_SUCCESS)
        node.destroy_node()
        rclpy.shutdown()
        pub.stdin.write("quit\n")
        pub.stdin.flush()
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
        pub.wait(timeout=60)
    from hybridvla_core.recording import bags

    bag = sorted((out / "bags").iterdir())[0]
    recorded = {t: n for t, (_, n) in bags.topic_summary(bag).items()}
    stats = json.loads(bags.bag_metadata(bag)["topic_stats"])
    size = sum(f.stat().st_size for f in bag.iterdir())
    print(f"recorder_load: {args.duration:.0f} s requested, published for {result['elapsed']:.1f} s, qos {args.qos} (camera depth {args.camera_depth}), "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"recorder CPU {100 * (cpu1 - cpu0) / (wall1 - wall0):.0f}% of one core, peak RSS {rss:.0f} MB, "
          f"behind the publisher by {max(lag, 0):.1f} s at its end, "
          f"bag {size / 1e9:.2f} GB at {size / 1e6 / result['elapsed']:.0f} MB/s")
    print(f"{'topic':34s} {'published':>9s} {'rate Hz':>8s} {'recorded':>9s} {'lost':>6s} {'lost %':>7s} {'gaps':>5s}")
    for topic, n in result["counts"].items():
        got = recorded.get(topic, 0)
        print(f"{topic:34s} {n:9d} {n / result['elapsed']:8.1f} {got:9d} {n - got:6d} {100 * (n - got) / n:7.2f} "
              f"{stats.get(topic, {}).get('drops', 0):5d}")
    if args.keep is None:
        shutil.rmtree(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
