"""Checkpoint directory: config.json (ModelConfig, the LLM's HF config inline so no base directory is needed),
model.safetensors, dataset_statistics.json (reference schema), and the tokenizer files."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from hybridvla_core.actions import DatasetStatistics, load_dataset_statistics, save_dataset_statistics
from hybridvla_core.errors import UserError
from hybridvla_core.model.config import LLMConfig, ModelConfig
from hybridvla_core.model.hybridvla import HybridVLA
from hybridvla_core.model.text_tokenizer import load_tokenizer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATISTICS_FILE = "dataset_statistics.json"


def build_model(config: ModelConfig, tokenizer=None, device: str | torch.device = "cpu") -> HybridVLA:
    """Build with random weights (pretrained LLM weights when config.llm.pretrained) directly on `device`."""
    tokenizer = load_tokenizer(config.llm.tokenizer_path) if tokenizer is None else tokenizer
    with torch.device(device):
        return HybridVLA(config, tokenizer)


def _self_contained_config(model: HybridVLA) -> dict:
    data = model.config.to_dict()
    hf_config = json.loads(model.llm.config.to_json_string(use_diff=False))
    data["llm"] = {**data["llm"], "path": None, "pretrained": False, "tokenizer_path": None, "hf_config": hf_config}
    return data


def save_checkpoint(model: HybridVLA, directory: str | Path, statistics: dict[str, DatasetStatistics]) -> Path:
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(_self_contained_config(model), indent=2))
    save_model(model, str(directory / WEIGHTS_FILE))  # handles tied embeddings
    save_dataset_statistics(directory / STATISTICS_FILE, statistics)
    model.tokenizer.save_pretrained(str(directory))
    return directory


class CheckpointError(UserError):
    """A checkpoint directory that cannot be used as it is: one line naming the file and what is wrong."""


def load_config(directory: str | Path) -> ModelConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a checkpoint directory (no {CONFIG_FILE})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error}): a half-copied checkpoint? copy it again") from None
    if isinstance(data, dict):
        # Checkpoints written before token_layout existed were all trained on the compact layout.
        data.setdefault("token_layout", "compact")
    try:
        return ModelConfig.from_dict(data)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}") from None


def _check_weights_file(path: Path, model: HybridVLA) -> None:
    """Refuse, in one line, a weights file that is unreadable or does not fit the model (names, shapes), before
    anything is loaded."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}): truncated or corrupted? copy the "
                              f"checkpoint again") from None
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(extra)} the model does not have (e.g. {extra[0]})"] if extra else [])
        raise CheckpointError(f"{path}: weights do not match {CONFIG_FILE}: {'; '.join(parts)}")
    wrong = [key for key in expected if expected[key] != shapes[key]]
    if wrong:
        raise CheckpointError(f"{path}: {wrong[0]} is {shapes[wrong[0]]} in the file but {expected[wrong[0]]} in the "
                              f"model {CONFIG_FILE} describes" + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[HybridVLA, dict[str, DatasetStatistics]]:
    """Rebuild the model from config.json and load its weights exactly (strict). A directory that cannot be used
    (unreadable or mismatched weights, non-finite values, bad config.json) raises CheckpointError (one line)."""
    from safetensors.torch import load_model

    directory = Path(directory)
    config = load_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_FILE}")
    tokenizer = load_tokenizer(str(directory)) if (directory / "tokenizer_config.json").is_file() else None
    config.llm = LLMConfig(**{**config.llm.__dict__, "gradient_checkpointing": False})
    model = build_model(config, tokenizer, device)
    _check_weights_file(weights, model)
    load_model(model, str(weights), strict=True, device=str(device))
    bad = next((name for name, value in model.state_dict().items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if bad is not None:
        raise CheckpointError(f"{weights}: non-finite weights (NaN or Inf) in {bad}: refused (a diverged training run?)")
    statistics = load_dataset_statistics(directory / STATISTICS_FILE)
    if dtype is not None:
        model.to(dtype)
    return model.eval(), statistics
