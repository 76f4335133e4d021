"""`hybridvla dataset build` streams: one bag at a time is read, checked, written and dropped (memory about one
episode, whatever the number of bags), the split is decided up front from the sorted bag paths, and
--image-size stores frames resized with the model's own resize (vision.resize_frames)."""
import json
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridvla_core.recording import bags
from hybridvla_core.actions import ActionConvention
from hybridvla_core.recording.bags import msg
from hybridvla_core.datasets import build as build_module
from hybridvla_core.datasets.build import BuildOptions, build_dataset, chunked, split_bags
from hybridvla_core.datasets.cli import parse_image_size
from hybridvla_core.datasets.extract import extract_episode
from hybridvla_core.model.vision import images_to_pixels, resize_frames

# The dataset-build test's topics and its independent bag lookup (newest message at or before a time).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recording"))
from test_dataset_eval import CAMERAS, STATE, TARGET, BagIndex  # noqa: E402

T0 = 1_700_000_000_000_000_000
JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]


def write_bag(path, seed, *, seconds=2.0, size=(48, 64), outcome="success", views=("front", "wrist"), nan_target=False):
    """A small episode as the recorder writes it: state at 100 Hz, cameras at ~15 Hz (random frames), target at
    10 Hz moving 2 mm per state tick; metadata instruction and outcome."""
    rng = np.random.default_rng(seed)
    with bags.EpisodeWriter(path, metadata={"instruction": f"task {seed % 3}", "outcome": outcome}) as w:
        for k in range(int(seconds * 100)):
            t = T0 + k * 10_000_000
            x = 0.3 + 0.002 * k + 0.01 * seed
            w.write(STATE, t, msg.arm_state(t, "fr3_link0", "fr3", [x, 0.0, 0.4], [1, 0, 0, 0], 1.0, 0.08, JOINTS,
                                            np.zeros(7)))
            if k % 7 == 0:
                for view in views:
                    w.write(CAMERAS[view], t, msg.image(t, view, rng.integers(0, 256, (*size, 3), dtype=np.uint8)))
            if k % 10 == 0:
                target = [np.nan if nan_target and k == 50 else x + 0.01, 0.0, 0.4]
                w.write(TARGET, t, msg.arm_target(t, "fr3_link0", "fr3", target, [1, 0, 0, 0], 1.0, 1.0, 3))
    return Path(path)


def load_split(directory):
    """Every sample of a training set, shards concatenated: {field: array}."""
    index = json.loads((Path(directory) / "index.json").read_text())
    fields = ["state", "action", "episode", "instruction"] + [f"image_{v}" for v in index["views"]]
    return {f: np.concatenate([np.load(Path(directory) / s["dir"] / f"{f}.npy") for s in index["shards"]])
            for f in fields}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    good = [write_bag(root / f"ep{i:02d}", i) for i in range(5)]
    bad = {"failed": write_bag(root / "ep05_failed", 5, outcome="failure"),
           "nan": write_bag(root / "ep06_nan", 6, nan_target=True),
           "front_only": write_bag(root / "ep07_front_only", 7, views=("front",))}
    return root, good, bad


def test_streaming_build_writes_every_usable_bag_and_resizes_like_the_model(lab, tmp_path):
    root, good, bad = lab
    lines = []
    opts = dict(chunk=2, val_fraction=0.25, seed=0)
    plain = build_dataset([root], tmp_path / "plain", BuildOptions(**opts), log=lines.append, progress=False)
    small = build_dataset([root], tmp_path / "small", BuildOptions(**opts, image_size=16), log=[].append,
                          progress=False)
    build_dataset([root], tmp_path / "wide", BuildOptions(**opts, image_size=[16, 24]), log=[].append,
                  progress=False)

    # Bags left out, one line each, nothing of them written; the others in find_bags order.
    assert len(lines) == 3 and all(line.startswith("skipped ") for line in lines)
    assert "outcome failure" in lines[0] and "non-finite" in lines[1] and "differ from the first bag" in lines[2]
    assert [b["bag"] for b in plain["left_out"]] == [str(p) for p in bad.values()]
    assert [b["bag"] for b in plain["bags"]] == [str(p) for p in good]
    assert plain["settings"]["image_size"] is None and small["settings"]["image_size"] == 16
    assert json.loads((tmp_path / "small" / "build.json").read_text())["settings"]["image_size"] == 16
    assert json.loads((tmp_path / "wide" / "build.json").read_text())["settings"]["image_size"] == [16, 24]

    # The samples are what the one-bag-at-a-time extraction gives (what the build wrote before streaming).
    convention = ActionConvention()
    for split in ("train", "val"):
        got, got_small = load_split(tmp_path / "plain" / split), load_split(tmp_path / "small" / split)
        got_wide = load_split(tmp_path / "wide" / split)
        entries = [b for b in plain["bags"] if b["split"] == split]
        assert entries and sorted(set(got["episode"].tolist())) == [b["episode"] for b in entries]
        for b in entries:
            episode = extract_episode(b["bag"])
            rows = np.flatnonzero(got["episode"] == b["episode"])
            assert len(rows) == len(episode) == b["steps"] > 10
            np.testing.assert_array_equal(got["state"][rows], episode.states.astype(np.float32))
            np.testing.assert_array_equal(got["action"][rows],
                                          chunked(episode.actions(convention), 2).astype(np.float32))
            assert set(got["instruction"][rows]) == {episode.instruction}
            for view in ("front", "wrist"):
                np.testing.assert_array_equal(got[f"image_{view}"][rows], np.stack(episode.images[view]))
        # Resized at build time: the same samples, frames exactly resize_frames of the recorded ones.
        for field in ("state", "action", "episode", "instruction"):
            np.testing.assert_array_equal(got_small[field], got[field])
        for view in ("front", "wrist"):
            assert got[f"image_{view}"].shape[1:] == (48, 64, 3) and got_small[f"image_{view}"].shape[1:] == (16, 16, 3)
            np.testing.assert_array_equal(got_small[f"image_{view}"], resize_frames(got[f"image_{view}"], 16))
            # [height, width]: the same resize to a non-square size (a wide crop keeps its aspect).
            assert got_wide[f"image_{view}"].shape[1:] == (16, 24, 3)
            np.testing.assert_array_equal(got_wide[f"image_{view}"], resize_frames(got[f"image_{view}"], [16, 24]))
    assert small["train_samples"] == plain["train_samples"] and small["val_samples"] == plain["val_samples"]
    assert plain["train_samples"] + plain["val_samples"] == sum(len(extract_episode(p)) for p in good)

    # Independently of the extraction: step 0 of the first bag holds the frames recorded at its first time, and
    # the stored 16 px frames are what the policy's images_to_pixels makes of those frames, to the rounding.
    first = plain["bags"][0]
    data = load_split(tmp_path / "small" / first["split"])
    row = int(np.flatnonzero(data["episode"] == first["episode"])[0])
    recorded = BagIndex(first["bag"]).observation(T0, "")["images"]
    for view, frame in recorded.items():
        np.testing.assert_array_equal(data[f"image_{view}"][row], resize_frames([frame], 16)[0])
        live = images_to_pixels([frame], 16, "cpu", torch.float32)[0].permute(1, 2, 0).numpy()
        assert np.abs(data[f"image_{view}"][row] / 255.0 - live).max() <= 1 / 255


def test_resize_frames_is_images_to_pixels_rounded():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (5, 30, 41, 3), dtype=np.uint8)
    out = resize_frames(frames, 12, batch=2)  # batches give the same pixels as one frame at a time
    assert out.dtype == np.uint8 and out.shape == (5, 12, 12, 3)
    for frame, small in zip(frames, out):
        live = images_to_pixels([frame], 12, "cpu", torch.float32)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(small, np.round(live * 255).astype(np.uint8))
    assert resize_frames(list(frames), 12).tobytes() == out.tobytes()
    assert resize_frames(out, 12).tobytes() == out.tobytes()  # already S x S: unchanged, as images_to_pixels
    wide = resize_frames(frames, [12, 20])  # [height, width]
    assert wide.shape == (5, 12, 20, 3)
    live = images_to_pixels([frames[0]], [12, 20], "cpu", torch.float32)[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(wide[0], np.round(live * 255).astype(np.uint8))
    for bad in (0, -3, 2.5, [12], [12, 0]):
        with pytest.raises(ValueError, match="must be S or \\[height, width\\], positive whole pixels"):
            resize_frames(frames, bad)


def test_memory_stays_one_episode_whatever_the_number_of_bags(tmp_path, monkeypatch):
    size, seconds = (96, 128), 2.0
    paths = [write_bag(tmp_path / "bags" / f"ep{i:02d}", i, seconds=seconds, size=size) for i in range(9)]
    alive: list = []
    most_alive = []  # episodes of earlier bags still in memory when the next bag is read
    real_extract = build_module.extract_episode

    def counting_extract(path, **kwargs):
        most_alive.append(sum(ref() is not None for ref in alive))
        episode = real_extract(path, **kwargs)
        alive.append(weakref.ref(episode))
        return episode

    monkeypatch.setattr(build_module, "extract_episode", counting_extract)
    episode_bytes = sum(f.nbytes for frames in real_extract(paths[0]).images.values() for f in frames)
    peaks = {}
    tracemalloc.start()
    try:
        for n in (3, 9):
            alive.clear()
            most_alive.clear()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            options = BuildOptions(image_size=32, shard_size=8, val_fraction=0.2)
            report = build_dataset(paths[:n], tmp_path / f"set{n}", options, log=print, progress=False)
            peaks[n] = tracemalloc.get_traced_memory()[1] - base
            assert len(report["bags"]) == n and max(most_alive) == 0 and not any(ref() for ref in alive)
    finally:
        tracemalloc.stop()
    print(f"peak traced memory: 3 bags {peaks[3] / 1e6:.1f} MB, 9 bags {peaks[9] / 1e6:.1f} MB, "
          f"one episode's frames {episode_bytes / 1e6:.1f} MB")
    # Holding every episode (the build before streaming) would add 6 episodes (~9 MB) for 9 bags instead of 3;
    # allow 2 (allocator and rosbags' caches vary by up to ~1 MB between runs).
    assert peaks[9] - peaks[3] < 2 * episode_bytes
    assert peaks[9] < 4 * episode_bytes


def test_split_is_by_episode_decided_up_front_from_the_sorted_paths(tmp_path):
    paths = [write_bag(tmp_path / "bags" / f"ep{i:02d}", i, seconds=1.5) for i in range(8)]
    options = BuildOptions(val_fraction=0.25, seed=3)
    expected_val = split_bags(paths, 0.25, 3)
    assert len(expected_val) == 2 and expected_val == split_bags(paths[::-1], 0.25, 3)
    assert split_bags(paths, 0.25, 4) != expected_val  # the seed picks the slots

    def val_bags(report):
        return {b["bag"] for b in report["bags"] if b["split"] == "val"}

    forward = build_dataset(paths, tmp_path / "forward", options, log=print, progress=False)
    backward = build_dataset(paths[::-1], tmp_path / "backward", options, log=print, progress=False)
    assert val_bags(forward) == val_bags(backward) == expected_val
    for report, name in ((forward, "forward"), (backward, "backward")):
        train, val = load_split(tmp_path / name / "train"), load_split(tmp_path / name / "val")
        assert not set(train["episode"].tolist()) & set(val["episode"].tolist())  # whole episodes per split
        for b in report["bags"]:
            data = val if b["split"] == "val" else train
            assert (data["episode"] == b["episode"]).sum() == b["steps"] > 0
        stats_train = (tmp_path / name / "train" / "dataset_statistics.json").read_text()
        assert (tmp_path / name / "val" / "dataset_statistics.json").read_text() == stats_train

    # A bag left out keeps its slot: the other bags keep their split, its split has one episode fewer.
    dropped = sorted(expected_val)[0]
    broken = Path(dropped)
    (broken / "metadata.yaml").write_text((broken / "metadata.yaml").read_text().replace("success", "failure"))
    lines = []
    report = build_dataset(paths, tmp_path / "one_left_out", options, log=lines.append, progress=False)
    assert len(lines) == 1 and "outcome failure" in lines[0]
    assert val_bags(report) == expected_val - {dropped}
    assert report["val_slots"] == 2 and report["val_slots_left_out"] == 1
    assert {b["bag"] for b in report["bags"] if b["split"] == "train"} == {str(p) for p in paths} - expected_val


@pytest.mark.parametrize("size, shown", [("0", "0"), ("-4", "-4"), ("64x0", "[64, 0]")])
def test_bad_image_size_is_refused_with_one_line(lab, tmp_path, capsys, size, shown):
    from hybridvla_core.cli import main

    root, good, _ = lab
    assert main(["dataset", "build", str(good[0]), "-o", str(tmp_path / "out"), "--image-size", size]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--image-size must be S or [height, width], positive whole pixels, got {shown}" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="--image-size"):
        BuildOptions(image_size=parse_image_size(size))
