"""`hybridvla dataset ...`: training sets from recorded bags.

    hybridvla dataset build BAGS... -o DIR [--rate 10] [--chunk 1] [--translation delta] [--drop-idle] [--keyframes]
                            [--image-size S] [--crop VIEW=T,B,L,R] ...
    hybridvla dataset merge BUILD... -o DIR      (builds or training sets written alike -> one)
    hybridvla dataset recover EPISODE_DIR...    (bags left open by a recorder crash -> proper bags)
    hybridvla dataset resize TRAINSET... --image-size S|HxW   (a training set's frames resized in place)

BAGS are bag directories (ours, `hybridvla sim run-experts --record`, or plain `ros2 bag record`, MCAP or
sqlite3) or directories holding them. Each unusable bag gets one line and is left out. Bags are processed one
at a time (memory: about one episode); --image-size S stores the frames resized to S x S with the model's own
resize (hybridvla_core.model.vision.resize_frames), so training reads small frames; --crop cuts a view down to
the model's region of interest first (views[].crop in the model config), so small objects keep their pixels.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hybridvla_core.errors import UserError


def _names(text: str | None) -> list[str] | None:
    return [n for n in text.split(",") if n] if text else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridvla_core.datasets.extract import TopicLayout

    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    b = sub.add_parser("build", help="resample bags, derive actions, write train/ and val/ training sets")
    b.add_argument("bags", nargs="+", type=Path, help="bag directories or directories of bags")
    b.add_argument("-o", "--output", type=Path, required=True, help="output directory (new or empty)")
    b.add_argument("--rate", type=float, default=10.0, help="steps per second [Hz] (default 10)")
    b.add_argument("--chunk", type=int, default=1, help="actions per sample (the model's chunk or more; default 1)")
    b.add_argument("--translation", choices=("delta", "absolute"), default="delta",
                   help="action convention: translation (default delta)")
    b.add_argument("--rotation", choices=("absolute_euler", "delta_euler"), default="absolute_euler",
                   help="action convention: rotation (default absolute_euler)")
    b.add_argument("--gripper", choices=("1=open", "1=closed"), default="1=open",
                   help="action convention: gripper (default 1=open)")
    b.add_argument("--views", help="camera names in model order, e.g. front,wrist (default: every camera found)")
    b.add_argument("--arms", help="arm names, e.g. fr3 or left,right (default: every arm state found)")
    TopicLayout.add_arguments(b)
    b.add_argument("--instruction", help="instruction for bags that carry none (plain ros2 bag record bags)")
    b.add_argument("--drop-idle", action="store_true", help="leave out steps where the commanded target did not move")
    b.add_argument("--keyframes", action="store_true",
                   help="label each step with the target of the next keyframe (arm arrives / starts moving, gripper "
                        "command changes) instead of the next step's target; use with --translation absolute")
    b.add_argument("--idle-m", type=float, default=0.001, help="idle below this target translation [m] (0.001)")
    b.add_argument("--idle-rad", type=float, default=0.005, help="idle below this target rotation [rad] (0.005)")
    b.add_argument("--val-fraction", type=float, default=0.1, help="fraction of episodes for validation (0.1)")
    b.add_argument("--seed", type=int, default=0, help="seed of the episode split (0)")
    b.add_argument("--unnorm-key", default="recorded", help="name of the statistics entry (recorded)")
    b.add_argument("--include-failed", action="store_true", help="also use episodes stopped as failure/interrupted")
    b.add_argument("--max-age-s", type=float, default=0.5,
                   help="skip steps whose newest frame or state is older than this [s] (0.5)")
    b.add_argument("--image-size", type=parse_image_size, default=None, metavar="S|HxW",
                   help="resize frames to S x S or H x W pixels (height x width: the model's vision.image_size) "
                        "with the model's resize (default: keep them as recorded)")
    b.add_argument("--crop", action="append", default=[], metavar="VIEW=TOP,BOTTOM,LEFT,RIGHT",
                   help="keep only this region of a view's frames, as fractions of height and width, before any "
                        "resize; must equal the model's views[].crop (e.g. front=0.40,0.86,0.12,0.88); repeatable")
    m = sub.add_parser("merge", help="join builds (or training sets) written alike into one, statistics recomputed")
    m.add_argument("inputs", nargs="+", type=Path,
                   help="build outputs (directories holding train/ and val/) or training sets (holding index.json)")
    m.add_argument("-o", "--output", type=Path, required=True, help="output directory (new or empty)")
    m.add_argument("--copy", action="store_true", help="copy the shard files (default: hard links where possible)")
    m.add_argument("--statistics-from", type=Path, metavar="DIR",
                   help="keep these normalisation statistics instead of recomputing them: a training set or a "
                        "checkpoint directory holding dataset_statistics.json with the sets' unnorm key (fine-tuning "
                        "a checkpoint on more data without moving its normalisation)")
    r = sub.add_parser("recover", help="turn episodes left open by a recorder crash into proper bags")
    r.add_argument("episodes", nargs="+", type=Path, help="episode bag directories a recorder left open")
    z = sub.add_parser("resize", help="resize a training set's frames in place to the model's input size "
                                      "(what build --image-size does at build time)")
    z.add_argument("trainsets", nargs="+", type=Path, metavar="TRAINSET",
                   help="training-set directories (holding index.json)")
    z.add_argument("--image-size", type=parse_image_size, required=True, metavar="S|HxW",
                   help="pixels, the model's vision.image_size (S: S x S; HxW: height x width)")


def parse_image_size(text: str):
    """--image-size: "S" -> S, "HxW" -> [H, W] (pixels; the values are checked where they are used)."""
    try:
        sizes = [int(part) for part in text.lower().split("x")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected S or HxW (height x width) in pixels, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _crops(items: list[str]) -> dict:
    crops = {}
    for item in items:
        view, _, region = item.partition("=")
        try:
            crops[view.strip()] = [float(v) for v in region.split(",")]
        except ValueError:
            raise ValueError(f"--crop {item!r}: expected VIEW=TOP,BOTTOM,LEFT,RIGHT fractions") from None
        if not view.strip() or len(crops[view.strip()]) != 4:
            raise ValueError(f"--crop {item!r}: expected VIEW=TOP,BOTTOM,LEFT,RIGHT fractions")
    return crops


def run(args: argparse.Namespace) -> int:
    if args.action == "recover":
        return _recover(args.episodes)
    if args.action == "resize":
        _image_hw(args.image_size)
        for directory in args.trainsets:  # every set checked before any is rewritten
            check_shards(directory, checked_index(directory))
        for directory in args.trainsets:
            print(f"{directory}: {resize_images(directory, args.image_size)} samples at {args.image_size} px")
        return 0
    if args.action == "merge":
        return _merge(args.inputs, args.output, link=not args.copy, statistics_from=args.statistics_from)
    from tqdm import tqdm

    from hybridvla_core.actions import ActionConvention
    from hybridvla_core.datasets.build import BuildOptions, build_dataset
    from hybridvla_core.datasets.extract import TopicLayout

    try:
        options = BuildOptions(
            rate_hz=args.rate, chunk=args.chunk,
            convention=ActionConvention(args.translation, args.rotation, args.gripper),
            layout=TopicLayout.from_arguments(args),
            views=_names(args.views), arms=_names(args.arms), instruction=args.instruction,
            drop_idle=args.drop_idle, keyframes=args.keyframes, idle_m=args.idle_m, idle_rad=args.idle_rad,
            val_fraction=args.val_fraction, seed=args.seed, unnorm_key=args.unnorm_key,
            include_failed=args.include_failed, max_age_s=args.max_age_s,
            image_size=args.image_size, crops=_crops(args.crop))
        report = build_dataset(args.bags, args.output, options, log=lambda line: tqdm.write(line, file=sys.stderr))
    except ValueError as exc:
        print(f"hybridvla dataset build: {exc}", file=sys.stderr)
        return 1
    used = len(report["bags"])
    print(f"{used} episodes ({report['train_samples']} train / {report['val_samples']} val samples, "
          f"{len(report['left_out'])} bags left out), views {report['views']}, arms {report['arms']}")
    print(f"train with data.path: {args.output / 'train'}")
    return 0


def resize_images(directory: Path, image_size) -> int:
    """Resize a training set's images in place to image_size (S or [h, w]) with the model's own resize
    (hybridvla_core.model.vision.resize_frames, that of images_to_pixels rounded to uint8), so that training
    reads small frames instead of resizing full frames every step; the policy resizes live frames the same way.
    `hybridvla dataset build --image-size` does the same at build time. Each file is replaced whole (a new file
    renamed over it), so a merged set's hard links never carry the resize into the sets it was merged from.
    Every shard file is checked first. Returns the number of samples."""
    import numpy as np

    from hybridvla_core.model.vision import resize_frames

    size = _image_hw(image_size)
    index, count = checked_index(directory), 0
    check_shards(directory, index)
    for shard in index["shards"]:
        for view in index["views"]:
            path = Path(directory) / shard["dir"] / f"image_{view}.npy"
            frames = np.load(path, mmap_mode="r")
            if frames.shape[1:3] == size:
                continue
            resized = resize_frames(frames, image_size, batch=256)
            del frames
            _save_replacing(path, resized)
        count += shard["samples"]
    return count


def _image_hw(image_size) -> tuple[int, int]:
    from hybridvla_core.model.config import image_hw

    try:
        return image_hw(image_size, "--image-size")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _save_replacing(path: Path, array) -> None:
    """np.save written whole beside `path` and renamed over it (files.write_whole): a hard-linked copy of the file
    (dataset merge links shards) keeps its contents, and an interrupted write never leaves a half-written .npy."""
    import numpy as np

    from hybridvla_core.files import write_whole

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as file:  # a file object: np.save would add .npy to a bare temporary name
            np.save(file, array)
            file.flush()
            os.fsync(file.fileno())
    write_whole(path, save, directory=False)


def checked_index(directory: Path) -> dict:
    """A training set's index.json (model.trainset.read_index), a damaged one named in one line."""
    from hybridvla_core.model.trainset import INDEX_FILE, read_index

    path = Path(directory) / INDEX_FILE
    try:
        index = read_index(directory)
        [(str(shard["dir"]), int(shard["samples"])) for shard in index["shards"]]  # the fields used here
        [str(view) for view in index["views"]]
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a text file ({exc}); rebuild the set") from None
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a training-set index ({type(exc).__name__}: {exc}); rebuild the set") from None
    return index


def check_shards(directory: Path, index: dict) -> None:
    """Open every .npy of every shard memory-mapped (cheap) and check it has the rows index.json promises, so a
    truncated or missing file is named before anything is linked or rewritten."""
    import numpy as np

    for shard in index["shards"]:
        folder = Path(directory) / shard["dir"]
        names = {"state", "action", "instruction", "episode", *(f"image_{v}" for v in index["views"])}
        names |= {p.stem for p in folder.glob("*.npy")}  # what merge links, privileged.npy included
        for name in sorted(names):
            path = folder / f"{name}.npy"
            try:
                rows = np.load(path, mmap_mode="r", allow_pickle=False).shape[:1]
            except (OSError, ValueError, EOFError) as exc:
                raise UserError(f"{path}: cannot be read ({exc}); the set is damaged: build or copy it again") \
                    from None
            if rows != (shard["samples"],):
                raise UserError(f"{path}: {rows[0] if rows else 0} rows, index.json says {shard['samples']}; the set "
                                f"is damaged: build or copy it again")


def _merge(inputs: list[Path], out: Path, link: bool, statistics_from: Path | None = None) -> int:
    """Training sets merge into `out`; builds merge split by split (train statistics recomputed, or taken from
    `statistics_from`; val normalised with the train split's, as the builder does)."""
    from hybridvla_core.files import check_output_dir
    from hybridvla_core.model.trainset import INDEX_FILE, merge_trainsets

    try:
        check_output_dir(out, "-o")
        # every shard file is checked before any is linked: a damaged file would pass into the merged set
        for directory in inputs + [d / split for d in inputs for split in ("train", "val")]:
            if (directory / INDEX_FILE).is_file():
                check_shards(directory, checked_index(directory))
        if all((d / INDEX_FILE).is_file() for d in inputs):
            index = merge_trainsets(inputs, out, link, statistics_from=statistics_from)
            print(f"{index['num_episodes']} episodes, {index['num_samples']} samples -> {out}")
            return 0
        lacking = [str(d) for d in inputs if not (d / "train" / INDEX_FILE).is_file()]
        if lacking:
            raise ValueError(f"neither a training set nor a build (no index.json, no train/index.json): {lacking}")
        train = merge_trainsets([d / "train" for d in inputs], out / "train", link, statistics_from=statistics_from)
        vals = [d / "val" for d in inputs if (d / "val" / INDEX_FILE).is_file()]
        val = merge_trainsets(vals, out / "val", link, statistics_from=out / "train") if vals else None
    except (ValueError, OSError) as exc:
        print(f"hybridvla dataset merge: {exc}", file=sys.stderr)
        return 1
    print(f"train: {train['num_episodes']} episodes, {train['num_samples']} samples; val: "
          f"{val['num_episodes'] if val else 0} episodes, {val['num_samples'] if val else 0} samples")
    print(f"train with data.path: {out / 'train'}")
    return 0


def _recover(paths: list[Path]) -> int:
    from hybridvla_core.recording.recovery import recover_episode

    status = 0
    for path in paths:
        try:
            bag, count = recover_episode(path)
            print(f"{bag}: recovered before, nothing to do" if count is None
                  else f"{bag}: {count} messages recovered (metadata outcome: incomplete; the original is kept as "
                       f"{bag.name}.crashed)")
        except (ValueError, OSError) as exc:
            print(f"hybridvla dataset recover: {exc}", file=sys.stderr)
            status = 1
    return status
