"""Camera backends without hardware: the video backend on generated frames, the reconnect loop, the
device-clock mapping, and the RealSense backend on a recording made with pyrealsense2's software device."""
import numpy as np
import pytest

from hybridvla_core.robots.cameras import (CameraConfigError, CameraError, CameraStream, DeviceClock, EndOfStream, Frame,
                                    Intrinsics, Profile, make_backend)
from hybridvla_core.robots.cameras.video import VideoBackend


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, dt):
        self.t += dt


def test_profile_parsing():
    assert Profile.parse("640x480x30") == Profile(640, 480, 30)
    assert str(Profile.parse(" 1280X720x15 ")) == "1280x720x15"
    for bad in ("640x480", "640x480x0", "axbxc", ""):
        with pytest.raises(CameraConfigError, match="WIDTHxHEIGHTxFPS"):
            Profile.parse(bad)


def test_device_clock_uses_the_minimum_latency_offset_and_restarts_after_a_jump():
    clock = DeviceClock(window_s=10.0)
    # device ms 5000 arrives at host 100.020 (20 ms latency), the next frame with only 5 ms latency
    assert clock.to_host(5000.0, 100.020) == pytest.approx(100.020)
    assert clock.to_host(5033.0, 100.038) == pytest.approx(100.038)
    # a late arrival (50 ms) is stamped with the best offset seen, not its own arrival
    assert clock.to_host(5066.0, 100.121) == pytest.approx(100.071)
    # the device clock restarts from 0: the old offset would be off by seconds, so it starts over
    assert clock.to_host(10.0, 101.0) == pytest.approx(101.0)


def test_video_backend_plays_an_image_folder_at_the_set_rate_and_loops(image_folder):
    clock = FakeClock()
    backend = VideoBackend(str(image_folder), fps=10.0, clock=clock, sleep=clock.sleep)
    intrinsics = backend.open()
    assert (intrinsics.width, intrinsics.height) == (64, 48)
    frames = [backend.read(1.0) for _ in range(12)]
    assert [f.number for f in frames] == list(range(12))
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [20 * (i % 10) for i in range(12)]
    stamps = np.array([f.stamp for f in frames])
    np.testing.assert_allclose(np.diff(stamps), 0.1)
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8
    assert backend.read(0.01) is None  # next frame is 0.1 s away


# imageio tries each of its plugins on the garbage file below; two of them warn that they are deprecated.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_video_backend_without_loop_ends_and_rejects_bad_sources(image_folder, tmp_path):
    clock = FakeClock()
    backend = VideoBackend(str(image_folder), fps=100.0, loop=False, clock=clock, sleep=clock.sleep)
    backend.open()
    for _ in range(10):
        backend.read(1.0)
    with pytest.raises(EndOfStream, match="end of the recording"):
        backend.read(1.0)
    with pytest.raises(CameraConfigError, match="no such video file or image folder"):
        VideoBackend(str(tmp_path / "missing"), 30.0).open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(CameraConfigError, match="no images"):
        VideoBackend(str(tmp_path / "empty"), 30.0).open()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "frame_000.png").write_bytes(b"not a png")
    with pytest.raises(CameraConfigError, match="frame_000.png: not a readable image"):
        VideoBackend(str(tmp_path / "broken"), 30.0).open()
    (tmp_path / "garbage.mp4").write_bytes(b"\x00" * 4096)
    with pytest.raises(CameraConfigError, match="garbage.mp4: cannot read video") as info:
        VideoBackend(str(tmp_path / "garbage.mp4"), 30.0).open()
    assert "\n" not in str(info.value)
    with pytest.raises(CameraConfigError, match="needs a path"):
        make_backend("video")
    with pytest.raises(CameraConfigError, match="unknown camera backend 'kinect'"):
        make_backend("kinect")


def test_video_backend_reads_a_video_file(tmp_path):
    import imageio.v3 as iio

    frames = np.stack([np.full((32, 48, 3), 60 * i, np.uint8) for i in range(4)])
    path = tmp_path / "clip.gif"
    iio.imwrite(path, frames, loop=0)
    clock = FakeClock()
    backend = make_backend("video", path=str(path), fps=30.0)
    backend._clock, backend._sleep = clock, clock.sleep
    backend.open()
    got = [backend.read(1.0).rgb for _ in range(5)]
    assert [int(g[0, 0, 0]) for g in got] == [0, 60, 120, 180, 0]


class FlakyBackend:
    """Streams, is unplugged after two frames, is away for two reopen attempts, then comes back."""

    name = "flaky"

    def __init__(self):
        self.opens = self.closes = self.reads = 0
        self.away_attempts = 0

    def open(self):
        self.opens += 1
        if 1 < self.opens <= 3:
            raise CameraError("device not found")
        return Intrinsics.from_fov(4, 4)

    def read(self, timeout_s):
        self.reads += 1
        if self.reads == 3:
            raise CameraError("no frames for 2 s (unplugged?)")
        return Frame(np.zeros((4, 4, 3), np.uint8), float(self.reads), self.reads)

    def close(self):
        self.closes += 1


def test_camera_stream_reconnects_after_an_unplug():
    backend, events, sleeps = FlakyBackend(), [], []
    stream = CameraStream(backend, retry_period_s=0.5, on_event=lambda lvl, txt: events.append((lvl, txt)),
                          sleep=sleeps.append)
    got = [stream.next_frame(0.1) for _ in range(7)]
    assert [f.number if f else None for f in got] == [1, 2, None, None, None, 4, 5]
    assert backend.opens == 4 and stream.status.reconnects == 1 and stream.status.frames == 4
    assert sleeps == [0.5, 0.5, 0.5]  # one retry period after each failure
    assert events[0] == ("error", "flaky lost: no frames for 2 s (unplugged?); retrying every 0.5 s")
    assert events[1][1].startswith("cannot open flaky: device not found")
    assert len(events) == 3 and events[-1] == ("info", "flaky: streaming again")  # repeated errors logged once


def test_camera_stream_lets_configuration_errors_through():
    class Unsupported(FlakyBackend):
        def open(self):
            raise CameraConfigError("L515 not supported")

    with pytest.raises(CameraConfigError, match="L515"):
        CameraStream(Unsupported()).next_frame(0.1)


# ------------------------------------------------------------------------------------------------ RealSense
def test_l515_on_a_new_librealsense_fails_with_a_clear_message():
    from hybridvla_core.robots.cameras.realsense import check_device_supported

    # Facts (realsense-ros CHANGELOG 4.55.1 removed L500; 4.54.1 + librealsense 2.54.x is the last that drives it):
    # 2.54.x is allowed, 2.55 and later refused with the pin to install.
    for refused in ((2, 55, 1), (2, 56, 5), (2, 59, 1)):
        with pytest.raises(CameraConfigError, match=r'support for the L515 ended in 2.55; install the last series that '
                                                     r'drives it: pip install "pyrealsense2>=2.54,<2.55"'):
            check_device_supported("Intel RealSense L515", refused, "f0123456")
    for allowed in ((2, 54, 1), (2, 54, 2), (2, 53, 1), (2, 50, 0)):
        check_device_supported("Intel RealSense L515", allowed)
    check_device_supported("Intel RealSense D435", (2, 59, 1))
    check_device_supported("Intel RealSense D435", (2, 59, 1))


@pytest.fixture(scope="module")
def realsense_recording(tmp_path_factory):
    """30 colour (rgb8, value = frame number) + depth (z16, 0.25 mm units) frames recorded from a software device."""
    rs = pytest.importorskip("pyrealsense2", reason="pyrealsense2 (and libusb-1.0) not installed")
    width, height = 64, 48
    path = tmp_path_factory.mktemp("realsense") / "recording.db3"
    device = rs.software_device()
    device.register_info(rs.camera_info.name, "Intel RealSense D435")
    device.register_info(rs.camera_info.serial_number, "123456789012")
    color_sensor, depth_sensor = device.add_sensor("RGB Camera"), device.add_sensor("Stereo Module")

    def stream(kind, uid, fmt, bpp, sensor):
        intr = rs.intrinsics()
        intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = width, height, 50.0, 51.0, 31.5, 23.5
        intr.model, intr.coeffs = rs.distortion.brown_conrady, [0.0] * 5
        s = rs.video_stream()
        s.type, s.index, s.uid, s.width, s.height, s.fps, s.bpp, s.fmt, s.intrinsics = (
            kind, 0, uid, width, height, 30, bpp, fmt, intr)
        return sensor.add_video_stream(s, True)

    color = stream(rs.stream.color, 0, rs.format.rgb8, 3, color_sensor)
    depth = stream(rs.stream.depth, 1, rs.format.z16, 2, depth_sensor)
    depth_sensor.add_read_only_option(rs.option.depth_units, 0.00025)
    identity = rs.extrinsics()
    identity.rotation, identity.translation = [1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 0, 0]
    depth.register_extrinsics_to(color, identity)
    recorder = rs.recorder(str(path), device)
    sensors = recorder.query_sensors()
    queue = rs.frame_queue(100)
    for sensor in sensors:
        sensor.open(sensor.get_stream_profiles()[0])
        sensor.start(queue)
    import time

    for n in range(1, 31):
        for sensor, profile, pixels, bpp in (
                (color_sensor, color, np.full((height, width, 3), n, np.uint8), 3),
                (depth_sensor, depth, np.full((height, width), 4000 + n, np.uint16), 2)):
            frame = rs.software_video_frame()
            frame.pixels, frame.bpp, frame.stride = pixels, bpp, width * bpp
            frame.timestamp, frame.domain, frame.frame_number = 1000.0 + n * 33.3, rs.timestamp_domain.global_time, n
            frame.profile = profile.as_video_stream_profile()
            if sensor is depth_sensor:
                frame.depth_units = 0.00025
            sensor.on_video_frame(frame)
        time.sleep(0.033)
    for sensor in sensors:
        sensor.stop()
        sensor.close()
    del recorder, sensors  # the recording is written when the recorder goes away
    return path


def test_realsense_backend_plays_a_recording_with_aligned_depth_in_mm(realsense_recording):
    import time

    backend = make_backend("realsense", profile="64x48x30", depth=True, path=str(realsense_recording))
    intrinsics = backend.open()
    try:
        assert (intrinsics.width, intrinsics.height, intrinsics.fx, intrinsics.fy) == (64, 48, 50.0, 51.0)
        frames = []
        while len(frames) < 5:
            frame = backend.read(2.0)
            if frame is not None:
                frames.append(frame)
        numbers = [f.number for f in frames]
        assert numbers == sorted(set(numbers))  # playback repeats are not handed out twice
        for frame in frames:
            assert frame.rgb.shape == (48, 64, 3) and int(frame.rgb[0, 0, 0]) == frame.number
            # raw 4000 + n in 0.25 mm units -> about 1000 mm (the syncer may pair a neighbouring depth frame)
            assert frame.depth.dtype == np.uint16 and abs(np.median(frame.depth) - (4000 + frame.number) / 4) <= 1.5
            assert abs(frame.stamp - time.time()) < 1.0  # playback frames are stamped on arrival
    finally:
        backend.close()
    backend.close()  # twice is harmless


def test_realsense_backend_profile_not_offered_is_a_configuration_error(realsense_recording):
    backend = make_backend("realsense", profile="1920x1080x60", path=str(realsense_recording))
    with pytest.raises(CameraConfigError, match="colour profile 1920x1080x60 rgb8 is not offered"):
        backend.open()


def test_realsense_backend_names_the_missing_serial():
    pytest.importorskip("pyrealsense2", reason="pyrealsense2 (and libusb-1.0) not installed")
    backend = make_backend("realsense", serial="000000000000")
    with pytest.raises(CameraError, match=r"no RealSense with serial 000000000000 connected; found: .*L515"):
        backend.open()
