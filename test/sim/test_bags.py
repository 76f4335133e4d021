"""hybridvla_core.recording.bags and `hybridvla sim run-experts --record`: bags that rosbags' AnyReader opens, with
full message definitions, the topics of a real teleoperated recording, and the episode's instruction;
MCAP chunk zstd compression (the default), rosbag2 message-mode zstd and uncompressed bags."""
import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader

from hybridvla_core.recording import bags, recovery
from hybridvla_core.recording.bags import EpisodeWriter, msg
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


def _episode_messages():
    """(topic, msgtype, t_ns, CDR bytes) of a short episode: camera frames, state, targets, custom types."""
    store, out = bags.typestore(), []
    yy, xx = np.mgrid[0:48, 0:64]
    for k in range(12):
        t = 1_000_000_000 + k * 66_666_667
        rgb = np.stack([(xx * 4 + k) % 256, (yy * 5) % 256, np.full_like(xx, 90)], -1).astype(np.uint8)
        for m, topic in ((msg.image(t, "cam", rgb), "/camera/front/color/image_raw"),
                         (msg.joint_state(t, ["a", "b"], [0.1 * k, -0.2]), "/joint_states"),
                         (msg.arm_state(t, "fr3_link0", "fr3", [0.4, 0.0, 0.2 + k * 1e-3], [1, 0, 0, 0], 1.0, 0.08,
                                        ["j1"], [0.5]), "/hybridvla/fr3/arm_state"),
                         (msg.episode_event(t, 0, 3, "pick ü"), "/hybridvla/episode_events")):
            out.append((topic, m.__msgtype__, t, bytes(store.serialize_cdr(m, m.__msgtype__))))
    return out


@pytest.mark.parametrize("compression, recorded_as", [("chunk-zstd", ("zstd", "chunk")), ("zstd", ("zstd", "message")),
                                                      ("message-zstd", ("zstd", "message")), ("none", ("none", "none"))])
def test_compressed_and_uncompressed_episodes_round_trip_byte_exactly(tmp_path, compression, recorded_as):
    """Every message comes back byte for byte through the reader the suite uses, metadata.yaml records the
    compression as rosbag2 expects (message mode: format zstd, mode message; MCAP chunk compression and none:
    both empty, as rosbag2 writes them), in a message-mode bag every stored message is one zstd frame that
    states its decompressed size (rosbag2's zstd plugin refuses frames without it), and in a chunk-compressed
    bag the chunks are zstd and the messages in them plain CDR."""
    messages = _episode_messages()
    path = tmp_path / "ep"
    with EpisodeWriter(path, metadata={"instruction": "pick"}, compression=compression) as bag:
        for topic, msgtype, t, data in messages:
            bag.write_cdr(topic, msgtype, t, data)
    assert bags.bag_compression(path) == recorded_as
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    message_mode = compression in ("zstd", "message-zstd")
    assert (info["compression_format"], info["compression_mode"]) == (("zstd", "message") if message_mode
                                                                      else ("", ""))
    assert bags.mcap_chunk_compression(path / "ep.mcap") == ("zstd" if compression == "chunk-zstd" else "")
    assert info["relative_file_paths"] == ["ep.mcap"] and info["message_count"] == len(messages)
    back = list(bags.read_raw(path))
    assert sorted(back) == sorted(messages)  # same topics, types, times and bytes
    assert bags.bag_metadata(path) == {"instruction": "pick"}
    assert [m.message.instruction for m in bags.read_messages(path, ["/hybridvla/episode_events"])] == ["pick ü"] * 12
    zstd = bags.zstd_module()
    stored = list(recovery.read_truncated_mcap(path / "ep.mcap", stored=True))  # the storage's own bytes
    assert [s[:3] for s in stored] == [m[:3] for m in messages]
    for (_, _, _, raw), (_, _, _, cdr) in zip(stored, messages):
        if message_mode:
            assert raw[:4] == bags.ZSTD_MAGIC and zstd.get_frame_info(raw).decompressed_size == len(cdr)
            assert zstd.decompress(raw) == cdr
        else:
            assert raw == cdr


def test_unknown_compression_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"compression must be one of chunk-zstd, message-zstd, none "
                                         r"\(zstd = message-zstd\), got 'lz4'"):
        EpisodeWriter(tmp_path / "ep", compression="lz4")
    assert not (tmp_path / "ep").exists()


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
        cfg.topics_privileged: "geometry_msgs/msg/PoseArray",  # simulation only: the training labels
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
        assert counts[cfg.topics_privileged] == counts["/current_pose"] == counts["/joint_states"]
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


def test_offline_piper_joint_states_are_named_as_piper_ros_names_them():
    """Bags recorded without ROS carry the names piper_ros (humble) publishes, as the live simulated lab does."""
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.record import joint_state_message
    from vendor_interfaces import PIPER_ROS_JOINT_STATE_NAMES

    env = SimEnv("agilex", "lift_ball", image_width=64, image_height=48)
    try:
        env.reset(0)
        m = joint_state_message(env, "left", 0)
        assert list(m.name) == PIPER_ROS_JOINT_STATE_NAMES and len(m.position) == 7
        assert m.position[6] == env.read("left").gripper_width
    finally:
        env.close()


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


def _rewrite(src, dst, compression):
    """The same episode (raw CDR bytes, metadata) written again with another compression."""
    with EpisodeWriter(dst, metadata=bags.bag_metadata(src), compression=compression) as bag:
        for topic, msgtype, t_ns, data in bags.read_raw(src):
            bag.write_cdr(topic, msgtype, t_ns, data)
    return dst


def _bag_bytes(path):
    return sum(f.stat().st_size for f in path.iterdir())


def test_recorded_sim_episodes_are_compressed_and_build_the_same_dataset_as_uncompressed(recorded, tmp_path):
    """run-experts --record writes MCAP chunk zstd by default: the rendered camera frames shrink several
    times, and `hybridvla dataset build` makes the same samples from it as from an uncompressed copy and from
    a message-mode zstd copy (the older default)."""
    zstd_bag = recorded[0]
    assert bags.bag_compression(zstd_bag) == ("zstd", "chunk")
    plain = _rewrite(zstd_bag, tmp_path / "bags" / "plain", "none")
    assert bags.bag_compression(plain) == ("none", "none")
    assert list(bags.read_raw(plain)) == list(bags.read_raw(zstd_bag))
    assert _bag_bytes(zstd_bag) * 4 < _bag_bytes(plain), (_bag_bytes(zstd_bag), _bag_bytes(plain))
    per_message = _rewrite(zstd_bag, tmp_path / "bags" / "per_message", "message-zstd")
    assert bags.bag_compression(per_message) == ("zstd", "message")
    assert list(bags.read_raw(per_message)) == list(bags.read_raw(zstd_bag))
    assert _bag_bytes(per_message) * 4 < _bag_bytes(plain), (_bag_bytes(per_message), _bag_bytes(plain))

    out = tmp_path / "set"
    assert main(["dataset", "build", str(zstd_bag), str(plain), str(per_message), "-o", str(out),
                 "--val-fraction", "0", "--include-failed"]) == 0
    shard = out / "train" / "shard-00000"
    episode = np.load(shard / "episode.npy")
    assert sorted(set(episode.tolist())) == [0, 1, 2]
    for name in ("image_front", "image_wrist", "state", "action"):
        values = np.load(shard / f"{name}.npy")
        assert len(values[episode == 0]) > 10
        np.testing.assert_array_equal(values[episode == 0], values[episode == 1])
        np.testing.assert_array_equal(values[episode == 0], values[episode == 2])
