"""The demo judges an episode that reached its time limit as `hybridvla eval sim` does: SETTLE_S simulated seconds
later, from a success flag sim_lab published after them (a block released at the limit may still land)."""
import threading
import time

from hybridvla_core.sim.episodes import SETTLE_S
from hybridvla_ros.demo.episode import settled_success


class FakeGraph:
    """sim_time advancing at real time; the success flag published at 5 Hz, True from `lands_at` simulated s."""

    def __init__(self, lands_at: float):
        self.sim_time, self.success, self.success_stamp = 100.0, False, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lands_at,), daemon=True)
        self._thread.start()

    def _run(self, lands_at):
        start, last_flag = time.monotonic(), 0.0
        while not self._stop.wait(0.01):
            self.sim_time = 100.0 + time.monotonic() - start
            if time.monotonic() - last_flag >= 0.2:
                self.success, self.success_stamp = self.sim_time - 100.0 >= lands_at, time.monotonic()
                last_flag = self.success_stamp

    def close(self):
        self._stop.set()
        self._thread.join()


class Procs:
    def check(self):
        pass


def _judge(lands_at):
    graph = FakeGraph(lands_at)
    try:
        start = time.monotonic()
        result = settled_success(graph, Procs())
        return result, graph.sim_time - 100.0, time.monotonic() - start
    finally:
        graph.close()


def test_a_block_landing_within_the_settle_time_counts():
    success, settled, _ = _judge(lands_at=0.3 * SETTLE_S)
    assert success and settled >= SETTLE_S


def test_a_block_landing_after_the_settle_time_does_not():
    success, _, wall = _judge(lands_at=SETTLE_S + 3.0)
    assert not success and wall < SETTLE_S + 1.0  # judged by the first flag after the settle time
