"""`hybridvla import-checkpoint REF.pt --model-config MODEL.yaml --statistics dataset_statistics.json --output DIR`:
turn a reference checkpoint (.pt, read with weights_only=True) into a checkpoint directory. MODEL.yaml is a
ModelConfig (llm.path and llm.tokenizer_path pointing at local base LLM config/tokenizer directories)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the reference's step-XXXXXX-...pt")
    parser.add_argument("--model-config", type=Path, required=True, help="ModelConfig as YAML or JSON")
    parser.add_argument("--statistics", type=Path, required=True, help="the run's dataset_statistics.json")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint directory to write")


def run(args: argparse.Namespace) -> int:
    import yaml

    from hybridvla_core.model.config import ModelConfig
    from hybridvla_core.model.importer import import_reference_checkpoint

    try:
        config = ModelConfig.from_dict(yaml.safe_load(args.model_config.read_text()))
        out = import_reference_checkpoint(args.checkpoint, config, args.statistics, args.output)
    except (ValueError, FileNotFoundError) as error:
        print(f"hybridvla import-checkpoint: {error}", file=sys.stderr)
        return 2
    print(f"checkpoint written to {out}")
    return 0
