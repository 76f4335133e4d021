"""A user's mistake in `hybridvla dataset build|merge|resize` and `hybridvla eval bags` ends in one line that names
the option or file, before any long work and without losing data: a non-positive rate (which made the resampler
loop forever), output paths under a file, damaged shard files and index.json, and a resize of a merged set whose
shards are hard links to the sets it was merged from."""
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.cli import main as hybridvla
from hybridvla_core.datasets.build import BuildOptions, build_dataset
from hybridvla_core.datasets.extract import BagError, extract_episode
from hybridvla_core.model import build_model, save_checkpoint
from hybridvla_core.model.presets import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_build_streaming import write_bag  # noqa: E402

SIZE = (48, 64)  # write_bag's frames


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """bags/ep0, ep1; a built set (set/train, no val); a tiny checkpoint; a regular file."""
    root = tmp_path_factory.mktemp("input_errors")
    for i in range(2):
        write_bag(root / "bags" / f"ep{i}", i, seconds=1.0, size=SIZE)
    build_dataset([root / "bags"], root / "set", BuildOptions(val_fraction=0.0), log=[].append, progress=False)
    rng = np.random.default_rng(0)
    save_checkpoint(build_model(tiny_config(hidden=32, layers=1, image_size=32)), root / "ckpt",
                    {"recorded": DatasetStatistics.from_samples(rng.normal(size=(20, 7)), rng.normal(size=(20, 7)), 1)})
    (root / "afile.txt").write_text("not a directory")
    return root


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def files_under(directory: Path) -> dict:
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_extractor_refuses_a_rate_without_a_positive_period(lab):
    # 0 divided by zero (blamed on the bag); -5 and 2e9 Hz (period 0 ns) never ended, filling memory.
    for rate in (0, float("nan"), float("inf"), -5, 2e9):
        with pytest.raises(ValueError, match=r"^rate_hz must be > 0") as error:
            extract_episode(lab / "bags" / "ep0", rate_hz=rate)
        assert not isinstance(error.value, BagError), error.value  # the rate is wrong, not the bag
    assert len(extract_episode(lab / "bags" / "ep0", rate_hz=10)) == 10  # 0 .. 0.9 s of a 0.99 s bag


@pytest.mark.parametrize("option, value, says", [
    ("--rate", "-5", "--rate must be > 0 and at most 1e9 steps per second, got -5"),
    ("--chunk", "0", "--chunk must be >= 1 (actions per sample), got 0"),
    ("--val-fraction", "1.5", "--val-fraction must be >= 0 and < 1, got 1.5"),
    ("--max-age-s", "-1", "--max-age-s must be >= 0, got -1"),  # every step stale: every bag left out
])
def test_build_names_the_option_that_is_wrong(lab, tmp_path, capsys, option, value, says):
    assert hybridvla(["dataset", "build", str(lab / "bags"), "-o", str(tmp_path / "out"), option, value]) == 1
    assert one_line(capsys) == f"hybridvla dataset build: {says}"
    assert not (tmp_path / "out").exists()


def test_output_paths_under_a_file_are_refused_before_any_work(lab, tmp_path, capsys):
    afile = lab / "afile.txt"
    for out in (afile, afile / "x"):
        says = f"-o {out}: {afile} is a file, not a directory: choose another path"
        assert hybridvla(["dataset", "build", str(lab / "bags"), "-o", str(out)]) == 1
        assert one_line(capsys) == f"hybridvla dataset build: {says}"
        assert hybridvla(["dataset", "merge", str(lab / "set"), "-o", str(out)]) == 1
        assert one_line(capsys) == f"hybridvla dataset merge: {says}"
    assert afile.read_text() == "not a directory"


def damaged_copy(lab, tmp_path, name="damaged"):
    shutil.copytree(lab / "set", tmp_path / name)
    return tmp_path / name


def test_merge_refuses_a_truncated_shard_file_and_writes_nothing(lab, tmp_path, capsys):
    damaged = damaged_copy(lab, tmp_path)
    image = damaged / "train" / "shard-00000" / "image_front.npy"
    image.write_bytes(image.read_bytes()[:1000])  # an interrupted copy
    assert hybridvla(["dataset", "merge", str(damaged), str(lab / "set"), "-o", str(tmp_path / "m")]) == 1
    err = one_line(capsys)
    assert err.startswith(f"hybridvla dataset merge: {image}: cannot be read") and "damaged" in err
    assert not (tmp_path / "m").exists()
    # a whole file with fewer rows than index.json promises
    np.save(image, np.zeros((3, *SIZE, 3), np.uint8))
    assert hybridvla(["dataset", "merge", str(damaged / "train"), "-o", str(tmp_path / "m")]) == 1
    samples = json.loads((damaged / "train" / "index.json").read_text())["shards"][0]["samples"]
    assert one_line(capsys).startswith(f"hybridvla dataset merge: {image}: 3 rows, index.json says {samples}")
    assert not (tmp_path / "m").exists()


def test_json_errors_name_the_file(lab, tmp_path, capsys):
    damaged = damaged_copy(lab, tmp_path)
    index = damaged / "train" / "index.json"
    index.write_text(index.read_text().replace(",", "", 1))
    assert hybridvla(["dataset", "merge", str(damaged), "-o", str(tmp_path / "m")]) == 1
    assert one_line(capsys).startswith(f"hybridvla dataset merge: {index}: not valid JSON (")
    assert hybridvla(["dataset", "resize", str(damaged / "train"), "--image-size", "16"]) == 2
    assert one_line(capsys).startswith(f"hybridvla dataset: {index}: not valid JSON (")
    statistics = tmp_path / "stats" / "dataset_statistics.json"
    statistics.parent.mkdir()
    statistics.write_text('{"recorded": {"action": 1,, }')
    assert hybridvla(["dataset", "merge", str(lab / "set"), "-o", str(tmp_path / "m"),
                      "--statistics-from", str(statistics.parent)]) == 1
    assert one_line(capsys).startswith(f"hybridvla dataset merge: {statistics}: not valid JSON (")
    assert not (tmp_path / "m").exists()


def test_resizing_a_merged_set_leaves_the_sets_it_was_merged_from_alone(lab, tmp_path, capsys):
    source = damaged_copy(lab, tmp_path, "source")
    before = files_under(source)
    assert hybridvla(["dataset", "merge", str(source), "-o", str(tmp_path / "m")]) == 0
    merged_image = tmp_path / "m" / "train" / "shard-00000" / "image_front.npy"
    assert os.stat(merged_image).st_nlink == 2  # merge linked the shard files (the default)
    assert hybridvla(["dataset", "resize", str(tmp_path / "m" / "train"), "--image-size", "16x24"]) == 0
    assert files_under(source) == before  # byte for byte
    assert np.load(merged_image).shape[1:] == (16, 24, 3)
    assert np.load(source / "train" / "shard-00000" / "image_front.npy").shape[1:] == (*SIZE, 3)
    assert not list((tmp_path / "m").rglob("*.partial"))


def test_resize_refuses_bad_input_in_one_line_and_rewrites_nothing(lab, tmp_path, capsys):
    good = damaged_copy(lab, tmp_path, "good")
    before = files_under(good)
    assert hybridvla(["dataset", "resize", str(good / "train"), "--image-size", "0"]) == 2
    assert one_line(capsys) == ("hybridvla dataset: --image-size must be S or [height, width], positive whole "
                                "pixels, got 0 (--debug shows where)")
    damaged = damaged_copy(lab, tmp_path)
    state = damaged / "train" / "shard-00000" / "state.npy"
    state.write_bytes(state.read_bytes()[:100])
    # the damaged set is named before the good one given first is rewritten
    assert hybridvla(["dataset", "resize", str(good / "train"), str(damaged / "train"), "--image-size", "16"]) == 2
    assert one_line(capsys).startswith(f"hybridvla dataset: {state}: cannot be read")
    assert files_under(good) == before


def eval_bags(lab, *args):
    return hybridvla(["eval", "bags", str(lab / "ckpt"), str(lab / "bags" / "ep0"), "--no-plots", *args])


@pytest.mark.parametrize("args, says", [
    (["--rate", "-5"], "--rate must be > 0 and at most 1e9 steps per second, got -5"),
    (["--rate", "0"], "--rate must be > 0 and at most 1e9 steps per second, got 0"),
    (["--max-steps", "-1"], "--max-steps must be >= 1 (leave it out for every step), got -1"),
    (["--max-steps", "0"], "--max-steps must be >= 1 (leave it out for every step), got 0"),
    (["--json", "{afile}/x.json"], "--json {afile}/x.json: {afile} is a file, not a directory: choose another path"),
    (["--json", "{bags}"], "--json {bags} is a directory: give a file name"),
    (["-o", "{afile}"], "-o {afile}: {afile} is a file, not a directory: choose another path"),
])
def test_eval_bags_refuses_options_before_evaluating(lab, tmp_path, capsys, args, says):
    paths = {"afile": lab / "afile.txt", "bags": lab / "bags"}
    args = [a.format(**paths) for a in args]
    assert eval_bags(lab, "-o", str(tmp_path / "out"), *args) == 2  # a later -o wins
    assert one_line(capsys) == f"hybridvla eval: {says.format(**paths)} (--debug shows where)"
    assert not (tmp_path / "out").exists()  # nothing evaluated, nothing written


def test_eval_bags_exits_non_zero_when_a_named_checkpoint_is_refused(lab, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    out = tmp_path / "out"
    code = eval_bags(lab, "--compare", str(broken), "--max-steps", "2", "-o", str(out), "--json",
                     str(tmp_path / "new" / "summary.json"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1] == f"hybridvla eval bags: not evaluated (see the lines above): {broken}"
    summary = json.loads((out / "summary.json").read_text())  # the other checkpoint is still evaluated
    assert list(summary["results"]) == ["ckpt"] and summary["results"]["ckpt"]["steps"] == 2
    assert json.loads((tmp_path / "new" / "summary.json").read_text()) == summary
    # every checkpoint refused: no output directory is left behind
    assert hybridvla(["eval", "bags", str(broken), str(lab / "bags" / "ep0"), "-o", str(tmp_path / "none")]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"hybridvla eval bags: no checkpoint could be evaluated: {broken} (see the lines above)"
    assert not (tmp_path / "none").exists()


def test_eval_bags_names_a_path_without_bags(lab, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert hybridvla(["eval", "bags", str(lab / "ckpt"), str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 1
    assert one_line(capsys).startswith(f"hybridvla eval bags: no bag in {tmp_path / 'empty'}: give bag directories")
    assert not (tmp_path / "o").exists()
