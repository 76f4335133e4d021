"""The episode state machine, statistics, disk check and crash recovery without ROS."""
import io
import json

import numpy as np
import pytest

from hybridvla_core.recording import bags, recorder, recovery, terminal_keys
from hybridvla_core.recording.bags import msg

IMAGE = "sensor_msgs/msg/Image"
STATE = "sensor_msgs/msg/JointState"


def cdr(message):
    return bytes(bags.typestore().serialize_cdr(message, message.__msgtype__))


def image(t_ns):
    return cdr(msg.image(t_ns, "cam", np.zeros((120, 160, 3), np.uint8)))


def noisy_image(t_ns):
    """An image that zstd cannot shrink (so that a compressed bag also spans several MCAP chunks)."""
    rgb = np.random.default_rng(t_ns).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    return cdr(msg.image(t_ns, "cam", rgb))


def test_header_stamp_is_read_from_cdr_without_decoding():
    assert recorder.cdr_header_stamp(image(12_345_678_901)) == 12_345_678_901
    assert recorder.has_header(IMAGE) and not recorder.has_header("std_msgs/msg/String")


def test_drops_are_counted_from_stamp_gaps():
    stats = recorder.TopicStats(expected_hz=10.0)
    for k in [0, 1, 2, 5, 6, 9]:  # 3, 4, 7, 8 lost
        stats.add(k * 100_000_000, 10, k * 100_000_000)
    assert stats.count == 6 and stats.drops == 4
    assert stats.rate_hz(900_000_000) == pytest.approx(5 / 0.9)
    jitter = recorder.TopicStats(expected_hz=10.0)
    for t in [0, 0.13, 0.19, 0.31]:  # jitter below 1.5 periods is not a drop
        jitter.add(int(t * 1e9), 1, int(t * 1e9))
    assert jitter.drops == 0


def test_state_machine_and_metadata(tmp_path):
    rec = recorder.EpisodeRecorder(tmp_path, robot="fr3", expected_hz={"/cam": 15.0}, min_free_bytes=0)
    try:
        assert not rec.offer("/cam", IMAGE, 1, image(1))  # idle: nothing recorded
        reply, event = rec.start("", 0)
        assert not reply.success and "no instruction" in reply.message and event is None
        reply, event = rec.start("pick", 10)
        assert reply.success and event.kind == 0 and reply.episode_index == 0
        assert recorder.is_incomplete(tmp_path / "episode_0000")
        assert not rec.start("again", 11)[0].success
        for k in range(4):
            assert rec.offer("/cam", IMAGE, 100 + k, image(k * 66_666_667))
        rec.offer("/hybridvla/episode_events", recorder.EPISODE_EVENT, 5, b"x")  # ignored: own topic
        status = rec.status(200)
        assert status["recording"] and status["topics"]["/cam"]["count"] == 4
        assert "REC ep 0" in recorder.status_line(status)
        reply, event = rec.stop("failure", 2_000_000_010)
        assert reply.success and event.kind == 2
        path = tmp_path / "episode_0000"
        assert not recorder.is_incomplete(path)
        meta = bags.bag_metadata(path)
        assert meta["outcome"] == "failure" and meta["instruction"] == "pick" and meta["duration_s"] == "2.000"
        assert json.loads(meta["topic_stats"])["/cam"]["count"] == 4
        assert bags.topic_summary(path) == {"/hybridvla/episode_events": (recorder.EPISODE_EVENT, 2), "/cam": (IMAGE, 4)}
        assert bags.bag_compression(path) == ("zstd", "chunk")  # the default: MCAP chunk compression
        rec.start("pick", 3)
        assert rec.discard(4)[0].success and not (tmp_path / "episode_0001").exists()
        assert rec.start("pick", 5)[0].episode_index == 1  # the discarded index is used again
    finally:
        rec.close(6)
    assert bags.bag_metadata(tmp_path / "episode_0001")["outcome"] == "interrupted"
    # A new session continues the numbering.
    again = recorder.EpisodeRecorder(tmp_path, min_free_bytes=0)
    assert again.next_index == 2
    again.close(0)


def test_disk_space_refuses_start_and_stops_a_running_episode(tmp_path):
    free = {"bytes": 10 * 1024**3}
    rec = recorder.EpisodeRecorder(tmp_path, min_free_bytes=5 * 1024**3, free_space=lambda _: free["bytes"])
    try:
        assert rec.start("pick", 0)[0].success
        assert rec.tick(1) is None
        free["bytes"] = 1024**3
        reply, event = rec.tick(2)
        assert reply.success and event.kind == 2 and not rec.recording
        assert "disk" in bags.bag_metadata(tmp_path / "episode_0000")["stop_reason"]
        reply, _ = rec.start("pick", 3)
        assert not reply.success and "GB free" in reply.message
    finally:
        rec.close(4)


def test_write_queue_limit_refuses_and_counts(tmp_path):
    rec = recorder.EpisodeRecorder(tmp_path, min_free_bytes=0, max_queue_bytes=1)
    try:
        rec.start("pick", 0)
        assert not rec.offer("/cam", IMAGE, 1, image(1))
        assert rec.status(2)["topics"]["/cam"]["refused"] == 1
    finally:
        rec.close(3)


def test_unknown_compression_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"compression must be one of chunk-zstd, message-zstd, none "
                                         r"\(zstd = message-zstd\), got 'gzip'"):
        recorder.EpisodeRecorder(tmp_path, compression="gzip")


@pytest.mark.parametrize("compression, recorded_as", [("chunk-zstd", ("zstd", "chunk")), ("zstd", ("zstd", "message")),
                                                      ("message-zstd", ("zstd", "message")), ("none", ("none", "none"))])
def test_recover_truncated_episode(tmp_path, compression, recorded_as):
    rec = recorder.EpisodeRecorder(tmp_path, min_free_bytes=0, compression=compression)
    rec.start("stack the cups", 0)
    sent = [noisy_image(k) for k in range(60)]
    for k, data in enumerate(sent):  # ~3.5 MiB, compressed or not: several 1 MiB chunks reach the file
        rec.offer("/cam", IMAGE, k, data)
    rec.stop("success", 100)
    rec.close(101)
    path = tmp_path / "episode_0000"
    mcap = path / "episode_0000.mcap"
    data = mcap.read_bytes()
    # What a kill leaves: no summary or footer, the last record cut in half, no metadata.yaml, the marker.
    mcap.write_bytes(data[:int(len(data) * 0.6)])
    (path / "metadata.yaml").unlink()
    (path / recorder.INCOMPLETE_MARKER).write_text("crashed")
    with pytest.raises(Exception):
        bags.topic_summary(path)
    recovered, count = recovery.recover_episode(path)
    summary = bags.topic_summary(recovered)
    assert 10 < summary["/cam"][1] < 60 and count == summary["/cam"][1] + 1
    assert bags.bag_metadata(recovered)["instruction"] == "stack the cups"
    stamps = [bags.stamp_ns(m.message.header) for m in bags.read_messages(recovered, ["/cam"])]
    assert stamps == list(range(len(stamps)))  # the first messages, in order, intact
    assert [r[3] for r in bags.read_raw(recovered, ["/cam"])] == sent[:len(stamps)]  # byte for byte
    assert bags.bag_compression(recovered) == recorded_as  # recovered as recorded
    assert recovery.recover_episode(recovered) == (recovered, None)  # recovered before: nothing changes
    assert not (tmp_path / "episode_0000.crashed" / recorder.INCOMPLETE_MARKER).exists()


def test_keys_disabled_without_a_terminal(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert terminal_keys.keys_available() == (False, "CI is set")
    monkeypatch.delenv("CI")
    assert terminal_keys.keys_available(io.StringIO())[0] is False


def test_key_reader_on_a_pseudo_terminal():
    import os
    import pty
    import termios
    import threading

    master, slave = pty.openpty()
    got, seen = [], threading.Event()
    stream = os.fdopen(slave, "r")
    before = termios.tcgetattr(slave)
    reader = terminal_keys.KeyReader(lambda c: (got.append(c), len(got) == 5 and seen.set()), stream=stream)
    try:
        os.write(master, b"sx\rfdq")  # x is not a key
        assert seen.wait(10)
    finally:
        reader.close()
    assert got == ["start", "success", "failure", "discard", "quit"]
    assert termios.tcgetattr(slave) == before  # the terminal mode is restored
    stream.close()
    os.close(master)
