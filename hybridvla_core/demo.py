"""The demo's ROS-free half: which seeds it plays (instruction variants, held-out seeds), recording the
expert demonstrations it is trained on, and the summary of a run (success per mode, control rate, latency,
guard events, fusion rate).

    python -m hybridvla_core.demo record --out DIR [--per-variant 100] [--part I/N]

records the expert demonstrations of the demo's instruction variants (one MCAP bag per episode, the topics
of `hybridvla sim run-experts --record`) and writes DIR/seeds.json with the seeds it used;

    python -m hybridvla_core.demo shrink TRAINSET_DIR... --image-size 64

resizes a training set's frames in place to the model's input size (training then reads small frames).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# The demo's instruction variants: 2 block colours x 2 bowl colours of the pick_place task. Every colour still
# appears as a distractor, so the policy has to read the instruction and the scene.
BLOCKS = ("red", "blue")
BOWLS = ("green", "yellow")
VARIANTS = tuple((block, bowl) for block in BLOCKS for bowl in BOWLS)
TRAIN_SEED_START = 0
HELD_OUT_SEED_START = 100_000  # the recipe's training seeds all lie below this
MODES = ("hybrid", "diffusion", "autoregressive")
SETTLE_S = 0.5  # after the time limit, arm held: a block released at the limit may still land [s]; then judged


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


def percentiles(values: Sequence[float], qs: Sequence[int] = (50, 90, 99)) -> dict[str, float | None]:
    """{"p50": ..., ...} of values (None when there are none)."""
    arr = np.asarray(list(values), dtype=float)
    return {f"p{q}": (float(np.percentile(arr, q)) if arr.size else None) for q in qs}


def summarize_mode(episodes: list[dict], actions: list[dict], guard_kinds: list[str]) -> dict:
    """Summary of one mode's run.

    episodes:    {"seed", "success": bool, "duration_s", "steps"} per episode
    actions:     {"stamp_s": arrival time [s], "total_ms", "stages": {name: ms}, "source": "fused" | ...}
                 per PolicyAction
    guard_kinds: kind name of each GuardEvent
    """
    n = len(episodes)
    ok = sum(bool(e["success"]) for e in episodes)
    stamps = np.sort(np.asarray([a["stamp_s"] for a in actions], dtype=float))
    gaps = np.diff(stamps)
    gaps = gaps[gaps < 1.0]  # gaps across an episode boundary (reset, disabled policy) are no control period
    stage_names = sorted({k for a in actions for k in a["stages"]})
    sources: dict[str, int] = {}
    for a in actions:
        sources[a["source"]] = sources.get(a["source"], 0) + 1
    guards: dict[str, int] = {}
    for kind in guard_kinds:
        guards[kind] = guards.get(kind, 0) + 1
    return {
        "episodes": n,
        "successes": ok,
        "success_rate": ok / n if n else None,
        "seeds": [e["seed"] for e in episodes],
        "episode_success": [bool(e["success"]) for e in episodes],
        "episode_duration_s": [e["duration_s"] for e in episodes],
        "actions": len(actions),
        "control_rate_hz": float(1.0 / np.median(gaps)) if gaps.size else None,
        "latency_ms": percentiles([a["total_ms"] for a in actions]),
        "stage_ms": {name: percentiles([a["stages"][name] for a in actions if name in a["stages"]])
                     for name in stage_names},
        "sources": sources,
        "fusion_rate": sources.get("fused", 0) / len(actions) if actions else None,
        "guard_events": guards,
    }


def table(summary: dict) -> str:
    """The three-mode table a newcomer sees, one row per mode that ran."""
    head = (f"{'mode':<15}{'success':>12}{'rate Hz':>9}{'p50 ms':>8}{'p90 ms':>8}{'fused':>7}  guard events")
    rows = [head, "-" * len(head)]
    for mode, s in summary["modes"].items():
        lat = s["latency_ms"]
        fmt = lambda v, spec: format(v, spec) if v is not None else "-"  # noqa: E731
        guards = ", ".join(f"{k} {v}" for k, v in sorted(s["guard_events"].items())) or "none"
        rows.append(f"{mode:<15}{s['successes']:>4}/{s['episodes']:<3}{fmt(100 * (s['success_rate'] or 0), '.0f'):>4}%"
                    f"{fmt(s['control_rate_hz'], '.1f'):>9}{fmt(lat['p50'], '.0f'):>8}{fmt(lat['p90'], '.0f'):>8}"
                    f"{fmt(None if s['fusion_rate'] is None else 100 * s['fusion_rate'], '.0f'):>6}%  {guards}")
    return "\n".join(rows)


def _record(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hybridvla_core.sim.config import load_config
    from hybridvla_core.sim.env import SimEnv
    from hybridvla_core.sim.record import BagRecorder
    from hybridvla_core.sim.runner import Rates, run_expert_episode

    index, parts = (int(x) for x in args.part.split("/"))
    seeds = variant_seeds(args.per_variant, args.start)
    if seeds and seeds[-1] >= HELD_OUT_SEED_START:
        print(f"error: training seeds reach {seeds[-1]}, into the held-out range", file=sys.stderr)
        return 2
    mine = seeds[index::parts]
    args.out.mkdir(parents=True, exist_ok=True)
    done, unfinished = recorded_seeds(args.out / f"part{index}")
    for path in unfinished:  # an interrupted episode: recorded again below
        shutil.rmtree(path)
    if done:
        print(f"part {index}/{parts}: {len(done & set(mine))} of {len(mine)} episodes already recorded, continuing")
    todo = [seed for seed in mine if seed not in done]
    if index == 0:
        (args.out / "seeds.json").write_text(json.dumps({"variants": VARIANTS, "seeds": seeds}))
    cfg = load_config(args.config, robot="fr3")
    env = SimEnv(**{**cfg.env_kwargs(), "task": "pick_place"})
    recorder = BagRecorder(args.out / f"part{index}", cfg, epoch_ns=time.time_ns())
    recorder.episode_index = len(done)  # bag names keep counting
    rates = Rates(control=cfg.control_rate_hz, state=cfg.state_rate_hz, camera=cfg.camera_rate_hz)
    ok = 0
    try:
        for seed in tqdm(todo, desc=f"demos part {index}/{parts}", unit="ep"):
            ok += run_expert_episode(env, seed, rates=rates, timeout_s=cfg.episode_timeout_s, sink=recorder).success
    finally:
        env.close()
    print(f"part {index}/{parts}: {ok}/{len(todo)} expert successes, bags in {args.out / f'part{index}'}")
    return 0


def recorded_seeds(directory: Path) -> tuple[set[int], list[Path]]:
    """Seeds with a finished episode bag in `directory` (its metadata.yaml is written when the bag closes), and
    the bag directories of episodes that were interrupted (no metadata.yaml)."""
    done, unfinished = set(), []
    for path in sorted(Path(directory).glob("episode_*_seed*")):
        if (path / "metadata.yaml").is_file():
            done.add(int(path.name.rsplit("_seed", 1)[1]))
        else:
            unfinished.append(path)
    return done, unfinished


def shrink_images(directory: Path, image_size) -> int:
    """Resize a training set's images in place to image_size (S or [h, w]) with the model's own resize
    (hybridvla_core.model.vision.resize_frames, that of images_to_pixels rounded to uint8), so that training
    reads small frames instead of resizing full frames every step; the policy resizes live frames the same way.
    `hybridvla dataset build --image-size` does the same at build time. Returns the number of samples."""
    from hybridvla_core.model.config import image_hw
    from hybridvla_core.model.trainset import read_index
    from hybridvla_core.model.vision import resize_frames

    index, count = read_index(directory), 0
    for shard in index["shards"]:
        for view in index["views"]:
            path = Path(directory) / shard["dir"] / f"image_{view}.npy"
            frames = np.load(path, mmap_mode="r")
            if frames.shape[1:3] == image_hw(image_size):
                continue
            resized = resize_frames(frames, image_size, batch=256)
            del frames
            np.save(path, resized)
        count += shard["samples"]
    return count


def main(argv: list[str] | None = None) -> int:
    from hybridvla_core.datasets.cli import parse_image_size

    parser = argparse.ArgumentParser(prog="python -m hybridvla_core.demo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    r = sub.add_parser("record", help="record the expert demonstrations of the demo's instruction variants")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--per-variant", type=int, default=100, help="episodes per instruction variant (100)")
    r.add_argument("--start", type=int, default=TRAIN_SEED_START, help="first seed considered (0)")
    r.add_argument("--part", default="0/1", help="I/N: record every N-th seed from the I-th (parallel runs); "
                   "seeds already recorded in OUT/partI are skipped, so an interrupted run continues")
    r.add_argument("--config", type=Path, help="sim parameter file (default config/sim_franka.yaml)")
    s = sub.add_parser("shrink", help="resize a training set's images in place to the model's input size")
    s.add_argument("directory", type=Path, nargs="+")
    s.add_argument("--image-size", type=parse_image_size, required=True, metavar="S|HxW",
                   help="pixels, the model's vision.image_size (S: S x S; HxW: height x width)")
    args = parser.parse_args(argv)
    if args.action == "shrink":
        for directory in args.directory:
            print(f"{directory}: {shrink_images(directory, args.image_size)} samples at {args.image_size} px")
        return 0
    return _record(args)


if __name__ == "__main__":
    sys.exit(main())
