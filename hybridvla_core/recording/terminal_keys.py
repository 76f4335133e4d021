"""Single-key commands from the terminal for the recorder (cbreak mode: no Enter needed, Ctrl-C still works;
works over SSH, no GUI). Disabled when stdin is not a tty or CI is set, leaving the recorder's service as the
only control."""
from __future__ import annotations

import os
import select
import sys
import threading
from typing import Callable


KEYS = {"s": "start", "\r": "success", "\n": "success", " ": "success", "f": "failure", "d": "discard",
        "i": "instruction", "q": "quit", "\x03": "quit"}
KEY_HELP = "keys: s=start  enter/space=stop success  f=stop failure  d=discard  i=new instruction  q=quit"


def keys_available(stream=None) -> tuple[bool, str]:
    """Whether single-key control can run: a tty on stdin and not CI. Returns (ok, reason when not)."""
    stream = stream or sys.stdin
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return False, "CI is set"
    try:
        if not stream.isatty():
            return False, "stdin is not a terminal (launch or a pipe)"
    except (AttributeError, ValueError):
        return False, "stdin is closed"
    return True, ""


class KeyReader:
    """Reads single keys from a terminal in cbreak mode (no Enter needed, Ctrl-C still works) on a thread
    and calls on_command(keymap[key]) for each mapped key (every key itself with keymap=None); `prompt()`
    reads one full line (e.g. an instruction). The terminal mode is restored by close()."""

    def __init__(self, on_command: Callable[[str], None], stream=None, keymap: dict[str, str] | None = KEYS):
        import termios
        import tty

        self._termios = termios
        self.stream = stream or sys.stdin
        self.fd = self.stream.fileno()
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        self._cbreak = termios.tcgetattr(self.fd)
        self.on_command, self.keymap = on_command, keymap
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="keys", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if not ready:
                continue
            key = os.read(self.fd, 1).decode(errors="ignore")
            if key == "":  # terminal closed (SSH dropped)
                return
            if self.keymap is None:
                self.on_command(key)
                continue
            command = self.keymap.get(key.lower() if key.isalpha() else key)
            if command is not None:
                self.on_command(command)

    def prompt(self, text: str) -> str:
        """Read a line in normal (cooked) mode; called from on_command, i.e. on the key thread."""
        self._termios.tcsetattr(self.fd, self._termios.TCSADRAIN, self._saved)
        try:
            sys.stderr.write("\n" + text)
            sys.stderr.flush()
            return sys.stdin.readline().strip()
        finally:
            self._termios.tcsetattr(self.fd, self._termios.TCSADRAIN, self._cbreak)

    def close(self) -> None:
        self._stop.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._termios.tcsetattr(self.fd, self._termios.TCSADRAIN, self._saved)
