"""Test-side ROS helpers for the bridge tests: a node spinning in a background thread, recording what arrives,
and the bridge process started the way a launch file would (python -m <module> --ros-args --params-file ...)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout: float = 20.0, period: float = 0.02):
    """Poll until predicate() is truthy; return its value, or None on timeout (the caller asserts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(period)
    return None


def serve_list_controllers(node, states: dict[str, str], manager: str = "/controller_manager"):
    """ros2_control's <manager>/list_controllers (controller_manager_msgs) served by `node`: it answers `states`
    (controller name -> state) as they are at each call, so a test switches a controller by changing the dict."""
    from controller_manager_msgs.msg import ControllerState
    from controller_manager_msgs.srv import ListControllers

    def answer(_request, response):
        response.controller = [ControllerState(name=name, state=state) for name, state in list(states.items())]
        return response

    return node.create_service(ListControllers, f"{manager}/list_controllers", answer)


class Spinner:
    """rclpy in this test process: one context, a MultiThreadedExecutor in a thread."""

    def __init__(self):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.nodes = []

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def start(self):
        self.thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the spin
            pass

    def call(self, node, srv_type, name, request, timeout=20.0):
        client = node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} did not appear"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"service {name} did not answer"
        return future.result()

    def enable(self, node, service, timeout=20.0, all_served=True):
        """Call a bridge's enable service the way an operator would: a refusal for a stale measured state (the
        arm's state has not reached the bridge in its watchdog period, or not in the bring-up check's rate
        window, or too few of it to count as the configured rate: on a loaded 2-core machine a process can stall
        that long, and a starting simulated lab does) is retried; any other answer is returned.
        all_served: the test runs every peer the bring-up checks look for (the controller's subscriber, the
        gripper's action servers, the controller_manager), so a refusal naming one of them as absent means the
        bridge has not yet discovered it or had no answer yet (DDS discovery of a node's endpoints can trail its
        first messages): retried too."""
        from std_srvs.srv import SetBool

        transient = ["no fresh measured state", "no message in the measuring window", "Hz, needs >="]  # rate check
        if all_served:
            transient += ["no action server", "nobody subscribes", "list_controllers does not answer"]
        deadline = time.monotonic() + timeout
        while True:
            response = self.call(node, SetBool, service, SetBool.Request(data=True), timeout=timeout)
            if response.success or not any(why in response.message for why in transient) \
                    or time.monotonic() > deadline:
                return response
            time.sleep(0.2)

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        for node in self.nodes:
            node.destroy_node()
        self.rclpy.shutdown(context=self.context)
        self.thread.join(timeout=2.0)


class Process:
    """A node process with its output captured to a file (read it on failure)."""

    def __init__(self, module: str, params_file: str | Path, *overrides: str, log: Path):
        args = [sys.executable, "-m", module, "--ros-args", "--params-file", str(params_file)]
        for o in overrides:
            args += ["-p", o]
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT, env=os.environ.copy())

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.log.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT, as ros2 launch does
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
