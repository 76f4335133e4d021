"""`hybridvla dataset build --crop` stores each view's region of interest (and says so in index.json), the
training-set reader crops only what the builder did not and refuses a set cropped unlike the model, and
`hybridvla dataset merge` joins builds into one set with distinct episodes and recomputed statistics."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hybridvla_core.actions import DatasetStatistics, load_dataset_statistics
from hybridvla_core.cli import main as hybridvla
from hybridvla_core.datasets.build import BuildOptions, build_dataset
from hybridvla_core.model.trainset import TrainsetDataset, merge_trainsets
from hybridvla_core.model.vision import images_to_pixels, resize_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_build_streaming import load_split, write_bag  # noqa: E402

CROP = [0.25, 0.75, 0.0, 0.5]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("crop")
    for i in range(4):
        write_bag(root / "bags_a" / f"ep{i}", i, seconds=1.0)
        write_bag(root / "bags_b" / f"ep{i}", 10 + i, seconds=1.0)
    opts = dict(val_fraction=0.25, seed=0)
    plain = build_dataset([root / "bags_a"], root / "plain", BuildOptions(**opts), log=[].append, progress=False)
    cropped = build_dataset([root / "bags_a"], root / "a", BuildOptions(**opts, image_size=16,
                                                                        crops={"front": CROP}),
                            log=[].append, progress=False)
    build_dataset([root / "bags_b"], root / "b", BuildOptions(**opts, image_size=16, crops={"front": CROP}),
                  log=[].append, progress=False)
    return root, plain, cropped


def test_build_crops_the_named_view_before_the_resize(builds):
    root, plain, cropped = builds
    assert cropped["settings"]["crops"] == {"front": CROP} and plain["settings"]["crops"] == {}
    for split in ("train", "val"):
        full, small = load_split(root / "plain" / split), load_split(root / "a" / split)
        np.testing.assert_array_equal(small["image_front"], resize_frames(full["image_front"], 16, crop=CROP))
        np.testing.assert_array_equal(small["image_wrist"], resize_frames(full["image_wrist"], 16))
        index = json.loads((root / "a" / split / "index.json").read_text())
        assert index["crops"] == {"front": CROP}
        assert "crops" not in json.loads((root / "plain" / split / "index.json").read_text())


def test_reader_crops_only_what_the_builder_did_not(builds):
    root, _, _ = builds
    crops = {"front": CROP}
    uncropped = TrainsetDataset(root / "plain" / "train", 16, ["front", "wrist"], crops=crops)
    prebuilt = TrainsetDataset(root / "a" / "train", 16, ["front", "wrist"], crops=crops)
    raw = load_split(root / "plain" / "train")
    pixels = uncropped[0]["pixels"]
    assert torch.equal(pixels[0], images_to_pixels([raw["image_front"][0]], 16, "cpu", torch.float32, [CROP])[0])
    # The builder's crop is not applied a second time: stored 16 px frames pass through as they are.
    stored = load_split(root / "a" / "train")["image_front"][0]
    assert torch.equal(prebuilt[0]["pixels"][0], torch.as_tensor(stored).permute(2, 0, 1).float() / 255)
    assert (prebuilt[0]["pixels"] - pixels).abs().max() <= 1 / 255 + 1e-6  # the same pixels, to the rounding
    for wrong in ({}, {"front": [0.2, 0.8, 0.0, 0.5]}):
        with pytest.raises(ValueError, match="was cropped to .* when built"):
            TrainsetDataset(root / "a" / "train", 16, ["front", "wrist"], crops=wrong)


def test_merge_joins_builds_with_distinct_episodes_and_fresh_statistics(builds, capsys):
    root, _, _ = builds
    out = root / "merged"
    assert hybridvla(["dataset", "merge", str(root / "a"), str(root / "b"), "-o", str(out)]) == 0
    for split in ("train", "val"):
        a, b, merged = (load_split(root / d / split) for d in ("a", "b", "merged"))
        for field in ("state", "action", "instruction", "image_front"):
            np.testing.assert_array_equal(merged[field], np.concatenate([a[field], b[field]]))
        assert len(set(merged["episode"].tolist())) == len(set(a["episode"].tolist())) + len(set(b["episode"].tolist()))
        index = json.loads((out / split / "index.json").read_text())
        assert index["crops"] == {"front": CROP} and index["num_samples"] == len(merged["state"])
    train = load_split(out / "train")
    stats = load_dataset_statistics(out / "train" / "dataset_statistics.json")["recorded"]
    expected = DatasetStatistics.from_samples(train["action"], train["state"], num_trajectories=0)
    np.testing.assert_allclose(stats.action.q99, expected.action.q99)
    np.testing.assert_allclose(stats.proprio.q01, expected.proprio.q01)
    # Validation is normalised with the merged training statistics, as the builder does.
    assert (out / "val" / "dataset_statistics.json").read_text() == \
        (out / "train" / "dataset_statistics.json").read_text()
    assert "train with data.path" in capsys.readouterr().out
    TrainsetDataset(out / "train", 16, ["front", "wrist"], crops={"front": CROP})[0]  # readable as one set


def test_merge_refuses_sets_written_differently_and_writes_nothing(builds, capsys):
    root, _, _ = builds
    with pytest.raises(ValueError, match=r"differs .* in \['crops'\]"):
        merge_trainsets([root / "a" / "train", root / "plain" / "train"], root / "never")
    assert not (root / "never").exists()
    assert hybridvla(["dataset", "merge", str(root / "a"), str(root / "bags_a"), "-o", str(root / "no")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridvla dataset merge: neither a training set nor a build") and "\n" not in err


def test_merge_refuses_keyframe_labels_beside_per_step_labels(builds, tmp_path):
    """A keyframe action (where the arm goes next) and a per-step action (the next few mm) are different
    quantities in the same units: one set of both would train a policy on nonsense without any error."""
    root, _, _ = builds
    keyframes = tmp_path / "kf"
    build_dataset([root / "bags_b"], keyframes, BuildOptions(val_fraction=0.25, seed=0, image_size=16,
                  crops={"front": CROP}, keyframes=True), log=[].append, progress=False)
    assert json.loads((keyframes / "train" / "index.json").read_text())["labels"] == "keyframes"
    with pytest.raises(ValueError, match=r"differs .* in \['labels'\]: labels keyframes vs per_step"):
        merge_trainsets([root / "a" / "train", keyframes / "train"], tmp_path / "never")
    # a set written before "labels" existed reads as per step, and still merges with one written now
    old = tmp_path / "old"
    merge_trainsets([root / "b" / "train"], old)
    index = json.loads((old / "index.json").read_text())
    del index["labels"]
    (old / "index.json").write_text(json.dumps(index))
    assert merge_trainsets([root / "a" / "train", old], tmp_path / "joined")["labels"] == "per_step"


def test_crop_arguments_are_checked_in_one_line(builds, capsys):
    root, _, _ = builds
    for crop, match in (("front=0.1,0.2", "VIEW=TOP,BOTTOM,LEFT,RIGHT"), ("front=0.5,0.4,0,1", "top < bottom"),
                        ("top=0,1,0,1", "not in --views")):
        code = hybridvla(["dataset", "build", str(root / "bags_a"), "-o", str(root / "x"), "--views", "front,wrist",
                          "--crop", crop])
        err = capsys.readouterr().err.strip()
        assert code == 1 and match in err and "\n" not in err


def test_merge_can_keep_a_checkpoints_statistics(builds, capsys):
    """Fine-tuning a checkpoint on more data must not move its normalisation: --statistics-from copies
    the given statistics instead of recomputing them, and a file without the sets' key writes nothing."""
    root, _, _ = builds
    kept = root / "a" / "train" / "dataset_statistics.json"
    out = root / "merged_kept"
    assert hybridvla(["dataset", "merge", str(root / "a"), str(root / "b"), "-o", str(out),
                      "--statistics-from", str(root / "a" / "train")]) == 0
    assert (out / "train" / "dataset_statistics.json").read_text() == kept.read_text()
    recomputed = root / "merged_recomputed"
    assert hybridvla(["dataset", "merge", str(root / "a"), str(root / "b"), "-o", str(recomputed)]) == 0
    assert (recomputed / "train" / "dataset_statistics.json").read_text() != kept.read_text()  # b moved them
    other = root / "other_key"
    other.mkdir()
    (other / "dataset_statistics.json").write_text(json.dumps({"elsewhere": json.loads(kept.read_text())["recorded"]}))
    capsys.readouterr()
    assert hybridvla(["dataset", "merge", str(root / "a"), "-o", str(root / "never"),
                      "--statistics-from", str(other)]) == 1
    err = capsys.readouterr().err
    assert "unnorm_key 'recorded' not in dataset statistics ['elsewhere']" in err and err.count("\n") == 1
    assert not (root / "never").exists()
