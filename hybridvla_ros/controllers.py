"""The states of ros2_control's controllers, asked of a controller_manager (its ~/list_controllers service) in the
background: a bridge's ~/enable and its timer read the newest answer without waiting on a service call."""
from __future__ import annotations

import time

from rclpy.node import Node

from hybridvla_ros.common import ParameterError

MAX_ANSWER_AGE_S = 3.0   # s of wall time: an older answer counts as none (the manager stopped answering)


def list_controllers_type():
    try:
        from controller_manager_msgs.srv import ListControllers
    except ImportError:
        raise ParameterError("controller_manager_msgs is not installed: source ros2_control (franka_ros2 brings it; "
                             "on a development machine `make setup` builds the test stand-in), or set "
                             "controller.name:='' to skip the controller check") from None
    return ListControllers


class ControllerStates:
    """list_controllers of `manager` (e.g. /controller_manager) asked every `period` s (wall time); `states()` is
    the newest answer (controller name -> "unconfigured" | "inactive" | "active" | "finalized") while it is at most
    MAX_ANSWER_AGE_S old, else None."""

    def __init__(self, node: Node, manager: str, period: float = 0.5):
        self._type = list_controllers_type()
        self.service = f"{manager.rstrip('/')}/list_controllers"
        self.client = node.create_client(self._type, self.service)
        self._states: dict[str, str] | None = None
        self._answered = -float("inf")   # time.monotonic() of the newest answer
        self._pending = None             # (future, time asked)
        # Wall time: the question is whether the manager answers now, also while simulation time stands still.
        from rclpy.clock import Clock, ClockType
        node.create_timer(period, self.ask, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def ask(self) -> None:
        now = time.monotonic()
        if self._pending is not None:
            future, asked = self._pending
            if not future.done() and now - asked < MAX_ANSWER_AGE_S:
                return
            if not future.done():  # lost (the manager restarted): ask again
                self.client.remove_pending_request(future)
        if not self.client.service_is_ready():
            self._pending = None
            return
        future = self.client.call_async(self._type.Request())
        future.add_done_callback(self._on_answer)
        self._pending = (future, now)

    def _on_answer(self, future) -> None:
        response = future.result()
        if response is not None:
            self._states = {c.name: c.state for c in response.controller}
            self._answered = time.monotonic()

    def states(self) -> dict[str, str] | None:
        return self._states if time.monotonic() - self._answered <= MAX_ANSWER_AGE_S else None
