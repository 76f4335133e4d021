"""What every hybridvla node shares: QoS profiles, validated parameters, pose conversions, the main wrapper."""
from __future__ import annotations

import difflib
import gc
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import yaml

import numpy as np
import rclpy
from geometry_msgs.msg import Pose
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy._rclpy_pybind11 import RCLError  # not re-exported elsewhere; the nodes already catch it
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from hybridvla_core.errors import UserError

# Sensor streams (cameras, measured state): newest sample only, never block the publisher.
SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
# Commands (targets, gripper): reliable, but only the newest matters.
COMMAND_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# Events and results that a recorder or a person must not miss.
EVENT_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


class ParameterError(UserError):
    """A node parameter is missing or invalid: the node stops at start with this one line."""


def declare_parameters(node: Node, spec: dict[str, tuple[Any, Callable[[Any], bool] | None, str]],
                       last: bool = True) -> dict[str, Any]:
    """Declare every parameter with its default and return their values, validated.

    spec: name -> (default, check or None, what a valid value is). A failed check raises ParameterError
    naming the parameter, the value and what was expected. last: this call declares the node's last parameters,
    so what was given for the node and is still undeclared is a mistake (check_parameter_sources)."""
    values = {}
    for name, (default, check, expected) in spec.items():
        try:
            value = node.declare_parameter(name, default).value
        except InvalidParameterTypeException as exc:  # e.g. fps:=10 where a float is declared
            raise ParameterError(f"parameter '{name}' has the wrong type: expected {expected} ({exc})") from None
        if check is not None and not check(value):
            raise ParameterError(f"parameter '{name}' = {value!r} is invalid: expected {expected}")
        values[name] = value
    if last:
        check_parameter_sources(node, sys.argv)
    return values


def _params_files(argv: list[str]) -> list[str]:
    """The --params-file paths among ROS arguments."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--params-file"]


def _section_applies(key: str, node: Node) -> bool:
    """Whether a parameter file's top-level key addresses `node` (its name, /namespace/name, or a wildcard)."""
    pattern = re.escape(key.strip("/")).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    name = node.get_fully_qualified_name().strip("/")
    return re.fullmatch(pattern, name) is not None or re.fullmatch(pattern, node.get_name()) is not None


def check_parameter_sources(node: Node, argv: list[str]) -> None:
    """Refuse what would otherwise be silently ignored: a parameter set for this node that it does not have (a
    typo: the default would run instead), and parameter files none of which has a section for this node (a
    misspelt node key: every default would run). One ParameterError line naming the near names."""
    # rclpy keeps the values given for this node (files and -p) as overrides; it has no public getter for them.
    given = [name for name in getattr(node, "_parameter_overrides", {}) if not node.has_parameter(name)]
    if given:
        known = [name for name in node._parameters]  # noqa: SLF001 - the declared ones, for the near names
        near = {name: difflib.get_close_matches(name, known, n=1, cutoff=0.6) for name in given}
        hints = [f"{name} (did you mean {near[name][0]}?)" if near[name] else name for name in sorted(given)]
        raise ParameterError(f"unknown parameter(s) for node '{node.get_name()}': {'; '.join(hints)} (a misspelt "
                             f"name would leave its default in force)")
    files = _params_files(argv)
    sections: dict[str, list[str]] = {}
    for path in files:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue  # rcl has read (or refused) the file already
        sections[path] = [str(k) for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v] \
            if isinstance(data, dict) else []
    if sections and not any(_section_applies(key, node) for keys in sections.values() for key in keys):
        keys = [key for found in sections.values() for key in found]
        near = difflib.get_close_matches(node.get_name(), [k.strip("/").split("/")[-1] for k in keys], n=3, cutoff=0.6)
        raise ParameterError(f"no section for node '{node.get_name()}' in the parameter file(s) {', '.join(files)} "
                             f"(sections: {', '.join(keys) or 'none'}"
                             + (f"; did you mean {', '.join(near)}?" if near else "") + "): every parameter would "
                             f"keep its default; name the section '{node.get_name()}'")


def pose_to_arrays(pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/Pose -> (position [m] (3,), quaternion xyzw (4,))."""
    p, o = pose.position, pose.orientation
    return np.array([p.x, p.y, p.z]), np.array([o.x, o.y, o.z, o.w])


def stamp_s(stamp) -> float:
    """A builtin_interfaces/Time (header stamp, /clock) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def arrays_to_pose(position, quaternion) -> Pose:
    """(position [m], quaternion xyzw) -> geometry_msgs/Pose."""
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in quaternion)
    return pose


def bridge_executor_class() -> type[Executor]:
    """The executor of the arm bridges: rclpy's EventsExecutor where this ROS 2 has it (Jazzy from rclpy 7.1.4,
    Kilted, Rolling), else SingleThreadedExecutor (Humble). Its callbacks are dispatched from C++ instead of a
    wait set rebuilt in Python per callback: two Pipers' targets at 10 Hz, measured with benchmarks/bridge_load.py,
    p50 3.4 -> 2.3 ms target-to-command and 18 -> 13 % of a core."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor
    return EventsExecutor


def bridge_executor() -> Executor:
    """An instance of bridge_executor_class() (run_node's executor_factory for the bridges)."""
    return bridge_executor_class()()


def ros_arguments_refusal(exc: Exception) -> str:
    """rcl's refusal of the ROS arguments in one line, without its C source locations ("at /project/src/...")."""
    text = re.sub(r",? at /\S+:\d+", "", " ".join(str(exc).split())).removeprefix("failed to initialize rcl: ")
    if "params file" in text:
        return f"{text}: give an existing, valid YAML parameter file (node name: ros__parameters: ...)"
    return f"{text}: write a parameter as -p name:=value"


def run_node(factory: Callable[[], Node], args: list[str] | None = None,
             executor_factory: Callable[[], Executor] | None = None) -> int:
    """Entry point body shared by every node: init, spin, and on a bad parameter exit with one line.

    executor_factory (e.g. lambda: MultiThreadedExecutor(4)) is called after rclpy.init, which executors need."""
    try:
        rclpy.init(args=args)
    except RCLError as exc:  # the ROS arguments: a params file that is missing or not YAML, `-p name` without :=
        print(f"[{getattr(factory, '__name__', 'node')}] error: {ros_arguments_refusal(exc)}", file=sys.stderr,
              flush=True)
        return 2
    node = None
    try:
        node = factory()
        executor = executor_factory() if executor_factory is not None else SingleThreadedExecutor()
        executor.add_node(node)
        for companion in getattr(node, "companion_nodes", []):  # more nodes of the same process (sim_lab's piper_ros)
            executor.add_node(companion)
        # Everything built so far (modules, the node, a model) lives as long as the process: out of the cyclic
        # collector's sight, a full collection no longer walks it (~20 ms in a bridge, a pause in front of a target).
        gc.freeze()
        # Short waits, not executor.spin(): a SIGTERM shuts the context down but does not always wake a wait set
        # that is already sleeping (rclpy 9.1 + Fast DDS: about 1 stop in 20 hung here), so look every 0.2 s.
        while rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.2)
            except RCLError:
                if rclpy.ok():
                    raise
                break  # a SIGTERM shut the context down between the check and the wait set: a normal stop
        return 0
    except UserError as exc:  # a bad parameter, checkpoint, bag or camera setting: one line (errors.py)
        print(f"[{getattr(factory, '__name__', 'node')}] error: {exc}", file=sys.stderr, flush=True)
        return 2
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C / SIGTERM: a normal stop
        return 0
    except Exception:  # noqa: BLE001 - print the traceback, exit non-zero
        traceback.print_exc()
        return 1
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
