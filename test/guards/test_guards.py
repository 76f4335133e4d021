"""Guard pipeline behaviour, case by case (the property test covers the random mass)."""
import numpy as np
import pytest

from hybridvla_core.runtime.guards import EventKind, GuardConfig, GuardPipeline, Target

READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
CFG = GuardConfig("fr3", "fr3", (0.25, -0.45, 0.05), (0.75, 0.45, 0.75), max_translation_step=0.03,
                  max_rotation_step=0.15, watchdog_period=0.5)


@pytest.fixture
def g():
    pipeline = GuardPipeline(CFG)
    pipeline.set_measured(READY, 0.0)
    return pipeline


def here(g, dp=(0, 0, 0), gripper=0.5, stamp=0.0):
    m = g.measured
    return Target(m.position + np.asarray(dp, float), m.quaternion, gripper, stamp)


def kinds(result):
    return [e.kind for e in result.events]


def test_starts_disabled_and_commands_nothing(g):
    result = g.submit(here(g, (0.01, 0, 0)), 0.0)
    assert result.command is None and kinds(result) == [EventKind.DISABLED]
    assert g.tick(0.1).command is None


def test_enable_starts_from_the_measured_pose_and_tracks(g):
    assert g.enable(0.0) == (True, "enabled")
    assert g.command.hold and np.array_equal(g.command.joints, READY)
    result = g.submit(here(g, (0.02, 0, -0.01), stamp=0.05), 0.05)
    assert not result.command.hold and not result.events
    np.testing.assert_allclose(result.command.position, g.measured.position + [0.02, 0, -0.01])


def test_enable_is_refused_without_fresh_state_near_limits_or_under_estop():
    g = GuardPipeline(CFG)
    assert not g.enable(0.0)[0]
    near_limit = READY.copy()
    near_limit[5] = CFG.joint_margin / 2 + g.chain.lower[5]
    g.set_measured(near_limit, 0.0)
    ok, why = g.enable(0.0)
    assert not ok and "ready pose" in why
    g.set_measured(READY, 0.0)
    assert not g.enable(0.6)[0]  # the measurement is older than the watchdog
    g.estop(0.0)
    ok, why = g.enable(0.0)
    assert not ok and "e-stop" in why


def test_far_target_is_clamped_to_the_box_and_one_step(g):
    g.enable(0.0)
    m = g.measured
    result = g.submit(Target(np.array([5.0, 0.0, 0.4]), m.quaternion, 0.5, 0.0), 0.0)
    assert set(kinds(result)) == {EventKind.WORKSPACE_CLAMP, EventKind.STEP_CLAMP}
    assert np.linalg.norm(result.command.position - m.position) == pytest.approx(0.03)
    clamp = next(e for e in result.events if e.kind == EventKind.WORKSPACE_CLAMP)
    assert clamp.magnitude == pytest.approx(5.0 - 0.75) and clamp.requested_position[0] == 5.0
    np.testing.assert_array_equal(clamp.sent_position, result.command.position)


def test_nan_is_refused_and_the_last_safe_command_is_held(g):
    g.enable(0.0)
    safe = g.submit(here(g, (0.01, 0, 0)), 0.0).command
    result = g.submit(Target(np.array([np.nan, 0, 0.4]), g.measured.quaternion, 0.5, 0.0), 0.01)
    assert kinds(result) == [EventKind.NON_FINITE] and result.command.hold
    np.testing.assert_array_equal(result.command.position, safe.position)
    np.testing.assert_array_equal(result.events[0].sent_position, safe.position)


def test_pose_needing_a_joint_inside_the_margin_is_refused():
    # A Piper has no redundancy: a pose whose only nearby solution puts joint5 within the margin of its
    # limit (1.22 rad) cannot be bent into the allowed range and must be refused, the arm holding.
    g = GuardPipeline(GuardConfig("left", "piper", (0.1, -0.4, 0.0), (0.6, 0.4, 0.6), joint_margin=0.05))
    q = np.array([0.0, 1.2, -1.0, 0.0, 1.15, 0.0])
    g.set_measured(q, 0.0)
    assert g.enable(0.0)[0]
    p, quat = g.chain.fk(np.where(np.arange(6) == 4, 1.20, q))
    result = g.submit(Target(p, quat, 0.5, 0.0), 0.0)
    assert kinds(result) == [EventKind.JOINT_LIMIT] and result.command.hold
    np.testing.assert_array_equal(result.command.joints, q)
    p, quat = g.chain.fk(np.where(np.arange(6) == 4, 1.10, q))  # away from the limit: fine
    assert not g.submit(Target(p, quat, 0.5, 0.0), 0.0).command.hold


def test_gripper_is_clamped(g):
    g.enable(0.0)
    result = g.submit(here(g, gripper=1.7), 0.0)
    assert kinds(result) == [EventKind.GRIPPER_CLAMP] and result.command.gripper == 1.0


def test_an_unsure_target_is_held_only_when_min_confidence_is_set():
    from dataclasses import replace

    def target(g, confidence):
        m = g.measured
        return Target(m.position + [0.01, 0, 0], m.quaternion, 0.5, 0.0, confidence)

    off = GuardPipeline(CFG)  # min_confidence 0: off, whatever the confidence (NaN: diffusion mode)
    off.set_measured(READY, 0.0)
    off.enable(0.0)
    for confidence in (0.0, float("nan")):
        assert not off.submit(target(off, confidence), 0.0).command.hold
    on = GuardPipeline(replace(CFG, min_confidence=0.5))
    on.set_measured(READY, 0.0)
    on.enable(0.0)
    start = on.command.position.copy()
    for confidence in (0.49, float("nan")):
        result = on.submit(target(on, confidence), 0.0)
        assert kinds(result) == [EventKind.LOW_CONFIDENCE] and result.command.hold
        np.testing.assert_array_equal(result.command.position, start)
        assert np.isfinite(result.events[0].magnitude)
    assert on.tick(0.4).events == []  # a refused but fresh target is not reported stale
    assert not on.submit(target(on, 0.5), 0.0).command.hold


def test_watchdog_holds_once_per_stale_episode_and_fresh_targets_resume(g):
    g.enable(0.0)
    g.submit(here(g, (0.01, 0, 0), stamp=0.0), 0.0)
    g.set_measured(g.command.joints, 0.4)
    assert g.tick(0.45).events == []
    stale = g.tick(0.55)
    assert kinds(stale) == [EventKind.STALE_TARGET] and stale.command.hold
    assert g.tick(0.6).events == []  # reported once
    old = g.submit(here(g, stamp=0.0), 0.6)
    assert kinds(old) == [EventKind.STALE_TARGET]
    g.set_measured(g.command.joints, 0.6)
    fresh = g.submit(here(g, (0.01, 0, 0), stamp=0.6), 0.6)
    assert not fresh.command.hold and not fresh.events


def test_disable_and_estop_latch_the_measured_pose(g):
    g.enable(0.0)
    g.submit(here(g, (0.02, 0, 0)), 0.0)
    pushed = READY + 0.01
    g.set_measured(pushed, 0.1)
    result = g.disable(0.1)
    assert kinds(result) == [EventKind.DISABLED]
    np.testing.assert_array_equal(result.command.joints, pushed)
    assert kinds(g.submit(here(g, (0.01, 0, 0), stamp=0.1), 0.1)) == [EventKind.DISABLED]
    g.enable(0.1)
    result = g.estop(0.2)
    assert kinds(result) == [EventKind.ESTOP] and not g.enabled and g.estopped
    assert kinds(g.submit(here(g, stamp=0.2), 0.2)) == [EventKind.ESTOP]
    g.clear_estop()
    assert not g.enabled and not g.estopped
    assert g.enable(0.2)[0]


def test_a_held_pose_never_drives_the_arm_back_from_where_it_was_put(g):
    # The simulated lab's reset (or a push while disabled) moves the arm away from the latched hold: sending
    # that old pose would drive the arm back across the scene. Within one step it is held as before.
    g.enable(0.0)
    g.submit(here(g, (0.02, 0, 0)), 0.0)
    g.disable(0.1)
    held = g.command.position.copy()
    g.set_measured(READY + 0.005, 0.15)  # nudged: within one step of the held pose
    assert g.tick(0.2).events == [] and np.array_equal(g.command.position, held)
    elsewhere = READY + np.array([0.4, 0.2, 0.0, 0.3, 0.0, -0.2, 0.0])
    g.set_measured(elsewhere, 0.3)
    moved = g.tick(0.3)
    assert kinds(moved) == [EventKind.STEP_CLAMP] and "holding the measured pose" in moved.events[0].detail
    assert moved.command.hold and np.array_equal(moved.command.joints, elsewhere)
    np.testing.assert_allclose(moved.command.position, g.measured.position)
    assert g.tick(0.35).events == []  # reported once, then held quietly
    g.set_measured(READY, 1.5)  # moved again, but the measurement is stale by now: nothing is re-latched
    assert g.tick(2.5).events == [] and np.array_equal(g.command.joints, elsewhere)


@pytest.mark.parametrize("change, field", [
    (dict(workspace_min=(0.8, -0.4, 0.0)), "workspace_max"),
    (dict(max_translation_step=0.0), "max_translation_step"),
    (dict(watchdog_period=float("nan")), "watchdog_period"),
    (dict(gripper_min=0.5, gripper_max=0.2), "gripper_max"),
    (dict(joint_margin=-0.1), "joint_margin"),
    (dict(ik_iterations=0), "ik_iterations"),
    (dict(min_confidence=1.5), "min_confidence"),
    (dict(workspace_max=(1.0, 1.0)), "workspace_max"),
])
def test_bad_config_names_the_field(change, field):
    values = dict(arm="fr3", model="fr3", workspace_min=(0.2, -0.4, 0.0), workspace_max=(0.7, 0.4, 0.7))
    values.update(change)
    with pytest.raises(ValueError, match=f"'{field}'"):
        GuardPipeline(GuardConfig(**values))


def test_event_kinds_are_the_guard_event_constants():
    from hybridvla_msgs.msg import GuardEvent

    constants = {name: value for name, value in vars(GuardEvent).items() if name.isupper() and isinstance(value, int)
                 and not name.startswith("_")}
    assert constants == {kind.name: kind.value for kind in EventKind}
