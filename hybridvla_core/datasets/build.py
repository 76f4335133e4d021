"""Training sets from bags: resampled episodes (extract.py) -> actions in the chosen convention -> optional
idle-frame dropping -> the model's training-set format (hybridvla_core.model.trainset), split by episode.

    <out>/train/    training set (index.json, dataset_statistics.json with q01/q99 and mask, shards)
    <out>/val/      validation episodes, same format; its dataset_statistics.json is the TRAIN set's, so that
                    validation is normalised exactly as the model will be
    <out>/build.json  settings, every bag with its split, steps and outcome, and every bag left out with why
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from hybridvla_core.actions import ActionConvention
from hybridvla_core.datasets.extract import GOOD_OUTCOMES, BagError, Episode, TopicLayout, extract_episode, find_bags


@dataclass
class BuildOptions:
    rate_hz: float = 10.0
    chunk: int = 1
    convention: ActionConvention = field(default_factory=ActionConvention)
    layout: TopicLayout = field(default_factory=TopicLayout)
    views: list[str] | None = None
    arms: list[str] | None = None
    instruction: str | None = None
    drop_idle: bool = False
    idle_m: float = 0.001        # metres of target translation between kept steps
    idle_rad: float = 0.005      # radians of target rotation between kept steps
    val_fraction: float = 0.1
    seed: int = 0
    unnorm_key: str = "recorded"
    include_failed: bool = False
    max_age_s: float = 0.5

    def __post_init__(self) -> None:
        if self.rate_hz <= 0 or self.chunk < 1 or not 0 <= self.val_fraction < 1:
            raise ValueError("need rate > 0, chunk >= 1 and 0 <= val_fraction < 1")


def idle_steps(episode: Episode, idle_m: float, idle_rad: float) -> np.ndarray:
    """True for steps whose commanded targets (every arm, gripper included) barely differ from the last kept
    step's: the operator was not moving the robot."""
    idle = np.zeros(len(episode), dtype=bool)
    kept = episode.targets[0]
    for k in range(1, len(episode)):
        moved = False
        for (p, q, g), (p0, q0, g0) in zip(episode.targets[k], kept):
            angle = (Rotation.from_quat(q) * Rotation.from_quat(q0).inv()).magnitude()
            moved |= bool(np.linalg.norm(p - p0) >= idle_m or angle >= idle_rad or abs(g - g0) >= 0.05)
        idle[k] = not moved
        if moved:
            kept = episode.targets[k]
    return idle


def chunked(actions: np.ndarray, chunk: int) -> np.ndarray:
    """(K, D) -> (K, chunk, D): row i of step k is the action of step k + i, the last one repeated past the end."""
    index = np.minimum(np.arange(len(actions))[:, None] + np.arange(chunk)[None, :], len(actions) - 1)
    return actions[index]


def split_episodes(count: int, val_fraction: float, seed: int) -> set[int]:
    """Indices of the validation episodes: round(fraction * count), at least 1 when the fraction is > 0 and
    there are 2 or more episodes, never all of them."""
    if val_fraction <= 0 or count < 2:
        return set()
    n_val = min(max(1, int(round(val_fraction * count))), count - 1)
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return set(order[:n_val])


def build_dataset(bag_paths, out: str | Path, options: BuildOptions, log=print, progress: bool = True) -> dict:
    """Build <out>/train and <out>/val from the bags; unusable bags are reported with one line each and
    left out. Returns the build report (also written to <out>/build.json)."""
    from hybridvla_core.model.trainset import STATISTICS_FILE, TrainsetWriter

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output directory {out} is not empty")
    paths = find_bags(bag_paths)
    if not paths:
        raise ValueError("no bags found in " + ", ".join(map(str, bag_paths)))
    episodes: list[Episode] = []
    report = {"settings": _settings(options), "bags": [], "left_out": []}
    for path in tqdm(paths, desc="read bags", unit="bag", disable=not progress):
        try:
            episode = extract_episode(path, rate_hz=options.rate_hz, layout=options.layout, arms=options.arms,
                                      views=options.views, max_age_s=options.max_age_s, instruction=options.instruction)
            if episode.outcome not in GOOD_OUTCOMES and not options.include_failed:
                raise BagError(f"{path}: outcome {episode.outcome} (pass --include-failed to use it)")
            if episodes and (episode.views, episode.arms) != (episodes[0].views, episodes[0].arms):
                raise BagError(f"{path}: views {episode.views} / arms {episode.arms} differ from the first bag's "
                               f"{episodes[0].views} / {episodes[0].arms}")
            episode.actions(options.convention)  # fails here, for this bag only, on non-finite targets
        except (BagError, ValueError) as exc:
            log(f"skipped {exc}")
            report["left_out"].append({"bag": str(path), "reason": str(exc)})
            continue
        episodes.append(episode)
    if not episodes:
        raise ValueError("no usable bag (see the lines above)")

    val = split_episodes(len(episodes), options.val_fraction, options.seed)
    action_dim = 7 * len(episodes[0].arms)
    writers = {name: TrainsetWriter(out / name, episodes[0].views, action_dim, chunk=options.chunk,
                                    convention=options.convention, unnorm_key=options.unnorm_key, shard_size=256)
               for name in ("train", "val") if name == "train" or val}
    bar = tqdm(total=sum(len(e) for e in episodes), desc="write samples", unit="step", disable=not progress)
    for number, episode in enumerate(episodes):
        split = "val" if number in val else "train"
        actions = chunked(episode.actions(options.convention), options.chunk)
        keep = ~idle_steps(episode, options.idle_m, options.idle_rad) if options.drop_idle \
            else np.ones(len(episode), dtype=bool)
        for k in np.flatnonzero(keep):
            writers[split].add({v: episode.images[v][k] for v in episode.views}, episode.states[k], actions[k],
                               episode.instruction, episode=number)
        bar.update(len(episode))
        report["bags"].append({"bag": str(episode.path), "split": split, "episode": number,
                               "instruction": episode.instruction, "outcome": episode.outcome,
                               "steps": int(keep.sum()), "idle_dropped": int((~keep).sum()),
                               "stale_skipped": episode.skipped.get("stale", 0)})
    bar.close()
    if not any(b["split"] == "train" and b["steps"] for b in report["bags"]):
        raise ValueError("every training step was dropped as idle; lower --idle-m / --idle-rad")
    for writer in writers.values():
        writer.close()
    if "val" in writers:  # validation is normalised with the training statistics
        shutil.copyfile(out / "train" / STATISTICS_FILE, out / "val" / STATISTICS_FILE)
    report.update(views=episodes[0].views, arms=episodes[0].arms, action_dim=action_dim,
                  train_samples=sum(b["steps"] for b in report["bags"] if b["split"] == "train"),
                  val_samples=sum(b["steps"] for b in report["bags"] if b["split"] == "val"))
    (out / "build.json").write_text(json.dumps(report, indent=2))
    return report


def _settings(o: BuildOptions) -> dict:
    return {"rate_hz": o.rate_hz, "chunk": o.chunk, "convention": o.convention.to_dict(),
            "layout": o.layout.__dict__, "views": o.views, "arms": o.arms, "drop_idle": o.drop_idle,
            "idle_m": o.idle_m, "idle_rad": o.idle_rad, "val_fraction": o.val_fraction, "seed": o.seed,
            "unnorm_key": o.unnorm_key, "include_failed": o.include_failed, "max_age_s": o.max_age_s,
            "instruction": o.instruction}

