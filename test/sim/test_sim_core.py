"""The simulated lab's core: the MuJoCo arm has urdf/fr3.urdf's kinematics, the Cartesian controller and
the gripper do what the real ones do, a seed is an episode, and cameras show the scene."""
import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hybridvla_core.runtime.kinematics import load_arm
from hybridvla_core.sim.config import config_from_parameters, load_config
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.experts import TOP_DOWN, make_expert
from hybridvla_core.sim.runner import Pacer
from hybridvla_core.sim.tasks import COLOURS


@pytest.fixture(scope="module")
def env():
    e = SimEnv("fr3", "pick_place", image_width=160, image_height=120)
    yield e
    e.close()


def test_mujoco_tcp_equals_urdf_forward_kinematics(env):
    chain = load_arm("fr3")
    rng = np.random.default_rng(0)
    arm = env.arms["fr3"]
    for _ in range(5):
        q = rng.uniform(chain.lower, chain.upper)
        env.data.qpos[arm.qadr] = q
        mujoco.mj_forward(env.model, env.data)
        reading = env.read("fr3")
        p, quat = chain.fk(q)
        np.testing.assert_allclose(reading.position, p, atol=1e-9)
        assert (Rotation.from_quat(reading.quaternion) * Rotation.from_quat(quat).inv()).magnitude() < 1e-7


def test_cartesian_target_is_reached_at_bounded_speed(env):
    env.reset(1)
    start = env.read("fr3").position
    target = np.array([0.45, -0.15, 0.25])
    rot = Rotation.from_euler("z", 0.3) * TOP_DOWN
    env.set_target("fr3", target, rot.as_quat())
    path = []
    for _ in range(30):  # 3 s
        env.advance(0.1)
        path.append(env.read("fr3").position)
    reading = env.read("fr3")
    assert np.linalg.norm(reading.position - target) < 0.005
    assert (Rotation.from_quat(reading.quaternion) * rot.inv()).magnitude() < 0.02
    # Never faster than max_linear_speed (0.5 m/s) plus servo lag: after 0.1 s at most ~5 cm from the start.
    assert np.linalg.norm(path[0] - start) < 0.5 * 0.1 + 0.01


def test_gripper_closes_on_a_block_and_lifts_it(env):
    env.reset(2)
    colour = env.layout.block
    block = env.task.block_position(env.model, env.data, colour)
    yaw = env.task.block_yaw(env.model, env.data, colour)
    rot = (Rotation.from_euler("z", yaw) * TOP_DOWN).as_quat()
    env.set_target("fr3", block + [0, 0, 0.15], rot)
    env.advance(1.5)
    assert env.milestones("fr3") == {"tcp_to_block_m": pytest.approx(0.15, abs=0.01), "lifted": False,
                                     "over_bowl": False,
                                     "block_from_tcp_m": pytest.approx([0.0, 0.0, -0.15], abs=0.01)}
    env.set_target("fr3", block + [0, 0, 0.004], rot)
    env.advance(1.5)
    env.set_gripper("fr3", 0.0)
    env.advance(1.0)
    width = env.read("fr3").gripper_width
    assert abs(width - 0.04) < 0.003  # stopped by the 4 cm block, not closed
    assert env.milestones("fr3")["tcp_to_block_m"] < 0.01
    env.set_target("fr3", block + [0, 0, 0.2], rot)
    env.advance(1.5)
    assert env.task.block_position(env.model, env.data, colour)[2] > 0.15
    assert env.milestones("fr3")["lifted"] and not env.milestones("fr3")["over_bowl"]
    env.set_target("fr3", [*env.layout.bowls[env.layout.bowl], 0.2], rot)
    env.advance(2.5)
    assert env.milestones("fr3")["over_bowl"] and env.milestones("fr3")["tcp_to_block_m"] < 0.01


def test_same_seed_same_episode_and_different_seed_different_episode():
    def run(seed):
        e = SimEnv("fr3", "pick_place")
        instruction = e.reset(seed)
        expert = make_expert(e)
        expert.reset()
        for _ in range(30):  # 3 s of the expert: reaches and grasps
            for arm, c in expert.act(0.1).items():
                e.set_target(arm, c.position, c.quaternion)
                e.set_gripper(arm, c.gripper)
            e.advance(0.1)
        return instruction, e.state_vector()

    a, b, c = run(7), run(7), run(8)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_reset_reuses_the_environment_deterministically(env):
    env.reset(5)
    first = env.state_vector()
    env.advance(1.0)
    env.reset(5)
    np.testing.assert_array_equal(env.state_vector(), first)


@pytest.mark.parametrize("seed", [0, 3])
def test_front_camera_shows_the_commanded_block_in_its_colour(env, seed):
    env.reset(seed)
    image = env.render("front")
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    block = env.task.block_position(env.model, env.data, env.layout.block)
    u, v = env.project("front", block)
    patch = image[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3].reshape(-1, 3).astype(float)
    want = np.array(COLOURS[env.layout.block][:3]) * 255
    # The patch's hue matches the block's colour better than any other block colour (shading changes brightness).
    def hue_distance(rgb, ref):
        return np.linalg.norm(rgb / (rgb.sum() + 1e-9) - ref / ref.sum())
    mean = patch.mean(axis=0)
    distances = {c: hue_distance(mean, np.array(rgba[:3]) * 255) for c, rgba in COLOURS.items()}
    assert min(distances, key=distances.get) == env.layout.block, (mean, want)
    # ... and the same pixel does not show that colour once the block is moved away.
    env.task.apply(env.model, env.data, type(env.layout)(env.layout.block, env.layout.bowl, {}, {}))
    mujoco.mj_forward(env.model, env.data)
    moved = env.render("front")[int(v) - 2:int(v) + 3, int(u) - 2:int(u) + 3].reshape(-1, 3).mean(axis=0)
    assert hue_distance(moved, want) > 2 * hue_distance(mean, want)


def test_wrist_camera_moves_with_the_hand(env):
    env.reset(4)
    before = env.render("wrist").astype(int)
    env.set_target("fr3", [0.45, 0.2, 0.3], TOP_DOWN.as_quat())
    env.advance(2.0)
    after = env.render("wrist").astype(int)
    assert np.abs(after - before).mean() > 5


def test_config_files_validate_and_bad_values_name_the_field():
    cfg = load_config(robot="fr3")
    assert (cfg.robot, cfg.task, cfg.topics_target_pose) == ("fr3", "pick_place", "/target_pose")
    with pytest.raises(ValueError, match="'camera_width'"):
        config_from_parameters({"camera_width": 3})
    with pytest.raises(ValueError, match="'task'"):
        config_from_parameters({"robot": "fr3", "task": "lift_ball"})
    with pytest.raises(ValueError, match="unknown parameter 'camera_fps'"):
        config_from_parameters({"camera_fps": 3})


@pytest.fixture(scope="module")
def dual():
    e = SimEnv("agilex", "lift_ball", image_width=160, image_height=120)
    yield e
    e.close()


def test_piper_arms_have_the_urdf_kinematics_in_their_base_frames(dual):
    rng = np.random.default_rng(1)
    for name in ("left", "right"):
        chain = load_arm(f"piper_{name}")
        arm = dual.arms[name]
        q = rng.uniform(chain.lower, chain.upper)
        dual.data.qpos[arm.qadr] = q
        mujoco.mj_forward(dual.model, dual.data)
        np.testing.assert_allclose(dual.read(name).position, chain.fk(q)[0], atol=1e-9)


def test_piper_joint_targets_are_followed_and_the_gripper_opens(dual):
    dual.reset(0)
    q = np.array([0.3, 1.0, -1.0, 0.2, 0.5, -0.4])
    dual.set_joint_target("left", q)
    dual.set_gripper_width("left", 0.05)
    dual.advance(2.0)
    reading = dual.read("left")
    np.testing.assert_allclose(reading.q, q, atol=0.01)
    assert abs(reading.gripper_width - 0.05) < 0.003
    np.testing.assert_allclose(dual.read("right").q, dual.arms["right"].spec.home, atol=0.01)


def test_overhead_camera_shows_the_orange_ball(dual):
    dual.reset(2)
    image = dual.render("high")
    u, v = dual.project("high", dual.task.ball_position(dual.model, dual.data))
    r, g, b = image[int(v) - 1:int(v) + 2, int(u) - 1:int(u) + 2].reshape(-1, 3).mean(axis=0)
    assert r > 150 and r > 1.5 * g and g > 1.5 * b  # orange
    assert set(dual.cameras) == {"high", "left_wrist", "right_wrist"}


def test_topic_patterns_must_name_their_placeholder():
    with pytest.raises(ValueError, match="'topics.arm_state'"):
        config_from_parameters({"topics.arm_state": "/hybridvla/fr3/arm_state"})
    assert load_config(robot="agilex").topics_target_pose == "/target_pose"  # defaults: the shipped FR3 file


def test_unreachable_target_stretches_the_arm_to_its_reach_and_a_reachable_one_is_then_reached(env):
    env.reset(6)
    env.set_target("fr3", [2.0, 0.0, 0.3], TOP_DOWN.as_quat())  # 2 m away: out of reach
    env.advance(3.0)
    position = env.read("fr3").position
    assert np.all(np.isfinite(position)) and 0.6 < position[0] < 0.9  # as far as the arm goes, no further
    goal = np.array([0.4, -0.1, 0.3])
    env.set_target("fr3", goal, TOP_DOWN.as_quat())
    env.advance(2.0)  # no wind-up: the setpoint stayed with the arm, so this is a 0.5 m move at 0.5 m/s
    assert np.linalg.norm(env.read("fr3").position - goal) < 0.005


def test_ball_milestones_count_lifted_and_over_the_box_only_when_both(dual):
    dual.reset(2)
    first = dual.milestones("left")
    assert not first["lifted"] and not first["over_box"] and first["tcp_to_ball_m"] > 0.05
    ball = dual.model.joint("ball").qposadr[0]
    box = dual.layout.box
    for xy, over in (((box[0], box[1] + 0.2), False), (box, True)):
        dual.data.qpos[ball:ball + 3] = (*xy, 0.2)  # held in the air for this one reading
        mujoco.mj_forward(dual.model, dual.data)
        assert dual.milestones("left") == {"tcp_to_ball_m": pytest.approx(
            np.linalg.norm(dual.read("left").position - [*xy, 0.2])), "lifted": True, "over_box": over}


def test_start_jitter_draws_a_seeded_start_pose_inside_its_ranges_and_leaves_the_layout_alone(env):
    jitter = (0.08, 0.15, 0.07, 0.5)
    jittered = SimEnv("fr3", "pick_place", image_width=64, image_height=48, start_jitter=jitter)
    try:
        home_p, home_q = load_arm("fr3").fk(np.array(jittered.arms["fr3"].spec.home))
        starts = []
        for seed in (3, 4, 3):
            env.reset(seed)
            jittered.reset(seed)
            assert jittered.layout == env.layout  # the start pose has its own random stream
            np.testing.assert_allclose(env.read("fr3").position, home_p, atol=2e-3)  # no jitter: home
            reading = jittered.read("fr3")
            turn = Rotation.from_quat(reading.quaternion) * Rotation.from_quat(home_q).inv()
            offset = reading.position - home_p
            assert np.all(np.abs(offset) <= np.array(jitter[:3]) + 2e-3)
            assert abs(turn.as_euler("xyz")[2]) <= jitter[3] + 0.01 and turn.magnitude() <= jitter[3] + 0.01
            starts.append(np.r_[reading.position, turn.as_euler("xyz")[2]])
        np.testing.assert_allclose(starts[0], starts[2], atol=1e-9)  # same seed, same start
        assert np.linalg.norm(starts[0][:3] - starts[1][:3]) > 0.01   # another seed, another start
    finally:
        jittered.close()
    with pytest.raises(ValueError, match="start_jitter must be 4 half-ranges >= 0"):
        SimEnv("fr3", "pick_place", start_jitter=(0.1, -0.1, 0.0, 0.0))
    with pytest.raises(ValueError, match="parameter 'start_jitter.y_m' = -0.1 is invalid: expected m >= 0"):
        config_from_parameters({"start_jitter.y_m": -0.1})


def test_a_start_jitter_beyond_reach_is_refused_in_one_line():
    far = SimEnv("fr3", "pick_place", image_width=64, image_height=48, start_jitter=(0.0, 0.0, 2.0, 0.0))
    try:
        with pytest.raises(ValueError, match=r"start_jitter .*: seed \d+ drew a start pose of fr3 that IK cannot"):
            for seed in range(5):  # half of the draws lie 1 m or more above the robot's reach
                far.reset(seed)
    finally:
        far.close()


class _WallClock:
    def __init__(self):
        self.t = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.sleeps.append(dt)
        self.t += dt


def test_pacer_holds_real_time_and_after_a_stall_goes_on_slower_instead_of_bursting():
    wall = _WallClock()
    pacer = Pacer(1.0, max_lag_s=0.1, clock=wall, sleep=wall.sleep)
    sim = 0.0
    pacer.wait(sim)
    for _ in range(5):  # 20 ms steps that take no wall time: each waits its 20 ms
        sim += 0.02
        pacer.wait(sim)
    assert wall.sleeps == pytest.approx([0.02] * 5) and wall.t == pytest.approx(1000.1)
    wall.t += 2.0  # the machine stalled the simulation for 2 s
    sim += 0.02
    pacer.wait(sim)
    assert pacer.slipped_s == pytest.approx(1.98)
    wall.sleeps.clear()
    for _ in range(3):  # real time again from here: no run of unpaced steps to win the 2 s back
        sim += 0.02
        pacer.wait(sim)
    assert wall.sleeps == pytest.approx([0.02] * 3)
    wall.t += 0.05  # a lag under max_lag_s is caught up as before: two steps unpaced, then 10 ms of sleep
    for _ in range(3):
        sim += 0.02
        pacer.wait(sim)
    assert pacer.slipped_s == pytest.approx(1.98) and wall.sleeps[3:] == pytest.approx([0.01])
