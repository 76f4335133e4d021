"""One demo episode: seed and reset the lab, start a bag, enable bridge and policy, wait for success or the time
limit, disable, close the bag."""
from __future__ import annotations

import time

from hybridvla_core.sim import episodes as demo_episodes
from hybridvla_ros.demo.node import DemoNode
from hybridvla_ros.demo.processes import Processes


WALL_LIMIT_FACTOR = 10  # an episode longer than this many times its (simulated) time limit in wall time: stuck


def run_episode(graph: DemoNode, procs: Processes, seed: int, time_limit: float, film: bool, label: str) -> dict:
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
        success = settled_success(graph, procs)
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


def settled_success(graph: DemoNode, procs: Processes) -> bool:
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


def slow_note(real_time_factor: float | None) -> str:
    if real_time_factor is None or real_time_factor >= 0.9:
        return ""
    return f"  (simulation at {real_time_factor:.2f}x real time: machine busy)"


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
