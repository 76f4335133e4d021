"""Property tests of the guard pipeline: 10,000 random and adversarial operations per arm (targets with
NaN/inf, far outside the workspace, huge jumps, IK-infeasible poses, stale and future stamps, wild
grippers; enable/disable/e-stop at random; the arm following, lagging or being pushed) and, after every
one: no emitted command leaves the workspace, the step limits or the joint limits or comes from a target less
confident than min_confidence, a hold never moves the
command (except to the measured pose, reported, when the arm is more than one step from it), and every
deviation from what was asked produced an event of the matching kind."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from hybridvla_core.runtime.guards import EventKind, GuardConfig, GuardPipeline, Target
from hybridvla_core.runtime.kinematics import load_arm

FR3_READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])
PIPER_READY = np.array([0.0, 1.2, -1.0, 0.0, 0.6, 0.0])

ARMS = {
    "fr3": (GuardConfig("fr3", "fr3", (0.25, -0.45, 0.05), (0.75, 0.45, 0.75), min_confidence=0.3), FR3_READY),
    "piper": (GuardConfig("left", "piper_left", (0.15, -0.35, 0.05), (0.55, 0.35, 0.5),
                          max_translation_step=0.02, max_rotation_step=0.1), PIPER_READY),
}
EPS = 1e-9


def angle_between(qa, qb) -> float:
    return float(np.linalg.norm((Rotation.from_quat(qa) * Rotation.from_quat(qb).inv()).as_rotvec()))


def random_target(rng, g: GuardPipeline, now: float, newest: float) -> Target:
    m = g.measured
    kind = rng.integers(13)
    p, q = m.position + rng.normal(0, 0.01, 3), (Rotation.from_rotvec(rng.normal(0, 0.05, 3)) * Rotation.from_quat(m.quaternion)).as_quat()
    gripper, stamp, confidence = rng.uniform(0, 1), now - rng.uniform(0, 0.1), 1.0
    if kind == 0:  # NaN / inf anywhere
        bad = rng.choice([np.nan, np.inf, -np.inf])
        which = rng.integers(4)
        if which == 0:
            p = p.copy(); p[rng.integers(3)] = bad
        elif which == 1:
            q = q.copy(); q[rng.integers(4)] = bad
        elif which == 2:
            gripper = bad
        else:
            stamp = bad
    elif kind == 1:  # far outside the workspace
        p = rng.normal(0, 1, 3) * 10.0 ** rng.uniform(0, 6)
    elif kind == 2:  # huge jump anywhere in (and around) the box, any orientation
        lo, hi = np.array(g.config.workspace_min), np.array(g.config.workspace_max)
        p, q = rng.uniform(lo - 0.3, hi + 0.3), Rotation.random(random_state=rng).as_quat()
    elif kind == 3:  # any orientation near the measured position (often IK-infeasible within the margins)
        p = m.position + rng.normal(0, 0.05, 3)
        q = Rotation.random(random_state=rng).as_quat()
    elif kind == 4:  # stale, future or out-of-order stamps
        stamp = rng.choice([now - rng.uniform(0.5, 1e3), now + rng.uniform(0.5, 1e3), newest - rng.uniform(1e-3, 0.3)])
    elif kind == 5:  # gripper far out of range
        gripper = rng.uniform(-5, 5)
    elif kind == 6:  # not a unit quaternion
        q = q * rng.choice([0.0, 1e-9, 0.5, 3.0, 1e9])
    elif kind == 7:  # a pose that needs one joint just past its limit minus the margin
        q_out = m.joints.copy()
        j = rng.integers(g.chain.dof)
        edge = rng.choice([g.chain.lower[j], g.chain.upper[j]])
        q_out[j] = edge - np.sign(edge - m.joints[j]) * rng.uniform(0, g.config.joint_margin) if edge != m.joints[j] else edge
        p, q = g.chain.fk(q_out)
    elif kind == 8:  # medium jump: a few steps away
        p = m.position + rng.normal(0, 0.08, 3)
        q = (Rotation.from_rotvec(rng.normal(0, 0.4, 3)) * Rotation.from_quat(m.quaternion)).as_quat()
    elif kind == 12:  # an unsure policy, or none (NaN: diffusion mode)
        confidence = rng.choice([rng.uniform(0, 0.3), rng.uniform(0.3, 1.0), np.nan])
    return Target(p, q, gripper, stamp, confidence)


def event_kinds(result) -> set:
    return {e.kind for e in result.events}


def check_result(g: GuardPipeline, result, previous, target: Target | None, measured, op: str):
    """The invariants every operation must keep."""
    c = result.command
    for e in result.events:
        assert e.detail.startswith(g.config.arm + ":") and np.isfinite(e.magnitude) and e.magnitude >= 0
    if c is None:
        assert previous is None, f"{op}: a command vanished"
        return
    assert np.all(np.isfinite(c.position)) and np.all(np.isfinite(c.quaternion)) and np.all(np.isfinite(c.joints))
    assert np.isfinite(c.gripper)
    cfg = g.config
    unchanged = previous is not None and np.array_equal(c.position, previous.position) and \
        np.array_equal(c.quaternion, previous.quaternion) and np.array_equal(c.joints, previous.joints) and \
        c.gripper == previous.gripper
    if op == "submit" and c.hold:
        assert result.events, "a refused target produced no event"
    if op != "submit" or c.hold:
        latched = np.array_equal(c.position, measured.position) and np.array_equal(c.joints, measured.joints)
        # tick: a held pose more than one step from the arm is replaced by the measured pose, with an event.
        moved_away = previous is not None and (
            np.linalg.norm(previous.position - measured.position) > cfg.max_translation_step
            or angle_between(previous.quaternion, measured.quaternion) > cfg.max_rotation_step)
        relatched = op in ("tick", "clear") and latched and moved_away and EventKind.STEP_CLAMP in event_kinds(result)
        assert unchanged or relatched or (latched and op in ("enable", "disable", "estop")), \
            f"{op}: a hold moved the command"
        return
    # A new command: only from an accepted target of an enabled pipeline.
    assert op == "submit" and g.enabled and target is not None
    assert np.all(c.position >= np.array(cfg.workspace_min) - EPS) and np.all(c.position <= np.array(cfg.workspace_max) + EPS)
    assert np.linalg.norm(c.position - measured.position) <= cfg.max_translation_step + EPS
    assert angle_between(c.quaternion, measured.quaternion) <= cfg.max_rotation_step + 1e-7
    assert g.chain.within_limits(c.joints, cfg.joint_margin - EPS)
    assert np.abs(c.joints - measured.joints).max() <= cfg.max_joint_step + EPS
    p, q = g.chain.fk(c.joints)
    assert np.linalg.norm(p - c.position) <= cfg.ik_position_tolerance
    assert angle_between(q, c.quaternion) <= cfg.ik_rotation_tolerance + 1e-7
    assert cfg.gripper_min <= c.gripper <= cfg.gripper_max
    assert cfg.min_confidence == 0 or target.confidence >= cfg.min_confidence, "an unsure target moved the arm"
    kinds = event_kinds(result)
    asked_q = np.asarray(target.quaternion) / np.linalg.norm(target.quaternion)
    if np.linalg.norm(c.position - target.position) > 1e-12:
        assert kinds & {EventKind.WORKSPACE_CLAMP, EventKind.STEP_CLAMP}, "position changed without an event"
    if angle_between(c.quaternion, asked_q) > 1e-7:
        assert EventKind.STEP_CLAMP in kinds, "orientation changed without an event"
    if c.gripper != target.gripper:
        assert EventKind.GRIPPER_CLAMP in kinds, "gripper changed without an event"
    assert kinds <= {EventKind.WORKSPACE_CLAMP, EventKind.STEP_CLAMP, EventKind.GRIPPER_CLAMP}


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_ten_thousand_adversarial_operations_never_break_a_limit(arm):
    cfg, ready = ARMS[arm]
    g = GuardPipeline(cfg)
    rng = np.random.default_rng(7)
    now, newest = 100.0, 0.0
    g.set_measured(ready, now)
    counts = {k: 0 for k in EventKind}
    accepted = stale_ticks = 0
    for _ in range(10_000):
        previous = g.command
        measured = g.measured
        r = rng.random()
        target = None
        if r < 0.70:
            op = "submit"
            target = random_target(rng, g, now, newest)
            result = g.submit(target, now)
        elif r < 0.85:
            op = "tick"
            result = g.tick(now)
            if g.enabled and now - newest > cfg.watchdog_period:
                assert result.command.hold, "a stale target was not held"
        elif r < 0.93:
            op = "enable"
            ok, why = g.enable(now)
            assert ok or why
            if ok:
                newest = now  # the watchdog starts at the enable
            result = type(g.tick(now))(g.command)
        elif r < 0.955:
            op = "disable"
            result = g.disable(now)
            assert EventKind.DISABLED in event_kinds(result)
        elif r < 0.96:
            op = "estop"
            result = g.estop(now)
            assert EventKind.ESTOP in event_kinds(result) and not g.enabled
        else:
            op = "clear"
            was_estopped = g.estopped
            g.clear_estop()
            result = g.tick(now)
            assert not (was_estopped and g.enabled), "clearing the e-stop enabled the arm"
        check_result(g, result, previous, target, measured, op)
        for e in result.events:
            counts[e.kind] += 1
        if op == "submit" and result.command is not None and not result.command.hold:
            accepted += 1
            newest = target.stamp
        if op == "tick" and EventKind.STALE_TARGET in event_kinds(result):
            stale_ticks += 1
        # Time passes; now and then long enough for the watchdog.
        now += rng.uniform(0.005, 0.05) if rng.random() < 0.97 else rng.uniform(0.5, 2.0)
        # The arm follows the command (fully, partly, not at all), or is pushed, or its state goes stale.
        c, s = g.command, rng.random()
        if c is not None and s < 0.6:
            g.set_measured(c.joints if s < 0.4 else measured.joints + 0.5 * (c.joints - measured.joints), now)
        elif s < 0.7:
            pushed = np.clip(g.measured.joints + rng.normal(0, 0.02, g.chain.dof), g.chain.lower, g.chain.upper)
            g.set_measured(pushed, now)
        elif s < 0.75:
            assert not g.set_measured(np.full(g.chain.dof, np.nan), now)  # a NaN measurement is ignored
        elif s < 0.97:
            g.set_measured(g.measured.joints, now)
        # else: no new measurement this step
    # The run exercised every guard, and most in-range targets still got through.
    assert accepted > 1000, accepted  # ~1,300-2,100 of 10,000 operations, depending on the arm and the draw
    assert stale_ticks > 10
    for kind in EventKind:
        if kind == EventKind.LOW_CONFIDENCE and cfg.min_confidence == 0:
            assert counts[kind] == 0, "min_confidence 0 is off, yet a target was refused for its confidence"
            continue
        assert counts[kind] > 0, f"{kind.name} never happened: the test lost its teeth"


finite = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=st.lists(finite, min_size=3, max_size=3), q=st.lists(finite, min_size=4, max_size=4),
       gripper=finite, dt=finite)
def test_any_float_target_is_safe_or_refused(p, q, gripper, dt):
    cfg, ready = ARMS["fr3"]
    g = GuardPipeline(cfg, chain=FR3)
    g.set_measured(ready, 10.0)
    assert g.enable(10.0)[0]
    measured, previous = g.measured, g.command
    target = Target(np.array(p), np.array(q), gripper, 10.0 - dt)
    result = g.submit(target, 10.0)
    check_result(g, result, previous, target, measured, "submit")
    if result.command.hold:
        assert result.events


FR3 = load_arm("fr3")
