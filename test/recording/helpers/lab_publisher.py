"""A stand-in for the lab's sensors in another process: cameras and arm state over DDS, driven by stdin.

stdin "run SECONDS" -> publishes SECONDS of data (every camera at --camera-hz, JointState and ArmState at
--state-hz, ArmTarget at --target-hz), waits until every reliable subscriber acknowledged it, and prints
"done <JSON topic -> count>". Header stamps are exact multiples of each stream's period from a base time, so
gaps in them mean lost messages. stdout "ready" once the publishers exist; "quit" or EOF ends it.
"""
import argparse
import json
import sys
import time

import numpy as np
import rclpy
from hybridvla_msgs.msg import ArmState, ArmTarget
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cameras", default="front,wrist")
    ap.add_argument("--camera-hz", type=float, default=15.0)
    ap.add_argument("--state-hz", type=float, default=100.0)
    ap.add_argument("--target-hz", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--best-effort", action="store_true")
    args = ap.parse_args()
    rclpy.init()
    node = Node("lab_publisher")
    qos = QoSProfile(depth=200, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.BEST_EFFORT if args.best_effort else ReliabilityPolicy.RELIABLE)
    cams = {c: node.create_publisher(Image, f"/camera/{c}/color/image_raw", qos) for c in args.cameras.split(",") if c}
    joints = node.create_publisher(JointState, "/joint_states", qos)
    state = node.create_publisher(ArmState, "/hybridvla/fr3/arm_state", qos)
    target = node.create_publisher(ArmTarget, "/hybridvla/fr3/target", qos)
    pixels = np.random.default_rng(0).integers(0, 255, args.height * args.width * 3, dtype=np.uint8).tobytes()
    print("ready", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        duration = float(words[1])
        counts = {}
        base_ns = time.time_ns()

        def stamp(msg, k, hz):
            t = base_ns + int(round(k * 1e9 / hz))
            msg.header.stamp.sec, msg.header.stamp.nanosec = t // 1_000_000_000, t % 1_000_000_000
            return msg

        def send(pub, msg):
            pub.publish(msg)
            counts[pub.topic_name] = counts.get(pub.topic_name, 0) + 1

        streams = [("state", args.state_hz), ("camera", args.camera_hz), ("target", args.target_hz)]
        events = sorted((k / hz, kind, k) for kind, hz in streams for k in range(int(duration * hz)))
        start = time.monotonic()
        for offset, kind, k in events:
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if kind == "state":
                js = stamp(JointState(), k, args.state_hz)
                js.name = [f"fr3_joint{i}" for i in range(1, 8)]
                js.position = [0.01 * k] * 7
                send(joints, js)
                st = stamp(ArmState(), k, args.state_hz)
                st.arm, st.header.frame_id, st.pose.position.x, st.pose.orientation.w = "fr3", "fr3_link0", 0.3, 1.0
                send(state, st)
            elif kind == "camera":
                for cam, pub in cams.items():
                    im = stamp(Image(), k, args.camera_hz)
                    im.header.frame_id = f"camera_{cam}_color_optical_frame"
                    im.height, im.width, im.encoding, im.step = args.height, args.width, "rgb8", args.width * 3
                    im.data = pixels
                    send(pub, im)
            else:
                tg = stamp(ArmTarget(), k, args.target_hz)
                tg.arm, tg.header.frame_id, tg.pose.position.x, tg.pose.orientation.w = "fr3", "fr3_link0", 0.3, 1.0
                tg.source, tg.confidence = ArmTarget.SOURCE_TELEOP, 1.0
                send(target, tg)
        if not args.best_effort:
            for pub in [*cams.values(), joints, state, target]:
                pub.wait_for_all_acked(rclpy.duration.Duration(seconds=30))
        print("done " + json.dumps(counts), flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
