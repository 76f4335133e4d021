"""Import a reference checkpoint (torch.save({"model": {group: state_dict}}) .pt) into a checkpoint directory.

The pickle is read with torch.load(weights_only=True) only: tensors and plain containers load, anything that
would run code is refused. Groups: vision_backbone, projector, llm_backbone (llm.model.*, llm.lm_head.*),
x_embedder, t_embedder, final_layer, proprio_embedder; they map onto this package's module names.

The vision group may use this package's tower layout (the HF DINOv2-with-registers / SigLIP / CLIP module
names of transformers 5, or the small tower) or the reference's timm layout, which timm_vision_to_hf converts:
dino_featurizer = timm vit_large_patch14_reg4_dinov2, siglip_featurizer = timm vit_so400m_patch14_siglip_224,
featurizer = timm vit_large_patch14_clip_224. Per block: fused attn.qkv is split into q/k/v, attn.proj is the
output projection, norm1/norm2/mlp.fc1/mlp.fc2 are renamed, ls1/ls2.gamma become DINOv2's layer_scale1/2.lambda1.
Around the blocks: patch_embed.proj, cls_token, reg_token (DINOv2's register_tokens), norm_pre (CLIP's
pre_layrnorm), norm (the final norm). pos_embed: timm's DINOv2-reg model holds positions for the patches only
(no_embed_class; the class and register tokens get none), so HF's class position row is zero; SigLIP has no
class token; CLIP's pos_embed includes the class position. DINOv2's mask_token has no timm counterpart and is
zero (it is only used with masked pre-training inputs). SigLIP's attention-pool head (timm attn_pool.*) becomes
HF's head.* (latent -> probe, q + kv -> one in_proj); the towers here are built without that head (the reference
only uses the second-to-last layer's patch features), so on import those keys are dropped unless the config
builds the head (hf_configs siglip vision_use_head).
timm's so400m/224 and vit_large_patch14_clip_224 use exact GELU (HF's configs default to tanh / quick GELU): the
import records hidden_act "gelu" for them (unless the config sets it), so the imported towers compute what the
reference computed. Position embeddings are taken as stored: the reference builds its timm models at 224 px, so
they already hold the 16x16 grid, and neither side interpolates at the configured size; another grid is refused
by the shape check. Timm keys that have no counterpart are refused with their names.
"""
from __future__ import annotations

import copy
import pickle
from pathlib import Path

import torch

from hybridvla_core.actions import load_dataset_statistics
from hybridvla_core.model.checkpoint import build_model, save_checkpoint
from hybridvla_core.model.config import ModelConfig

GROUPS = ("vision_backbone", "projector", "llm_backbone", "x_embedder", "t_embedder", "final_layer",
          "proprio_embedder")

# Tower prefix inside vision_backbone -> which HF model it is (the key of VisionConfig.hf_configs).
TIMM_TOWERS = {"dino_featurizer": "dinov2", "siglip_featurizer": "siglip", "featurizer": "clip"}
# HF config fields that make the HF towers compute what the reference's timm models compute.
TIMM_HF_CONFIG = {"siglip": {"hidden_act": "gelu"}, "clip": {"hidden_act": "gelu"}}
_TIMM_ROOTS = ("blocks", "patch_embed", "pos_embed", "cls_token", "reg_token", "norm", "norm_pre", "attn_pool")

# Per-block renames (timm name after "blocks.N." -> HF name after the layer prefix); attn.qkv is split apart.
_DINO_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1",
               "mlp.fc2": "mlp.fc2", "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
_CLIP_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_LAYOUT = {  # kind -> (layer prefix, block renames, q/k/v projection prefix, top-level renames)
    "dinov2": ("encoder.layer", _DINO_BLOCK, "attention", {
        "patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"}),
    "siglip": ("encoder.layers", _CLIP_BLOCK, "self_attn", {
        "patch_embed.proj": "embeddings.patch_embedding", "norm": "post_layernorm", "attn_pool.norm": "head.layernorm",
        "attn_pool.proj": "head.attention.out_proj", "attn_pool.mlp.fc1": "head.mlp.fc1",
        "attn_pool.mlp.fc2": "head.mlp.fc2"}),
    "clip": ("encoder.layers", _CLIP_BLOCK, "self_attn", {
        "patch_embed.proj": "embeddings.patch_embedding", "norm_pre": "pre_layrnorm", "norm": "post_layernorm"}),
}


def is_timm_vision_key(key: str) -> bool:
    """True for a vision_backbone key (group prefix removed) in the timm layout, e.g.
    dino_featurizer.blocks.0.attn.qkv.weight."""
    tower, _, rest = key.partition(".")
    return tower in TIMM_TOWERS and rest.split(".", 1)[0] in _TIMM_ROOTS


def _convert_tower(kind: str, tensors: dict[str, torch.Tensor], tower: str, unmapped: list[str]) -> dict:
    """One tower's timm keys (tower prefix removed) -> HF names; keys with no counterpart go to `unmapped`."""
    layer_prefix, block_names, attention, top_names = _LAYOUT[kind]
    out: dict[str, torch.Tensor] = {}
    pool_projections: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = _convert_key(kind, key, value, layer_prefix, block_names, attention, top_names, out)
        if name == "pool":
            pool_projections[key] = value
        elif name is None:
            unmapped.append(f"{tower}.{key}")
    for leaf in ("weight", "bias"):  # HF's MultiheadAttention holds [q; k; v]; timm has q and a fused [k; v]
        q, kv = pool_projections.pop(f"attn_pool.q.{leaf}", None), pool_projections.pop(f"attn_pool.kv.{leaf}", None)
        if q is not None and kv is not None:
            out[f"head.attention.in_proj_{leaf}"] = torch.cat([q, kv], 0)
        elif q is not None or kv is not None:
            unmapped.append(f"{tower}.attn_pool.{'q' if q is not None else 'kv'}.{leaf}")
    unmapped.extend(f"{tower}.{key}" for key in pool_projections)
    return out


def _convert_key(kind, key, value, layer_prefix, block_names, attention, top_names, out) -> str | None:
    """Writes the HF tensor(s) for one timm key into `out`; returns "ok", "pool" (attention-pool q/kv, joined
    afterwards) or None (no counterpart)."""
    module, _, leaf = key.rpartition(".")
    if key.startswith("blocks."):
        index, _, rest = key[len("blocks."):].partition(".")
        if not index.isdigit():
            return None
        layer, module = f"{layer_prefix}.{index}", rest.rpartition(".")[0]
        if module == "attn.qkv" and leaf in ("weight", "bias"):
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{layer}.{attention}.{name}.{leaf}"] = part.clone()
            return "ok"
        if leaf == "gamma" and rest in block_names:  # layer scale (DINOv2 only)
            out[f"{layer}.{block_names[rest]}"] = value
            return "ok"
        if module in block_names and leaf in ("weight", "bias"):
            out[f"{layer}.{block_names[module]}.{leaf}"] = value
            return "ok"
        return None
    if key == "pos_embed" and value.dim() == 3:
        if kind == "dinov2":  # patch positions only (no_embed_class): HF's class row is zero
            out["embeddings.position_embeddings"] = torch.cat([value.new_zeros(1, 1, value.shape[-1]), value], 1)
            out["embeddings.mask_token"] = value.new_zeros(1, value.shape[-1])  # no timm counterpart; unused
        else:
            out["embeddings.position_embedding.weight"] = value[0]
        return "ok"
    if key == "cls_token" and kind == "dinov2":
        out["embeddings.cls_token"] = value
        return "ok"
    if key == "cls_token" and kind == "clip":
        out["embeddings.class_embedding"] = value.reshape(-1)
        return "ok"
    if key == "reg_token" and kind == "dinov2":
        out["embeddings.register_tokens"] = value
        return "ok"
    if key == "attn_pool.latent" and kind == "siglip":
        out["head.probe"] = value
        return "ok"
    if module in ("attn_pool.q", "attn_pool.kv") and kind == "siglip":
        return "pool"
    if key == "patch_embed.proj.bias" and kind == "clip":
        return None  # timm's CLIP (pre_norm) patch embedding has no bias, nor has HF's
    if module in top_names and leaf in ("weight", "bias"):
        out[f"{top_names[module]}.{leaf}"] = value
        return "ok"
    return None


def timm_vision_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """vision_backbone state dict (group prefix removed): every tower whose keys use the reference's timm layout
    is converted to this package's HF module names; other keys pass through unchanged. Raises ValueError
    (one line) naming the timm keys that have no counterpart."""
    towers: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    timm_towers = {key.partition(".")[0] for key in state if is_timm_vision_key(key)}
    for key, value in state.items():
        tower, _, rest = key.partition(".")
        if tower in timm_towers:
            towers.setdefault(tower, {})[rest] = value
        else:
            out[key] = value
    unmapped: list[str] = []
    for tower, tensors in towers.items():
        for key, value in _convert_tower(TIMM_TOWERS[tower], tensors, tower, unmapped).items():
            out[f"{tower}.{key}"] = value
    if unmapped:
        unmapped.sort()
        shown = ", ".join(unmapped[:10]) + (f" and {len(unmapped) - 10} more" if len(unmapped) > 10 else "")
        raise ValueError(f"vision_backbone: {len(unmapped)} timm key(s) with no counterpart in this package's "
                         f"vision towers: {shown}")
    return out


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


def _convert_timm_vision(state: dict[str, torch.Tensor], config: ModelConfig, pt_path) -> tuple[dict, ModelConfig]:
    """The timm-layout vision keys of a flat state converted (see timm_vision_to_hf), and the config with the
    HF tower fields that reproduce timm (TIMM_HF_CONFIG) filled in where it does not set them."""
    prefix = "vision_backbone."
    vision = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    kinds = {TIMM_TOWERS[k.partition(".")[0]] for k in vision if is_timm_vision_key(k)}
    if not kinds:
        return state, config
    try:
        converted = timm_vision_to_hf(vision)
    except ValueError as error:
        raise ValueError(f"{pt_path}: {error}") from None
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
    state.update({prefix + k: v for k, v in converted.items()})
    config = copy.deepcopy(config)
    for kind in kinds & set(TIMM_HF_CONFIG):
        overrides = config.vision.hf_configs.setdefault(kind, {})
        for field_name, value in TIMM_HF_CONFIG[kind].items():
            overrides.setdefault(field_name, value)
    return state, config


def import_reference_checkpoint(pt_path: str | Path, config: ModelConfig, statistics_path: str | Path,
                                output_dir: str | Path) -> Path:
    """Build the model described by `config` (local LLM config/tokenizer directories), load the reference
    weights strictly (timm-layout vision keys converted first) and write a checkpoint directory."""
    state = read_reference_state(pt_path)
    statistics = load_dataset_statistics(statistics_path)
    if config.unnorm_key is not None and config.unnorm_key not in statistics:
        raise ValueError(f"unnorm_key {config.unnorm_key!r} not in {statistics_path}: {sorted(statistics)}")
    state, config = _convert_timm_vision(state, config, pt_path)
    model = build_model(config)
    expected = model.state_dict()
    # SigLIP's attention-pool head: the reference never uses it (second-to-last layer patch features only).
    unused_head = "vision_backbone.siglip_featurizer.head."
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(unused_head)}
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
