"""`hybridvla train CONFIG.yaml`: fine-tune or train a HybridVLA on a training-set directory.

Multi-GPU (or multi-process CPU with gloo): `torchrun --nproc_per_node N -m hybridvla_core.tools.train CONFIG.yaml`.
The config format is documented in hybridvla_core.model.training.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", type=Path, help="training config (YAML): model, data, train sections")
    parser.add_argument("--max-steps", type=int, help="override train.max_steps")
    parser.add_argument("--output-dir", help="override train.output_dir")
    parser.add_argument("--stop-after", type=int, metavar="STEP",
                        help="override train.stop_after: stop after STEP (saved) as if interrupted; the learning-rate "
                             "schedule still runs to max_steps and the same command without it resumes")


def _read_spec(path: Path) -> dict:
    """The config file parsed and its shape checked (hybridvla_core.model.training.checked_spec), the file named in
    any error."""
    from hybridvla_core.errors import UserError
    from hybridvla_core.files import read_yaml
    from hybridvla_core.model.training import checked_spec

    try:
        spec = read_yaml(path)
    except UnicodeDecodeError:
        raise UserError(f"config {path}: not a text file (not UTF-8): give the training YAML") from None
    try:
        return checked_spec({} if spec is None else spec)
    except UserError as error:
        raise UserError(f"config {path}: {error}") from None


def run(args: argparse.Namespace) -> int:
    from hybridvla_core.model.training import train

    if not args.config.is_file():
        print(f"hybridvla train: config {args.config} not found", file=sys.stderr)
        return 2
    try:
        spec = _read_spec(args.config)
        spec["train"] = dict(spec.get("train", {}))  # the options below override its values
        if args.max_steps is not None:
            spec["train"]["max_steps"] = args.max_steps
        if args.output_dir is not None:
            spec["train"]["output_dir"] = args.output_dir
        if args.stop_after is not None:
            spec["train"]["stop_after"] = args.stop_after
        result = train(spec)
    except (ValueError, FileNotFoundError) as error:
        print(f"hybridvla train: {error}", file=sys.stderr)
        return 2
    print(f"{'final' if result['checkpoint'].name == 'final' else 'stopped early at'} checkpoint: {result['checkpoint']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybridvla train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
