"""Vision towers: every tower maps images in [0, 1] (N, 3, S, S) to patch features (N, grid*grid, feature_dim).

dinov2_siglip: DINOv2 ViT-L/14 with 4 registers + SigLIP so400m/14, each taking the second-to-last layer's
patch tokens, concatenated on channels (1024 + 1152 = 2176); clip: CLIP ViT-L/14, second-to-last layer;
small: a little patch ViT for tests; keypoints: a little conv net read out as spatial-softmax keypoints (the
simulated lab's demo policy). Shapes default to the reference's; `hf_configs`
overrides fields (tiny towers in tests).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hybridvla_core.model.config import VisionConfig, image_hw

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SIGLIP_MEAN, SIGLIP_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

DINOV2_L_REG4 = dict(
    hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, mlp_ratio=4, patch_size=14,
    num_register_tokens=4, layerscale_value=1e-5,
)
SIGLIP_SO400M = dict(
    hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304, patch_size=14,
    vision_use_head=False,
)
CLIP_L14 = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, patch_size=14)


class _Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)


def _second_to_last_patches(model: nn.Module, pixels: torch.Tensor, skip_prefix: int) -> torch.Tensor:
    # hidden_states[-2] is the output of the second-to-last block (before any final norm), as the reference.
    hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    return hidden[:, skip_prefix:]


class SmallViT(nn.Module):
    """Patchify conv + learned positions + pre-norm transformer blocks."""

    def __init__(self, image_size: int, width: int, depth: int, heads: int, patch: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"vision.image_size {image_size} must be a multiple of the small tower's patch {patch}")
        self.grid = image_size // patch
        self.feature_dim = width
        self.normalize = _Normalize(SIGLIP_MEAN, SIGLIP_STD)
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(self.normalize(pixels)).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class KeypointTower(nn.Module):
    """Conv features -> spatial softmax (Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies"):
    every output channel becomes the expected image position (x, y) in [-1, 1] of where it fires (x right,
    y down), embedded together with a learned code that says which keypoint it is. One token per keypoint.

    Convolutions treat every image position alike, so "where is the red block" carries over to new layouts
    once the block has pixels to be found in: in a probe (6,200 scenes, 64 px front frames) the commanded 4 cm
    block was placed to 0.6 cm rms on new scenes with the table region cropped (views[].crop), 8 cm without
    (the block ~2 px wide); the small ViT with learned position embeddings memorised its training layouts."""

    def __init__(self, image_size: int, channels: int, keypoints: int, width: int):
        super().__init__()
        side = int(round(keypoints ** 0.5))
        if keypoints <= 0 or side * side != keypoints:
            raise ValueError(f"vision.keypoints.keypoints must be a positive perfect square, got {keypoints}")
        self.grid = side  # grid * grid tokens, so that the model counts them like patches
        self.feature_dim = width
        self.normalize = _Normalize(SIGLIP_MEAN, (0.25, 0.25, 0.25))
        half = max(channels // 2, 1)
        self.features = nn.Sequential(  # stride 2 once: keypoints on a (S/2)^2 grid
            nn.Conv2d(3, half, 5, stride=2, padding=2), nn.GroupNorm(min(4, half), half), nn.GELU(),
            nn.Conv2d(half, channels, 3, padding=1), nn.GroupNorm(min(4, channels), channels), nn.GELU(),
            nn.Conv2d(channels, keypoints, 1),
        )
        self.log_temperature = nn.Parameter(torch.zeros(()))  # learnt sharpness of the softmax
        self.embed = nn.Linear(2, width)
        self.keypoint_code = nn.Parameter(torch.randn(1, keypoints, width) * 0.02)

    def points(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> keypoints (N, K, 2): (x, y) in [-1, 1], x left -> right, y top -> bottom."""
        return spatial_softmax_points(self.features(self.normalize(pixels)), self.log_temperature.exp())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed(self.points(pixels)) + self.keypoint_code


def spatial_softmax_points(maps: torch.Tensor, temperature: torch.Tensor | float = 1.0) -> torch.Tensor:
    """Feature maps (N, K, H, W) -> the softmax-weighted mean position (N, K, 2) of each map: (x, y) in [-1, 1],
    -1 at the centre of the first column/row, +1 at the last."""
    n, k, h, w = maps.shape
    weights = (maps.flatten(2) * temperature).softmax(-1).view(n, k, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
    return torch.stack([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=-1)


class DinoSigLIPTower(nn.Module):
    def __init__(self, image_size: int, overrides: dict):
        super().__init__()
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel, SiglipVisionConfig, SiglipVisionModel

        dino = Dinov2WithRegistersConfig(**{**DINOV2_L_REG4, "image_size": image_size, **overrides.get("dinov2", {})})
        siglip = SiglipVisionConfig(**{**SIGLIP_SO400M, "image_size": image_size, **overrides.get("siglip", {})})
        if image_size // dino.patch_size != image_size // siglip.patch_size:
            raise ValueError("vision: DINOv2 and SigLIP must give the same patch grid to be fused on channels")
        self.dino_featurizer = Dinov2WithRegistersModel(dino)
        self.siglip_featurizer = SiglipVisionModel(siglip)
        self.dino_normalize = _Normalize(IMAGENET_MEAN, IMAGENET_STD)
        self.siglip_normalize = _Normalize(SIGLIP_MEAN, SIGLIP_STD)
        self.dino_prefix = 1 + dino.num_register_tokens  # CLS + registers precede the patches
        self.grid = image_size // dino.patch_size
        self.feature_dim = dino.hidden_size + siglip.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dino = _second_to_last_patches(self.dino_featurizer, self.dino_normalize(pixels), self.dino_prefix)
        siglip = _second_to_last_patches(self.siglip_featurizer, self.siglip_normalize(pixels), 0)
        return torch.cat([dino, siglip], dim=-1)


class CLIPTower(nn.Module):
    def __init__(self, image_size: int, overrides: dict):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        config = CLIPVisionConfig(**{**CLIP_L14, "image_size": image_size, **overrides.get("clip", {})})
        self.featurizer = CLIPVisionModel(config)
        self.normalize = _Normalize(CLIP_MEAN, CLIP_STD)
        self.grid = image_size // config.patch_size
        self.feature_dim = config.hidden_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _second_to_last_patches(self.featurizer, self.normalize(pixels), 1)


def build_vision_tower(config: VisionConfig) -> nn.Module:
    if config.kind == "small":
        return SmallViT(config.image_size, **config.small)
    if config.kind == "keypoints":
        return KeypointTower(config.image_size, **config.keypoints)
    if config.kind == "dinov2_siglip":
        return DinoSigLIPTower(config.image_size, config.hf_configs)
    return CLIPTower(config.image_size, config.hf_configs)


def pool_to_budget(features: torch.Tensor, grid: int, tokens: int | None) -> torch.Tensor:
    """Average-pool the patch grid to `tokens` (a perfect square) tokens; None keeps every patch."""
    if tokens is None or tokens >= grid * grid:
        return features
    side = int(round(tokens ** 0.5))
    batch, _, channels = features.shape
    spatial = features.transpose(1, 2).reshape(batch, channels, grid, grid)
    return F.adaptive_avg_pool2d(spatial, side).flatten(2).transpose(1, 2)


def _resize_unit(pixels: torch.Tensor, image_size, resize: str = "bilinear") -> torch.Tensor:
    """(N, 3, H, W) float32 in [0, 1] -> (N, 3, h, w) (image_size: S or [h, w], see image_hw): the model's one
    resize (vision.resize: bilinear or bicubic, antialiased, align_corners False, no crop); frames already that
    size are returned as they are. Bicubic is clamped to [0, 1] as PIL's (the reference's timm transform) is."""
    size = image_hw(image_size)
    if tuple(pixels.shape[-2:]) == size:
        return pixels
    out = F.interpolate(pixels, size=size, mode=resize, antialias=True, align_corners=False)
    return out.clamp(0.0, 1.0) if resize == "bicubic" else out


def _crop_slices(height: int, width: int, crop) -> tuple[slice, slice]:
    top, bottom, left, right = crop
    r0, c0 = int(round(top * height)), int(round(left * width))
    return (slice(r0, max(int(round(bottom * height)), r0 + 1)), slice(c0, max(int(round(right * width)), c0 + 1)))


def crop_frame(image, crop):
    """The part of an HxWx... frame inside `crop` (see check_crop; None: the frame itself). Edges are rounded to
    the nearest pixel, so a crop picks the same pixels at build, train and run time."""
    if crop is None:
        return image
    rows, cols = _crop_slices(image.shape[0], image.shape[1], crop)
    return image[rows, cols]


def images_to_pixels(images: list, image_size, device, dtype, crops: list | None = None,
                     resize: str = "bilinear") -> torch.Tensor:
    """HxWx3 uint8 RGB arrays -> (N, 3, h, w) in [0, 1] (image_size: S or [h, w]): each cropped to its region
    of interest (crops[i], see
    check_crop; None or no list: the whole frame), then resized without further crop (`resize`, antialiased)."""
    resized = []
    for i, image in enumerate(images):
        image = crop_frame(image, crops[i] if crops is not None else None)
        tensor = torch.as_tensor(image, device=device).permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
        resized.append(_resize_unit(tensor, image_size, resize))
    return torch.cat(resized).to(dtype)


def resize_frames(frames, image_size, batch: int = 16, crop=None, resize: str = "bilinear"):
    """(N, H, W, 3) uint8 RGB frames (an array or a sequence of HxWx3 arrays) -> (N, h, w, 3) uint8 numpy
    (image_size: S or [h, w]): the
    crop (see check_crop) and resize of images_to_pixels, rounded back to uint8. Training sets resized with it
    at build time (`hybridvla dataset build --image-size [--crop]`, `hybridvla dataset resize`) hold
    what a policy cropping and resizing the live frames sees, to within the rounding (0.5 / 255). Frames
    already that size (after the crop) come back unchanged; `batch` frames are converted at a time, so memory stays
    small for long episodes."""
    import numpy as np

    height, width = image_hw(image_size)
    parts = []
    for start in range(0, len(frames), batch):
        chunk = np.array(frames[start:start + batch]) if isinstance(frames, np.ndarray) \
            else np.stack([np.asarray(f) for f in frames[start:start + batch]])
        if crop is not None and chunk.ndim == 4:
            rows, cols = _crop_slices(chunk.shape[1], chunk.shape[2], crop)
            chunk = np.ascontiguousarray(chunk[:, rows, cols])
        if chunk.ndim != 4 or chunk.shape[3] != 3 or chunk.dtype != np.uint8:
            raise ValueError(f"frames must be HxWx3 uint8, got {chunk.dtype} {chunk.shape[1:]}")
        if chunk.shape[1:3] == (height, width):
            parts.append(chunk)
            continue
        pixels = torch.from_numpy(chunk).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        pixels = _resize_unit(pixels, (height, width), resize)
        parts.append((pixels * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    if not parts:
        return np.zeros((0, height, width, 3), dtype=np.uint8)
    return np.concatenate(parts)
