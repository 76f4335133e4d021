"""Import a reference checkpoint (torch.save({"model": {group: state_dict}}) .pt) into a checkpoint directory.

The pickle is read with torch.load(weights_only=True) only: tensors and plain containers load, anything that
would run code is refused. Groups: vision_backbone, projector, llm_backbone (llm.model.*, llm.lm_head.*),
x_embedder, t_embedder, final_layer, proprio_embedder; they map onto this package's module names.
The vision group must already use this package's tower layout (HF DINOv2/SigLIP/CLIP module names, or the
small tower); the reference's timm key layout is refused with the list of keys that did not map.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from hybridvla_core.actions import load_dataset_statistics
from hybridvla_core.model.checkpoint import build_model, save_checkpoint
from hybridvla_core.model.config import ModelConfig

GROUPS = ("vision_backbone", "projector", "llm_backbone", "x_embedder", "t_embedder", "final_layer",
          "proprio_embedder")


def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Flat state dict {group.key: tensor} from a reference .pt, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise ValueError(f"{path}: refused, the pickle holds more than tensors (weights_only load failed: {reason})") \
            from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: expected a dict with a 'model' entry of parameter groups")
    unknown = set(payload["model"]) - set(GROUPS)
    if unknown:
        raise ValueError(f"{path}: unknown parameter groups {sorted(unknown)}; expected {list(GROUPS)}")
    state = {}
    for group, tensors in payload["model"].items():
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{path}: {group}.{key} is not a tensor")
            state[f"{group}.{key}"] = value
    return state


def import_reference_checkpoint(pt_path: str | Path, config: ModelConfig, statistics_path: str | Path,
                                output_dir: str | Path) -> Path:
    """Build the model described by `config` (local LLM config/tokenizer directories), load the reference
    weights strictly and write a checkpoint directory."""
    state = read_reference_state(pt_path)
    statistics = load_dataset_statistics(statistics_path)
    if config.unnorm_key is not None and config.unnorm_key not in statistics:
        raise ValueError(f"unnorm_key {config.unnorm_key!r} not in {statistics_path}: {sorted(statistics)}")
    model = build_model(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{pt_path}: keys do not match the model: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{pt_path}: shape mismatch: {'; '.join(wrong[:3])}")
    model.load_state_dict(state, strict=True)  # copies (and casts) into the fp32 parameters
    return save_checkpoint(model, output_dir, statistics)

