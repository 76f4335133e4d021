"""Piper kinematic model (urdf/piper.urdf, urdf/dual_piper.urdf): known pose, SDK limits, IK round trips."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hybridvla_core.runtime.kinematics import load_arm
from hybridvla_core.resources import resource_path

# A pose in the middle of the Piper's working range (rad): arm raised, forearm forward, wrist down.
WORK = np.array([0.0, 1.2, -1.0, 0.0, 0.6, 0.0])


@pytest.fixture(scope="module")
def piper():
    return load_arm("piper")


def test_zero_pose_matches_the_sdk_end_pose(piper):
    # piper_sdk reports the flange at X 56.127 mm, Z 213.266 mm, RY 85 deg with all joints at zero.
    T_tcp = piper.fk_matrix(np.zeros(6))
    tool_z = T_tcp[:3, 2]  # the tcp sits 0.1358 m along the flange's z axis, same orientation
    np.testing.assert_allclose(T_tcp[:3, 3] - 0.1358 * tool_z, [0.056127, 0.0, 0.213266], atol=5e-4)
    ry = Rotation.from_matrix(T_tcp[:3, :3]).as_euler("xyz")[1]
    assert abs(np.degrees(ry) - 85.0) < 0.1


def test_limits_are_the_sdk_set(piper):
    assert piper.joint_names == [f"joint{i}" for i in range(1, 7)]
    np.testing.assert_allclose(piper.lower, [-2.6179, 0.0, -2.967, -1.745, -1.22, -2.09439])
    np.testing.assert_allclose(piper.upper, [2.6179, 3.14, 0.0, 1.745, 1.22, 2.09439])
    np.testing.assert_allclose(piper.max_velocity, 3.0)


def test_ik_round_trips_near_the_working_pose(piper):
    rng = np.random.default_rng(3)
    for _ in range(20):
        q_goal = np.clip(WORK + rng.normal(0, 0.2, 6), piper.lower + 0.05, piper.upper - 0.05)
        position, quaternion = piper.fk(q_goal)
        result = piper.ik(position, quaternion, WORK)
        assert result.success, result
        np.testing.assert_allclose(piper.fk(result.q)[0], position, atol=2e-4)


def test_dual_arm_model_is_two_pipers_in_their_own_base_frames(piper):
    left, right = load_arm("piper_left"), load_arm("piper_right")
    q = np.random.default_rng(4).uniform(piper.lower, piper.upper)
    for arm in (left, right):
        np.testing.assert_allclose(arm.fk_matrix(q), piper.fk_matrix(q), atol=1e-12)
        assert arm.dof == 6
    assert left.joint_names[0] == "left_joint1" and right.joint_names[0] == "right_joint1"


def test_models_load_in_mujoco():
    mujoco = pytest.importorskip("mujoco")
    for name, joints in (("piper.urdf", 8), ("dual_piper.urdf", 16)):
        model = mujoco.MjModel.from_xml_path(str(resource_path("urdf", name)))
        assert model.njnt == joints
        data = mujoco.MjData(model)
        mujoco.mj_step(model, data)
        assert np.all(np.isfinite(data.qpos))


@pytest.mark.parametrize("name", ["fr3", "piper"])
def test_one_pass_fk_jacobian_equals_fk_and_jacobian(name):
    chain = load_arm(name)
    for q in np.random.default_rng(5).uniform(chain.lower, chain.upper, (20, chain.dof)):
        T, J = chain.fk_jacobian(q)
        np.testing.assert_allclose(T, chain.fk_matrix(q), atol=1e-12)
        np.testing.assert_allclose(J, chain.jacobian(q), atol=1e-12)
