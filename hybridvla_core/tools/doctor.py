"""`hybridvla doctor`: what is installed and what works, one line each."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os


CHECKS = [
    ("torch", "model, training, inference"),
    ("transformers", "language models and vision towers"),
    ("safetensors", "checkpoints"),
    ("mujoco", "simulated lab"),
    ("rosbags", "reading and writing bags"),
    ("rclpy", "ROS 2 nodes"),
    ("hybridvla_msgs.msg", "hybridvla messages (colcon build of hybridvla_msgs)"),
    ("pyrealsense2", "RealSense camera backend (optional)"),
    ("pyorbbecsdk", "Orbbec camera backend (optional)"),
    ("piper_sdk", "Piper over CAN (optional)"),
    ("pylibfranka", "direct libfranka backend (optional)"),
]


def add_arguments(parser) -> None:
    parser.add_argument("--gl", action="store_true", help="also try an offscreen MuJoCo render (MUJOCO_GL)")


def run(args) -> int:
    missing_required = 0
    for module, what in CHECKS:
        optional = "(optional)" in what
        try:
            found = importlib.util.find_spec(module.split(".")[0]) is not None
            if found and "." in module:
                importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - report any import failure as a line
            found, what = False, f"{what}: {exc}"
        version = ""
        if found:
            try:
                version = importlib.metadata.version(module.split(".")[0].replace("_", "-"))
            except Exception:  # noqa: BLE001
                version = ""
        mark = "ok " if found else ("-- " if optional else "MISSING")
        missing_required += (not found) and not optional
        print(f"{mark:8s}{module:22s}{version:14s}{what}")
    if args.gl:
        gl = os.environ.get("MUJOCO_GL", "egl")
        os.environ["MUJOCO_GL"] = gl
        try:
            import mujoco

            model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='1'/></worldbody></mujoco>")
            with mujoco.Renderer(model, 32, 32) as renderer:
                renderer.update_scene(mujoco.MjData(model))
                renderer.render()
            print(f"ok      offscreen render   MUJOCO_GL={gl}")
        except Exception as exc:  # noqa: BLE001
            print(f"MISSING offscreen render   MUJOCO_GL={gl}: {exc}")
            missing_required += 1
    return 1 if missing_required else 0
