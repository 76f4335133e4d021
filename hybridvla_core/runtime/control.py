"""The policy node's logic, without ROS: newest input per source, staleness decisions, the fixed-rate
loop, rate/latency statistics, the observation for Policy.predict and the per-arm absolute targets.

Times are seconds on one clock chosen by the caller (the node uses its ROS clock for stamps and
arrivals, so that use_sim_time works); latencies are reported in milliseconds.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from hybridvla_core.actions import ARM_DIM, ActionConvention, ArmPose, ArmTarget, state_from_poses, to_absolute_targets

# ActionResult.source -> PolicyAction/ArmTarget SOURCE_* (0 ensemble, 1 diffusion, 2 autoregressive)
SOURCE_CODES = {"average": 0, "diffusion": 1, "autoregressive": 2}


class PolicyLike(Protocol):
    """What the controller needs of hybridvla_core.model.Policy."""

    mode: str
    theta: float
    config: Any  # .view_names, .action_dim, .convention (ActionConvention)

    def predict(self, observation) -> Any: ...  # -> ActionResult


def check_layout(model_views: Sequence[str], action_dim: int, view_names: Sequence[str],
                 arm_names: Sequence[str]) -> None:
    """ValueError (one line) unless the configured views and arms are exactly what the checkpoint expects."""
    if sorted(model_views) != sorted(view_names):
        raise ValueError(f"view_names {list(view_names)} do not match the checkpoint's views {list(model_views)}")
    if len(arm_names) * ARM_DIM != action_dim:
        raise ValueError(f"{len(arm_names)} arm(s) {list(arm_names)} configured, but the checkpoint's action has "
                         f"{action_dim} dims ({action_dim // ARM_DIM} arm(s) of {ARM_DIM})")


def convention_label(convention: ActionConvention) -> str:
    """PolicyAction.action_convention, e.g. 'translation=delta rotation=absolute_euler(xyz) gripper=1=open'."""
    return f"translation={convention.translation} rotation={convention.rotation}(xyz) gripper={convention.gripper}"


@dataclass
class Sample:
    value: Any  # an image message (decoded when used) or an ArmState-like record
    stamp: float  # measurement time [s]
    arrival: float  # when it reached the node [s]
    used: bool = False
    size: tuple[int, int] | None = None  # an image's (width, height) [px], when known


class LatestInputs:
    """Depth-1 buffer: the newest sample per source; a sample replaced before any step used it counts as
    superseded (expected when cameras run faster than the control loop). Thread-safe."""

    def __init__(self, sources: Sequence[str]):
        self._samples: dict[str, Sample | None] = {name: None for name in sources}
        self._lock = threading.Lock()
        self.superseded = 0

    def put(self, source: str, value, stamp: float, arrival: float, size: tuple[int, int] | None = None) -> None:
        with self._lock:
            previous = self._samples[source]
            if previous is not None and not previous.used:
                self.superseded += 1
            self._samples[source] = Sample(value, stamp, arrival, size=size)

    def clear(self, source: str) -> None:
        with self._lock:
            self._samples[source] = None

    def take(self) -> dict[str, Sample | None]:
        """A consistent snapshot of every source; marks the samples used."""
        with self._lock:
            for sample in self._samples.values():
                if sample is not None:
                    sample.used = True
            return dict(self._samples)


def input_problems(samples: Mapping[str, Sample | None], now: float, max_age: Mapping[str, float]) -> list[str]:
    """Why these inputs must not be acted on (empty = fresh enough). max_age: source -> seconds."""
    problems = []
    for name, sample in samples.items():
        if sample is None:
            problems.append(f"no {name} received yet")
            continue
        age = now - sample.stamp
        if age > max_age[name]:
            problems.append(f"{name} is {age:.3f} s old (limit {max_age[name]:g} s)")
        elif age < -max_age[name]:  # stamped on another clock (device time not mapped, sim time vs wall)
            problems.append(f"{name} is stamped {-age:.3f} s in the future (clocks differ?)")
    return problems


MIN_FRAME_SIDE = 16  # px: a smaller frame (1x1, 1000x1) is no camera image, whatever the camera declared


def frame_problems(samples: Mapping[str, Sample | None], declared: Mapping[str, tuple[int, int]]) -> list[str]:
    """Why frames must not be acted on although fresh: smaller than MIN_FRAME_SIDE, or another size than their
    camera declares (its camera_info). declared: source -> (width, height) [px]."""
    problems = []
    for name, sample in samples.items():
        if sample is None or sample.size is None:
            continue
        width, height = sample.size
        if min(width, height) < MIN_FRAME_SIDE:
            problems.append(f"{name} frame is {width}x{height} px: no camera image (under {MIN_FRAME_SIDE} px a side)")
        elif name in declared and (width, height) != declared[name]:
            problems.append(f"{name} frame is {width}x{height} px but its camera declares "
                            f"{declared[name][0]}x{declared[name][1]} (camera_info)")
    return problems


class WarnLimiter:
    """At most one message per key per period (a warning a second, not one per control step)."""

    def __init__(self, period_s: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.period_s = period_s
        self._clock = clock
        self._last: dict[str, float] = {}

    def allow(self, key: str = "") -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            return False
        self._last[key] = now
        return True


class Ticker:
    """Fixed-rate schedule on a grid t0 + k * period of `clock`. A late step does not cause a burst: missed
    grid points are skipped (and counted), the next step waits for the next grid point.

    With a clock that is not the wall clock (ROS simulation time), give poll_s: sleep() takes wall seconds,
    so the wait re-reads the clock every poll_s until the grid point has come. A clock that jumps back (a
    restarted simulation) restarts the grid."""

    def __init__(self, rate_hz: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, poll_s: float | None = None):
        if rate_hz <= 0:
            raise ValueError(f"control rate must be > 0 Hz, got {rate_hz}")
        self.period = 1.0 / rate_hz
        self._clock, self._sleep, self._poll = clock, sleep, poll_s
        self._next = clock()
        self.missed = 0

    def wait(self, stop: threading.Event | None = None) -> float:
        """Sleep until the next grid point (or until `stop` is set); returns the tick time."""
        now = self._clock()
        if now < self._next - 2 * self.period:
            self._next = now
        if now > self._next + self.period:
            skipped = int((now - self._next) / self.period)
            self.missed += skipped
            self._next += skipped * self.period
        while (delay := self._next - now) > 1e-6:  # 1 us: below the resolution of seconds since 1970
            if self._poll is not None:
                delay = min(delay, self._poll)
            if stop is not None:
                if stop.wait(delay):
                    break
            else:
                self._sleep(delay)
            if self._poll is None:
                break
            now = self._clock()
        tick = self._next
        self._next += self.period
        return tick


class RateMeter:
    """Achieved rate [Hz] over the events of the last window_s seconds."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._times: deque[float] = deque()

    def add(self, t: float) -> None:
        self._times.append(t)
        while self._times and self._times[0] < t - self.window_s:
            self._times.popleft()

    def rate(self) -> float:
        if len(self._times) < 2 or self._times[-1] == self._times[0]:
            return 0.0
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


class StageTimes:
    """Per-stage latency [ms]: the last value and the mean of the last `window` steps."""

    def __init__(self, window: int = 50):
        self._values: dict[str, deque] = {}
        self._window = window

    def add(self, stages: Mapping[str, float]) -> None:
        for name, ms in stages.items():
            self._values.setdefault(name, deque(maxlen=self._window)).append(float(ms))

    def means(self) -> dict[str, float]:
        return {name: float(np.mean(values)) for name, values in self._values.items()}


@dataclass
class ArmReading:
    """One arm's measured state as the controller needs it."""

    pose: ArmPose  # TCP pose in frame_id: position [m], quaternion xyzw, gripper 0 closed .. 1 open
    frame_id: str  # the arm's base frame, copied into the target


@dataclass
class Step:
    """One control step that produced an action."""

    result: Any  # ActionResult
    targets: list[ArmTarget]  # one per arm, absolute, in the arm's frame_id
    frame_ids: list[str]
    confidence: float  # mean non-gripper AR confidence 0..1; NaN when the mode has no AR branch (diffusion)
    stamp: float  # newest input stamp [s]
    instruction: str
    stages_ms: dict[str, float]  # ordered: input_wait, observation, the policy's stages, targets
    send: bool  # True when enabled: the targets go to the arms


@dataclass
class Skip:
    """A control step that produced nothing, and why."""

    problems: list[str]
    kind: str  # "stale" (missing or too old inputs) or "error" (predict/conversion failed)


@dataclass
class Counters:
    steps: int = 0
    actions: int = 0
    stale: int = 0
    errors: int = 0
    sent: int = 0


class Controller:
    """Inputs in (any thread), one step at a time out (the inference thread)."""

    def __init__(self, policy: PolicyLike, view_names: Sequence[str], arm_names: Sequence[str], instruction: str,
                 max_image_age_s: float, max_state_age_s: float, decode_image: Callable[[Any], np.ndarray],
                 enabled: bool = False):
        check_layout(policy.config.view_names, policy.config.action_dim, view_names, arm_names)
        self.policy = policy
        self.view_names = list(view_names)
        self.arm_names = list(arm_names)
        self.convention: ActionConvention = policy.config.convention
        self._decode = decode_image
        self.inputs = LatestInputs([f"view {v}" for v in self.view_names] + [f"arm {a} state" for a in self.arm_names])
        self.max_age = {**{f"view {v}": max_image_age_s for v in self.view_names},
                        **{f"arm {a} state": max_state_age_s for a in self.arm_names}}
        self._lock = threading.Lock()
        self._declared: dict[str, tuple[int, int]] = {}
        self._instruction = ""
        self.set_instruction(instruction)
        self.enabled = enabled
        self.counters = Counters()
        self.stage_times = StageTimes()

    # ------------------------------------------------------------------------------------ inputs
    def put_image(self, view: str, image, stamp: float, arrival: float, size: tuple[int, int] | None = None) -> None:
        """size: the frame's (width, height) [px], checked against the camera's declared size (declare_image_size)."""
        self.inputs.put(f"view {view}", image, stamp, arrival, size)

    def declare_image_size(self, view: str, width: int, height: int) -> None:
        """The size the view's camera says it sends (its camera_info): frames of another size are refused."""
        self._declared[f"view {view}"] = (int(width), int(height))

    def put_state(self, arm: str, reading: ArmReading, stamp: float, arrival: float) -> None:
        self.inputs.put(f"arm {arm} state", reading, stamp, arrival)

    @property
    def instruction(self) -> str:
        with self._lock:
            return self._instruction

    def set_instruction(self, text: str) -> tuple[bool, str]:
        """(in force?, message) - an empty instruction is refused and the old one stays."""
        text = (text or "").strip()
        if not text:
            return False, f"empty instruction refused; in force: {self._instruction or '(none)'}"
        with self._lock:
            self._instruction = text
        return True, f"instruction in force: {text}"

    # ------------------------------------------------------------------------------------ one step
    def step(self, now: float) -> Step | Skip:
        """Act on the newest inputs if all are fresh at `now` [s]."""
        self.counters.steps += 1
        samples = self.inputs.take()
        problems = input_problems(samples, now, self.max_age) + frame_problems(samples, self._declared)
        instruction = self.instruction
        if not instruction:
            problems.append("no instruction set (call ~/set_instruction)")
        if problems:
            self.counters.stale += 1
            return Skip(problems, "stale")
        newest = max(samples.values(), key=lambda s: s.stamp)
        t0 = time.perf_counter()
        try:
            images = {v: self._decode(samples[f"view {v}"].value) for v in self.view_names}
            readings: list[ArmReading] = [samples[f"arm {a} state"].value for a in self.arm_names]
            poses = [r.pose for r in readings]
            observation = {"images": images, "state": state_from_poses(poses), "instruction": instruction}
            t1 = time.perf_counter()
            result = self.policy.predict(observation)
            t2 = time.perf_counter()
            targets = to_absolute_targets(result.action, poses, self.convention)
        except (ValueError, RuntimeError) as exc:  # bad frame/state, non-finite action, device error: skip, say why
            self.counters.errors += 1
            return Skip([str(exc)], "error")
        t3 = time.perf_counter()
        confidence = float(result.mean_confidence)
        stages = {"input_wait": (now - newest.arrival) * 1000.0, "observation": (t1 - t0) * 1000.0}
        stages.update({name: float(ms) for name, ms in result.timings_ms.items() if name != "total"})
        stages.update({"predict_total": (t2 - t1) * 1000.0, "targets": (t3 - t2) * 1000.0})
        self.stage_times.add(stages)
        self.counters.actions += 1
        send = self.enabled
        if send:
            self.counters.sent += 1
        return Step(result=result, targets=targets, frame_ids=[r.frame_id for r in readings],
                    confidence=confidence, stamp=newest.stamp,
                    instruction=instruction, stages_ms=stages, send=send)
