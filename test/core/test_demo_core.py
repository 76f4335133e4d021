"""The demo's ROS-free half: seed selection by instruction variant, held-out seeds (hybridvla_core.sim.episodes),
the run summary (hybridvla_core.tools.demo_report), `hybridvla sim record-demos`, and `hybridvla dataset resize`: the
training set's frames shrunk exactly as the policy resizes live frames."""
import numpy as np
import torch

from hybridvla_core.tools import demo_report
from hybridvla_core.cli import main
from hybridvla_core.datasets.cli import resize_images
from hybridvla_core.model import TrainsetDataset, TrainsetWriter
from hybridvla_core.model.vision import images_to_pixels
from hybridvla_core.sim import episodes
from hybridvla_core.sim.env import SimEnv
from hybridvla_core.sim.record import recorded_seeds


def test_variant_seeds_take_the_first_seeds_of_each_variant():
    seeds = episodes.variant_seeds(3, start=0)
    assert seeds == sorted(seeds) and len(seeds) == 3 * len(episodes.VARIANTS)
    variants = [episodes.variant_of(s) for s in seeds]
    assert all(variants.count(v) == 3 for v in episodes.VARIANTS)
    # Every seed skipped below the last one belongs to another variant or to a variant already full.
    for seed in range(seeds[0], seeds[-1]):
        if seed not in seeds:
            v = episodes.variant_of(seed)
            assert v not in episodes.VARIANTS or sum(1 for s in seeds if s < seed and episodes.variant_of(s) == v) == 3


def test_variant_of_is_the_simulated_episode():
    env = SimEnv("fr3", "pick_place", image_width=32, image_height=24)
    try:
        for seed in (0, 7, 100_003):
            block, bowl = episodes.variant_of(seed)
            assert env.reset(seed) == f"put the {block} block in the {bowl} bowl"
    finally:
        env.close()


def test_held_out_seeds_avoid_training_seeds_and_alternate_variants():
    training = episodes.variant_seeds(2, start=episodes.HELD_OUT_SEED_START)  # pretend training used these
    held = episodes.held_out_seeds(8, episodes.HELD_OUT_SEED_START, training_seeds=training)
    assert len(held) == 8 and not set(held) & set(training)
    assert [episodes.variant_of(s) for s in held[:4]] == list(episodes.VARIANTS)


def test_summary_of_a_mode():
    episodes = [{"seed": 1, "success": True, "duration_s": 8.0}, {"seed": 2, "success": False, "duration_s": 25.0},
                {"seed": 3, "success": True, "duration_s": 9.0}, {"seed": 4, "success": False, "duration_s": 25.0}]
    # Two episodes at 8 Hz (0.125 s apart) with a 5 s gap between them (reset).
    stamps = [0.125 * i for i in range(20)] + [7.5 + 0.125 * i for i in range(20)]
    actions = [{"stamp_s": t, "total_ms": float(i), "stages": {"predict_total": float(i)},
                "source": "fused" if i % 4 else "diffusion"} for i, t in enumerate(stamps)]
    s = demo_report.summarize_mode(episodes, actions, ["step_clamp", "step_clamp", "workspace_clamp"])
    assert s["success_rate"] == 0.5 and s["successes"] == 2
    assert abs(s["control_rate_hz"] - 8.0) < 1e-9
    assert s["latency_ms"]["p50"] == np.percentile(np.arange(40.0), 50)
    assert s["fusion_rate"] == 30 / 40 and s["sources"] == {"diffusion": 10, "fused": 30}
    assert s["guard_events"] == {"step_clamp": 2, "workspace_clamp": 1}
    assert "hybrid" in demo_report.table({"modes": {"hybrid": s}}) and " 50%" in demo_report.table({"modes": {"hybrid": s}})


def test_dataset_resize_resizes_like_the_policy(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 24, 32, 3), dtype=np.uint8)
    with TrainsetWriter(tmp_path, ["front"], 7, unnorm_key="k", shard_size=3) as writer:
        for i, frame in enumerate(frames):
            writer.add({"front": frame}, np.zeros(7), np.full(7, 0.1 * i), "go", episode=0)
    before = TrainsetDataset(tmp_path, image_size=16)
    expected = torch.stack([before[i]["pixels"] for i in range(5)])
    action = before[4]["action"].clone()
    del before  # its memory maps would see the files rewritten
    assert resize_images(tmp_path, 16) == 5
    after = TrainsetDataset(tmp_path, image_size=16)
    assert np.load(tmp_path / "shard-00000" / "image_front.npy").shape == (3, 16, 16, 3)
    got = torch.stack([after[i]["pixels"] for i in range(5)])
    assert (got - expected).abs().max() <= 0.5 / 255 + 1e-6  # uint8 rounding only
    assert torch.equal(images_to_pixels([frames[0]], 16, "cpu", torch.float32), expected[0])
    assert torch.equal(after[4]["action"], action)


def test_record_continues_an_interrupted_run(tmp_path, capsys):
    """A second `record-demos` skips finished bags, re-records an interrupted one, and keeps bag names unique."""
    part = tmp_path / "part0"
    argv = ["sim", "record-demos", "--out", str(tmp_path), "--per-variant", "1", "--part", "0/2"]
    assert main(argv) == 0
    expected = set(episodes.variant_seeds(1, 0)[0::2])
    done, unfinished = recorded_seeds(part)
    assert done == expected and not unfinished and len(expected) == 2
    first = sorted(part.iterdir())
    (first[1] / "metadata.yaml").unlink()  # as if the run had been killed during this episode
    capsys.readouterr()
    assert main(argv) == 0
    assert "1 of 2 episodes already recorded" in capsys.readouterr().out
    done, unfinished = recorded_seeds(part)
    assert done == expected and not unfinished
    names = sorted(p.name for p in part.iterdir())
    assert len(names) == 2 and names[0] == first[0].name and names[1].startswith("episode_0001_")


def test_recorded_targets_close_the_fingers_along_the_base_y_axis(tmp_path):
    """The recorded targets close the fingers (the TCP's y axis) along the base's y axis when the gripper first
    closes."""
    from scipy.spatial.transform import Rotation

    from hybridvla_core.recording import bags
    from hybridvla_core.sim.config import load_config

    cfg = load_config(robot="fr3")
    topic = cfg.arm_topic(cfg.topics_arm_target, "fr3")
    out = tmp_path / "demos"
    assert main(["sim", "record-demos", "--out", str(out), "--per-variant", "1", "--part", "0/4"]) == 0
    (episode,) = sorted((out / "part0").iterdir())
    grasp = next(m.message for m in bags.read_messages(episode, [topic]) if m.message.gripper < 0.5)
    q = grasp.pose.orientation
    closing = np.abs(Rotation.from_quat([q.x, q.y, q.z, q.w]).apply([0.0, 1.0, 0.0]))
    assert closing[1] > np.cos(np.pi / 4) > closing[0]
