"""`hybridvla import-checkpoint REF.pt --model-config MODEL.yaml --statistics dataset_statistics.json --output DIR
[--need-to-sub N]`: turn a reference checkpoint (.pt, read with weights_only=True) into a checkpoint directory.
MODEL.yaml (or .json) is a ModelConfig (llm.path and llm.tokenizer_path pointing at local base LLM
config/tokenizer directories). The written config records the reference's settings (token layout, AR
conditioning, ensemble gate, bicubic resize; see model/importer.py). Bad input ends with one line on stderr and
exit status 2; DIR appears only when complete."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="the reference's step-XXXXXX-...pt")
    parser.add_argument("--model-config", type=Path, required=True, help="ModelConfig as YAML, or JSON (.json)")
    parser.add_argument("--statistics", type=Path, required=True, help="the run's dataset_statistics.json")
    parser.add_argument("--output", type=Path, required=True, help="checkpoint directory to write (new or empty)")
    parser.add_argument("--need-to-sub", type=int, default=None, metavar="N",
                        help="the --need_to_sub the reference was trained with (action-bin ids = vocabulary - N - "
                             "bin); default: the model config's need_to_sub (0, as the released README commands)")


def read_model_config(path: Path):
    """A ModelConfig from YAML, or JSON when the name ends in .json (YAML 1.1 reads 1e-06 as a string)."""
    import yaml

    from hybridvla_core.model.config import ModelConfig

    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model config file")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of ModelConfig fields, got {type(data).__name__}")
    return ModelConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from hybridvla_core.model.importer import import_reference_checkpoint

    try:
        if args.need_to_sub is not None and args.need_to_sub < 0:
            raise ValueError(f"--need-to-sub must be >= 0, got {args.need_to_sub}")
        config = read_model_config(args.model_config)
        out = import_reference_checkpoint(args.checkpoint, config, args.statistics, args.output,
                                          need_to_sub=args.need_to_sub)
    except (ValueError, OSError) as error:
        print(f"hybridvla import-checkpoint: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"checkpoint written to {out}")
    return 0
