"""The policy node's ROS-free logic (hybridvla_core.runtime.control) with a stand-in policy, then one step with a
real tiny checkpoint."""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hybridvla_core.actions import ActionConvention, ArmPose, to_absolute_targets
from hybridvla_core.runtime.control import (ArmReading, Controller, LatestInputs, RateMeter, Skip, Step, Ticker,
                                    WarnLimiter, check_layout, input_problems)


class FakeClock:
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += dt


class StandInPolicy:
    """predict() returns a fixed action and records the observations it was given."""

    def __init__(self, views=("front", "wrist"), action_dim=7, action=None, error=None):
        self.config = SimpleNamespace(view_names=list(views), action_dim=action_dim, convention=ActionConvention())
        self.mode, self.theta = "hybrid", 0.96
        self.action = np.array([0.01, -0.02, 0.03, 0.1, 0.0, -0.1, 1.0] * (action_dim // 7)) if action is None else action
        self.error = error
        self.observations = []

    def predict(self, observation):
        if self.error:
            raise self.error
        self.observations.append(observation)
        return SimpleNamespace(action=self.action, diffusion_action=self.action, ar_action=self.action,
                               token_confidence=np.full(self.config.action_dim, 0.9), mean_confidence=0.9,
                               source="average", timings_ms={"prefill": 1.0, "total": 2.0})


def reading(x=0.4):
    return ArmReading(ArmPose(np.array([x, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0]), 1.0), "fr3_link0")


def fresh_controller(policy=None, now=10.0, **kwargs):
    policy = policy or StandInPolicy()
    controller = Controller(policy, ["front", "wrist"], ["fr3"], "pick the cube", 0.1, 0.2,
                            decode_image=lambda img: img, **kwargs)
    for view in ("front", "wrist"):
        controller.put_image(view, np.zeros((4, 4, 3), np.uint8), now - 0.02, now - 0.01)
    controller.put_state("fr3", reading(), now - 0.01, now - 0.005)
    return controller, policy


def test_latest_inputs_keep_only_the_newest_and_count_superseded():
    inputs = LatestInputs(["a", "b"])
    inputs.put("a", 1, 1.0, 1.0)
    inputs.put("a", 2, 2.0, 2.0)  # replaces 1 before any step used it
    taken = inputs.take()
    assert taken["a"].value == 2 and taken["b"] is None
    inputs.put("a", 3, 3.0, 3.0)  # replaces a used sample: not superseded
    assert inputs.superseded == 1


def test_input_problems_name_missing_old_and_future_inputs():
    inputs = LatestInputs(["view front", "view wrist", "arm fr3 state"])
    inputs.put("view front", None, 9.85, 9.9)
    inputs.put("view wrist", None, 10.5, 10.0)
    limits = {"view front": 0.1, "view wrist": 0.1, "arm fr3 state": 0.2}
    problems = input_problems(inputs.take(), 10.0, limits)
    assert problems == ["view front is 0.150 s old (limit 0.1 s)",
                        "view wrist is stamped 0.500 s in the future (clocks differ?)",
                        "no arm fr3 state received yet"]
    fresh = LatestInputs(["view front"])
    fresh.put("view front", None, 9.95, 9.96)
    assert input_problems(fresh.take(), 10.0, {"view front": 0.1}) == []


def test_warn_limiter_allows_one_message_per_second_per_key():
    clock = FakeClock()
    limiter = WarnLimiter(1.0, clock)
    allowed = []
    for i in range(25):  # 2.5 s of 10 Hz steps
        clock.t = 100.0 + i / 10
        allowed.append(limiter.allow("stale"))
    assert sum(allowed) == 3 and allowed[0] and allowed[10] and allowed[20]
    assert limiter.allow("error")  # another key has its own budget


def test_ticker_keeps_a_fixed_grid_and_skips_missed_ticks_without_a_burst():
    clock = FakeClock(0.0)
    ticker = Ticker(10.0, clock, clock.sleep)
    ticks = [ticker.wait() for _ in range(3)]
    assert ticks == pytest.approx([0.0, 0.1, 0.2])
    clock.t += 0.35  # a slow step: 0.3 and 0.4 are missed, 0.5 is next
    assert ticker.wait() == pytest.approx(0.5)
    assert ticker.missed == 2
    assert ticker.wait() == pytest.approx(0.6) and clock.t == pytest.approx(0.6)
    with pytest.raises(ValueError, match="control rate must be > 0"):
        Ticker(0.0)


def test_ticker_wait_returns_at_once_when_stopped():
    ticker = Ticker(0.5)
    ticker.wait()
    stop = threading.Event()
    stop.set()
    start = threading.Event()
    thread = threading.Thread(target=lambda: (ticker.wait(stop), start.set()))
    thread.start()
    assert start.wait(1.0), "wait() ignored the stop event (period 2 s)"
    thread.join()


def test_rate_meter():
    meter = RateMeter(window_s=5.0)
    for i in range(100):
        meter.add(i * 0.1)
    assert meter.rate() == pytest.approx(10.0)
    assert RateMeter().rate() == 0.0


def test_check_layout_refuses_views_and_arms_the_checkpoint_does_not_have():
    check_layout(["front", "wrist"], 7, ["wrist", "front"], ["fr3"])
    with pytest.raises(ValueError, match=r"view_names \['front'\] do not match the checkpoint's views"):
        check_layout(["front", "wrist"], 7, ["front"], ["fr3"])
    with pytest.raises(ValueError, match=r"2 arm\(s\) \['left', 'right'\] configured, but the checkpoint's action has 7"):
        check_layout(["front"], 7, ["front"], ["left", "right"])


def test_step_with_fresh_inputs_gives_absolute_targets_from_the_shared_conversion():
    controller, policy = fresh_controller()
    step = controller.step(10.0)
    assert isinstance(step, Step)
    expected = to_absolute_targets(policy.action, [reading().pose], ActionConvention())
    np.testing.assert_allclose(step.targets[0].position, [0.41, -0.02, 0.33])  # delta on the measured position
    np.testing.assert_allclose(step.targets[0].position, expected[0].position)
    np.testing.assert_allclose(step.targets[0].quaternion_xyzw, expected[0].quaternion_xyzw)
    assert step.frame_ids == ["fr3_link0"] and step.instruction == "pick the cube"
    assert step.stamp == pytest.approx(9.99)  # the newest input's stamp
    observation = policy.observations[0]
    assert set(observation["images"]) == {"front", "wrist"} and observation["instruction"] == "pick the cube"
    euler = Rotation.from_quat([1.0, 0.0, 0.0, 0.0]).as_euler("xyz")
    np.testing.assert_allclose(observation["state"], [0.4, 0.0, 0.3, *euler, 1.0])
    assert list(step.stages_ms)[:2] == ["input_wait", "observation"] and "prefill" in step.stages_ms
    assert "total" not in step.stages_ms and step.stages_ms["input_wait"] == pytest.approx(5.0)  # newest input: the state
    assert not step.send  # disabled by default: report only


def test_stale_or_missing_inputs_give_no_action():
    controller, policy = fresh_controller()
    skip = controller.step(10.5)  # every input is now older than its limit
    assert isinstance(skip, Skip) and skip.kind == "stale"
    assert skip.problems[0].startswith("view front is 0.520 s old")
    assert policy.observations == [] and controller.counters.stale == 1
    controller.inputs.clear("view wrist")
    controller.put_image("front", np.zeros((4, 4, 3), np.uint8), 10.5, 10.5)
    controller.put_state("fr3", reading(), 10.5, 10.5)
    assert controller.step(10.5).problems == ["no view wrist received yet"]


def test_instruction_changes_apply_to_the_next_step_and_empty_ones_are_refused():
    controller, policy = fresh_controller()
    assert controller.set_instruction("  stack the cups ") == (True, "instruction in force: stack the cups")
    ok, message = controller.set_instruction("   ")
    assert not ok and message == "empty instruction refused; in force: stack the cups"
    assert controller.step(10.0).instruction == "stack the cups"
    assert policy.observations[-1]["instruction"] == "stack the cups"


def test_no_instruction_means_no_action():
    policy = StandInPolicy()
    controller = Controller(policy, ["front", "wrist"], ["fr3"], "", 0.1, 0.2, decode_image=lambda i: i)
    for view in ("front", "wrist"):
        controller.put_image(view, np.zeros((4, 4, 3), np.uint8), 10.0, 10.0)
    controller.put_state("fr3", reading(), 10.0, 10.0)
    assert controller.step(10.0).problems == ["no instruction set (call ~/set_instruction)"]


def test_enabled_steps_send_and_failed_predictions_are_skipped():
    controller, _ = fresh_controller(enabled=True)
    assert controller.step(10.0).send and controller.counters.sent == 1
    broken, _ = fresh_controller(StandInPolicy(error=ValueError("view 'front' must be an HxWx3 uint8 RGB array")))
    skip = broken.step(10.0)
    assert skip.kind == "error" and "HxWx3" in skip.problems[0] and broken.counters.errors == 1
    nonfinite, _ = fresh_controller(StandInPolicy(action=np.array([np.nan] * 7)))
    assert nonfinite.step(10.0).kind == "error"


def test_two_arms_get_their_own_halves_of_the_action():
    policy = StandInPolicy(views=("high",), action_dim=14,
                           action=np.array([0.1, 0, 0, 0, 0, 0, 1.0, 0, 0.2, 0, 0, 0, 0, 0.0]))
    controller = Controller(policy, ["high"], ["left", "right"], "fold", 0.1, 0.2, decode_image=lambda i: i)
    controller.put_image("high", np.zeros((4, 4, 3), np.uint8), 10.0, 10.0)
    controller.put_state("left", reading(0.1), 10.0, 10.0)
    controller.put_state("right", reading(0.5), 10.0, 10.0)
    step = controller.step(10.0)
    np.testing.assert_allclose(step.targets[0].position, [0.2, 0.0, 0.3])
    np.testing.assert_allclose(step.targets[1].position, [0.5, 0.2, 0.3])
    assert [t.gripper for t in step.targets] == [1.0, 0.0]


def test_a_step_with_a_real_tiny_checkpoint(checkpoints):
    from hybridvla_core.model import Policy

    policy = Policy.from_checkpoint(checkpoints["franka"], mode="hybrid")
    controller = Controller(policy, ["front", "wrist"], ["fr3"], "pick the cube", 0.1, 0.2,
                            decode_image=lambda img: img)
    rng = np.random.default_rng(0)
    for view in ("front", "wrist"):
        controller.put_image(view, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), 10.0, 10.0)
    controller.put_state("fr3", reading(), 10.0, 10.0)
    step = controller.step(10.05)
    assert isinstance(step, Step), step
    assert np.all(np.isfinite(step.targets[0].position)) and 0.0 <= step.confidence <= 1.0
    assert {"vision_prefix", "prefill", "denoise", "autoregressive", "predict_total"} <= set(step.stages_ms)
    assert step.result.source in ("average", "diffusion")


def test_ticker_on_simulation_time_follows_that_clock_at_any_speed():
    wall = FakeClock(500.0)

    start = {"sim": 1700.0, "wall": 500.0}

    def sim_now():  # /clock every 20 ms of simulation time, the simulation at half real time
        return start["sim"] + 0.02 * int((wall.t - start["wall"]) / 2 / 0.02 + 1e-9)

    polls = []

    def sleep(dt):
        polls.append(dt)
        wall.sleep(dt)

    ticker = Ticker(10.0, sim_now, sleep, poll_s=0.002)
    ticks = [ticker.wait() for _ in range(4)]
    assert ticks == pytest.approx([1700.0, 1700.1, 1700.2, 1700.3]) and ticker.missed == 0
    assert max(polls) <= 0.002 + 1e-12  # polled: a 0.1 s sleep of wall time would be 0.05 s of this clock
    assert wall.t - 500.0 == pytest.approx(0.6, abs=0.01)  # 0.3 s of simulation took 0.6 s of wall time
    start.update(sim=10.0, wall=wall.t)  # the simulation restarted: the grid restarts, nothing missed
    assert ticker.wait() == pytest.approx(10.0) and ticker.missed == 0


@pytest.mark.parametrize("size, declared, problem", [
    ((1, 1), None, "view front frame is 1x1 px: no camera image (under 16 px a side)"),
    ((1000, 1), (640, 480), "view front frame is 1000x1 px: no camera image (under 16 px a side)"),
    ((320, 240), (640, 480), "view front frame is 320x240 px but its camera declares 640x480 (camera_info)"),
])
def test_a_frame_unlike_its_camera_is_refused_like_a_stale_one(size, declared, problem):
    controller, policy = fresh_controller()
    if declared is not None:
        controller.declare_image_size("front", *declared)
    controller.put_image("front", np.zeros((size[1], size[0], 3), np.uint8), 9.98, 9.99, size)
    skip = controller.step(10.0)
    assert isinstance(skip, Skip) and skip.kind == "stale" and skip.problems == [problem]
    assert policy.observations == []  # the policy never saw it
    controller.put_image("front", np.zeros((480, 640, 3), np.uint8), 9.99, 10.0, (640, 480))
    assert isinstance(controller.step(10.0), Step)  # the declared size (or any plausible one) is acted on
