"""Bags recorded in the simulated lab -> `hybridvla dataset build` -> `hybridvla train` (tiny model) ->
`hybridvla eval bags`, with the dataset and the eval numbers recomputed independently from the bags, and bad
input (truncated bag, missing topics, a checkpoint of another action layout) reported with one line each."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from scipy.spatial.transform import Rotation

from hybridvla_core.recording import bags
from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import Policy, build_model, save_checkpoint
from hybridvla_core.model.presets import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
CLI = [sys.executable, "-m", "hybridvla_core.cli"]
STATE, TARGET = "/hybridvla/fr3/arm_state", "/hybridvla/fr3/target"
CAMERAS = {"front": "/camera/front/color/image_raw", "wrist": "/camera/wrist/color/image_raw"}


def run(args, cwd=None):
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=500)


def copy_bag(src, dst, *, storage=StoragePlugin.MCAP, keep=lambda topic: True, metadata=True):
    """Re-write a bag (raw bytes, same definitions) as another storage, optionally without some topics or
    without our metadata: what a plain `ros2 bag record` of the same graph gives."""
    writer = Writer(dst, version=9, storage_plugin=storage)
    writer.open()
    with AnyReader([src], default_typestore=bags.typestore()) as reader:
        conns = {}
        for c in reader.connections:
            if keep(c.topic):
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=bags.typestore())
        for c, t, raw in reader.messages([c for c in reader.connections if c.id in conns]):
            writer.write(conns[c.id], t, raw)
    if metadata:
        for key, value in bags.bag_metadata(src).items():
            writer.set_custom_data(key, value)
    writer.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    sim = run(CLI + ["sim", "run-experts", "--task", "pick_place", "--episodes", "3", "--record", str(root / "sim")])
    assert sim.returncode == 0, sim.stderr
    sim_bags = sorted((root / "sim").iterdir())
    # A plain `ros2 bag record` bag of the third episode: sqlite3, no events, no metadata.
    copy_bag(sim_bags[2], root / "plain", storage=StoragePlugin.SQLITE3,
             keep=lambda t: t != "/hybridvla/episode_events", metadata=False)
    shutil.rmtree(sim_bags[2])
    # Bad input: a bag cut short while being copied, and a bag with only the cameras.
    shutil.copytree(sim_bags[0], root / "truncated")
    mcap = next((root / "truncated").glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    copy_bag(sim_bags[1], root / "cameras_only", keep=lambda t: t.startswith("/camera"))
    return root, sim_bags[:2]


class BagIndex:
    """Independent lookup: the newest message of a topic at or before a receive time."""

    def __init__(self, path):
        self.times, self.msgs = {}, {}
        for m in bags.read_messages(path):
            self.times.setdefault(m.topic, []).append(m.t_ns)
            self.msgs.setdefault(m.topic, []).append(m.message)

    def at(self, topic, t_ns):
        i = int(np.searchsorted(self.times[topic], t_ns, side="right")) - 1
        assert i >= 0
        return self.msgs[topic][i]

    def recorded_action(self, t_ns):
        """Delta translation, absolute Euler xyz rotation, gripper 1 = open (the default convention)."""
        s, g = self.at(STATE, t_ns), self.at(TARGET, t_ns)
        p = lambda pose: np.array([pose.position.x, pose.position.y, pose.position.z])  # noqa: E731
        q = [g.pose.orientation.x, g.pose.orientation.y, g.pose.orientation.z, g.pose.orientation.w]
        return np.concatenate([p(g.pose) - p(s.pose), Rotation.from_quat(q).as_euler("xyz"), [g.gripper]])

    def observation(self, t_ns, instruction):
        s = self.at(STATE, t_ns)
        q = [s.pose.orientation.x, s.pose.orientation.y, s.pose.orientation.z, s.pose.orientation.w]
        state = np.concatenate([[s.pose.position.x, s.pose.position.y, s.pose.position.z],
                                Rotation.from_quat(q).as_euler("xyz"), [s.gripper]])
        images = {}
        for view, topic in CAMERAS.items():
            im = self.at(topic, t_ns)
            images[view] = np.asarray(im.data, np.uint8).reshape(im.height, im.width, 3).copy()
        return {"images": images, "state": state, "instruction": instruction}


def test_dataset_from_sim_and_plain_bags_trains_and_evaluates(lab, tmp_path):
    root, sim_bags = lab
    out = tmp_path / "set"
    built = run(CLI + ["dataset", "build", str(root / "truncated"), *map(str, sim_bags), str(root / "cameras_only"),
                       str(root / "plain"), "-o", str(out), "--chunk", "2", "--instruction", "put it in the bowl"])
    assert built.returncode == 0, built.stderr
    lines = [line for line in built.stderr.splitlines() if "skipped " in line]
    assert len(lines) == 2, built.stderr  # one line per bad bag, the other three are used
    assert "truncated: cannot open bag" in lines[0]
    assert "cameras_only: lacks the topics /hybridvla/{arm}/arm_state" in lines[1]
    report = json.loads((out / "build.json").read_text())
    assert [Path(b["bag"]).name for b in report["bags"]] == [p.name for p in sim_bags] + ["plain"]
    assert report["bags"][2]["instruction"] == "put it in the bowl"  # no metadata: from --instruction
    val = [b["bag"] for b in report["bags"] if b["split"] == "val"]
    train_index = json.loads((out / "train" / "index.json").read_text())
    val_index = json.loads((out / "val" / "index.json").read_text())
    assert len(val) == 1 and train_index["num_episodes"] == 2 and val_index["num_episodes"] == 1
    assert train_index["views"] == ["front", "wrist"] and train_index["chunk"] == 2

    # Independent recomputation of the training set from the bags.
    shard = out / "train" / "shard-00000"
    action, state = np.load(shard / "action.npy"), np.load(shard / "state.npy")
    episode = np.load(shard / "episode.npy")
    train_bags = [b for b in report["bags"] if b["split"] == "train"]
    for b in train_bags:
        assert (episode == b["episode"]).sum() == b["steps"]
    first = train_bags[0]
    index = BagIndex(first["bag"])
    events = index.msgs.get("/hybridvla/episode_events")
    needed = [STATE, TARGET, *CAMERAS.values()]
    t0 = max(max(index.times[t][0] for t in needed), bags.stamp_ns(events[0].header) if events else 0)
    rows = np.flatnonzero(episode == first["episode"])
    for k in (0, 1, len(rows) // 2, len(rows) - 1):
        t = t0 + k * 100_000_000
        np.testing.assert_allclose(action[rows[k], 0], index.recorded_action(t), atol=1e-5)
        next_t = t0 + min(k + 1, len(rows) - 1) * 100_000_000
        np.testing.assert_allclose(action[rows[k], 1], index.recorded_action(next_t), atol=1e-5)
        np.testing.assert_allclose(state[rows[k]], index.observation(t, "")["state"], atol=1e-5)
    stats = json.loads((out / "train" / "dataset_statistics.json").read_text())["recorded"]
    all_actions = np.concatenate([np.load(d / "action.npy") for d in sorted((out / "train").glob("shard-*"))])
    # Euler angles are counted in one branch about their circular mean (the top-down roll is +-pi).
    centre = np.array([np.nan if c is None else c for c in stats["action"]["angle_centre"]])
    assert np.isnan(centre[[0, 1, 2, 6]]).all() and abs(abs(centre[3]) - np.pi) < 0.05
    flat = all_actions.reshape(-1, 7).astype(np.float64)
    flat[:, 3:6] = centre[3:6] + np.mod(flat[:, 3:6] - centre[3:6] + np.pi, 2 * np.pi) - np.pi
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(flat, 0.99, axis=0), atol=1e-6)
    assert stats["action"]["mask"] == [True] * 6 + [False]
    assert (out / "val" / "dataset_statistics.json").read_text() == (out / "train" / "dataset_statistics.json").read_text()

    # Train a tiny model with the training loop's command line.
    model = tiny_config(hidden=32, layers=1, image_size=32).to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"model": model, "data": {"path": str(out / "train")},
                                      "train": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "batch_size": 4,
                                                "learning_rate": 1e-3, "save_every": 0, "progress": False}}))
    trained = run([sys.executable, "-m", "hybridvla_core.tools.train", str(config)])
    assert trained.returncode == 0, trained.stderr
    checkpoint = tmp_path / "run" / "final"
    # A checkpoint of another action layout (two arms, 14 dims): every bag is reported for it, nothing crashes.
    dual = tiny_config(action_dim=14, hidden=32, layers=1, image_size=32)
    rng = np.random.default_rng(0)
    save_checkpoint(build_model(dual), tmp_path / "dual",
                    {"recorded": DatasetStatistics.from_samples(rng.normal(size=(20, 14)), rng.normal(size=(20, 14)), 1)})

    evaluated = run(CLI + ["eval", "bags", str(checkpoint), "--compare", str(tmp_path / "dual"),
                           str(sim_bags[0]), str(root / "truncated"), str(root / "plain"), "--instruction", "put it in the bowl",
                           "--max-steps", "5", "-o", str(tmp_path / "eval")])
    assert evaluated.returncode == 1, evaluated.stderr  # a checkpoint named on the command line was left out
    errs = evaluated.stderr.splitlines()
    assert errs[-1] == f"hybridvla eval bags: not evaluated (see the lines above): {tmp_path / 'dual'}"
    assert sum("truncated: cannot open bag" in line for line in errs) == 1
    assert sum("expects 14-dim actions" in line for line in errs) == 2  # both usable bags, one line each
    assert any("skipped checkpoint" in line and "dual" in line for line in errs)
    assert "gripper accuracy" in evaluated.stdout
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert list(summary["results"]) == ["run_final"]
    result = summary["results"]["run_final"]
    for png in ("errors.png", "confidence.png", "latency.png", "actions_run_final.png"):
        assert (tmp_path / "eval" / png).stat().st_size > 1000

    # Independent recomputation: recorded actions from the bags, predictions from a fresh policy, metrics.
    steps = np.load(tmp_path / "eval" / "steps_run_final.npz")
    names = [Path(n).name for n in summary["bags"]]
    assert names == [sim_bags[0].name, "plain"] and len(steps["action"]) == 10
    policy = Policy.from_checkpoint(checkpoint, seed=0)
    indexes = {}
    for i in range(10):
        bag = summary["bags"][steps["bag"][i]]
        index = indexes.setdefault(bag, BagIndex(bag))
        t = int(steps["time_ns"][i])
        np.testing.assert_allclose(steps["recorded"][i], index.recorded_action(t), atol=1e-6)
        instruction = bags.bag_metadata(bag).get("instruction", "put it in the bowl")
        predicted = policy.predict(index.observation(t, instruction))
        np.testing.assert_allclose(steps["action"][i], predicted.action, atol=1e-5)
        # float noise between processes moves the tiny untrained softmax probabilities in the 3rd digit
        assert np.isclose(steps["confidence"][i], predicted.mean_confidence, rtol=2e-2)
    recorded, action = steps["recorded"], steps["action"]
    np.testing.assert_allclose(result["final"]["mae"], np.abs(action[:, :6] - recorded[:, :6]).mean(0), atol=1e-9)
    np.testing.assert_allclose(result["final"]["rmse"], np.sqrt(((action[:, :6] - recorded[:, :6]) ** 2).mean(0)),
                               atol=1e-9)
    assert result["gripper_accuracy"] == pytest.approx(np.mean((action[:, 6] >= 0.5) == (recorded[:, 6] >= 0.5)))
    fused = np.mean(steps["confidence"] > policy.theta)
    assert result["fused_rate"] == pytest.approx(fused) and result["diffusion_fallback_rate"] == pytest.approx(1 - fused)
    assert result["confidence"]["p50"] == pytest.approx(np.median(steps["confidence"]))
    assert result["latency_ms"]["mean"] == pytest.approx(steps["latency_ms"].mean())
    assert result["steps"] == 10 and result["per_bag"][summary["bags"][0]]["steps"] == 5
