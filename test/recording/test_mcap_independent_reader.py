"""Recorded episodes open in an independent MCAP reader (the PyPI `mcap` + `mcap-ros2-support` packages, what
Foxglove-style tools use): with the default chunk-zstd compression every message decodes there without any
help from rosbag2 or this project; bags in the older message mode (one zstd frame per message) still read
through the project's own readers."""
import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory

from hybridvla_core.recording import bags, recorder
from hybridvla_core.recording.bags import msg

CAMERA = "/camera/front/color/image_raw"
JOINTS = "/joint_states"
ARM = "/hybridvla/fr3/arm_state"
TARGET = "/hybridvla/fr3/target"
EVENTS = "/hybridvla/episode_events"
JOINT_NAMES = [f"fr3_joint{i}" for i in range(1, 8)]
FRAMES, STATES_PER_FRAME = 40, 4
T0 = 1_700_000_000_000_000_000


def cdr(message):
    return bytes(bags.typestore().serialize_cdr(message, message.__msgtype__))


def frame(k):
    """A 120x160 rgb8 frame that differs per k (57.6 kB: 40 of them span several 1 MiB MCAP chunks)."""
    yy, xx = np.mgrid[0:120, 0:160]
    return np.stack([(xx + 3 * k) % 256, (yy * 2) % 256, np.full_like(xx, k)], -1).astype(np.uint8)


def record_episode(out, compression=None):
    """One episode through the recorder core (what hybridvla_ros.recorder_node feeds with raw CDR from its
    subscriptions); returns the bag directory and topic -> messages offered."""
    kwargs = {} if compression is None else {"compression": compression}
    rec = recorder.EpisodeRecorder(out, robot="fr3", min_free_bytes=0, **kwargs)
    offered = {}

    def offer(topic, message, t):
        assert rec.offer(topic, message.__msgtype__, t, cdr(message))
        offered[topic] = offered.get(topic, 0) + 1

    try:
        assert rec.start("put the red block in the blue bowl", T0)[0].success
        for k in range(FRAMES):
            t = T0 + 1_000_000 + k * 66_666_667
            offer(CAMERA, msg.image(t, "camera_front_color_optical_frame", frame(k)), t)
            for j in range(STATES_PER_FRAME):
                n = k * STATES_PER_FRAME + j
                ts = t + j * 16_666_667
                offer(JOINTS, msg.joint_state(ts, JOINT_NAMES, [0.01 * n] * 7), ts)
                offer(ARM, msg.arm_state(ts, "fr3_link0", "fr3", [0.3 + 1e-3 * n, -0.1, 0.2], [1, 0, 0, 0], 1.0,
                                         0.08, JOINT_NAMES, [0.01 * n] * 7), ts)
            offer(TARGET, msg.arm_target(t, "fr3_link0", "fr3", [0.4, 0.0, 0.2 + 1e-3 * k], [1, 0, 0, 0], 0.5,
                                         0.9, bags.constant("hybridvla_msgs/msg/ArmTarget", "SOURCE_TELEOP")), t)
        assert rec.stop("success", T0 + 3_000_000_000)[0].success
    finally:
        rec.close(T0 + 3_000_000_001)
    return out / "episode_0000", offered


def decode_with_mcap(mcap_path):
    """topic -> [(log time, decoded message)] through mcap + mcap_ros2 alone, and the file's summary."""
    decoded = {}
    with open(mcap_path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        for _, channel, message, ros_msg in reader.iter_decoded_messages(log_time_order=True):
            decoded.setdefault(channel.topic, []).append((message.log_time, ros_msg))
    return decoded, summary


def test_default_episode_decodes_completely_in_the_mcap_reader(tmp_path):
    path, offered = record_episode(tmp_path)
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    # What rosbag2 itself writes for MCAP chunk compression (--storage-preset-profile zstd_fast): its own
    # compression layer unused, so ros2 bag info/play open the bag with the plain MCAP storage plugin.
    assert (info["compression_format"], info["compression_mode"]) == ("", "")
    assert info["storage_identifier"] == "mcap" and info["relative_file_paths"] == ["episode_0000.mcap"]
    assert bags.bag_compression(path) == ("zstd", "chunk")

    decoded, summary = decode_with_mcap(path / "episode_0000.mcap")
    chunks = summary.chunk_indexes
    assert len(chunks) >= 3 and {c.compression for c in chunks} == {"zstd"}  # really chunk compressed
    assert all(c.compressed_size < c.uncompressed_size for c in chunks)
    # Every message decoded: counts per topic as offered, plus the recorder's START and STOP events.
    expected = {**offered, EVENTS: 2}
    assert {t: len(v) for t, v in decoded.items()} == expected == {CAMERA: FRAMES, JOINTS: 4 * FRAMES,
                                                                   ARM: 4 * FRAMES, TARGET: FRAMES, EVENTS: 2}
    assert sum(summary.statistics.channel_message_counts.values()) == sum(expected.values())
    assert info["message_count"] == sum(expected.values())

    for k, (t, image) in enumerate(decoded[CAMERA]):
        assert (image.height, image.width, image.encoding, image.step) == (120, 160, "rgb8", 480)
        assert image.header.frame_id == "camera_front_color_optical_frame"
        stamp = image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec
        assert stamp == t == T0 + 1_000_000 + k * 66_666_667
        np.testing.assert_array_equal(np.frombuffer(bytes(image.data), np.uint8).reshape(120, 160, 3), frame(k))
    for n, (_, joints) in enumerate(decoded[JOINTS]):
        assert list(joints.name) == JOINT_NAMES
        np.testing.assert_allclose(joints.position, [0.01 * n] * 7)
    for n, (_, arm) in enumerate(decoded[ARM]):  # a custom type: its definition travels in the file
        assert (arm.arm, arm.header.frame_id, arm.enabled) == ("fr3", "fr3_link0", True)
        assert arm.pose.position.x == pytest.approx(0.3 + 1e-3 * n) and arm.pose.orientation.x == 1.0
        assert arm.gripper_width == pytest.approx(0.08) and list(arm.joint_names) == JOINT_NAMES
    for k, (_, target) in enumerate(decoded[TARGET]):
        assert target.source == 3 and target.confidence == pytest.approx(0.9)
        assert target.pose.position.z == pytest.approx(0.2 + 1e-3 * k)
    events = [m for _, m in decoded[EVENTS]]
    assert [(e.kind, e.episode_index, e.instruction) for e in events] == [
        (0, 0, "put the red block in the blue bowl"), (1, 0, "put the red block in the blue bowl")]


@pytest.mark.parametrize("name", ["message-zstd", "zstd"])
def test_message_mode_bags_still_record_and_read(tmp_path, name):
    """The older per-message bags ("zstd" was message mode's name while it was the default): rosbag2's
    metadata for message mode, every stored message one zstd frame (what a plain MCAP reader hands out
    undecoded), and the project's readers give the same messages as from a chunk-compressed bag."""
    old, _ = record_episode(tmp_path / "old", name)
    new, _ = record_episode(tmp_path / "new")
    info = yaml.safe_load((old / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert (info["compression_format"], info["compression_mode"]) == ("zstd", "message")
    assert bags.bag_compression(old) == ("zstd", "message")
    with open(old / "episode_0000.mcap", "rb") as f:
        stored = [m.data for _, _, m in make_reader(f).iter_messages()]
    assert len(stored) == 2 + 10 * FRAMES and all(bags.is_zstd_frame(d) for d in stored)
    assert list(bags.read_raw(old)) == list(bags.read_raw(new))  # CDR bytes, topics and times
    images = [m.message for m in bags.read_messages(old, [CAMERA])]
    assert len(images) == FRAMES
    np.testing.assert_array_equal(np.asarray(images[7].data).reshape(120, 160, 3), frame(7))
    assert bags.bag_metadata(old)["instruction"] == "put the red block in the blue bowl"
