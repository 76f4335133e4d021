"""Training sets from bags: resampled episodes (extract.py) -> actions in the chosen convention -> optional
idle-frame dropping -> optional resize of the frames to the model's input -> the model's training-set format
(hybridvla_core.model.trainset), split by episode.

Privileged labels (extract.py, simulator bags only) go with each kept step into privileged.npy: the label of the
observation's step, whatever the action labels are (per step or keyframes). Bags without them (real teleop
recordings) and two-arm datasets, for which the label is not defined, get NaN rows.

Streaming: one bag at a time is read, checked, written and dropped, so memory holds about one episode (plus
one shard being filled) however many bags there are.

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
from hybridvla_core.datasets.extract import (GOOD_OUTCOMES, BagError, Episode, TopicLayout, extract_episode, find_bags,
                                             rate_problem)
from hybridvla_core.errors import UserError
from hybridvla_core.files import check_output_dir


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
    keyframes: bool = False      # each step's action = the target of the next keyframe (keyframe_after)
    idle_m: float = 0.001        # metres of target translation between kept steps
    idle_rad: float = 0.005      # radians of target rotation between kept steps
    val_fraction: float = 0.1
    seed: int = 0
    unnorm_key: str = "recorded"
    include_failed: bool = False
    max_age_s: float = 0.5
    image_size: int | list | None = None  # frames stored S x S or [h, w], resized as the model does
    #                                       (resize_frames); None: as recorded
    crops: dict = field(default_factory=dict)  # view -> [top, bottom, left, right] region kept (config.check_crop)
    shard_size: int = 256          # samples per shard file (also the most samples buffered in memory per split)

    def __post_init__(self) -> None:
        problem = rate_problem(self.rate_hz)
        if problem is not None:
            raise UserError(f"--rate {problem}")
        if self.chunk < 1:
            raise UserError(f"--chunk must be >= 1 (actions per sample), got {self.chunk}")
        if not 0 <= self.val_fraction < 1:
            raise UserError(f"--val-fraction must be >= 0 and < 1, got {self.val_fraction:g}")
        for option, value in (("--max-age-s", self.max_age_s), ("--idle-m", self.idle_m),
                              ("--idle-rad", self.idle_rad)):
            if not value >= 0:  # also refuses NaN
                raise UserError(f"{option} must be >= 0, got {value:g}")
        if self.image_size is not None:
            from hybridvla_core.model.config import image_hw
            height, width = image_hw(self.image_size, "--image-size")
            self.image_size = height if height == width else [height, width]
        if self.shard_size < 1:
            raise ValueError("shard_size must be >= 1")
        from hybridvla_core.model.config import check_crop

        checked = {view: check_crop(crop, f"--crop {view}") for view, crop in dict(self.crops).items()}
        self.crops = {view: list(crop) for view, crop in checked.items() if crop is not None}
        if self.views and set(self.crops) - set(self.views):
            raise ValueError(f"--crop names view(s) {sorted(set(self.crops) - set(self.views))} not in --views "
                             f"{list(self.views)}")


def _changes(targets, reference, idle_m: float, idle_rad: float) -> tuple[bool, bool]:
    """(any arm's commanded pose moved >= idle_m [m] or idle_rad [rad], any gripper command changed >= 0.05)
    between two steps' targets (per arm: position m, quaternion xyzw, gripper 0..1)."""
    pose_moved = gripper_changed = False
    for (p, q, g), (p0, q0, g0) in zip(targets, reference):
        angle = (Rotation.from_quat(q) * Rotation.from_quat(q0).inv()).magnitude()
        pose_moved |= bool(np.linalg.norm(p - p0) >= idle_m or angle >= idle_rad)
        gripper_changed |= bool(abs(g - g0) >= 0.05)
    return pose_moved, gripper_changed


def idle_steps(episode: Episode, idle_m: float, idle_rad: float) -> np.ndarray:
    """True for steps whose commanded targets (every arm, gripper included) barely differ from the last kept
    step's: the operator was not moving the robot."""
    idle = np.zeros(len(episode), dtype=bool)
    kept = episode.targets[0]
    for k in range(1, len(episode)):
        moved = any(_changes(episode.targets[k], kept, idle_m, idle_rad))
        idle[k] = not moved
        if moved:
            kept = episode.targets[k]
    return idle


def keyframe_after(episode: Episode, idle_m: float, idle_rad: float) -> np.ndarray:
    """(K,) for each step, the first keyframe after it (the last step: itself). Keyframes, as in the
    keyframe-based manipulation literature the reference follows on RLBench: the step where the commanded
    pose stops moving (arrived), the last step before it moves again (a hold ends), every gripper command
    change, and the last step. Labelled this way a step's action says where the arm goes next, not the next
    few millimetres of the way there."""
    count = len(episode)
    # changes[k]: (pose moved, gripper changed) from step k - 1 to k; nothing before the first or after the last
    changes = [(False, False)] + [_changes(episode.targets[k], episode.targets[k - 1], idle_m, idle_rad)
                                  for k in range(1, count)] + [(False, False)]
    keyframe = np.zeros(count, dtype=bool)
    keyframe[-1] = True
    for k in range(count):
        keyframe[k] |= changes[k][0] != changes[k + 1][0] or changes[k][1]
    after = np.empty(count, dtype=int)
    following = count - 1
    for k in range(count - 1, -1, -1):
        after[k] = following
        if keyframe[k]:
            following = k
    return after


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


def split_bags(paths, val_fraction: float, seed: int) -> set[str]:
    """The bags (as str) drawn for validation, decided up front from the sorted list of the distinct bag paths:
    split_episodes(number of bags, val_fraction, seed) picks positions in that sorted list. The split depends
    only on the set of paths, the fraction and the seed (not on the order the paths were given in), and is by
    episode: a bag is all train or all val. A bag that is later left out (unreadable, failed, other views, ...)
    still consumes its slot: its split simply gets one episode fewer. Bags are left out independently of their
    slot, so the validation share of the used episodes stays val_fraction in expectation; with very few bags
    the validation set can end up empty (a line says so) or the training set empty (an error)."""
    ordered = sorted({str(p) for p in paths})
    return {ordered[i] for i in split_episodes(len(ordered), val_fraction, seed)}


def build_dataset(bag_paths, out: str | Path, options: BuildOptions, log=print, progress: bool = True) -> dict:
    """Build <out>/train and <out>/val from the bags; unusable bags are reported with one line each and
    left out. Returns the build report (also written to <out>/build.json).

    One bag at a time, in the order of find_bags: extract -> check (outcome, same views/arms as the first usable
    bag, finite actions) -> optional idle dropping and resize -> write -> drop, so memory stays about one
    episode plus one shard per split. The train/val split is decided before any bag is read (split_bags: from
    the sorted bag paths; a bag left out still consumes its slot). Episodes are numbered in the order used."""
    out = Path(out)
    check_output_dir(out, "-o")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output directory {out} is not empty")
    paths = find_bags(bag_paths)
    if not paths:
        raise ValueError("no bags found in " + ", ".join(map(str, bag_paths)))
    val_bags = split_bags(paths, options.val_fraction, options.seed)
    build = _StreamingBuild(out, options)
    report = {"settings": _settings(options), "bags": [], "left_out": []}
    samples = 0
    with tqdm(paths, desc="build", unit="bag", disable=not progress) as bar:
        for path in bar:
            split = "val" if str(path) in val_bags else "train"
            try:
                entry = build.add_bag(path, split)
            except (BagError, ValueError) as exc:
                log(f"skipped {exc}")
                report["left_out"].append({"bag": str(path), "reason": str(exc), "split": split})
                continue
            report["bags"].append(entry)
            samples += entry["steps"]
            bar.set_postfix(samples=samples, refresh=False)
    if build.reference is None:
        raise ValueError("no usable bag (see the lines above)")
    if not any(b["split"] == "train" and b["steps"] for b in report["bags"]):
        if not any(b["split"] == "train" for b in report["bags"]):
            raise ValueError("every bag drawn for training was left out (see the lines above)")
        raise ValueError("every training step was dropped as idle; lower --idle-m / --idle-rad")
    if val_bags and not any(b["split"] == "val" and b["steps"] for b in report["bags"]):
        log("no validation episode: every bag drawn for validation was left out or all idle")
    build.close()
    views, arms = build.reference
    report.update(views=views, arms=arms, action_dim=7 * len(arms),
                  val_slots=len(val_bags), val_slots_left_out=sum(b["split"] == "val" for b in report["left_out"]),
                  train_samples=sum(b["steps"] for b in report["bags"] if b["split"] == "train"),
                  val_samples=sum(b["steps"] for b in report["bags"] if b["split"] == "val"))
    (out / "build.json").write_text(json.dumps(report, indent=2))
    return report


class _StreamingBuild:
    """The writers of one build and the views/arms of its first usable bag; add_bag handles one bag whole, so
    its episode is freed when add_bag returns."""

    def __init__(self, out: Path, options: BuildOptions):
        self.out, self.options = out, options
        self.reference: tuple[list[str], list[str]] | None = None  # (views, arms) of the first usable bag
        self.writers: dict = {}
        self.episodes = 0

    def add_bag(self, path: Path, split: str) -> dict:
        """Extract, check and write one bag; raises BagError / ValueError (nothing written) when it is unusable."""
        o = self.options
        episode = extract_episode(path, rate_hz=o.rate_hz, layout=o.layout, arms=o.arms, views=o.views,
                                  max_age_s=o.max_age_s, instruction=o.instruction)
        if episode.outcome not in GOOD_OUTCOMES and not o.include_failed:
            raise BagError(f"{path}: outcome {episode.outcome} (pass --include-failed to use it)")
        if self.reference is not None and (episode.views, episode.arms) != self.reference:
            raise BagError(f"{path}: views {episode.views} / arms {episode.arms} differ from the first bag's "
                           f"{self.reference[0]} / {self.reference[1]}")
        try:  # fails here, for this bag only, on non-finite targets
            steps = keyframe_after(episode, o.idle_m, o.idle_rad) if o.keyframes else None
            actions = chunked(episode.actions(o.convention, steps), o.chunk)
        except ValueError as exc:
            raise BagError(f"{path}: {exc}") from None
        keep = ~idle_steps(episode, o.idle_m, o.idle_rad) if o.drop_idle else np.ones(len(episode), dtype=bool)
        rows = np.flatnonzero(keep)
        if not (np.all(np.isfinite(episode.states[rows])) and np.all(np.isfinite(actions[rows]))):
            raise BagError(f"{path}: non-finite state or action")  # refused before anything of it is written
        missing = sorted(set(o.crops) - set(episode.views))
        if missing:
            raise ValueError(f"--crop names view(s) {missing} that the bags do not have (views: {episode.views})")
        from hybridvla_core.model.vision import crop_frame, resize_frames

        if o.image_size is not None:
            images = {v: resize_frames([episode.images[v][k] for k in rows], o.image_size, crop=o.crops.get(v))
                      for v in episode.views}
        else:
            images = {v: [crop_frame(episode.images[v][k], o.crops.get(v)) for k in rows] for v in episode.views}
        if self.reference is None:
            self.reference = (episode.views, episode.arms)
        number = self.episodes
        self.episodes += 1
        writer = self._writer(split) if len(rows) else None
        # the label belongs to the observation's step k (not to the action target); defined for one arm only
        privileged = episode.privileged if len(episode.arms) == 1 else None
        for i, k in enumerate(rows):
            writer.add({v: images[v][i] for v in episode.views}, episode.states[k], actions[k], episode.instruction,
                       episode=number, privileged=None if privileged is None else privileged[k])
        return {"bag": str(episode.path), "split": split, "episode": number, "instruction": episode.instruction,
                "outcome": episode.outcome, "steps": int(keep.sum()), "idle_dropped": int((~keep).sum()),
                "stale_skipped": episode.skipped.get("stale", 0),
                "privileged_steps": 0 if privileged is None
                else int(np.all(np.isfinite(privileged[rows]), axis=1).sum())}

    def _writer(self, split: str):
        if split not in self.writers:
            from hybridvla_core.model.trainset import TrainsetWriter

            views, arms = self.reference
            o = self.options
            self.writers[split] = TrainsetWriter(self.out / split, views, 7 * len(arms), chunk=o.chunk,
                                                 convention=o.convention, unnorm_key=o.unnorm_key,
                                                 shard_size=o.shard_size, crops=o.crops,
                                                 labels="keyframes" if o.keyframes else "per_step")
        return self.writers[split]

    def close(self) -> None:
        from hybridvla_core.model.trainset import STATISTICS_FILE

        for writer in self.writers.values():
            writer.close()
        if "val" in self.writers:  # validation is normalised with the training statistics
            shutil.copyfile(self.out / "train" / STATISTICS_FILE, self.out / "val" / STATISTICS_FILE)


def _settings(o: BuildOptions) -> dict:
    return {"rate_hz": o.rate_hz, "chunk": o.chunk, "convention": o.convention.to_dict(),
            "layout": o.layout.__dict__, "views": o.views, "arms": o.arms, "drop_idle": o.drop_idle,
            "keyframes": o.keyframes,
            "idle_m": o.idle_m, "idle_rad": o.idle_rad, "val_fraction": o.val_fraction, "seed": o.seed,
            "unnorm_key": o.unnorm_key, "include_failed": o.include_failed, "max_age_s": o.max_age_s,
            "instruction": o.instruction, "image_size": o.image_size,
            "crops": o.crops}

