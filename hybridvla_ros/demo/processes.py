"""The node processes of the demo: DDS settings for them, start, watch and stop (SIGINT, then SIGKILL)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from hybridvla_core.errors import UserError


def ros_environment(domain_id: int | None) -> None:
    """DDS on loopback in a domain of its own; set before rclpy loads, inherited by every node."""
    if domain_id is not None:  # the option wins over an inherited $ROS_DOMAIN_ID
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 215)))
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
        """A node that stopped ends the demo with its own last line: a node refuses a bad parameter in one line
        (exit 2), which is the user's mistake to show (UserError), not the demo's."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.log_dir / f"{name}.log"
                lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
                last = lines[-1].strip() if lines else "no output"
                error = UserError if proc.returncode == 2 else RuntimeError
                raise error(f"{name} stopped (exit {proc.returncode}): {last} (log: {log})")

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
