"""The model's config schema: plain dataclasses that round-trip through JSON (config.json of a checkpoint)
and YAML (the `model:` section of a training config)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from hybridvla_core.actions import ActionConvention, num_arms
from hybridvla_core.model.ensemble import GRIPPER_RULES
from hybridvla_core.model.text_tokenizer import TOKEN_LAYOUTS

LLM_FAMILIES = ("llama", "phi", "qwen2")
VISION_KINDS = ("dinov2_siglip", "clip", "small", "keypoints")
RESIZE_FILTERS = ("bilinear", "bicubic")  # antialiased, no crop; the reference's timm transform is bicubic
AR_CONDITIONINGS = ("denoised", "noisy")


def _from_mapping(cls, data: Mapping, where: str):
    """Build dataclass cls from a mapping, naming unknown fields in the error."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(names)}")
    for f in dataclasses.fields(cls):  # YAML gives a string for a mistyped number: name it, not a TypeError later
        if f.name in data and not _of_type(data[f.name], f.type):
            raise ValueError(f"{where}: {f.name} must be {_TYPE_WORDS[f.type]}, got {data[f.name]!r}")
    return cls(**dict(data))


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "str | None": "a string or null", "int | None": "an integer or null"}


def _of_type(value, annotation: str) -> bool:
    """Whether value fits a simple field annotation (int, float, bool, str, optionally | None); others pass."""
    if annotation not in _TYPE_WORDS:
        return True
    if value is None:
        return annotation.endswith("| None")
    base = annotation.removesuffix(" | None")
    if base in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, {"int": int, "float": (int, float), "bool": bool, "str": str}[base])


def check_crop(crop, where: str = "crop") -> tuple[float, float, float, float] | None:
    """A view's region of interest: None (the whole frame) or [top, bottom, left, right], fractions of the frame's
    height (rows, from the top) and width (columns, from the left) with 0 <= top < bottom <= 1 and
    0 <= left < right <= 1. Returns it as a tuple of floats; raises ValueError naming `where` otherwise."""
    if crop is None:
        return None
    try:
        top, bottom, left, right = (float(v) for v in crop)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be [top, bottom, left, right] fractions of the frame, got {crop!r}") from None
    if not (0.0 <= top < bottom <= 1.0 and 0.0 <= left < right <= 1.0):
        raise ValueError(f"{where} must hold 0 <= top < bottom <= 1 and 0 <= left < right <= 1, got {list(crop)}")
    return top, bottom, left, right


@dataclass
class LLMConfig:
    """family: llama | phi | qwen2. Either `path` (a local directory with config.json, and weights when
    pretrained=True) or `hf_config` (an inline dict of the HF config, random weights)."""

    family: str = "llama"
    path: str | None = None
    hf_config: dict | None = None
    pretrained: bool = False  # load weights from `path` with from_pretrained
    tokenizer_path: str | None = None  # local HF tokenizer; None = the built-in tiny byte tokenizer
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.family not in LLM_FAMILIES:
            raise ValueError(f"llm.family must be one of {LLM_FAMILIES}, got {self.family!r}")
        if (self.path is None) == (self.hf_config is None):
            raise ValueError("llm: give exactly one of 'path' (local directory) or 'hf_config' (inline dict)")
        if self.pretrained and self.path is None:
            raise ValueError("llm.pretrained needs llm.path")


def image_hw(image_size, where: str = "image size") -> tuple[int, int]:
    """A model input size -> (height, width) in pixels: S (an S x S square) or [height, width]. Raises
    ValueError naming `where` for anything else."""
    sizes = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size, image_size]
    if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < 1
                              for v in sizes):
        raise ValueError(f"{where} must be S or [height, width], positive whole pixels, got {image_size!r}")
    return int(sizes[0]), int(sizes[1])


@dataclass
class VisionConfig:
    """kind: dinov2_siglip (DINOv2-reg4 + SigLIP fused on channels) | clip | small (a little patch ViT) |
    keypoints (a little conv net read out as spatial-softmax keypoints, one token per keypoint).
    `hf_configs` overrides the towers' HF config fields (e.g. a tiny DINOv2 for tests), keyed by
    "dinov2" / "siglip" / "clip"; `small` sets the small tower (width, depth, heads, patch); `keypoints` the
    keypoint tower (channels, keypoints: a perfect square, width: feature size per token)."""

    kind: str = "small"
    # pixels: S (S x S) or [height, width] (keypoints only: a wide table crop keeps its aspect); frames are
    # resized to it without crop
    image_size: int | list = 224
    resize: str = "bilinear"  # RESIZE_FILTERS: how frames are resized to image_size
    hf_configs: dict = field(default_factory=dict)
    small: dict = field(default_factory=lambda: {"width": 64, "depth": 2, "heads": 4, "patch": 8})
    keypoints: dict = field(default_factory=lambda: {"channels": 32, "keypoints": 16, "width": 64})

    def __post_init__(self) -> None:
        if self.kind not in VISION_KINDS:
            raise ValueError(f"vision.kind must be one of {VISION_KINDS}, got {self.kind!r}")
        if self.resize not in RESIZE_FILTERS:
            raise ValueError(f"vision.resize must be one of {RESIZE_FILTERS}, got {self.resize!r}")
        height, width = image_hw(self.image_size, "vision.image_size")
        self.image_size = height if height == width else [height, width]
        if height != width and self.kind != "keypoints":  # the patch towers have a square grid of positions
            raise ValueError(f"vision.image_size [height, width] needs vision.kind keypoints; {self.kind!r} takes "
                             f"a square S, got {self.image_size}")


@dataclass
class ViewConfig:
    """A camera view; `tokens` = token budget (a perfect square smaller than the tower's patch count pools
    the patch grid, DiVLA's view-adaptive tokenisation); None = all patches. `crop` = region of interest
    [top, bottom, left, right] as fractions of the frame's height and width, cut out before the resize
    (vision.crop_frame), so small objects keep more pixels; None = the whole frame."""

    name: str
    tokens: int | None = None
    crop: list | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a view needs a name")
        crop = check_crop(self.crop, f"view {self.name!r}: crop")
        self.crop = None if crop is None else list(crop)
        if self.tokens is not None:
            side = int(round(self.tokens ** 0.5))
            if self.tokens <= 0 or side * side != self.tokens:
                raise ValueError(f"view {self.name!r}: tokens must be a positive perfect square, got {self.tokens}")


PREDICTION_TYPES = ("epsilon", "sample")  # what the denoiser outputs: the noise, or the clean action x_0
TIMESTEP_SPACINGS = ("leading", "trailing")  # which timesteps DDIM visits (model/diffusion.py)


@dataclass
class DiffusionConfig:
    train_steps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"  # or "sample" (the denoiser outputs x_0; see model/diffusion.py)
    ddim_steps: int = 4
    timestep_spacing: str = "leading"  # the reference's; "trailing" never asks the denoiser at t = 0
    repeated_samples: int = 4  # k noisy copies of every training sample

    def __post_init__(self) -> None:
        if self.beta_schedule != "squaredcos_cap_v2":
            raise ValueError(f"diffusion.beta_schedule: only squaredcos_cap_v2 is supported, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"diffusion.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"diffusion.timestep_spacing must be one of {TIMESTEP_SPACINGS}, "
                             f"got {self.timestep_spacing!r}")
        if not 1 <= self.ddim_steps <= self.train_steps:
            raise ValueError(f"diffusion.ddim_steps must be in 1..{self.train_steps}, got {self.ddim_steps}")
        if self.repeated_samples < 1:
            raise ValueError("diffusion.repeated_samples must be >= 1")


@dataclass
class ModelConfig:
    llm: LLMConfig
    vision: VisionConfig = field(default_factory=VisionConfig)
    views: list = field(default_factory=lambda: [ViewConfig("front")])
    action_dim: int = 7
    chunk: int = 1  # action chunk length T (>= 1): noisy-action tokens between state/t and <EOD>
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    theta: float = 0.96  # ensemble threshold on the mean non-gripper token confidence
    # The gripper of an averaged step (ensemble.GRIPPER_RULES): "average" (the reference) or "autoregressive".
    ensemble_gripper: str = "average"
    # How AR tokens are conditioned, in training and inference alike:
    #   "denoised": on [t=0, the denoised action] (paper; one prefill per step at inference),
    #   "noisy": on [random t, noisy action] as the reference trains (reference schedule at inference).
    ar_conditioning: str = "denoised"
    # The ids around <BOD>/<EOD> (text_tokenizer.TOKEN_LAYOUTS): "reference" (the reference's per-family
    # separators, what its released weights were trained on) or "compact" (none; checkpoints trained before).
    token_layout: str = "reference"
    # The reference trainer's need_to_sub: action-bin ids = base vocabulary - need_to_sub - bin (released
    # scripts pass 0; its train.py default is 7). Training and inference must agree.
    need_to_sub: int = 0
    convention: ActionConvention = field(default_factory=ActionConvention)
    unnorm_key: str | None = None
    # Size of the auxiliary head that predicts privileged simulator state from the projected vision tokens
    # (attention pooling; training only; issue 30: [block_dx, block_dy, block_dz, bowl_dx, bowl_dy, bowl_dz]
    # relative to the gripper, metres). 0 = no head: a config.json without the field (every checkpoint before it)
    # loads as 0.
    privileged_dim: int = 0
    # Filled in when the model is built from its tokenizer; saved so a checkpoint is self-describing.
    tokens: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        num_arms(self.action_dim)
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")
        if not 0.0 <= self.theta <= 1.0:
            raise ValueError(f"theta must be in [0, 1], got {self.theta}")
        if self.ensemble_gripper not in GRIPPER_RULES:
            raise ValueError(f"ensemble_gripper must be one of {GRIPPER_RULES}, got {self.ensemble_gripper!r}")
        if self.ar_conditioning not in AR_CONDITIONINGS:
            raise ValueError(f"ar_conditioning must be one of {AR_CONDITIONINGS}, got {self.ar_conditioning!r}")
        if self.token_layout not in TOKEN_LAYOUTS:
            raise ValueError(f"token_layout must be one of {TOKEN_LAYOUTS}, got {self.token_layout!r}")
        if isinstance(self.need_to_sub, bool) or not isinstance(self.need_to_sub, int) or self.need_to_sub < 0:
            raise ValueError(f"need_to_sub must be a whole number >= 0, got {self.need_to_sub!r}")
        if isinstance(self.privileged_dim, bool) or not isinstance(self.privileged_dim, int) \
                or self.privileged_dim < 0:
            raise ValueError(f"privileged_dim must be a whole number >= 0 (0 = no privileged head), "
                             f"got {self.privileged_dim!r}")
        if not self.views:
            raise ValueError("views: at least one camera view is needed")
        names = [v.name for v in self.views]
        if len(set(names)) != len(names):
            raise ValueError(f"views: duplicate names in {names}")
        if self.vision.kind == "keypoints":
            count = self.vision.keypoints.get("keypoints")
            pooled = [v.name for v in self.views if v.tokens is not None and v.tokens != count]
            if pooled:
                raise ValueError(f"views {pooled}: a keypoints tower gives exactly its {count} keypoint tokens per "
                                 f"view (keypoints cannot be pooled): leave tokens out or set it to {count}")

    @property
    def view_names(self) -> list[str]:
        return [v.name for v in self.views]

    @property
    def view_crops(self) -> list:
        return [v.crop for v in self.views]

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["convention"] = self.convention.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> "ModelConfig":
        data = dict(data)
        if "llm" not in data:
            raise ValueError("model config: 'llm' is required")
        data["llm"] = _from_mapping(LLMConfig, data["llm"], "llm")
        if "vision" in data:
            data["vision"] = _from_mapping(VisionConfig, data["vision"], "vision")
        if "views" in data:
            data["views"] = [
                ViewConfig(v) if isinstance(v, str) else _from_mapping(ViewConfig, v, "views[]") for v in data["views"]
            ]
        if "diffusion" in data:
            data["diffusion"] = _from_mapping(DiffusionConfig, data["diffusion"], "diffusion")
        if "convention" in data:
            data["convention"] = ActionConvention.from_dict(data["convention"])
        return _from_mapping(cls, data, "model config")
