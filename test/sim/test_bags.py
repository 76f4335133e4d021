"""hybridvla_core.bags and `hybridvla sim run-experts --record`: bags that rosbags' AnyReader opens, with
full message definitions, the topics of a real teleoperated recording, and the episode's instruction."""
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from hybridvla_core import bags
from hybridvla_core.bags import EpisodeWriter, msg
from hybridvla_core.cli import main
from hybridvla_core.sim.config import load_config


def test_episode_writer_round_trip_with_custom_types_and_metadata(tmp_path):
    path = tmp_path / "ep"
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    with EpisodeWriter(path, metadata={"instruction": "put the red block in the blue bowl", "seed": 3}) as bag:
        bag.write("/camera/front/color/image_raw", 1_000, msg.image(1_000, "cam", rgb))
        bag.write("/hybridvla/fr3/target", 2_000, msg.arm_target(
            2_000, "fr3_link0", "fr3", [0.4, 0.0, 0.2], [1, 0, 0, 0], 0.5, 1.0,
            bags.constant("hybridvla_msgs/msg/ArmTarget", "SOURCE_TELEOP")))
        raw = bags.typestore().serialize_cdr(msg.joint_state(3_000, ["a"], [0.1]), "sensor_msgs/msg/JointState")
        bag.write_cdr("/joint_states", "sensor_msgs/msg/JointState", 3_000, raw)
    assert bags.bag_metadata(path) == {"instruction": "put the red block in the blue bowl", "seed": "3"}
    out = list(bags.read_messages(path))
    assert [m.topic for m in out] == ["/camera/front/color/image_raw", "/hybridvla/fr3/target", "/joint_states"]
    image = out[0].message
    np.testing.assert_array_equal(np.asarray(image.data).reshape(4, 6, 3), rgb)
    assert bags.stamp_ns(out[1].message.header) == 2_000 and out[1].message.source == 3
    assert out[2].message.position[0] == pytest.approx(0.1)
    # a topic filter reads only those topics, and nothing when none of them is in the bag
    assert [m.topic for m in bags.read_messages(path, ["/joint_states"])] == ["/joint_states"]
    assert list(bags.read_messages(path, ["/not/recorded"])) == []
    assert list(bags.read_raw(path, ["/not/recorded"])) == []
    assert [r[0] for r in bags.read_raw(path, ["/hybridvla/fr3/target"])] == ["/hybridvla/fr3/target"]


def test_writing_a_topic_with_a_second_type_is_refused(tmp_path):
    with EpisodeWriter(tmp_path / "ep") as bag:
        bag.write("/x", 1, msg.header(1))
        with pytest.raises(ValueError, match="already carries std_msgs/msg/Header"):
            bag.write("/x", 2, msg.time(2))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    out = tmp_path_factory.mktemp("rec") / "bags"
    assert main(["sim", "run-experts", "--task", "pick_place", "--episodes", "2", "--seed", "10",
                 "--record", str(out)]) == 0
    return sorted(out.iterdir())


def test_run_experts_records_one_mcap_bag_per_episode_with_the_real_topics(recorded):
    cfg = load_config(robot="fr3")
    assert len(recorded) == 2
    expected = {
        "/camera/front/color/image_raw": "sensor_msgs/msg/Image",
        "/camera/front/color/camera_info": "sensor_msgs/msg/CameraInfo",
        "/camera/wrist/color/image_raw": "sensor_msgs/msg/Image",
        "/camera/wrist/color/camera_info": "sensor_msgs/msg/CameraInfo",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/current_pose": "geometry_msgs/msg/PoseStamped",
        "/hybridvla/fr3/arm_state": "hybridvla_msgs/msg/ArmState",
        "/hybridvla/fr3/target": "hybridvla_msgs/msg/ArmTarget",
        "/hybridvla/episode_events": "hybridvla_msgs/msg/EpisodeEvent",
    }
    for path in recorded:
        assert list(path.glob("*.mcap")), "MCAP storage"
        summary = bags.topic_summary(path)
        assert {t: s[0] for t, s in summary.items()} == expected
        meta = bags.bag_metadata(path)
        assert meta["instruction"].startswith("put the ") and meta["seed"] in ("10", "11")
        # Stream rates on simulation time: cameras ~15 Hz, state ~50 Hz, targets ~10 Hz over the episode.
        events = list(bags.read_messages(path, ["/hybridvla/episode_events"]))
        assert [e.message.kind for e in events] == [0, 1 if meta["success"] == "true" else 2]
        assert all(e.message.instruction == meta["instruction"] for e in events)
        duration = (events[1].t_ns - events[0].t_ns) / 1e9
        counts = {t: s[1] for t, s in summary.items()}
        assert abs(counts["/camera/front/color/image_raw"] - cfg.camera_rate_hz * duration) <= 2
        assert counts["/camera/front/color/image_raw"] == counts["/camera/wrist/color/camera_info"]
        assert abs(counts["/joint_states"] - cfg.state_rate_hz * duration) <= 2
        assert abs(counts["/hybridvla/fr3/target"] - cfg.control_rate_hz * duration) <= 2


def test_recorded_bags_carry_message_definitions_and_consistent_stamps(recorded):
    with AnyReader([recorded[0]]) as reader:  # no typestore given: types come from the bag itself
        conns = {c.topic: c for c in reader.connections}
        definition = conns["/hybridvla/fr3/target"].msgdef.data
        assert "uint8 SOURCE_TELEOP=3" in definition and "MSG: geometry_msgs/Pose" in definition
        for conn, t_ns, raw in reader.messages(connections=[conns["/hybridvla/fr3/target"], conns["/joint_states"],
                                                            conns["/camera/front/color/image_raw"]]):
            m = reader.deserialize(raw, conn.msgtype)
            assert bags.stamp_ns(m.header) == t_ns  # header stamps and receive times: one clock
            if conn.msgtype == "sensor_msgs/msg/Image":
                assert (m.encoding, m.height, m.width) == ("rgb8", 240, 320)
            if conn.msgtype == "sensor_msgs/msg/JointState":
                assert list(m.name) == [f"fr3_joint{i}" for i in range(1, 8)] + ["fr3_finger_joint1", "fr3_finger_joint2"]
            if conn.msgtype == "hybridvla_msgs/msg/ArmTarget":
                assert m.source == 3 and m.header.frame_id == "fr3_link0"


def test_message_definitions_are_found_in_an_install_tree(tmp_path, monkeypatch):
    """Outside the source tree the .msg files come from <prefix>/share/hybridvla_msgs/msg; a folder named
    like the package that holds only generated Python (no .msg) is skipped."""
    (tmp_path / "src" / "hybridvla_msgs" / "msg").mkdir(parents=True)
    (tmp_path / "src" / "hybridvla_msgs" / "msg" / "_arm_state.py").write_text("")
    share = tmp_path / "prefix" / "share" / "hybridvla_msgs" / "msg"
    share.mkdir(parents=True)
    (share / "ArmState.msg").write_text("float32 gripper\n")
    monkeypatch.setattr(bags, "SOURCE_ROOT", tmp_path / "src")
    monkeypatch.setattr(bags.sys, "prefix", str(tmp_path / "prefix"))
    assert bags.interface_dir("hybridvla_msgs") == share.parent
