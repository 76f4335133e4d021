"""Start node processes the way the launch files do, for the node tests (imported by name: a module of its own,
not conftest, whose name test/ros/conftest.py shares in sys.modules)."""
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
BIN = Path(sys.executable).parent


class NodeProcess:
    """A console-script node started as a launch file starts it (--params-file, the node's name, then
    overrides), its output collected by a thread."""

    def __init__(self, executable: str, params_file: Path | None = None, node_name: str | None = None,
                 overrides: dict | None = None):
        command = [str(BIN / executable), "--ros-args"]
        if node_name:
            command += ["-r", f"__node:={node_name}"]
        if params_file:
            command += ["--params-file", str(params_file)]
        for key, value in (overrides or {}).items():
            command += ["-p", f"{key}:={value}"]
        self.command = command
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.process.poll() is not None:
                self._reader.join(timeout=2.0)
                if any(text in line for line in self.lines):
                    return
                break
            time.sleep(0.05)
        raise AssertionError(f"{' '.join(self.command)} never printed {text!r}; output:\n{self.output}")

    def wait(self, timeout: float = 90.0) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=2.0)
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """SIGINT, as ros2 launch does at shutdown; SIGKILL if that does not end it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.wait()
