"""Which FR3 pick_place episodes the demo, `hybridvla eval sim` and the recorded demonstrations play, and how
an episode at its time limit is judged.

The instruction variants are 2 block colours x 2 bowl colours; every colour still appears as a distractor, so
the policy has to read the instruction and the scene. Training demonstrations take seeds from
TRAIN_SEED_START on, all below HELD_OUT_SEED_START (`hybridvla sim record-demos` refuses more); the demo's
held-out seeds start there and skip every seed a checkpoint lists in its training_seeds.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from hybridvla_core.errors import UserError
from hybridvla_core.files import read_json

BLOCKS = ("red", "blue")
BOWLS = ("green", "yellow")
VARIANTS = tuple((block, bowl) for block in BLOCKS for bowl in BOWLS)
TRAIN_SEED_START = 0
HELD_OUT_SEED_START = 100_000  # the recipe's training seeds all lie below this
SETTLE_S = 0.5  # after the time limit, arm held: a block released at the limit may still land [s]; then judged
TRAINING_SEEDS_FILE = "training_seeds.json"  # in a checkpoint directory: {"variants": [...], "seeds": [...]}


def variant_of(seed: int, task=None) -> tuple[str, str]:
    """(block colour, bowl colour) of the pick_place episode of `seed`, without building a simulation."""
    from hybridvla_core.sim.tasks import PickPlaceTask

    layout = (task or PickPlaceTask()).sample(np.random.default_rng(int(seed)))
    return layout.block, layout.bowl


def variant_seeds(per_variant: int, start: int, variants: Sequence[tuple[str, str]] = VARIANTS,
                  exclude: Iterable[int] = ()) -> list[int]:
    """The first `per_variant` seeds >= start of every variant (none of `exclude`), in seed order."""
    from hybridvla_core.sim.tasks import PickPlaceTask

    task, excluded = PickPlaceTask(), set(exclude)
    counts = {tuple(v): 0 for v in variants}
    seeds: list[int] = []
    seed = start
    while any(n < per_variant for n in counts.values()):
        v = variant_of(seed, task)
        if v in counts and counts[v] < per_variant and seed not in excluded:
            counts[v] += 1
            seeds.append(seed)
        seed += 1
        if seed - start > 10_000 * per_variant * len(counts):
            raise ValueError(f"variants {sorted(counts)} do not all occur from seed {start} on")
    return seeds


def held_out_seeds(episodes: int, start: int = HELD_OUT_SEED_START, training_seeds: Iterable[int] = (),
                   variants: Sequence[tuple[str, str]] = VARIANTS) -> list[int]:
    """`episodes` seeds of the trained variants, taking the variants in turn, that training never used."""
    if episodes < 1:
        return []
    per_variant = -(-episodes // len(variants))
    by_variant = {tuple(v): [] for v in variants}
    for seed in variant_seeds(per_variant, start, variants, exclude=training_seeds):
        by_variant[variant_of(seed)].append(seed)
    interleaved = [s for group in zip(*by_variant.values()) for s in group]
    return interleaved[:episodes]


def training_seeds(checkpoint: str | Path) -> list[int]:
    """The seeds a checkpoint was trained on (its training_seeds.json; none listed = [])."""
    path = Path(checkpoint) / TRAINING_SEEDS_FILE
    if not path.is_file():
        return []
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("seeds"), list):
        raise UserError(f"{path}: expected {{\"seeds\": [...]}}: fix the file or delete it (then no seed is skipped)")
    return data["seeds"]


def untrained_seeds(checkpoint: str | Path, episodes: int, start: int = HELD_OUT_SEED_START) -> list[int]:
    """Seeds of the instruction variants the checkpoint was trained on (consecutive seeds would include colours
    it never saw) from `start` on, skipping its training seeds: what the demo and `hybridvla eval sim` play."""
    return held_out_seeds(episodes, start, training_seeds=training_seeds(checkpoint))
