"""Bring-up checks of a robot graph: the judgement, without ROS.

`hybridvla preflight --robot fr3|agilex` (hybridvla_ros/preflight.py) and each bridge's ~/enable look at the
live ROS graph (which topics exist, with which types and QoS, which frames and rates arrive, which action
servers and TF frames exist) and hand what they saw to the functions below. Each returns a Check: one line
that says what was expected, what was found and, on a failure, what to change.

Vocabulary: an Endpoint is one publisher or subscription seen in the graph (node name, message type as the
graph reports it, e.g. "geometry_msgs/msg/PoseStamped", reliability and durability). Rates are in Hz, ages
and windows in seconds, frames are TF frame names (header.frame_id).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Check:
    name: str            # what was checked, e.g. "frame /current_pose"
    ok: bool
    detail: str          # what was found (and expected)
    fix: str = ""        # what to change, on a failure

    def line(self) -> str:
        text = f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"
        return text + (f" -> fix: {self.fix}" if not self.ok and self.fix else "")


@dataclass(frozen=True)
class Endpoint:
    node: str                    # fully qualified node name ("/franka_bridge"), "" when unknown
    type: str                    # "geometry_msgs/msg/PoseStamped"
    reliable: bool               # RELIABLE (True) or BEST_EFFORT
    transient_local: bool = False  # durability TRANSIENT_LOCAL (True) or VOLATILE


def failures(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def summary(checks: Sequence[Check]) -> str:
    """One line: the failures joined (what a service response or a log line carries), or 'all N checks pass'."""
    bad = failures(checks)
    if not bad:
        return f"all {len(checks)} checks pass"
    return "; ".join(f"{c.name}: {c.detail}" + (f" -> fix: {c.fix}" if c.fix else "") for c in bad)


def _qos(reliable: bool, transient_local: bool) -> str:
    return f"{'RELIABLE' if reliable else 'BEST_EFFORT'}/{'TRANSIENT_LOCAL' if transient_local else 'VOLATILE'}"


def qos_mismatch(publisher: Endpoint, subscriber: Endpoint) -> str | None:
    """Why no message from `publisher` reaches `subscriber` (DDS request/offer rules), or None when they match.
    A RELIABLE subscription does not match a BEST_EFFORT publisher; a TRANSIENT_LOCAL subscription does not
    match a VOLATILE publisher. The other combinations match."""
    if subscriber.reliable and not publisher.reliable:
        return "publisher offers BEST_EFFORT, subscription requests RELIABLE"
    if subscriber.transient_local and not publisher.transient_local:
        return "publisher offers VOLATILE, subscription requests TRANSIENT_LOCAL"
    return None


def judge_input(topic: str, expected_type: str, publishers: Sequence[Endpoint], ours: Endpoint, *,
                source: str, fix_absent: str) -> list[Check]:
    """A topic the checked node subscribes to with QoS `ours`: a publisher exists, of the expected type, and
    every publisher's QoS matches the subscription. source names who should publish it."""
    if not publishers:
        return [Check(f"topic {topic}", False, f"no publisher ({source} publishes it)", fix_absent)]
    checks = [Check(f"topic {topic}", True, f"{len(publishers)} publisher(s): "
                    + ", ".join(sorted({p.node or '?' for p in publishers})))]
    wrong = sorted({p.type for p in publishers if p.type != expected_type})
    checks.append(Check(f"type {topic}", not wrong,
                        f"{expected_type}" if not wrong else f"published as {', '.join(wrong)}, expected {expected_type}",
                        f"point the parameter naming {topic} at the {expected_type} topic of {source}"))
    bad = [(p, qos_mismatch(p, ours)) for p in publishers]
    bad = [(p, why) for p, why in bad if why]
    if bad:
        p, why = bad[0]
        checks.append(Check(f"QoS {topic}", False,
                            f"{p.node or 'a publisher'} {_qos(p.reliable, p.transient_local)} vs {ours.node or 'this node'} "
                            f"{_qos(ours.reliable, ours.transient_local)}: {why}, so nothing arrives",
                            f"have {p.node or 'the publisher'} publish {_qos(ours.reliable, ours.transient_local)} "
                            "(or a subscription that requests less)"))
    else:
        checks.append(Check(f"QoS {topic}", True, f"every publisher matches {_qos(ours.reliable, ours.transient_local)}"))
    return checks


def judge_output(topic: str, expected_type: str, subscribers: Sequence[Endpoint], ours: Endpoint,
                 other_publishers: Sequence[Endpoint] = (), *, consumer: str, fix_absent: str,
                 single_publisher: bool = False) -> list[Check]:
    """A topic the checked node publishes with QoS `ours`: the consumer subscribes to it (expected type, QoS
    that matches), and when single_publisher (crisp_controllers drops target_pose while two publishers share
    it) nobody else publishes on it."""
    if not subscribers:
        return [Check(f"subscriber {topic}", False, f"nobody subscribes ({consumer} should)", fix_absent)]
    checks = [Check(f"subscriber {topic}", True, ", ".join(sorted({s.node or '?' for s in subscribers})))]
    wrong = sorted({s.type for s in subscribers if s.type != expected_type})
    checks.append(Check(f"type {topic}", not wrong,
                        expected_type if not wrong else f"subscribed as {', '.join(wrong)}, expected {expected_type}",
                        f"point the output topic at {consumer}'s {expected_type} input"))
    bad = [(s, qos_mismatch(ours, s)) for s in subscribers]
    bad = [(s, why) for s, why in bad if why]
    if bad:
        s, why = bad[0]
        checks.append(Check(f"QoS {topic}", False, f"{s.node or 'a subscriber'}: {why}, so nothing arrives",
                            f"have {s.node or 'the subscriber'} request {_qos(ours.reliable, ours.transient_local)}"))
    else:
        checks.append(Check(f"QoS {topic}", True, f"every subscriber matches {_qos(ours.reliable, ours.transient_local)}"))
    if single_publisher:
        others = sorted({p.node or '?' for p in other_publishers})
        checks.append(Check(f"publishers {topic}", not others,
                            "no publisher besides the bridge" if not others else f"also published by {', '.join(others)}: "
                            f"{consumer} drops every message while two publishers share the topic",
                            f"stop {', '.join(others)} (one publisher per target topic)"))
    return checks


def judge_frame(topic: str, expected: str, received: str | None, parameter: str) -> Check:
    """The frame a topic's messages carry (header.frame_id) against the one configured in `parameter`.
    received None: no message seen (judged by the rate check)."""
    if received is None:
        return Check(f"frame {topic}", False, f"no message received, frame unknown (expected {expected!r})",
                     f"start the publisher of {topic}")
    if received in ("", expected):
        return Check(f"frame {topic}", True, repr(received or expected))
    return Check(f"frame {topic}", False, f"arrives in frame {received!r}, expected {expected!r}",
                 f"set parameter {parameter} to {received!r} (the publisher's base frame) or make the publisher "
                 f"stamp {expected!r}")


def frame_refusal(topic: str, expected: str, received: str, parameter: str) -> str:
    """The one line an enable refusal carries when measured poses arrive in another frame."""
    return (f"{topic} arrives in frame {received!r} but {parameter} is {expected!r}: the measured pose is not "
            f"used; set parameter {parameter} to {received!r} (the controller's base_frame) or configure the "
            f"controller to publish in {expected!r}")


def judge_rate(topic: str, hz: float | None, min_hz: float, why: str) -> Check:
    """A measured message rate against the lowest rate that works (why: what needs it)."""
    if hz is None or hz <= 0:
        return Check(f"rate {topic}", False, f"no message in the measuring window (needs >= {min_hz:g} Hz: {why})",
                     f"start the publisher of {topic}, or check the topic name")
    ok = hz >= min_hz
    return Check(f"rate {topic}", ok, f"{hz:.1f} Hz" + ("" if ok else f", needs >= {min_hz:g} Hz ({why})"),
                 f"raise the publishing rate of {topic} to at least {min_hz:g} Hz")


def judge_action_server(name: str, expected_type: str, servers: Mapping[str, Sequence[str]], parameter: str) -> Check:
    """An action server by name (servers: every action server name in the graph -> its types). On a miss,
    servers with the same last name element are suggested (e.g. /fr3_gripper/grasp for /franka_gripper/grasp:
    franka_ros2 < 2.0 named the gripper node <arm_id>_gripper)."""
    types = servers.get(name)
    if types:
        ok = expected_type in types
        return Check(f"action {name}", ok, expected_type if ok else f"served as {', '.join(types)}, expected {expected_type}",
                     f"point {parameter} at the franka_gripper node")
    leaf = name.rsplit("/", 1)[-1]
    similar = sorted(s for s in servers if s.rsplit("/", 1)[-1] == leaf)
    hint = ""
    if similar:
        hint = f"; found {', '.join(similar)}: set {parameter} to {similar[0].rsplit('/', 1)[0]}"
    return Check(f"action {name}", False, f"no action server{hint}",
                 f"start the gripper (franka_gripper: /franka_gripper in franka_ros2 >= 2.0, /<arm_id>_gripper "
                 f"before) and set {parameter} to its namespace" if not similar else
                 f"set {parameter} to {similar[0].rsplit('/', 1)[0]}")


def judge_controller(name: str, states: Mapping[str, str] | None, service: str, parameter: str) -> Check:
    """The ros2_control controller that takes the bridge's output, by its state in controller_manager's
    list_controllers (states: controller name -> "unconfigured" | "inactive" | "active" | "finalized"; None: the
    service did not answer). A subscriber on the output topic proves nothing: crisp's controllers subscribe
    when configured, and the crisp demos spawn them --inactive, so targets reach a controller that ignores them."""
    label = f"controller {name}"
    if states is None:
        return Check(label, False, f"{service} does not answer",
                     f"start ros2_control's controller_manager (franka_ros2 / the crisp launch), or set {parameter} "
                     f"to '' if the controller is not a ros2_control controller (then its state is not checked)")
    state = states.get(name)
    if state is None:
        loaded = ", ".join(f"{n} ({s})" for n, s in sorted(states.items())) or "none"
        return Check(label, False, f"not loaded in the controller_manager (loaded: {loaded})",
                     f"spawn it (`ros2 run controller_manager spawner {name}`) or set {parameter} to the controller "
                     f"that takes the bridge's output topic")
    if state != "active":
        return Check(label, False, f"is {state}, not active: it would not act on the targets",
                     f"`ros2 control switch_controllers --activate {name}` (deactivate the controller that holds "
                     f"the arm's command interfaces, e.g. --deactivate joint_trajectory_controller)")
    return Check(label, True, "active")


def tf_path(parent: str, child: str, edges: Mapping[str, str]) -> list[str] | None:
    """Frames from `child` up to `parent` through `edges` (child frame -> its parent frame, as /tf and
    /tf_static carry them), or None when `child` does not lead to `parent`. Either frame may be the root:
    the path is found through their common ancestor."""
    def chain(frame):
        out, seen = [frame], {frame}
        while frame in edges:
            frame = edges[frame]
            if frame in seen:
                break
            out.append(frame)
            seen.add(frame)
        return out

    up_child, up_parent = chain(child), chain(parent)
    common = next((f for f in up_child if f in set(up_parent)), None)
    if common is None:
        return None
    return up_child[:up_child.index(common) + 1] + list(reversed(up_parent[:up_parent.index(common)]))


def judge_tf(base: str, frame: str, edges: Mapping[str, str], source: str) -> Check:
    """A TF path between the arm's base frame and a camera frame (source: the topic that named the frame)."""
    path = tf_path(base, frame, edges)
    if path is not None:
        return Check(f"TF {base} -> {frame}", True, " -> ".join(reversed(path)))
    known = sorted(set(edges) | set(edges.values()))
    return Check(f"TF {base} -> {frame}", False,
                 f"no transform between {base!r} and {frame!r} ({source}); frames on /tf, /tf_static: "
                 + (", ".join(known[:12]) + (" ..." if len(known) > 12 else "") if known else "none"),
                 f"publish the camera's extrinsics, e.g. `ros2 run tf2_ros static_transform_publisher --frame-id "
                 f"{base} --child-frame-id {frame} --x .. --y .. --z .. --qx .. --qy .. --qz .. --qw ..`")


class RateMeter:
    """Arrival times of one stream over the last `window` seconds: rate in Hz, and the time of the newest."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        cutoff = now - self.window
        while self._times and self._times[0] < cutoff:
            self._times.popleft()

    def rate(self, now: float) -> float:
        """Messages per second over the window ending now (0 when fewer than two arrived)."""
        cutoff = now - self.window
        times = [t for t in self._times if t >= cutoff]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    @property
    def last(self) -> float | None:
        return self._times[-1] if self._times else None


class SequenceRate:
    """The rate of a stream that is sampled, not received message by message (a subscription read on demand:
    only the newest sample is taken): from the publishers' sequence numbers and source time stamps of the samples
    taken in the last `window` seconds, summed over publishers. Without sequence numbers (an RMW that does not
    report them) it counts the samples taken, a lower bound."""

    def __init__(self, window: float = 2.0):
        self.window = window
        self._samples: collections.deque[tuple[float, object, int | None, float]] = collections.deque()

    def add(self, now: float, publisher: object, sequence: int | None, source_time: float) -> None:
        """now: when taken (any monotonic clock, s); publisher: any id; sequence: its publication sequence number;
        source_time: the publisher's time stamp of the sample (s)."""
        self._samples.append((now, publisher, sequence, source_time))
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    def rate(self, now: float) -> float:
        samples = [s for s in self._samples if s[0] >= now - self.window]
        if len(samples) < 2:
            return 0.0
        total = 0.0
        for publisher in {s[1] for s in samples}:
            mine = [s for s in samples if s[1] == publisher]
            if len(mine) < 2:
                continue
            first, last = mine[0], mine[-1]
            if first[2] is None or last[2] is None:
                total += (len(mine) - 1) / max(last[0] - first[0], 1e-9)
            elif last[3] > first[3]:
                total += (last[2] - first[2]) / (last[3] - first[3])
        return total
