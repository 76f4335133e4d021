"""Privileged labels (issue 30): the simulator's block - TCP / bowl - TCP offsets recorded on /sim/privileged
(geometry_msgs/PoseArray) go, sampled at each step like the arm state, into privileged.npy of the training set;
bags without them (real teleop), two-arm sets and sets written before the labels existed give NaN rows."""
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from hybridvla_core.cli import main
from hybridvla_core.datasets.build import BuildOptions, build_dataset
from hybridvla_core.datasets.extract import TopicLayout, extract_episode
from hybridvla_core.model.trainset import TrainsetDataset, TrainsetWriter, merge_trainsets
from hybridvla_core.recording import bags
from hybridvla_core.recording.bags import msg

T0 = 1_700_000_000_000_000_000
JOINTS = [f"j{i}" for i in range(1, 8)]
NAN = [np.nan] * 6
# Written by hand: step j (10 Hz) is at tick 10 j of the 100 Hz state; the label of tick k is published 5 ms after
# the tick, with block - TCP = [0.001 k, -0.002 k, 0.05] and bowl - TCP = [0.1, 0.2 + 0.001 k, -0.03]; labels stop
# after tick 119. So step 0 has none yet, step j in 1..11 takes tick 10 j - 1's, steps 12..16 hold tick 119's
# (published at 1.195 s, at most 0.495 s old) and steps 17..19 have none (0.505 s and older > max_age 0.5 s).
EXPECTED = np.array([
    NAN,
    [0.009, -0.018, 0.05, 0.1, 0.209, -0.03],
    [0.019, -0.038, 0.05, 0.1, 0.219, -0.03],
    [0.029, -0.058, 0.05, 0.1, 0.229, -0.03],
    [0.039, -0.078, 0.05, 0.1, 0.239, -0.03],
    [0.049, -0.098, 0.05, 0.1, 0.249, -0.03],
    [0.059, -0.118, 0.05, 0.1, 0.259, -0.03],
    [0.069, -0.138, 0.05, 0.1, 0.269, -0.03],
    [0.079, -0.158, 0.05, 0.1, 0.279, -0.03],
    [0.089, -0.178, 0.05, 0.1, 0.289, -0.03],
    [0.099, -0.198, 0.05, 0.1, 0.299, -0.03],
    [0.109, -0.218, 0.05, 0.1, 0.309, -0.03],
    [0.119, -0.238, 0.05, 0.1, 0.319, -0.03],
    [0.119, -0.238, 0.05, 0.1, 0.319, -0.03],
    [0.119, -0.238, 0.05, 0.1, 0.319, -0.03],
    [0.119, -0.238, 0.05, 0.1, 0.319, -0.03],
    [0.119, -0.238, 0.05, 0.1, 0.319, -0.03],
    NAN, NAN, NAN,
])


def write_bag(path, *, labels=True, arms=("fr3",), topic="/sim/privileged"):
    """2 s: arm state at 100 Hz, one camera at 10 Hz, a target moving 2 mm per state tick at 10 Hz, and (labels)
    the privileged PoseArray at the state rate, 5 ms after each state tick, up to tick 119."""
    types = msg._types()
    Point, Pose, PoseArray = (types[f"geometry_msgs/msg/{n}"] for n in ("Point", "Pose", "PoseArray"))
    quaternion = types["geometry_msgs/msg/Quaternion"]
    with bags.EpisodeWriter(path, metadata={"instruction": "put the block in the bowl", "outcome": "success"}) as w:
        for k in range(200):
            t = T0 + k * 10_000_000
            for arm in arms:
                w.write(f"/hybridvla/{arm}/arm_state", t, msg.arm_state(
                    t, f"{arm}_base", arm, [0.3 + 0.002 * k, 0.0, 0.4], [1, 0, 0, 0], 1.0, 0.08, JOINTS, np.zeros(7)))
            if k % 10 == 0:
                w.write("/camera/front/color/image_raw", t, msg.image(t, "front", np.full((8, 8, 3), k, np.uint8)))
                for arm in arms:
                    w.write(f"/hybridvla/{arm}/target", t, msg.arm_target(
                        t, f"{arm}_base", arm, [0.32 + 0.002 * k, 0.0, 0.4], [1, 0, 0, 0], 1.0, 1.0, 3))
            if labels and k < 120:
                t_label = t + 5_000_000
                points = [Point(x=0.001 * k, y=-0.002 * k, z=0.05), Point(x=0.1, y=0.2 + 0.001 * k, z=-0.03)]
                poses = [Pose(position=p, orientation=quaternion(x=0.0, y=0.0, z=0.0, w=1.0)) for p in points]
                w.write(topic, t_label, PoseArray(header=msg.header(t_label, f"{arms[0]}_base"), poses=poses))
    return Path(path)


def shard_arrays(directory, name):
    """One field of every shard, concatenated, read with numpy only."""
    index = json.loads((Path(directory) / "index.json").read_text())
    return np.concatenate([np.load(Path(directory) / s["dir"] / name) for s in index["shards"]])


def test_extracted_labels_are_the_newest_at_or_before_each_step(tmp_path):
    episode = extract_episode(write_bag(tmp_path / "sim"))
    assert len(episode) == 20 and episode.privileged.dtype == np.float32
    np.testing.assert_allclose(episode.privileged, EXPECTED, atol=1e-6)  # NaN where NaN
    # No topic, or the topic disabled: every row NaN, the steps unchanged.
    for bag, layout in ((write_bag(tmp_path / "real", labels=False), TopicLayout()),
                        (tmp_path / "sim", TopicLayout(privileged=""))):
        other = extract_episode(bag, layout=layout)
        assert other.privileged.shape == (20, 6) and np.isnan(other.privileged).all()
        np.testing.assert_array_equal(other.times_ns, episode.times_ns)


def test_training_set_holds_the_labels_of_the_observations_steps(tmp_path):
    sim, real = write_bag(tmp_path / "bags" / "a_sim"), write_bag(tmp_path / "bags" / "b_real", labels=False)
    report = build_dataset([sim, real], tmp_path / "set", BuildOptions(val_fraction=0.0), log=[].append,
                           progress=False)
    assert [b["privileged_steps"] for b in report["bags"]] == [16, 0]
    train = tmp_path / "set" / "train"
    index = json.loads((train / "index.json").read_text())
    assert index["privileged"] == ["block_dx", "block_dy", "block_dz", "bowl_dx", "bowl_dy", "bowl_dz"]
    privileged, episodes = shard_arrays(train, "privileged.npy"), shard_arrays(train, "episode.npy")
    assert privileged.dtype == np.float32 and privileged.shape == (40, 6)
    np.testing.assert_allclose(privileged[episodes == 0], EXPECTED, atol=1e-6)
    assert np.isnan(privileged[episodes == 1]).all()

    # Keyframe labels change the actions, not the labels: they stay with the observation's step.
    build_dataset([sim], tmp_path / "keyframes", BuildOptions(val_fraction=0.0, keyframes=True), log=[].append,
                  progress=False)
    np.testing.assert_allclose(shard_arrays(tmp_path / "keyframes" / "train", "privileged.npy"), EXPECTED, atol=1e-6)

    dataset = TrainsetDataset(train, image_size=8)
    item = dataset[3]
    assert item["privileged"].dtype == torch.float32 and item["privileged"].shape == (6,)
    np.testing.assert_allclose(item["privileged"].numpy(), EXPECTED[3], atol=1e-6)
    assert torch.isnan(dataset[0]["privileged"]).all() and torch.isnan(dataset[25]["privileged"]).all()
    assert {"pixels", "instruction", "state", "action"} <= set(item)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(4)])
    assert batch["privileged"].shape == (4, 6)
    np.testing.assert_array_equal(torch.isfinite(batch["privileged"]).all(dim=1).numpy(), [False, True, True, True])


def test_two_arm_sets_get_no_labels(tmp_path):
    bag = write_bag(tmp_path / "dual", arms=("left", "right"))
    assert np.isnan(extract_episode(bag).privileged).all()
    build_dataset([bag], tmp_path / "set", BuildOptions(val_fraction=0.0), log=[].append, progress=False)
    privileged = shard_arrays(tmp_path / "set" / "train", "privileged.npy")
    assert privileged.shape == (20, 6) and np.isnan(privileged).all()


def test_cli_option_names_or_disables_the_topic(tmp_path):
    write_bag(tmp_path / "bags" / "sim", topic="/lab/labels")
    common = ["--val-fraction", "0"]
    assert main(["dataset", "build", str(tmp_path / "bags"), "-o", str(tmp_path / "named"),
                 "--privileged-topic", "/lab/labels", *common]) == 0
    np.testing.assert_allclose(shard_arrays(tmp_path / "named" / "train", "privileged.npy"), EXPECTED, atol=1e-6)
    assert main(["dataset", "build", str(tmp_path / "bags"), "-o", str(tmp_path / "default"), *common]) == 0
    assert np.isnan(shard_arrays(tmp_path / "default" / "train", "privileged.npy")).all()  # not on /sim/privileged
    write_bag(tmp_path / "sim_bags" / "sim")
    assert main(["dataset", "build", str(tmp_path / "sim_bags"), "-o", str(tmp_path / "off"),
                 "--privileged-topic", "", *common]) == 0
    assert np.isnan(shard_arrays(tmp_path / "off" / "train", "privileged.npy")).all()
    settings = json.loads((tmp_path / "off" / "build.json").read_text())["settings"]
    assert settings["layout"]["privileged"] == ""


def old_format_set(directory, rows=3):
    """A training set as written before privileged labels: no privileged.npy, no "privileged" in index.json."""
    with TrainsetWriter(directory, ["front"], 7) as writer:
        for k in range(rows):
            writer.add({"front": np.zeros((8, 8, 3), np.uint8)}, np.full(7, 0.1 * k), np.full(7, 0.2 * k), "old", 0)
    for shard in Path(directory).glob("shard-*"):
        (shard / "privileged.npy").unlink()
    index = json.loads((Path(directory) / "index.json").read_text())
    del index["privileged"]
    (Path(directory) / "index.json").write_text(json.dumps(index))
    return Path(directory)


def test_old_sets_read_as_unlabelled_and_merge_with_labelled_ones(tmp_path):
    old = old_format_set(tmp_path / "old")
    dataset = TrainsetDataset(old, image_size=8)
    assert len(dataset) == 3
    for i in range(3):
        assert dataset[i]["privileged"].shape == (6,) and dataset[i]["privileged"].dtype == torch.float32
        assert torch.isnan(dataset[i]["privileged"]).all()

    labelled = tmp_path / "labelled"
    with TrainsetWriter(labelled, ["front"], 7, shard_size=2) as writer:
        for k, label in enumerate(([0.01, 0.02, 0.03, 0.1, 0.2, 0.3], None, [-0.01, 0.0, 0.5, 0.4, -0.2, 0.0])):
            writer.add({"front": np.zeros((8, 8, 3), np.uint8)}, np.full(7, 0.1 * k), np.full(7, 0.1 * k), "new", 0,
                       privileged=label)
    for inputs, name in (([old, labelled], "old_first"), ([labelled, old], "new_first")):
        index = merge_trainsets(inputs, tmp_path / name)
        assert index["privileged"] == ["block_dx", "block_dy", "block_dz", "bowl_dx", "bowl_dy", "bowl_dz"]
        assert all((tmp_path / name / s["dir"] / "privileged.npy").is_file() for s in index["shards"])
        labels = [[0.01, 0.02, 0.03, 0.1, 0.2, 0.3], NAN, [-0.01, 0.0, 0.5, 0.4, -0.2, 0.0]]
        expected = [NAN] * 3 + labels if name == "old_first" else labels + [NAN] * 3
        merged = shard_arrays(tmp_path / name, "privileged.npy")
        assert merged.dtype == np.float32
        np.testing.assert_allclose(merged, expected, atol=1e-6)
        items = TrainsetDataset(tmp_path / name, image_size=8)
        np.testing.assert_allclose(torch.stack([items[i]["privileged"] for i in range(6)]).numpy(), expected,
                                   atol=1e-6)
    # The merged output is readable and mergeable again (every shard now has the file).
    shutil.rmtree(tmp_path / "new_first")
    merge_trainsets([tmp_path / "old_first", old], tmp_path / "again")
    assert shard_arrays(tmp_path / "again", "privileged.npy").shape == (9, 6)
