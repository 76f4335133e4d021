"""FR3 kinematics from urdf/fr3.urdf: known poses, Jacobian against finite differences, IK round trips."""
import numpy as np
import pytest

from hybridvla_core.kinematics import load_arm

READY = np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4])


@pytest.fixture(scope="module")
def fr3():
    return load_arm("fr3")


def test_fr3_ready_pose_matches_the_robot(fr3):
    # franka's "ready" configuration puts the TCP at about (0.307, 0, 0.487) m, pointing down.
    position, quaternion = fr3.fk(READY)
    np.testing.assert_allclose(position, [0.3070, 0.0, 0.4869], atol=1e-3)
    assert abs(abs(quaternion[0]) - 1.0) < 1e-3  # 180 deg about x: the gripper points at the table
    assert fr3.joint_names == [f"fr3_joint{i}" for i in range(1, 8)]
    np.testing.assert_allclose(fr3.lower[[3, 5]], [-3.0421, 0.5445])


def test_jacobian_matches_finite_differences(fr3):
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.uniform(fr3.lower, fr3.upper)
        J = fr3.jacobian(q)
        numeric = np.zeros((3, fr3.dof))
        for i in range(fr3.dof):
            d = np.zeros(fr3.dof)
            d[i] = 1e-6
            numeric[:, i] = (fr3.fk(q + d)[0] - fr3.fk(q - d)[0]) / 2e-6
        np.testing.assert_allclose(J[:3], numeric, atol=1e-6)


def test_ik_reaches_reachable_poses_and_refuses_unreachable_ones(fr3):
    rng = np.random.default_rng(1)
    for _ in range(20):
        q_goal = np.clip(READY + rng.normal(0, 0.25, fr3.dof), fr3.lower + 0.05, fr3.upper - 0.05)
        position, quaternion = fr3.fk(q_goal)
        result = fr3.ik(position, quaternion, READY)
        assert result.success, result
        p, _ = fr3.fk(result.q)
        np.testing.assert_allclose(p, position, atol=2e-4)
        assert fr3.within_limits(result.q)
    far = fr3.ik([2.0, 0.0, 0.5], [1, 0, 0, 0], READY)  # 2 m away: beyond the arm's ~0.86 m reach
    assert not far.success and far.position_error > 0.5


def test_bad_joint_vector_is_a_clear_error(fr3):
    with pytest.raises(ValueError, match="expected \\(7,\\)"):
        fr3.fk(np.zeros(6))
