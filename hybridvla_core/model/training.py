"""The training loop: hybrid loss (diffusion MSE + CE on the action tokens and EOS), AdamW, gradient
clipping, bf16 autocast on CUDA, optional frozen vision, periodic checkpoints, resume, and DDP under torchrun
(NCCL on GPUs, gloo on CPU).

Training config (YAML), every section a mapping:
    model:    ModelConfig fields (llm, vision, views, chunk, diffusion, theta, ar_conditioning, privileged_dim);
              action_dim, convention and unnorm_key are taken from the training set
    init_from: optional checkpoint directory to fine-tune (its model config replaces `model`, except a given
              `model.diffusion`, which replaces the checkpoint's: e.g. switch prediction_type, the denoiser
              head learns the new target; the action convention and unnorm_key become the training set's,
              the action heads learn them; a given `model.theta` or `model.ensemble_gripper`, inference
              settings of the ensemble, replaces the checkpoint's; a given `model.vision.image_size` too, for the
              keypoints tower only, whose weights do not depend on the input size; a given
              `model.privileged_dim` adds a freshly initialised privileged head to a checkpoint without one)
    data:     {path: training-set directory (hybridvla_core.model.trainset)}
    train:    TrainConfig fields below
Privileged labels (issue 30): a model with privileged_dim > 0 also learns its privileged head from the batch's
"privileged" (B, privileged_dim) labels, loss += train.privileged_loss_weight * MSE over the labelled rows (a row
with NaN, e.g. a real teleop recording, is masked out). A training set without any label trains the head on
nothing: one warning, not an error. train.privileged_loss_weight set for a model without the head is an error.
Checkpoints: <output_dir>/checkpoints/step-XXXXXXXX/ (a checkpoint directory + trainer_state.pt) and
<output_dir>/final/ at the end (not when stopped early by train.stop_after), each written whole into a hidden
temporary directory and renamed into place. A run restarted with the same output_dir resumes from the newest step.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from hybridvla_core.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from hybridvla_core.model.config import DiffusionConfig, ModelConfig, VisionConfig, _from_mapping
from hybridvla_core.model.diffusion import DiffusionSchedule
from hybridvla_core.model.ensemble import GRIPPER_RULES
from hybridvla_core.model.text_tokenizer import encode_prompt
from hybridvla_core.model.trainset import TrainsetDataset, read_index
from hybridvla_core.actions import ActionConvention
from hybridvla_core.errors import UserError
from hybridvla_core.files import write_whole

STEP_DIR = re.compile(r"^step-(\d{8})$")
TRAINER_STATE = "trainer_state.pt"
LR_SCHEDULES = ("constant", "cosine")
SECTIONS = ("model", "init_from", "data", "train")  # the config's top-level keys


@dataclass
class TrainConfig:
    output_dir: str = "runs/hybridvla"
    max_steps: int = 1000
    batch_size: int = 8  # per process
    learning_rate: float = 2e-5  # reference: constant
    # "constant" (reference) or "cosine": from learning_rate down to min_learning_rate at max_steps, so the
    # last checkpoints of a run stop swinging.
    lr_schedule: str = "constant"
    min_learning_rate: float = 0.0
    # loss = diffusion_loss_weight * diffusion MSE + CE (the paper: 1). The CE dominates the shared backbone's
    # gradients (~0.7 vs an MSE of ~0.02 late in training); a larger weight makes the backbone also carry what
    # the denoiser needs.
    diffusion_loss_weight: float = 1.0
    # loss += privileged_loss_weight * the privileged head's masked MSE (model.privileged_dim > 0 only; the labels
    # are metres, so its scale differs from the normalised actions').
    privileged_loss_weight: float = 1.0
    # Stop after this step (saved, trainer state included) as if interrupted there: the learning-rate schedule
    # still runs to max_steps and the same config resumes. None = run to max_steps.
    stop_after: int | None = None
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    save_every: int = 500  # steps; 0 = only the final checkpoint
    seed: int = 0
    num_workers: int = 0
    bf16: bool = True  # autocast on CUDA; CPU trains in fp32
    freeze_vision: bool = False  # the reference freezes the vision encoder when fine-tuning
    progress: bool = True
    # Gaussian noise (std, in normalised units) added to these robot-state dims of every training sample.
    # The policy then cannot read where to go from its own pose (e.g. continue the straight line it is on)
    # and has to take it from the images; inference never adds noise. state_noise > 0 needs dims.
    state_noise: float = 0.0
    state_noise_dims: list = None

    def __post_init__(self) -> None:
        # Types first: YAML gives a string for a mistyped number ("many", "1e4"), which the range checks would
        # meet as a TypeError.
        for name in ("max_steps", "batch_size", "save_every", "seed", "num_workers", "stop_after"):
            value = getattr(self, name)
            if (value is not None or name != "stop_after") and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserError(f"train.{name} must be an integer, got {value!r}")
        for name in ("bf16", "freeze_vision", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"train.{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("output_dir", "lr_schedule"):
            if not isinstance(getattr(self, name), str):
                raise UserError(f"train.{name} must be a string, got {getattr(self, name)!r}")
        dims = self.state_noise_dims
        if dims is not None and (not isinstance(dims, (list, tuple))
                                 or any(isinstance(d, bool) or not isinstance(d, int) for d in dims)):
            raise UserError(f"train.state_noise_dims must be a list of state dims (integers, e.g. [0, 1, 5]), "
                            f"got {dims!r}")
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("train.max_steps and train.batch_size must be >= 1")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("learning_rate", "min_learning_rate", "weight_decay", "grad_clip", "diffusion_loss_weight",
                     "privileged_loss_weight", "state_noise"):
            value = getattr(self, name)  # NaN compares false everywhere: name it before the range checks do
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UserError(f"train.{name} must be a finite number, got {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise ValueError(f"train.min_learning_rate must be in [0, learning_rate], got {self.min_learning_rate}")
        if self.stop_after is not None and not 1 <= self.stop_after <= self.max_steps:
            raise ValueError(f"train.stop_after must be in 1..max_steps ({self.max_steps}), got {self.stop_after}")
        if self.diffusion_loss_weight <= 0:
            raise ValueError(f"train.diffusion_loss_weight must be > 0, got {self.diffusion_loss_weight}")
        if self.privileged_loss_weight <= 0:
            raise ValueError(f"train.privileged_loss_weight must be > 0, got {self.privileged_loss_weight}")
        if self.state_noise < 0:
            raise ValueError(f"train.state_noise must be >= 0, got {self.state_noise}")
        self.state_noise_dims = list(self.state_noise_dims or [])
        if self.state_noise > 0 and not self.state_noise_dims:  # else the noise would silently never be added
            raise ValueError(f"train.state_noise {self.state_noise} needs train.state_noise_dims, the robot-state "
                             "dims that get it (e.g. [0, 1, 5]: x, y, yaw)")


def learning_rate_at(settings: TrainConfig, step: int) -> float:
    """The learning rate for optimizer step `step` (0-based): a function of the step alone, so resuming
    continues the same curve."""
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    progress = min(step / settings.max_steps, 1.0)
    low, high = settings.min_learning_rate, settings.learning_rate
    return low + (high - low) * 0.5 * (1 + math.cos(math.pi * progress))


def _collate(samples: list[dict], tokenizer, layout, tokens: dict) -> dict:
    batch = {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "prompts": [encode_prompt(tokenizer, s["instruction"], layout, tokens) for s in samples],
        "states": torch.stack([s["state"] for s in samples]),
        "actions": torch.stack([s["action"] for s in samples]),
    }
    labels = [s.get("privileged") for s in samples]
    if any(label is not None for label in labels):  # a sample without one gets a NaN row: no label
        width = next(torch.as_tensor(label).numel() for label in labels if label is not None)
        batch["privileged"] = torch.stack([
            torch.full((width,), float("nan")) if label is None
            else torch.as_tensor(label, dtype=torch.float32).reshape(width) for label in labels])
    return batch


def _privileged_labels(batch: dict, size: int, width: int) -> torch.Tensor:
    """The batch's privileged labels (size, width), all NaN (no label) when the batch has none (older sets)."""
    labels = batch.get("privileged")
    if labels is None:
        return torch.full((size, width), float("nan"))
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if tuple(labels.shape) != (size, width):
        raise ValueError(f"the training set's privileged labels are {tuple(labels.shape)} per batch, the model's "
                         f"privileged head predicts ({size}, {width}) (model.privileged_dim {width})")
    return labels


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def _latest_step_dir(output_dir: Path) -> Path | None:
    directory = output_dir / "checkpoints"
    steps = sorted(p for p in directory.glob("step-*") if STEP_DIR.match(p.name) and (p / TRAINER_STATE).is_file()) \
        if directory.is_dir() else []
    return steps[-1] if steps else None


def _resized_vision(vision: VisionConfig, image_size) -> VisionConfig:
    """The checkpoint's vision config at another input size: the keypoints tower's convolutions and
    spatial softmax take any size (keypoints stay fractions of the frame); a patch tower's positions do not."""
    if vision.kind != "keypoints":
        raise ValueError(f"model.vision.image_size beside init_from needs a keypoints tower, the checkpoint has "
                         f"{vision.kind!r}")
    return dataclasses.replace(vision, image_size=image_size)


def _model_config(spec: dict, index: dict) -> ModelConfig:
    views = spec.get("views")
    if views is not None and not isinstance(views, (list, tuple)):  # a string would be read as one view per letter
        raise UserError(f"model.views must be a list of views (names or {{name: ..., crop: ...}}), "
                        f"e.g. [front, wrist], got {views!r}")
    data = dict(spec)
    data.update(action_dim=index["action_dim"], convention=index["convention"], unnorm_key=index["unnorm_key"])
    data.setdefault("views", index["views"])
    config = ModelConfig.from_dict(data)
    if config.chunk > index["chunk"]:
        raise ValueError(f"model.chunk {config.chunk} exceeds the training set's chunk {index['chunk']}")
    return config


# What a `model:` section may change beside init_from; everything else (token_layout, need_to_sub, the LLM, the
# towers, ...) is what the checkpoint's weights were trained with, so a value given for it would be ignored.
FINE_TUNE_OVERRIDES = {"diffusion", "theta", "ensemble_gripper", "vision", "privileged_dim"}


def _check_fine_tune_overrides(model: dict) -> None:
    fixed = sorted(set(model) - FINE_TUNE_OVERRIDES)
    fixed += [f"vision.{k}" for k in sorted(set(model.get("vision") or {}) - {"image_size"})]
    if fixed:
        raise ValueError(f"model: {', '.join(fixed)} cannot change beside init_from (the checkpoint's weights were "
                         f"trained with its own); only {sorted(FINE_TUNE_OVERRIDES)} and vision.image_size can")


def checked_spec(spec) -> dict:
    """The config's shape, checked before anything runs: a mapping of the known sections, each of its type. Returns
    a shallow copy in which an empty `model:` or `train:` section (None) is {}."""
    if not isinstance(spec, Mapping):
        raise UserError(f"training config must be a mapping of sections {list(SECTIONS)}, got a {type(spec).__name__}")
    unknown = [key for key in spec if key not in SECTIONS]
    if unknown:  # a misspelt section would otherwise be ignored and train with the defaults
        close = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"training config: unknown top-level key {unknown[0]!r}{hint}; known: {list(SECTIONS)}")
    spec = {**spec, **{section: {} for section in ("model", "train") if section in spec and spec[section] is None}}
    for section in ("model", "data", "train"):
        value = spec.get(section, {})
        if not isinstance(value, Mapping):
            example = f" (e.g. data: {{path: {value}}})" if section == "data" else " of key: value lines"
            raise UserError(f"training config: '{section}' must be a mapping{example}, got {value!r}")
    if "data" in spec:
        unknown = sorted(set(spec["data"]) - {"path"})
        if unknown:
            raise UserError(f"training config: unknown key(s) {unknown} in 'data'; known: ['path']")
        if not isinstance(spec["data"].get("path"), (str, os.PathLike)):
            raise UserError(f"training config: data.path must be the training-set directory, got "
                            f"{spec['data'].get('path')!r}")
    if spec.get("init_from") is not None and not isinstance(spec["init_from"], (str, os.PathLike)):
        raise UserError(f"training config: init_from must be a checkpoint directory, got {spec['init_from']!r}")
    return spec


def _check_output_dir(output_dir: Path) -> None:
    """Made and written to now, so that an unusable output_dir fails before training, not at the first save."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise UserError(f"train.output_dir {output_dir} cannot be created or written ({error.strerror or error}): "
                        "choose a writable directory (train.output_dir or --output-dir)") from None


def train(spec: dict) -> dict:
    """Run training from a parsed config; returns {"checkpoint": final directory, "history": [loss dicts]}."""
    spec = checked_spec(spec)
    for section in ("data", "train"):
        if section not in spec:
            raise ValueError(f"training config lacks the '{section}' section")
    settings = _from_mapping(TrainConfig, spec["train"], "train")
    index = read_index(spec["data"]["path"])
    rank, world, device = _distributed()
    output_dir = Path(settings.output_dir)
    _check_output_dir(output_dir)  # before the model is built or loaded (minutes for a large one)

    torch.manual_seed(settings.seed)  # identical initial weights on every rank
    resume_dir = _latest_step_dir(output_dir)
    init_dir = resume_dir or spec.get("init_from")
    if init_dir:
        model, _ = load_checkpoint(init_dir, device)
    else:
        if "model" not in spec:
            raise ValueError("training config needs 'model' (or 'init_from')")
        model = build_model(_model_config(spec["model"], index), device=device)
    if resume_dir is None and init_dir:
        _check_fine_tune_overrides(spec.get("model") or {})
        # Fine-tuning onto another set: the weights carry over, the action semantics are the set's.
        model.config.convention = ActionConvention.from_dict(index["convention"])
        model.config.unnorm_key = index["unnorm_key"]
        diffusion = spec.get("model", {}).get("diffusion")
        if diffusion:
            _replace_diffusion(model, diffusion)
        # Inference settings, chosen on calibration seeds after training, may be set beside init_from.
        theta = spec.get("model", {}).get("theta")
        if theta is not None:
            model.config.theta = _checked_theta(theta)
        gripper = spec.get("model", {}).get("ensemble_gripper")
        if gripper is not None:
            if gripper not in GRIPPER_RULES:
                raise ValueError(f"model.ensemble_gripper must be one of {GRIPPER_RULES}, got {gripper!r}")
            model.config.ensemble_gripper = gripper
        image_size = (spec.get("model", {}).get("vision") or {}).get("image_size")
        if image_size is not None:
            model.config.vision = _resized_vision(model.config.vision, image_size)
        privileged_dim = spec.get("model", {}).get("privileged_dim")
        if privileged_dim is not None:
            _add_privileged_head(model, privileged_dim)
    config = model.config
    if "privileged_loss_weight" in spec["train"] and config.privileged_dim == 0:
        raise ValueError("train.privileged_loss_weight is set but the model has no privileged head "
                         "(model.privileged_dim is 0): set model.privileged_dim (e.g. 6) or drop the weight")
    bad_dims = [d for d in settings.state_noise_dims if not 0 <= d < config.action_dim]
    if bad_dims:
        raise ValueError(f"train.state_noise_dims {bad_dims} outside the state's {config.action_dim} dims")
    model.vision_backbone.requires_grad_(not settings.freeze_vision)
    if config.action_dim != index["action_dim"] or ActionConvention.from_dict(index["convention"]) != config.convention:
        raise ValueError("the training set's action_dim/convention differ from the model's")

    dataset = TrainsetDataset(spec["data"]["path"], config.vision.image_size, config.view_names,
                              crops={v.name: v.crop for v in config.views}, resize=config.vision.resize)
    statistics = {index["unnorm_key"]: dataset.statistics}
    sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=True, seed=settings.seed) \
        if world > 1 else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=settings.batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=len(dataset) >= settings.batch_size * world,
        num_workers=settings.num_workers,
        collate_fn=partial(_collate, tokenizer=model.tokenizer, layout=model.layout, tokens=model.config.tokens),
        generator=torch.Generator().manual_seed(settings.seed),
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    step = 0
    if resume_dir is not None:
        state = torch.load(resume_dir / TRAINER_STATE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
    torch.manual_seed(settings.seed + 1000 * rank + step)  # different diffusion noise per rank and resume
    wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if world > 1 else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=settings.bf16 and device.type == "cuda")

    from tqdm import tqdm

    history = []
    privileged = config.privileged_dim > 0
    labelled_rows = 0  # privileged labels seen (a model with the head)
    warned_unlabelled = False
    bar = tqdm(total=settings.max_steps, initial=step, disable=rank != 0 or not settings.progress, desc="train")
    model.train()
    epoch = step // max(len(loader), 1)
    end = settings.stop_after or settings.max_steps
    while step < end:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            states = batch["states"]
            if settings.state_noise and settings.state_noise_dims:
                states = states.clone()
                dims = settings.state_noise_dims
                states[:, dims] += settings.state_noise * torch.randn(len(states), len(dims))
            extra = {}
            if privileged:  # always passed, all-NaN when unlabelled: the head stays in the graph (DDP)
                labels = _privileged_labels(batch, len(states), config.privileged_dim)
                labelled_rows += int(torch.isfinite(labels).all(dim=1).sum())
                extra["privileged"] = labels.to(device)
            with autocast:
                out = wrapped(batch["pixels"].to(device), batch["prompts"], states.to(device),
                              batch["actions"][:, :config.chunk].to(device), **extra)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(settings, step)
            optimizer.zero_grad(set_to_none=True)
            loss = settings.diffusion_loss_weight * out["diffusion_loss"] + out["ar_loss"]  # what is optimised
            if privileged:
                loss = loss + settings.privileged_loss_weight * out["privileged_loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
            optimizer.step()
            step += 1
            parts = ("diffusion_loss", "ar_loss") + (("privileged_loss",) if privileged else ())
            record = {"loss": float(loss.detach()), **{k: float(out[k].detach()) for k in parts}}
            history.append(record)
            bar.update(1)
            shown = {"priv": f"{record['privileged_loss']:.4f}"} if privileged else {}
            bar.set_postfix(dif=f"{record['diffusion_loss']:.4f}", ce=f"{record['ar_loss']:.4f}", **shown)
            if rank == 0 and settings.save_every and step % settings.save_every == 0 and step < end:
                _save_step(model, optimizer, statistics, output_dir / "checkpoints" / f"step-{step:08d}", step)
            if step >= end:
                break
        epoch += 1
        if privileged and not labelled_rows and not warned_unlabelled and rank == 0:
            warned_unlabelled = True  # a whole epoch (or the whole run) without one label
            warnings.warn(f"hybridvla train: the training set has no privileged labels (model.privileged_dim "
                          f"{config.privileged_dim}): the privileged head is not trained, privileged_loss stays 0",
                          stacklevel=2)
    bar.close()
    last = output_dir / "checkpoints" / f"step-{step:08d}"
    final = output_dir / "final" if step >= settings.max_steps else last  # stopped early: no final yet
    if rank == 0:
        _save_step(model, optimizer, statistics, last, step)
        if final != last:
            write_whole(final, lambda tmp: save_checkpoint(model, tmp, statistics), directory=True)
    if world > 1:
        dist.barrier()
    return {"checkpoint": final, "history": history, "model": model}


def _checked_theta(theta) -> float:
    if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not 0.0 <= theta <= 1.0:
        raise ValueError(f"model.theta must be a number in [0, 1], got {theta!r}")
    return float(theta)


def _replace_diffusion(model, diffusion: dict) -> None:
    """Fine-tuning: a new diffusion section (e.g. another prediction_type) for the loaded model."""
    merged = {**dataclasses.asdict(model.config.diffusion), **diffusion}
    model.config.diffusion = _from_mapping(DiffusionConfig, merged, "model.diffusion")
    model.schedule = DiffusionSchedule.from_config(model.config.diffusion)


def _add_privileged_head(model, privileged_dim) -> None:
    """Fine-tuning: model.privileged_dim beside init_from adds a fresh privileged head to a checkpoint without
    one; the checkpoint's own value is accepted, any other change refused."""
    from hybridvla_core.model.hybridvla import PrivilegedHead

    current = model.config.privileged_dim
    if privileged_dim == current:
        return
    if current != 0:
        raise ValueError(f"model.privileged_dim {privileged_dim!r} beside init_from: the checkpoint's privileged "
                         f"head predicts {current} values and cannot change")
    model.config = dataclasses.replace(model.config, privileged_dim=privileged_dim)  # validates the value
    model.privileged_head = PrivilegedHead(model.llm.config.hidden_size, privileged_dim).to(model.device)


def _save_step(model, optimizer, statistics, directory: Path, step: int) -> None:
    def write(tmp: Path) -> None:
        save_checkpoint(model, tmp, statistics)
        torch.save({"optimizer": optimizer.state_dict(), "step": step}, tmp / TRAINER_STATE)
    write_whole(directory, write, directory=True)  # a run killed mid-save leaves no step that looks complete
