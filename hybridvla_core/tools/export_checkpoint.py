"""`hybridvla export-checkpoint CHECKPOINT_DIR --output REF.pt [--dtype bfloat16|float32]`: write a checkpoint
directory in the reference's layout, torch.save({"model": {group: state_dict}}) with its timm vision towers, so
that the reference code's load_state_dict calls take it (model/importer.py holds the rename table, both ways).
Bad input ends with one line on stderr and exit status 2; REF.pt appears only when complete."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DTYPES = ("bfloat16", "float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a checkpoint directory (config.json, model.safetensors)")
    parser.add_argument("--output", type=Path, required=True, help="the .pt to write (must not exist)")
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16",
                        help="tensor dtype in the file (default bfloat16, the reference's bf16 training)")


def run(args: argparse.Namespace) -> int:
    import torch

    from hybridvla_core.model.checkpoint import load_config
    from hybridvla_core.model.importer import export_reference_checkpoint

    try:
        out = export_reference_checkpoint(args.checkpoint, args.output, getattr(torch, args.dtype))
    except (ValueError, OSError) as error:
        print(f"hybridvla export-checkpoint: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"reference checkpoint written to {out}")
    if load_config(args.checkpoint).privileged_dim:
        print("left out the privileged head (privileged_head.*, training only): the reference has no such head")
    return 0
