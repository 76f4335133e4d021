"""Bags damaged as a crashed recorder or an interrupted copy leaves them, made on purpose: each is named in one
line that points at `hybridvla dataset recover`; recover keeps the intact part, rebuilds a missing metadata.yaml,
is idempotent, leaves no marker on the original it keeps (NAME.crashed), and one episode never enters a training
set twice; bag_replay refuses such a bag in one line."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybridvla_core.recording import bags, recorder, recovery
from hybridvla_core.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_build_streaming import write_bag  # noqa: E402


def cut(bag: Path, share: float = 0.6) -> Path:
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[:int(len(data) * share)])
    return bag


@pytest.fixture
def damaged(tmp_path):
    """name -> bag: good, truncated (a kill: no footer, no marker), marked (the recorder's RECORDING_INCOMPLETE),
    no_metadata (an intact .mcap whose metadata.yaml was lost), empty (a directory with no bag in it)."""
    long = dict(seconds=8.0)  # ~2 MiB: several MCAP chunks, so a cut leaves whole chunks to recover
    out = {"good": write_bag(tmp_path / "good", 0, **long), "truncated": cut(write_bag(tmp_path / "truncated", 1, **long))}
    out["marked"] = cut(write_bag(tmp_path / "marked", 2, **long))
    (out["marked"] / recorder.INCOMPLETE_MARKER).write_text("crashed")
    out["no_metadata"] = write_bag(tmp_path / "no_metadata", 3, **long)
    (out["no_metadata"] / "metadata.yaml").unlink()
    out["empty"] = tmp_path / "empty"
    out["empty"].mkdir()
    return out


def test_each_problem_is_one_line_with_what_to_do(damaged):
    assert bags.bag_problem(damaged["good"]) is None
    expected = {"truncated": "cannot open bag", "marked": "recording never closed",
                "no_metadata": "no metadata.yaml", "empty": "not a bag (no .mcap or .db3 file in it)"}
    for name, text in expected.items():
        problem = bags.bag_problem(damaged[name])
        assert problem.startswith(f"{damaged[name]}: {text}") and "\n" not in problem, problem
        if name != "empty":
            assert f"hybridvla dataset recover {damaged[name]}" in problem


def test_recover_keeps_the_intact_part_once(damaged):
    with pytest.raises(ValueError, match="nothing to recover"):
        recovery.recover_episode(damaged["good"])
    expected_all = bags.topic_summary(damaged["good"])  # the same writer, another seed: the same counts
    for name in ("truncated", "marked", "no_metadata"):
        bag, count = recovery.recover_episode(damaged[name])
        assert bag == damaged[name] and bags.bag_problem(bag) is None and count > 0
        summary = bags.topic_summary(bag)
        kept = sum(n for _, n in summary.values())
        assert kept == count
        if name == "no_metadata":  # the .mcap was whole: every message, and its metadata rebuilt
            assert summary == expected_all
        else:
            assert 0 < kept < sum(n for _, n in expected_all.values())
        assert bags.bag_metadata(bag)["outcome"] == "incomplete"  # (the recorder's START event names the task)
        original = bag.with_name(bag.name + ".crashed")
        assert original.is_dir() and not (original / recorder.INCOMPLETE_MARKER).exists()
        assert recovery.recover_episode(bag) == (bag, None)  # again: nothing changes
        assert not bag.with_name(bag.name + ".crashed.crashed").exists()
        with pytest.raises(ValueError, match=r"the original of a crashed recording.*its recovered bag is"):
            recovery.recover_episode(original)


def test_build_points_at_recover_and_never_takes_an_episode_twice(damaged, tmp_path, capsys):
    folder = tmp_path / "recordings"
    folder.mkdir()
    for name in ("good", "truncated", "no_metadata"):
        shutil.move(str(damaged[name]), str(folder / name))
    # Killed after its last chunk was written: the .mcap is whole, only the marker says it was never closed. Its
    # kept original stays readable after recovery: the case that once entered a training set twice.
    write_bag(folder / "killed_late", 4, seconds=8.0)
    (folder / "killed_late" / recorder.INCOMPLETE_MARKER).write_text("crashed")
    assert main(["dataset", "build", str(folder), "-o", str(tmp_path / "set1"), "--include-failed",
                 "--val-fraction", "0"]) == 0
    err = capsys.readouterr().err
    for name in ("truncated", "no_metadata", "killed_late"):
        line = next(line for line in err.splitlines() if f"{folder / name}:" in line)
        assert line.startswith("skipped") and f"hybridvla dataset recover {folder / name}" in line
    assert main(["dataset", "recover", str(folder / "truncated"), str(folder / "no_metadata"),
                 str(folder / "killed_late")]) == 0
    assert bags.bag_problem(folder / "killed_late.crashed").startswith(f"{folder / 'killed_late.crashed'}: the original")
    assert main(["dataset", "recover", str(folder / "truncated")]) == 0  # idempotent
    assert "recovered before, nothing to do" in capsys.readouterr().out
    # (--instruction: these test bags carry no START event to name their task once metadata.yaml is rebuilt)
    assert main(["dataset", "build", str(folder), "-o", str(tmp_path / "set2"), "--include-failed",
                 "--val-fraction", "0", "--instruction", "stack"]) == 0
    report = json.loads((tmp_path / "set2" / "build.json").read_text())
    used = sorted(Path(b["bag"]).name for b in report["bags"])
    assert used == ["good", "killed_late", "no_metadata", "truncated"], used  # each episode once, the .crashed originals left out


@pytest.mark.ros
@pytest.mark.parametrize("name", ["truncated", "marked", "no_metadata", "empty"])
def test_bag_replay_refuses_in_one_line(damaged, name):
    pytest.importorskip("rclpy")
    proc = subprocess.run([sys.executable, "-m", "hybridvla_ros.bag_replay_node", "--ros-args", "-p",
                           f"bag:={damaged[name]}"], capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"parameter 'bag': {damaged[name]}:" in lines[0] and "Traceback" not in proc.stderr
