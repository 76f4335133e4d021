"""FR3 kinematics from urdf/fr3.urdf: known poses, Jacobian against finite differences, IK round trips."""
import numpy as np
import pytest

from hybridvla_core.runtime.kinematics import load_arm

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


def test_quaternion_and_rotation_vector_from_matrix_are_scipys():
    from scipy.spatial.transform import Rotation

    from hybridvla_core.runtime.kinematics import quaternion_from_matrix, rotvec_from_matrix

    # Random rotations, the half turns (the quaternion's sign follows its largest component) and tiny angles
    # (the rotation vector's series).
    half_turns = Rotation.from_rotvec(np.pi * np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]]))
    tiny = Rotation.from_rotvec(np.array([[1e-4, 0, 0], [0, 3e-7, 1e-7], [0, 0, 9e-4], [0, 0, 0]]))
    for R in np.concatenate([Rotation.random(500, random_state=3).as_matrix(), half_turns.as_matrix(),
                             tiny.as_matrix()]):
        np.testing.assert_allclose(quaternion_from_matrix(R), Rotation.from_matrix(R).as_quat(), atol=1e-12)
        np.testing.assert_allclose(rotvec_from_matrix(R), Rotation.from_matrix(R).as_rotvec(), atol=1e-12)


def test_quaternion_helpers_are_scipys():
    """The guards' rotation arithmetic (step clamp, relatch) against scipy's Rotation, the reference."""
    from scipy.spatial.transform import Rotation

    from hybridvla_core.runtime.kinematics import (matrix_from_quaternion, quaternion_from_rotvec, quaternion_inverse,
                                                   quaternion_multiply, rotvec_from_quaternion)

    a, b = Rotation.random(300, random_state=4), Rotation.random(300, random_state=5)
    tiny = np.array([[1e-4, 0, 0], [0, 3e-7, 1e-7], [0, 0, 9e-4], [0, 0, 0], [0, 0, np.pi]])
    for ra, rb in zip(a, b):
        qa, qb = ra.as_quat(), rb.as_quat()
        product = quaternion_multiply(qa, qb)
        expected = (ra * rb).as_quat()
        np.testing.assert_allclose(product * np.sign(product @ expected), expected, atol=1e-12)  # same rotation
        np.testing.assert_allclose(rotvec_from_quaternion(quaternion_multiply(qa, quaternion_inverse(qb))),
                                   (ra * rb.inv()).as_rotvec(), atol=1e-12)
        np.testing.assert_allclose(matrix_from_quaternion(qa * 1.3), ra.as_matrix(), atol=1e-12)  # normalised first
    for v in np.concatenate([a.as_rotvec(), tiny]):
        np.testing.assert_allclose(quaternion_from_rotvec(v), Rotation.from_rotvec(v).as_quat(), atol=1e-12)
        np.testing.assert_allclose(rotvec_from_quaternion(Rotation.from_rotvec(v).as_quat()),
                                   Rotation.from_rotvec(v).as_rotvec(), atol=1e-12)


@pytest.mark.parametrize("arm", ["fr3", "piper"])
def test_fast_fk_equals_the_urdf_frame_chain(arm):
    from scipy.spatial.transform import Rotation

    chain = load_arm(arm)
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.uniform(chain.lower, chain.upper)
        T = chain.fk_matrix(q)  # the frame-by-frame chain with scipy's rotations
        position, quaternion = chain.fk(q)
        np.testing.assert_allclose(position, T[:3, 3], atol=1e-12)
        np.testing.assert_allclose(quaternion, Rotation.from_matrix(T[:3, :3]).as_quat(), atol=1e-12)


@pytest.mark.parametrize("urdf, base, tip", [("fr3.urdf", "fr3_link0", "fr3_hand_tcp"),
                                             ("fr3.urdf", "fr3_link0", "fr3_leftfinger"),   # ends in a prismatic joint
                                             ("piper.urdf", "base_link", "link7")])
def test_fast_fk_and_jacobian_equal_the_frame_chain_with_prismatic_joints(urdf, base, tip):
    from hybridvla_core.resources import resource_path
    from hybridvla_core.runtime.kinematics import KinematicChain

    chain = KinematicChain.from_urdf(resource_path("urdf", urdf), base, tip)
    rng = np.random.default_rng(2)
    for _ in range(30):
        q = rng.uniform(chain.lower, chain.upper)
        T, J = chain.fk_jacobian(q)
        np.testing.assert_allclose(T, chain.fk_matrix(q), atol=1e-12)   # frame by frame, scipy's rotations
        np.testing.assert_allclose(J, chain.jacobian(q), atol=1e-12)
