"""`hybridvla demo` (`make demo`): the trained policy closing the loop through the whole ROS graph.

Starts the real nodes as processes with the launch files' parameter files plus config/demo_fr3.yaml:
sim_lab (config/sim_franka.yaml), franka_bridge (config/franka.yaml), policy_node (config/policy_franka.yaml,
once per mode) and the recorder (one bag per episode). For each mode and held-out seed: set the seed, reset
the lab, start a bag, set the instruction, enable bridge and policy, wait for success or the time limit,
disable, close the bag. Then summary.json, PNG plots and one GIF per mode in the report directory.

    hybridvla demo [--episodes 10] [--seed 100000] [--mode hybrid|diffusion|autoregressive|all]
                   [--checkpoint DIR] [--time-limit 25] [--output DIR] [--domain-id N]

The simulated lab is the FR3's (there is no dual-arm demo checkpoint). Registered in hybridvla_core.cli and
imported only when the subcommand runs.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from hybridvla_core.tools import demo_report as core
from hybridvla_core.runtime.guards import EventKind
from hybridvla_core.modes import MODES
from hybridvla_core.resources import resource_path
from hybridvla_core.sim import episodes as demo_episodes

REPO_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
FR3_CHECKPOINT = "sim_fr3_pick_place"
SOURCE_NAMES = {0: "fused", 1: "diffusion", 2: "autoregressive"}
GUARD_KINDS = {kind.value: kind.name.lower() for kind in EventKind}  # GuardEvent.kind -> name in the summary
LATENCY_STAGES = ("input_wait", "observation", "predict_total", "targets")  # observation in -> target out
GIF_EVERY = 3  # keep every 3rd front frame (15 Hz camera -> 5 fps GIF)
WALL_LIMIT_FACTOR = 10  # an episode longer than this many times its (simulated) time limit in wall time: stuck


def _ros_environment(domain_id: int | None) -> None:
    """DDS on loopback in a domain of its own; set before rclpy loads, inherited by every node."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(domain_id if domain_id is not None else random.randint(101, 215)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
    os.environ.setdefault("MUJOCO_GL", "egl")
    # Several torch/MuJoCo processes share few cores: one thread each avoids them fighting over the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class Processes:
    """The node processes the demo started; stop() ends each of them (SIGINT, then SIGKILL)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, module: str, params: list[str], overrides: dict) -> None:
        cmd = [sys.executable, "-m", module, "--ros-args"]
        for path in params:
            cmd += ["--params-file", path]
        for key, value in overrides.items():
            cmd += ["-p", f"{key}:={json.dumps(value) if isinstance(value, (bool, list)) else value}"]
        log = open(self.log_dir / f"{name}.log", "a")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs)[::-1]:
            self.stop(name)


class Graph:
    """The demo's own ROS node: service clients of the nodes, and what it watches of the loop."""

    def __init__(self, viewer: bool):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from hybridvla_msgs.msg import ArmTarget, GuardEvent, PolicyAction
        from hybridvla_msgs.srv import EpisodeControl, SetInstruction
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool
        from std_srvs.srv import SetBool, Trigger

        from hybridvla_ros.common import COMMAND_QOS, EVENT_QOS, SENSOR_QOS

        rclpy.init()
        self.node = rclpy.create_node("hybridvla_demo")
        n = self.node
        self.lock = threading.Lock()
        self.active = False      # an episode is running: what arrives counts for it
        self.reset_episode()
        self.success = False
        self.success_stamp = 0.0  # wall time of the newest success message
        self.sim_time = 0.0       # s, simulation time: the stamp of the newest /current_pose (50 Hz)
        self.pose: np.ndarray | None = None
        self.frame: np.ndarray | None = None
        self.capture: list[np.ndarray] | None = None  # front frames of the episode being filmed
        self._frame_count = 0
        n.create_subscription(PolicyAction, "/hybridvla/policy_action", self._on_action, EVENT_QOS)
        n.create_subscription(GuardEvent, "/hybridvla/guard_events", self._on_guard, EVENT_QOS)
        n.create_subscription(ArmTarget, "/hybridvla/fr3/target", lambda _m: self._count("arm_targets"), COMMAND_QOS)
        n.create_subscription(PoseStamped, "/target_pose", lambda _m: self._count("bridge_outputs"), COMMAND_QOS)
        n.create_subscription(PoseStamped, "/current_pose", self._on_pose, SENSOR_QOS)
        n.create_subscription(Bool, "/sim_lab/success", self._on_success, COMMAND_QOS)
        n.create_subscription(Image, "/camera/front/color/image_raw", self._on_image, SENSOR_QOS)
        self.clients = {
            "seed": n.create_client(SetParameters, "/sim_lab/set_parameters"),
            "reset": n.create_client(Trigger, "/sim_lab/reset"),
            "bridge": n.create_client(SetBool, "/franka_bridge/enable"),
            "policy": n.create_client(SetBool, "/policy/enable"),
            "instruction": n.create_client(SetInstruction, "/policy/set_instruction"),
            "episode": n.create_client(EpisodeControl, "/recorder/episode"),
        }
        self.types = {"SetBool": SetBool, "Trigger": Trigger, "SetInstruction": SetInstruction,
                      "EpisodeControl": EpisodeControl, "SetParameters": SetParameters}
        # One thread: every callback is short, and rclpy's multi-threaded executor costs CPU the nodes need.
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()
        self.viewer = _Viewer() if viewer else None

    def reset_episode(self) -> None:
        with self.lock:
            self.actions: list[dict] = []
            self.guards: list[str] = []
            self.counts = {"arm_targets": 0, "bridge_outputs": 0}
            self.start_pose: np.ndarray | None = None
            self.travel = 0.0  # m, largest distance of the TCP from where the episode started

    # -- subscriptions
    def _count(self, key: str) -> None:
        with self.lock:
            if self.active:
                self.counts[key] += 1

    def _on_action(self, m) -> None:
        from hybridvla_ros.common import stamp_s

        stages = dict(zip(m.stage_names, (float(v) for v in m.stage_ms)))
        record = {"stamp_s": stamp_s(m.header.stamp), "stages": stages,  # simulation time: the control period
                  "total_ms": sum(stages.get(s, 0.0) for s in LATENCY_STAGES),
                  "source": SOURCE_NAMES.get(m.source, str(m.source))}
        with self.lock:
            if self.active:
                self.actions.append(record)

    def _on_guard(self, m) -> None:
        with self.lock:
            if self.active:
                self.guards.append(GUARD_KINDS.get(m.kind, str(m.kind)))

    def _on_pose(self, m) -> None:
        from hybridvla_ros.common import stamp_s

        p = np.array([m.pose.position.x, m.pose.position.y, m.pose.position.z])
        with self.lock:
            self.sim_time = stamp_s(m.header.stamp)
            self.pose = p
            if self.active:
                if self.start_pose is None:
                    self.start_pose = p
                self.travel = max(self.travel, float(np.linalg.norm(p - self.start_pose)))

    def _on_success(self, m) -> None:
        self.success, self.success_stamp = bool(m.data), time.monotonic()

    def _on_image(self, m) -> None:
        from hybridvla_ros.images import image_to_rgb

        self._frame_count += 1
        if self.capture is None and self.viewer is None:
            return
        rgb = image_to_rgb(m)
        self.frame = rgb
        if self.capture is not None and self._frame_count % GIF_EVERY == 0:
            self.capture.append(rgb[::2, ::2].copy())

    # -- services
    def call(self, name: str, request, timeout: float = 30.0):
        client = self.clients[name]
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {client.srv_name} did not appear within {timeout:.0f} s")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
            time.sleep(0.01)
        return future.result()

    def request(self, service: str, **fields):
        return self.types[service].Request(**fields)

    def close(self) -> None:
        import rclpy

        # The spin thread must have left the executor before rclpy goes, or the process aborts at exit.
        rclpy.try_shutdown()
        self.executor.shutdown()
        self._spin.join(timeout=5.0)
        self.node.destroy_node()


class _Viewer:
    """A matplotlib window of the front camera, where a display and an interactive backend exist."""

    def __init__(self):
        import matplotlib.pyplot as plt

        self.plt = plt
        self.fig, self.ax = plt.subplots(num="hybridvla demo: front camera")
        self.image = None

    def show(self, frame: np.ndarray | None, title: str) -> None:
        if frame is None:
            return
        if self.image is None:
            self.image = self.ax.imshow(frame)
            self.ax.axis("off")
        else:
            self.image.set_data(frame)
        self.ax.set_title(title, fontsize=9)
        self.plt.pause(0.001)


def _make_viewer_possible() -> bool:
    if not os.environ.get("DISPLAY"):
        return False
    try:
        import matplotlib

        matplotlib.use("TkAgg")
        import matplotlib.pyplot  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - no Tk: no viewer, silently
        return False


def run_episode(graph: Graph, procs: Processes, seed: int, time_limit: float, film: bool, label: str) -> dict:
    from rclpy.parameter import Parameter

    result = graph.call("seed", graph.request("SetParameters", parameters=[Parameter("seed", value=seed).to_parameter_msg()]))
    if not result.results[0].successful:
        raise RuntimeError(f"sim_lab refused seed {seed}: {result.results[0].reason}")
    reply = graph.call("reset", graph.request("Trigger"))
    instruction = reply.message.split(": ", 1)[1]
    graph.call("episode", graph.request("EpisodeControl", command=0, instruction=instruction))
    graph.call("instruction", graph.request("SetInstruction", instruction=instruction))
    graph.reset_episode()
    time.sleep(0.5)  # the reset's first frames and a fresh success flag reach the nodes
    graph.capture = [] if film else None
    graph.active = True
    _enable_bridge(graph)
    graph.call("policy", graph.request("SetBool", data=True))
    # The time limit is simulation time, as in `hybridvla eval sim`: a machine too busy for real time slows the
    # simulation and every node on /clock alike, and the episode gets the same simulated seconds.
    start, sim_start = time.monotonic(), graph.sim_time
    success = False
    while graph.sim_time - sim_start < time_limit:
        procs.check()
        if time.monotonic() - start > WALL_LIMIT_FACTOR * time_limit + 30.0:
            raise RuntimeError(f"the simulation advanced {graph.sim_time - sim_start:.1f} s in "
                               f"{time.monotonic() - start:.0f} s of wall time: sim_lab is stuck (see its log)")
        if graph.success and graph.success_stamp > start:
            success = True
            break
        if graph.viewer is not None:
            graph.viewer.show(graph.frame, f"{label} seed {seed}: {instruction}")
            continue
        time.sleep(0.05)
    duration, wall = graph.sim_time - sim_start, time.monotonic() - start
    graph.call("policy", graph.request("SetBool", data=False))
    graph.call("bridge", graph.request("SetBool", data=False))
    if not success:
        success = _settled_success(graph, procs)
    graph.active = False
    bag = graph.call("episode", graph.request("EpisodeControl", command=1 if success else 2)).message
    with graph.lock:
        episode = {"seed": seed, "instruction": instruction, "success": success, "duration_s": round(duration, 2),
                   "real_time_factor": round(duration / wall, 2) if wall > 0 else None,
                   "steps": len(graph.actions), "arm_targets": graph.counts["arm_targets"],
                   "bridge_outputs": graph.counts["bridge_outputs"], "ee_travel_m": round(graph.travel, 4),
                   "bag": bag}
        actions, guards = list(graph.actions), list(graph.guards)
    frames, graph.capture = graph.capture, None
    return {"episode": episode, "actions": actions, "guards": guards, "frames": frames}


def _settled_success(graph: Graph, procs: Processes) -> bool:
    """As `hybridvla eval sim`: after the time limit, with the arm held, SETTLE_S simulated seconds more for a block
    released at the limit to land, then sim_lab's next success flag decides."""
    settle_start, wall_start = graph.sim_time, time.monotonic()
    while graph.sim_time - settle_start < demo_episodes.SETTLE_S:
        procs.check()
        if time.monotonic() - wall_start > WALL_LIMIT_FACTOR * demo_episodes.SETTLE_S + 5.0:
            return False  # a stuck simulation: the next episode's loop reports it
        time.sleep(0.02)
    flag_after = time.monotonic()
    while time.monotonic() - flag_after < 2.0:  # sim_lab publishes the flag at 5 Hz
        if graph.success_stamp > flag_after:
            return graph.success
        time.sleep(0.02)
    return False


def _slow_note(real_time_factor: float | None) -> str:
    if real_time_factor is None or real_time_factor >= 0.9:
        return ""
    return f"  (simulation at {real_time_factor:.2f}x real time: machine busy)"


def write_plots(summary: dict, latencies: dict[str, list[float]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(summary["modes"])
    paths = []
    fig, ax = plt.subplots(figsize=(5, 3.2))
    rates = [100 * (summary["modes"][m]["success_rate"] or 0) for m in modes]
    ax.bar(modes, rates, color=["tab:purple", "tab:blue", "tab:orange"][:len(modes)])
    ax.set_ylabel("success [%]")
    ax.set_ylim(0, 100)
    ax.set_title(f"held-out seeds, {summary['episodes_per_mode']} episodes per mode")
    for i, r in enumerate(rates):
        ax.text(i, r + 2, f"{r:.0f}%", ha="center")
    fig.tight_layout()
    paths.append(out / "success_rate.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for m in modes:
        if latencies[m]:
            ax.hist(latencies[m], bins=30, alpha=0.6, label=m)
    ax.set_xlabel("observation-to-target latency [ms]")
    ax.set_ylabel("control steps")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _enable_bridge(graph, timeout_s: float = 10.0) -> None:
    """Enable franka_bridge as an operator would: its bring-up checks (fresh state at the configured rate) can refuse
    while the lab is still starting or the machine is busy, so ask again for a while; say it when it stays refused
    (the episode then runs with the arm held, and its guard events show 'disabled')."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = graph.call("bridge", graph.request("SetBool", data=True))
        if reply.success:
            return
        if time.monotonic() > deadline:
            print(f"  franka_bridge refused to enable: {reply.message}", flush=True)
            return
        time.sleep(0.5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    start = demo_episodes.HELD_OUT_SEED_START
    parser.add_argument("--episodes", type=int, default=10, help="episodes per mode (default 10)")
    parser.add_argument("--seed", type=int, default=start,
                        help=f"first seed searched for held-out episodes of the trained instruction variants, "
                             f"skipping the checkpoint's training_seeds.json (default {start})")
    parser.add_argument("--mode", default="all", choices=(*MODES, "all"),
                        help="the policy's mode, or each mode in turn (all; default)")
    parser.add_argument("--checkpoint", type=Path, help=f"checkpoint directory (default checkpoints/{FR3_CHECKPOINT})")
    parser.add_argument("--time-limit", type=float, default=25.0, help="simulated seconds per episode (default 25)")
    parser.add_argument("--output", type=Path, help="report directory (default outputs/demo-<time>)")
    parser.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID or a random one)")


def run(args: argparse.Namespace) -> int:
    """A damaged checkpoint raises its UserError before anything starts (hybridvla_core.cli says it in one line)."""
    checkpoint = (args.checkpoint or REPO_CHECKPOINTS / FR3_CHECKPOINT).resolve()
    if not (checkpoint / "config.json").is_file():
        print(f"hybridvla demo: no checkpoint at {checkpoint} (train one with scripts/train_demo_policy.sh)",
              file=sys.stderr)
        return 2
    from hybridvla_core.model.checkpoint import load_checkpoint

    load_checkpoint(checkpoint)  # a damaged checkpoint is said here in one line, not by a policy node exiting later
    modes = list(MODES) if args.mode == "all" else [args.mode]
    seeds = demo_episodes.untrained_seeds(checkpoint, args.episodes, args.seed)
    out = (args.output or Path("outputs") / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    _ros_environment(args.domain_id)

    procs = Processes(out / "logs")
    graph = None
    interrupted = False
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        config = resource_path("config", "")
        overlay = str(config / "demo_fr3.yaml")
        procs.start("sim_lab", "hybridvla_ros.sim_lab_node", [str(config / "sim_franka.yaml"), overlay], {})
        procs.start("franka_bridge", "hybridvla_ros.franka_bridge_node", [str(config / "franka.yaml"), overlay], {})
        procs.start("recorder", "hybridvla_ros.recorder_node", [overlay], {"output_dir": str(out / "bags")})
        graph = Graph(viewer=_make_viewer_possible())
        print(f"hybridvla demo: {checkpoint.name}, modes {', '.join(modes)}, {len(seeds)} held-out seeds per mode "
              f"({', '.join(map(str, seeds))}), {args.time_limit:g} s per episode; report in {out}", flush=True)
        results: dict[str, dict] = {}
        latencies: dict[str, list[float]] = {}
        for mode in modes:
            procs.start("policy", "hybridvla_ros.policy_node", [str(config / "policy_franka.yaml"), overlay],
                        {"checkpoint": str(checkpoint), "mode": mode})
            episodes, actions, guards = [], [], []
            for i, seed in enumerate(seeds):
                r = run_episode(graph, procs, seed, args.time_limit, film=i == 0, label=mode)
                episodes.append(r["episode"])
                actions += r["actions"]
                guards += r["guards"]
                if r["frames"]:
                    import imageio.v2 as imageio

                    imageio.mimsave(out / f"episode_{mode}.gif", r["frames"], duration=GIF_EVERY / 15.0, loop=0)
                e = r["episode"]
                print(f"  {mode:<15} seed {seed:>6}  {'SUCCESS' if e['success'] else 'failure'}  "
                      f"{e['duration_s']:5.1f} s  {e['steps']:3d} steps  TCP moved {100 * e['ee_travel_m']:.1f} cm  "
                      f"{e['instruction']!r}{_slow_note(e['real_time_factor'])}", flush=True)
            procs.stop("policy")
            results[mode] = {**core.summarize_mode(episodes, actions, guards), "episode_details": episodes}
            latencies[mode] = [a["total_ms"] for a in actions]
        summary = {"checkpoint": str(checkpoint), "robot": "fr3", "episodes_per_mode": len(seeds),
                   "time_limit_s": args.time_limit, "held_out_seed_start": args.seed, "modes": results}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        plots = write_plots(summary, latencies, out)
        print("\n" + core.table(summary))
        print(f"\nreport: {out} (summary.json, {', '.join(p.name for p in plots)}, "
              f"{', '.join(f'episode_{m}.gif' for m in modes)}, bags/)")
        return 0
    except KeyboardInterrupt:
        interrupted = True
        print("\nhybridvla demo: interrupted; stopping the nodes", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        procs.stop_all()
        if graph is not None:
            graph.close()
        if interrupted:
            print(f"hybridvla demo: partial report and logs in {out}", file=sys.stderr)
