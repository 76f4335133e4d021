"""Privileged training labels of the simulated lab (SimEnv.privileged_offsets, topic /sim/privileged): the
instruction's block and bowl seen from the TCP in the arm's base frame, checked against a computation by hand
from MuJoCo's own state, against the physics (the TCP held 10 cm above the block), and in a recorded episode
read back with the independent mcap + mcap_ros2 reader."""
import mujoco
import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from scipy.spatial.transform import Rotation

from hybridvla_core.sim.config import load_config
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.experts import TOP_DOWN
from hybridvla_core.sim.record import BagRecorder
from hybridvla_core.sim.runner import Rates, run_expert_episode

T0 = 1_700_000_000_000_000_000


@pytest.fixture(scope="module")
def env():
    e = SimEnv("fr3", "pick_place")
    yield e
    e.close()


def by_hand(env, arm="fr3"):
    """R_base^T (p_obj - p_base) - tcp_in_base for the block and bowl the instruction names, read from MuJoCo."""
    words = env.instruction.split()  # "put the <colour> block in the <colour> bowl"
    assert words[3] == "block" and words[7] == "bowl", env.instruction
    m, d = env.model, env.data
    base = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "fr3_link0")
    tcp = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "fr3_hand_tcp")
    R, p_base = d.xmat[base].reshape(3, 3), d.xpos[base]
    tcp_in_base = R.T @ (d.site_xpos[tcp] - p_base)
    out = []
    for name in (f"block_{words[2]}", f"bowl_{words[6]}"):
        p_obj = d.xpos[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)]
        out.append(R.T @ (p_obj - p_base) - tcp_in_base)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 5, 17])
def test_offsets_equal_a_computation_by_hand_from_mujoco(env, seed):
    env.reset(seed)
    env.set_target("fr3", env.read("fr3").position + [0.05, -0.04, -0.03], env.read("fr3").quaternion)
    for _ in range(3):  # at rest and while moving
        got = env.privileged_offsets("fr3")
        assert got.shape == (2, 3)
        np.testing.assert_allclose(got, by_hand(env), rtol=0, atol=1e-9)
        env.advance(0.1)


def test_block_offset_is_straight_down_with_the_tcp_held_10cm_above_the_block(env):
    env.reset(2)
    colour = env.instruction.split()[2]
    block_world = env.data.body(f"block_{colour}").xpos.copy()
    base_p, base_q = env.base_pose("fr3")
    R = Rotation.from_quat(base_q).as_matrix()
    above = R.T @ (block_world - base_p) + [0.0, 0.0, 0.10]
    env.set_target("fr3", above, TOP_DOWN.as_quat())
    env.advance(3.0)
    assert np.linalg.norm(env.read("fr3").position - above) < 0.005, "the controller reached the point"
    block, bowl = env.privileged_offsets("fr3")
    np.testing.assert_allclose(block, [0.0, 0.0, -0.10], atol=0.005)
    bowl_world = env.data.body(f"bowl_{env.instruction.split()[6]}").xpos
    np.testing.assert_allclose(bowl - block, R.T @ (bowl_world - block_world), atol=1e-9)


def test_tasks_without_a_block_and_a_bowl_have_no_labels():
    e = SimEnv("agilex", "lift_ball")
    try:
        assert e.privileged_offsets("left") is None  # before the first reset
        e.reset(0)
        assert e.privileged_offsets("left") is None and e.privileged_offsets("right") is None
    finally:
        e.close()
    fresh = SimEnv("fr3", "pick_place")
    try:
        assert fresh.privileged_offsets("fr3") is None  # no episode yet
    finally:
        fresh.close()


class Spy(BagRecorder):
    """The recorder of `hybridvla sim run-experts --record`, noting the method's value at every state step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = []

    def state(self, env, t):
        super().state(env, t)
        self.expected.append((self._ns(t), env.privileged_offsets("fr3").copy()))


def test_a_recorded_episode_carries_one_label_message_per_state_step(tmp_path):
    cfg = load_config(robot="fr3")
    assert cfg.topics_privileged == "/sim/privileged"
    env = SimEnv(**cfg.env_kwargs())
    spy = Spy(tmp_path, cfg, epoch_ns=T0)
    try:
        run_expert_episode(env, 4, rates=Rates(control=cfg.control_rate_hz, state=cfg.state_rate_hz),
                           timeout_s=1.5, settle_s=0.1, sink=spy, cameras=False)
    finally:
        env.close()
    (mcap_path,) = spy.paths[0].glob("*.mcap")
    decoded = {}
    with open(mcap_path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _, channel, message, ros_msg in reader.iter_decoded_messages(log_time_order=True):
            decoded.setdefault(channel.topic, []).append((channel, message.log_time, ros_msg))
    labels, poses = decoded[cfg.topics_privileged], decoded[cfg.topics_current_pose]
    assert len(labels) == len(poses) == len(spy.expected) > 50  # one per state step (1.6 s at 50 Hz)
    for (_, t_log, m), (_, _, pose), (t_ns, expected) in zip(labels, poses, spy.expected):
        stamp = m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec
        assert stamp == t_log == t_ns == pose.header.stamp.sec * 1_000_000_000 + pose.header.stamp.nanosec
        assert m.header.frame_id == pose.header.frame_id == "fr3_link0"
        assert len(m.poses) == 2
        got = np.array([[p.position.x, p.position.y, p.position.z] for p in m.poses])
        np.testing.assert_array_equal(got, expected)
        assert all((p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w) == (0, 0, 0, 1)
                   for p in m.poses)
    moved = np.linalg.norm(spy.expected[-1][1][0] - spy.expected[0][1][0])
    assert moved > 0.01, "the expert moved the TCP, and the labels followed"


def test_the_bag_says_the_label_type(tmp_path):
    """The schema in the MCAP file (what any reader decodes against) is geometry_msgs/msg/PoseArray."""
    cfg = load_config(robot="fr3")
    env = SimEnv(**cfg.env_kwargs())
    rec = BagRecorder(tmp_path, cfg, epoch_ns=T0)
    try:
        run_expert_episode(env, 1, timeout_s=0.1, settle_s=0.0, sink=rec, cameras=False)
    finally:
        env.close()
    (mcap_path,) = rec.paths[0].glob("*.mcap")
    with open(mcap_path, "rb") as f:
        summary = make_reader(f).get_summary()
    channel = next(c for c in summary.channels.values() if c.topic == cfg.topics_privileged)
    assert summary.schemas[channel.schema_id].name == "geometry_msgs/msg/PoseArray"
