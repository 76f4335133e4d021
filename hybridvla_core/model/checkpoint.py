"""Checkpoint directory: config.json (ModelConfig, the LLM's HF config inline so no base directory is needed),
model.safetensors, dataset_statistics.json (reference schema), and the tokenizer files."""
from __future__ import annotations

import json
from contextlib import contextmanager
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


def save_checkpoint(model: HybridVLA, directory: str | Path, statistics: dict[str, DatasetStatistics],
                    weights: dict[str, torch.Tensor] | None = None) -> Path:
    """`weights` ({state-dict key: tensor}, every key of the model's state dict, no other) are written instead of the
    model's own when given: the import writes a file's tensors, the model then exists only on the meta device."""
    from safetensors.torch import save_file, save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(_self_contained_config(model), indent=2))
    if weights is None:
        save_model(model, str(directory / WEIGHTS_FILE))  # handles tied embeddings
    else:
        expected, given = set(model.state_dict()), set(weights)
        if expected != given:
            raise ValueError(f"weights do not match the model: missing {sorted(expected - given)[:3]}, "
                             f"extra {sorted(given - expected)[:3]}")
        save_file({key: value.contiguous() for key, value in weights.items()}, str(directory / WEIGHTS_FILE))
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

    try:  # numpy: a read-only shared mapping, which Linux grants for a file of any size (see _read_tensors)
        with safe_open(str(path), framework="numpy") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable safetensors file ({error}): truncated or corrupted? copy the "
                              f"checkpoint again") from None
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    tied = _tied_names(model)  # a tied weight is stored once, under one of its names (safetensors' save_model)
    missing = sorted(key for key in expected if key not in shapes and not tied.get(key, set()) & set(shapes))
    extra = sorted(set(shapes) - set(expected))
    if missing or extra:
        parts = ([f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []) + \
                ([f"{len(extra)} the model does not have (e.g. {extra[0]})"] if extra else [])
        raise CheckpointError(f"{path}: weights do not match {CONFIG_FILE}: {'; '.join(parts)}")
    wrong = [key for key in expected if key in shapes and expected[key] != shapes[key]]
    if wrong:
        raise CheckpointError(f"{path}: {wrong[0]} is {shapes[wrong[0]]} in the file but {expected[wrong[0]]} in the "
                              f"model {CONFIG_FILE} describes" + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""))


def _tied_names(model: torch.nn.Module) -> dict[str, set[str]]:
    """name -> every name of the same parameter, for parameters held under several names (e.g. Qwen2-0.5B's
    tie_word_embeddings: the LM head is the embedding)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return {name: set(group) for group in names.values() if len(group) > 1 for name in group}


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[HybridVLA, dict[str, DatasetStatistics]]:
    """Rebuild the model from config.json and load its weights exactly (strict). A directory that cannot be used
    (unreadable or mismatched weights, non-finite values, bad config.json) raises CheckpointError (one line)."""
    directory = Path(directory)
    config = load_config(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory}: no {WEIGHTS_FILE}")
    tokenizer = load_tokenizer(str(directory)) if (directory / "tokenizer_config.json").is_file() else None
    config.llm = LLMConfig(**{**config.llm.__dict__, "gradient_checkpointing": False})
    with _parameters_on_meta():
        model = build_model(config, tokenizer, device)
    _check_weights_file(weights, model)
    _load_weights(model, weights, torch.device(device), dtype)
    bad = next((name for name, value in model.state_dict().items()
                if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if bad is not None:
        raise CheckpointError(f"{weights}: non-finite weights (NaN or Inf) in {bad}: refused (a diverged training run?)")
    statistics = load_dataset_statistics(directory / STATISTICS_FILE)
    return model.eval(), statistics


@contextmanager
def _parameters_on_meta():
    """Modules built inside keep their parameters on the meta device (no memory, no random init) and their buffers
    where they are built: non-persistent buffers (rotary frequencies, pixel mean/std) are computed, not loaded.
    It swaps a method of torch.nn.Module for its duration: nothing else may build modules meanwhile."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":  # already there: a tied weight being shared
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def _load_weights(model: HybridVLA, weights: Path, device: torch.device, dtype: torch.dtype | None) -> None:
    """Fill a model whose parameters are on meta from `weights` one tensor at a time, each cast to `dtype` on
    `device` as it is copied: memory peaks at the model in `dtype` plus one tensor (a 7B in bf16: 14 GiB, where
    building it in fp32 first took 28). The values are those of loading in fp32 and casting afterwards."""
    made: dict[int, torch.nn.Parameter] = {}  # one new parameter per old one: a tied weight stays tied
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is None:
                continue
            if id(param) not in made:
                cast = dtype if dtype is not None and param.is_floating_point() else param.dtype
                made[id(param)] = torch.nn.Parameter(torch.empty(param.shape, dtype=cast, device=device),
                                                     requires_grad=param.requires_grad)
            module._parameters[name] = made[id(param)]
    model.to(device=device, dtype=dtype)  # the buffers, as a cast after loading would
    targets = dict(model.named_parameters(remove_duplicate=False)) | dict(model.named_buffers())
    with torch.no_grad():
        for key, tensor in _read_tensors(weights):  # every key of model.state_dict(), no other (_check_weights_file)
            targets[key].copy_(tensor)


# safetensors dtype names (the format's spec) -> torch dtypes.
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
                       "BOOL": torch.bool}


def _read_tensors(path: Path):
    """(name, tensor) of a safetensors file one at a time, read with plain reads. safetensors' own torch reader maps
    the whole file copy-on-write, which Linux (heuristic overcommit) refuses for a file larger than RAM + swap: a 7B
    checkpoint in fp32 (28 GiB) could not be opened on a 24 GiB machine even to load it in bf16 (14 GiB)."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
        header.pop("__metadata__", None)
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, end = entry["data_offsets"]
            handle.seek(8 + length + begin)
            data = torch.empty(end - begin, dtype=torch.uint8)
            if handle.readinto(data.numpy()) != end - begin:
                raise CheckpointError(f"{path}: ends inside {name}: truncated? copy the checkpoint again")
            yield name, data.view(_SAFETENSORS_DTYPES[entry["dtype"]]).reshape(entry["shape"])
