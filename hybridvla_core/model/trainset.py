"""The training-set directory format, its writer (for the bag -> dataset builder) and its torch Dataset.

    <dir>/index.json               {"format": "hybridvla-trainset", "version": 1, "views": [names in order],
                                    "action_dim": 7|14, "chunk": T, "convention": {translation, rotation, gripper},
                                    "unnorm_key": name, "num_samples": N, "num_episodes": M,
                                    "shards": [{"dir": "shard-00000", "samples": n}, ...],
                                    "crops": {view: [top, bottom, left, right]} for views cropped when written,
                                    "labels": "per_step" (absent = per_step) | "keyframes" (each action = the
                                              target of the next keyframe, datasets/build.py keyframe_after),
                                    "privileged": ["block_dx", "block_dy", "block_dz", "bowl_dx", "bowl_dy",
                                                   "bowl_dz"] (the columns of privileged.npy; absent in sets
                                                   written before privileged labels existed)}
    <dir>/dataset_statistics.json  reference schema, one entry keyed by unnorm_key, over every action row and state
    <dir>/shard-XXXXX/             one .npy per field (memory-mapped when read):
        image_<view>.npy  (n, H, W, 3) uint8 RGB, any H, W (cropped to the model's view crop unless index.json says
                          it was cropped so when written, then resized, when read)
        state.npy         (n, D) float32, robot units: per arm [x, y, z (m), roll, pitch, yaw (rad, scipy "xyz"), gripper 0..1]
        action.npy        (n, T, D) float32, robot units in the convention; row i = the action taken at step t + i
                          (the builder repeats the episode's last action past its end)
        instruction.npy   (n,) unicode
        episode.npy       (n,) int64
        privileged.npy    (n, 6) float32, training-only labels from the simulator (never a model input): the
                          observation's step's [block - TCP, bowl - TCP] (m, the arm's base-frame axes); a row of
                          NaN = no label (real teleop recordings, bags without the topic, two-arm sets, for which
                          the label is not defined). Shards without the file (older sets) read as NaN.
Actions and states are stored in robot units; the reader normalises them with the statistics (BOUNDS_Q99), so
statistics can be recomputed without rewriting shards. Derive actions from recorded absolute targets with
hybridvla_core.actions.from_absolute_targets.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from hybridvla_core.files import read_json
from hybridvla_core.actions import (ActionConvention, DatasetStatistics, load_dataset_statistics, num_arms,
                                    save_dataset_statistics, select_statistics)
from hybridvla_core.model.vision import images_to_pixels

FORMAT = "hybridvla-trainset"
VERSION = 1
INDEX_FILE = "index.json"
STATISTICS_FILE = "dataset_statistics.json"
LABELS = ("per_step", "keyframes")  # what an action row means: the next step's target, or the next keyframe's
PRIVILEGED = ["block_dx", "block_dy", "block_dz", "bowl_dx", "bowl_dy", "bowl_dz"]  # columns of privileged.npy
PRIVILEGED_FILE = "privileged.npy"


class TrainsetWriter:
    """with TrainsetWriter(dir, ["front", "wrist"], 7, chunk=1, convention=..., unnorm_key="lab") as w:
           w.add({"front": img, "wrist": img}, state, action, "pick up the cube", episode=0, privileged=None)"""

    def __init__(self, directory: str | Path, views: list[str], action_dim: int, chunk: int = 1,
                 convention: ActionConvention | None = None, unnorm_key: str = "dataset", shard_size: int = 1024,
                 crops: Mapping[str, list] | None = None, labels: str = "per_step"):
        num_arms(action_dim)
        if labels not in LABELS:
            raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
        if chunk < 1 or not views:
            raise ValueError("a training set needs chunk >= 1 and at least one view")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.views, self.action_dim, self.chunk = list(views), action_dim, chunk
        self.convention = convention or ActionConvention()
        self.unnorm_key, self.shard_size = unnorm_key, shard_size
        self.crops = {v: list(c) for v, c in (crops or {}).items()}  # regions the added frames were cropped to
        self.labels = labels
        self._buffer: dict[str, list] = {}
        self._shards: list[dict] = []
        self._all_actions: list[np.ndarray] = []
        self._all_states: list[np.ndarray] = []
        self._episodes: set[int] = set()

    def add(self, images: Mapping[str, np.ndarray], state, action, instruction: str, episode: int,
            privileged=None) -> None:
        """privileged: the step's (6,) PRIVILEGED labels, NaN where unknown; None = no label (a NaN row)."""
        state = np.asarray(state, dtype=np.float32)
        privileged = np.full(len(PRIVILEGED), np.nan, np.float32) if privileged is None \
            else np.asarray(privileged, dtype=np.float32)
        if privileged.shape != (len(PRIVILEGED),):
            raise ValueError(f"privileged must have shape ({len(PRIVILEGED)},), got {privileged.shape}")
        action = np.asarray(action, dtype=np.float32).reshape(self.chunk, self.action_dim)
        if state.shape != (self.action_dim,):
            raise ValueError(f"state must have shape ({self.action_dim},), got {state.shape}")
        if not (np.all(np.isfinite(state)) and np.all(np.isfinite(action))):
            raise ValueError("state or action contains non-finite values")
        for view in self.views:
            if view not in images:
                raise ValueError(f"sample lacks view {view!r}")
            image = np.asarray(images[view])
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"view {view!r} must be HxWx3 uint8, got {image.dtype} {image.shape}")
            self._buffer.setdefault(f"image_{view}", []).append(image)
        self._buffer.setdefault("state", []).append(state)
        self._buffer.setdefault("action", []).append(action)
        self._buffer.setdefault("instruction", []).append(str(instruction))
        self._buffer.setdefault("episode", []).append(int(episode))
        self._buffer.setdefault("privileged", []).append(privileged)
        self._all_actions.append(action)
        self._all_states.append(state)
        self._episodes.add(int(episode))
        if len(self._buffer["state"]) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        name = f"shard-{len(self._shards):05d}"
        (self.directory / name).mkdir(exist_ok=True)
        for field_name, values in self._buffer.items():
            np.save(self.directory / name / f"{field_name}.npy", np.stack(values) if field_name != "instruction"
                    else np.asarray(values, dtype=np.str_))
        self._shards.append({"dir": name, "samples": len(self._buffer["state"])})
        self._buffer = {}

    def close(self) -> Path:
        self._flush()
        if not self._shards:
            raise ValueError("no samples were added to the training set")
        statistics = DatasetStatistics.from_samples(np.stack(self._all_actions), np.stack(self._all_states),
                                                    num_trajectories=len(self._episodes))
        save_dataset_statistics(self.directory / STATISTICS_FILE, {self.unnorm_key: statistics})
        index = {
            "format": FORMAT, "version": VERSION, "views": self.views, "action_dim": self.action_dim,
            "chunk": self.chunk, "convention": self.convention.to_dict(), "unnorm_key": self.unnorm_key,
            "num_samples": sum(s["samples"] for s in self._shards), "num_episodes": len(self._episodes),
            "shards": self._shards, **({"crops": self.crops} if self.crops else {}), "labels": self.labels,
            "privileged": PRIVILEGED,
        }
        (self.directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
        return self.directory

    def __enter__(self) -> "TrainsetWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()


def read_index(directory: str | Path) -> dict:
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a training set (no {INDEX_FILE})")
    index = read_json(path)
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{path}: expected format {FORMAT} version {VERSION}")
    index.setdefault("labels", "per_step")  # sets written before "labels" existed
    return index


_MUST_MATCH = ("views", "action_dim", "chunk", "convention", "unnorm_key", "crops", "labels")



def merge_trainsets(inputs: list[str | Path], out: str | Path, link: bool = True,
                    statistics_from: str | Path | None = None) -> dict:
    """Join training sets written alike (same views, action dim, chunk, convention, unnorm key, crops, labels) into
    `out`: their shards in input order (hard links where the file system allows, else copies; episode numbers
    shifted so they stay distinct) under one index. The statistics are recomputed over every merged state and
    action, or copied from `statistics_from` (a set's directory, e.g. the merged training split for a
    validation split). Every output shard has privileged.npy: an input shard without it (a set written before
    privileged labels existed) gets NaN rows. Returns the new index. Nothing is written unless every input is
    compatible."""
    out = Path(out)
    if not inputs:
        raise ValueError("nothing to merge: no training set given")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"output directory {out} is not empty")
    indexes = [read_index(d) for d in inputs]
    first = indexes[0]
    if statistics_from is not None:  # checked before anything is written
        select_statistics(load_dataset_statistics(Path(statistics_from) / STATISTICS_FILE), first["unnorm_key"])
    for directory, index in zip(inputs[1:], indexes[1:]):
        differ = [k for k in _MUST_MATCH if index.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"{directory} differs from {inputs[0]} in {differ}: "
                             + "; ".join(f"{k} {index.get(k)} vs {first.get(k)}" for k in differ))
    out.mkdir(parents=True, exist_ok=True)
    shards, actions, states, offset, episodes = [], [], [], 0, 0
    for directory, index in zip(inputs, indexes):
        last = -1
        for shard in index["shards"]:
            source, name = Path(directory) / shard["dir"], f"shard-{len(shards):05d}"
            (out / name).mkdir()
            if not (source / PRIVILEGED_FILE).is_file():
                np.save(out / name / PRIVILEGED_FILE, np.full((shard["samples"], len(PRIVILEGED)), np.nan, np.float32))
            for file in source.glob("*.npy"):
                target = out / name / file.name
                if file.name == "episode.npy":
                    numbers = np.load(file) + offset
                    last = max(last, int(numbers.max()))
                    np.save(target, numbers)
                    continue
                if link:
                    try:
                        target.hardlink_to(file)
                        continue
                    except OSError:  # another file system: copy instead
                        pass
                shutil.copyfile(file, target)
            if statistics_from is None:  # only needed to recompute the statistics
                actions.append(np.load(source / "action.npy"))
                states.append(np.load(source / "state.npy"))
            shards.append({"dir": name, "samples": shard["samples"]})
        offset = last + 1
        episodes += index["num_episodes"]
    if statistics_from is not None:
        shutil.copyfile(Path(statistics_from) / STATISTICS_FILE, out / STATISTICS_FILE)
    else:
        statistics = DatasetStatistics.from_samples(np.concatenate(actions), np.concatenate(states),
                                                    num_trajectories=episodes)
        save_dataset_statistics(out / STATISTICS_FILE, {first["unnorm_key"]: statistics})
    index = {**{k: first[k] for k in first if k not in ("shards", "num_samples", "num_episodes")},
             "num_samples": sum(s["samples"] for s in shards), "num_episodes": episodes, "shards": shards,
             "privileged": PRIVILEGED,
             "merged_from": [str(Path(d).resolve()) for d in inputs]}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return index


class TrainsetDataset(Dataset):
    """Samples: {"pixels": (V, 3, S, S) float32 in [0, 1], "instruction": str, "state": (D,) and
    "action": (T, D) float32 normalised (BOUNDS_Q99, grippers as stored), "privileged": (6,) float32 training-only
    labels in metres, not normalised (NaN = no label, also for shards written before privileged.npy existed)}."""

    def __init__(self, directory: str | Path, image_size: int, views: list[str] | None = None,
                 statistics: DatasetStatistics | None = None, crops: Mapping[str, list] | None = None,
                 resize: str = "bilinear"):
        """crops: the model's view crops (view -> [top, bottom, left, right], config.check_crop); a view the
        builder already cropped (index.json "crops") must have been cropped the same way, and is not cropped again.
        resize: the model's vision.resize filter."""
        self.directory = Path(directory)
        self.index = read_index(directory)
        self.views = list(views) if views is not None else self.index["views"]
        absent = [v for v in self.views if v not in self.index["views"]]
        if absent:
            raise ValueError(f"training set {directory} lacks view(s) {absent}; it has {self.index['views']}")
        self.image_size = image_size
        self.resize = resize
        self.crops = self._crops_to_apply(dict(crops or {}))
        self.all_statistics = load_dataset_statistics(self.directory / STATISTICS_FILE)
        self.statistics = statistics or select_statistics(self.all_statistics, self.index["unnorm_key"])
        self._shards = [self._open_shard(s["dir"]) for s in self.index["shards"]]
        self._starts = np.cumsum([0] + [s["samples"] for s in self.index["shards"]])

    def _crops_to_apply(self, wanted: dict) -> list:
        stored = self.index.get("crops", {})
        crops = []
        for view in self.views:
            want, done = wanted.get(view), stored.get(view)
            if done is not None and (want is None or not np.allclose(want, done)):
                raise ValueError(f"training set {self.directory}: view {view!r} was cropped to {done} when built, but "
                                 f"the model's crop is {None if want is None else list(want)}; set the view's crop "
                                 f"to {done} or rebuild the set with that crop")
            crops.append(None if done is not None else want)
        return crops

    def _open_shard(self, name: str) -> dict:
        fields = ["state", "action", "instruction"] + [f"image_{v}" for v in self.views]
        shard = {f: np.load(self.directory / name / f"{f}.npy", mmap_mode="r", allow_pickle=False) for f in fields}
        path = self.directory / name / PRIVILEGED_FILE
        shard["privileged"] = np.load(path, mmap_mode="r", allow_pickle=False) if path.is_file() else None
        return shard

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, item: int) -> dict:
        shard_index = int(np.searchsorted(self._starts, item, side="right") - 1)
        shard, row = self._shards[shard_index], item - int(self._starts[shard_index])
        images = [np.array(shard[f"image_{v}"][row]) for v in self.views]  # copy out of the read-only map
        return {
            "pixels": images_to_pixels(images, self.image_size, "cpu", torch.float32, self.crops, self.resize),
            "instruction": str(shard["instruction"][row]),
            "state": torch.as_tensor(self.statistics.proprio.normalize(shard["state"][row]), dtype=torch.float32),
            "action": torch.as_tensor(self.statistics.action.normalize(shard["action"][row]), dtype=torch.float32),
            "privileged": torch.full((len(PRIVILEGED),), float("nan")) if shard["privileged"] is None
            else torch.tensor(np.array(shard["privileged"][row], dtype=np.float32)),
        }
