"""Running the simulated lab in time: periodic streams on simulation time, real-time pacing, and the expert
episode loop used by `hybridvla sim run-experts` (and by anything that records expert demonstrations).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from hybridvla_core.sim.config import SimConfig
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.experts import ExpertCommand, make_expert


class StreamSchedule:
    """Periodic streams on simulation time: due(t) names the streams whose next sample time has come.
    A stream's samples stay on its own grid (k / rate), whatever the step of the caller."""

    def __init__(self, rates_hz: dict[str, float], start: float = 0.0):
        self.periods = {name: 1.0 / hz for name, hz in rates_hz.items()}
        self.next = {name: start for name in rates_hz}

    def due(self, t: float) -> list[str]:
        names = []
        for name, period in self.periods.items():
            if t + 1e-9 >= self.next[name]:
                names.append(name)
                while self.next[name] <= t + 1e-9:
                    self.next[name] += period
        return names


class Pacer:
    """Holds simulation time to wall time (real_time_factor 1.0 = real time; None = as fast as possible).

    When the simulation falls more than max_lag_s behind (a busy machine), it does not catch up in a burst:
    a burst would show the nodes seconds of motion at several times real time. It goes on from where it is,
    and `slipped_s` adds up the wall time so given up (nodes on /clock see a slower world, not a faster one)."""

    def __init__(self, real_time_factor: float | None = 1.0, max_lag_s: float = 0.1,
                 clock=time.monotonic, sleep=time.sleep):
        self.factor = real_time_factor
        self.max_lag_s = max_lag_s
        self._clock, self._sleep = clock, sleep
        self.anchor: tuple[float, float] | None = None  # (sim time, wall time) that the pace is measured from
        self.slipped_s = 0.0

    def wait(self, sim_time: float) -> None:
        if self.factor is None:
            return
        now = self._clock()
        if self.anchor is None:
            self.anchor = (sim_time, now)
            return
        ahead = (sim_time - self.anchor[0]) / self.factor - (now - self.anchor[1])
        if ahead > 0:
            self._sleep(ahead)
        elif ahead < -self.max_lag_s:
            self.slipped_s += -ahead
            self.anchor = (sim_time, now)


class EpisodeSink(Protocol):
    """Receives an episode as it happens (all times: simulation seconds, env.time)."""

    def start(self, env: SimEnv, t: float) -> None: ...
    def state(self, env: SimEnv, t: float) -> None: ...
    def camera(self, env: SimEnv, t: float, name: str) -> None: ...
    def command(self, env: SimEnv, t: float, commands: dict[str, ExpertCommand]) -> None: ...
    def stop(self, env: SimEnv, t: float, success: bool) -> None: ...


@dataclass(frozen=True)
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    duration: float   # s of simulation time from start to the success check


@dataclass(frozen=True)
class Rates:
    """Stream rates of an episode [Hz]."""
    control: float = 10.0   # expert targets (policy/teleop rate)
    state: float = 50.0     # joint_states, current_pose, arm_state
    camera: float = 15.0    # every camera


def run_expert_episode(env: SimEnv, seed: int, *, rates: Rates = Rates(), timeout_s: float = 30.0,
                       settle_s: float = 0.5, sink: EpisodeSink | None = None, pacer: Pacer | None = None,
                       cameras: bool = True) -> EpisodeResult:
    """Reset to `seed`, let the task's scripted expert act until it is done (or timeout_s of simulation
    time), wait settle_s, and check success. With a sink, every stream sample goes to it."""
    instruction = env.reset(seed)
    expert = make_expert(env)
    expert.reset()
    streams = {"control": rates.control, "state": rates.state}
    if cameras and sink is not None:
        streams["camera"] = rates.camera
    t0 = env.time
    ticker = StreamSchedule(streams, start=t0)
    end_at: float | None = None
    if sink is not None:
        sink.start(env, t0)
    emit: Callable[[str, float], None] = _emitter(env, expert, rates, sink)
    while True:
        t = env.time
        for stream in ticker.due(t):
            emit(stream, t)
        if end_at is None and (expert.done or t - t0 >= timeout_s):
            end_at = t + settle_s
        if end_at is not None and t >= end_at:
            break
        env.advance(env.control_dt)
        if pacer is not None:
            pacer.wait(env.time)
    success = env.success()
    if sink is not None:
        sink.stop(env, env.time, success)
    return EpisodeResult(seed, instruction, success, env.time - t0)


def _emitter(env: SimEnv, expert, rates: Rates, sink: EpisodeSink | None):
    def emit(stream: str, t: float) -> None:
        if stream == "control":
            commands = expert.act(1.0 / rates.control)
            for arm, c in commands.items():
                env.set_target(arm, c.position, c.quaternion)
                env.set_gripper(arm, c.gripper)
            if sink is not None:
                sink.command(env, t, commands)
        elif sink is None:
            return
        elif stream == "state":
            sink.state(env, t)
        elif stream == "camera":
            for name in env.cameras:
                sink.camera(env, t, name)
    return emit


class LiveLab:
    """The simulated lab run live (the sim_lab node's core): an environment stepped one controller period at
    a time, paced to wall time when the config says realtime, with the state and camera streams due on
    simulation time. Commands and reads from other threads hold `lock`.

    Stamps: `stamp_ns()` = wall-clock time at construction + simulation time, one clock for every message
    (behind the wall clock by `pacer.slipped_s` once the machine could not keep real time)."""

    def __init__(self, config: SimConfig):
        self.cfg = config
        self.env = SimEnv(**config.env_kwargs())
        self.lock = threading.RLock()
        self.pacer = Pacer(1.0) if config.realtime else None
        self.next_seed = config.seed
        self.reset()
        # Simulation time now = wall time now; the pacer holds that mapping from here on.
        self.epoch_ns = time.time_ns() - int(round(self.env.time * 1e9))
        if self.pacer is not None:
            self.pacer.wait(self.env.time)

    def reset(self, seed: int | None = None) -> str:
        """Start the episode of `seed` (default: the next seed) and return its instruction."""
        with self.lock:
            seed = self.next_seed if seed is None else int(seed)
            instruction = self.env.reset(seed)
            self.next_seed = seed + 1
            self.ticker = StreamSchedule({"state": self.cfg.state_rate_hz, "camera": self.cfg.camera_rate_hz},
                                 start=self.env.time)
            return instruction

    def step(self) -> list[str]:
        """Advance one controller period; return the streams now due ("state", "camera")."""
        with self.lock:
            self.env.advance(self.env.control_dt)
            due = self.ticker.due(self.env.time)
            t = self.env.time
        if self.pacer is not None:
            self.pacer.wait(t)
        return due

    def stamp_ns(self) -> int:
        return self.epoch_ns + int(round(self.env.time * 1e9))

    def close(self) -> None:
        with self.lock:
            self.env.close()
