"""The reference checkpoint (torch.save({"model": {group: state_dict}}) .pt) <-> a checkpoint directory.

One rename table, used both ways: import_reference_checkpoint (.pt -> directory) and export_reference_checkpoint
(directory -> .pt in the reference's layout, bf16 by default). Groups: vision_backbone, projector, llm_backbone
(llm.model.*, llm.lm_head.*), x_embedder, t_embedder, final_layer, proprio_embedder (reference_manifest.py lists
their keys). Every group but vision_backbone has this package's module names: they map 1:1 by name.

vision_backbone holds the reference's timm ViTs: dino_featurizer = timm vit_large_patch14_reg4_dinov2,
siglip_featurizer = timm vit_so400m_patch14_siglip_224, featurizer = timm vit_large_patch14_clip_224; the towers
here are the HF DINOv2-with-registers / SigLIP / CLIP models. Per block: timm's fused attn.qkv <-> HF q/k/v
projections, attn.proj <-> the output projection, norm1/norm2/mlp.fc1/mlp.fc2 renamed, ls1/ls2.gamma <->
DINOv2's layer_scale1/2.lambda1. Around the blocks: patch_embed.proj, cls_token (CLIP's class_embedding),
reg_token (DINOv2's register_tokens), norm_pre (CLIP's pre_layrnorm), norm (the final norm). pos_embed: timm's
DINOv2-reg holds positions for the patches only (no_embed_class), so HF's class position row is zero on import
and must be zero on export; SigLIP has no class token; CLIP's pos_embed includes the class position. DINOv2's
mask_token has no timm counterpart (only used with masked pre-training inputs): zero on import, dropped on
export. SigLIP's attention-pool head (attn_pool.*: latent -> probe, q + kv -> one in_proj) is kept: the import
records vision_use_head so that the checkpoint holds it and exports back bit for bit (the reference never uses
it: second-to-last layer patch features only). Activation: timm's so400m uses exact GELU (HF's SigLIP default is
tanh); the reference builds its OpenAI CLIP with act_layer="quick_gelu" (clip_vit.py), which is HF CLIP's own
default; the import records hidden_act so that the towers compute what the reference computed.

Reading never unpickles code (torch.load(weights_only=True)); every refusal is a one-line ValueError /
FileNotFoundError; the output appears only when complete (written next to it, then renamed into place).
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path

import torch

from hybridvla_core.actions import load_dataset_statistics
from hybridvla_core.files import write_whole
from hybridvla_core.model.checkpoint import build_model, load_checkpoint, load_config, save_checkpoint
from hybridvla_core.model.config import ModelConfig
from hybridvla_core.model.ensemble import REFERENCE_THETA
from hybridvla_core.model.reference_manifest import GROUPS
from hybridvla_core.model.text_tokenizer import load_tokenizer

PRIVILEGED_HEAD = "privileged_head"  # this package's training-only module; export leaves its keys out
HEAD_GROUPS = ("x_embedder", "t_embedder", "final_layer", "proprio_embedder")
# Tower prefix inside vision_backbone -> which HF model it is (the key of VisionConfig.hf_configs).
TIMM_TOWERS = {"dino_featurizer": "dinov2", "siglip_featurizer": "siglip", "featurizer": "clip"}
TOWERS_OF_KIND = {"dinov2_siglip": ("dino_featurizer", "siglip_featurizer"), "clip": ("featurizer",)}
# HF config fields that make the HF towers compute what the reference's timm models compute.
TIMM_HF_CONFIG = {"siglip": {"hidden_act": "gelu"}, "clip": {"hidden_act": "quick_gelu"}}
# The settings the reference's released weights run with (facts: "What a released checkpoint needs").
REFERENCE_SETTINGS = {"token_layout": "reference", "ar_conditioning": "noisy", "theta": REFERENCE_THETA,
                      "ensemble_gripper": "average"}
REFERENCE_RESIZE = "bicubic"
LLM_FAMILY_NAMES = {"llama": "Llama", "phi": "Phi", "qwen2": "Qwen2"}
_TIMM_ROOTS = ("blocks", "patch_embed", "pos_embed", "cls_token", "reg_token", "norm", "norm_pre", "attn_pool")

# ---------------------------------------------------------------------------------------- the rename table
# Per block: timm name after "blocks.N." -> HF name after the layer prefix (attn.qkv is split apart).
_DINO_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.proj": "attention.o_proj", "mlp.fc1": "mlp.fc1",
               "mlp.fc2": "mlp.fc2"}
_CLIP_BLOCK = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.proj": "self_attn.out_proj",
               "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
_LAYER_SCALE = {"ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}  # DINOv2 only
_LAYOUT = {  # kind -> (layer prefix, block renames, q/k/v projection prefix, top-level module renames)
    "dinov2": ("encoder.layer", _DINO_BLOCK, "attention", {
        "patch_embed.proj": "embeddings.patch_embeddings.projection", "norm": "layernorm"}),
    "siglip": ("encoder.layers", _CLIP_BLOCK, "self_attn", {
        "patch_embed.proj": "embeddings.patch_embedding", "norm": "post_layernorm", "attn_pool.norm": "head.layernorm",
        "attn_pool.proj": "head.attention.out_proj", "attn_pool.mlp.fc1": "head.mlp.fc1",
        "attn_pool.mlp.fc2": "head.mlp.fc2"}),
    "clip": ("encoder.layers", _CLIP_BLOCK, "self_attn", {
        "patch_embed.proj": "embeddings.patch_embedding", "norm_pre": "pre_layrnorm", "norm": "post_layernorm"}),
}
_QKV = ("q_proj", "k_proj", "v_proj")
_LEAVES = ("weight", "bias")


def is_timm_vision_key(key: str) -> bool:
    """True for a vision_backbone key (group prefix removed) in the timm layout, e.g.
    dino_featurizer.blocks.0.attn.qkv.weight."""
    tower, _, rest = key.partition(".")
    return tower in TIMM_TOWERS and rest.split(".", 1)[0] in _TIMM_ROOTS


def _timm_key_to_hf(kind: str, key: str, value: torch.Tensor, out: dict) -> str | None:
    """Writes the HF tensor(s) for one timm key into `out`; returns "ok", "pool" (attention-pool q/kv, joined
    afterwards) or None (no counterpart)."""
    layer_prefix, block_names, attention, top_names = _LAYOUT[kind]
    module, _, leaf = key.rpartition(".")
    if key.startswith("blocks."):
        index, _, rest = key[len("blocks."):].partition(".")
        if not index.isdigit():
            return None
        layer, block_module = f"{layer_prefix}.{index}", rest.rpartition(".")[0]
        if block_module == "attn.qkv" and leaf in _LEAVES:
            for name, part in zip(_QKV, value.chunk(3, dim=0)):
                out[f"{layer}.{attention}.{name}.{leaf}"] = part.clone()
            return "ok"
        if kind == "dinov2" and rest in _LAYER_SCALE:
            out[f"{layer}.{_LAYER_SCALE[rest]}"] = value
            return "ok"
        if block_module in block_names and leaf in _LEAVES:
            out[f"{layer}.{block_names[block_module]}.{leaf}"] = value
            return "ok"
        return None
    if key == "pos_embed" and value.dim() == 3:
        if kind == "dinov2":  # patch positions only (no_embed_class): HF's class row is zero
            out["embeddings.position_embeddings"] = torch.cat([value.new_zeros(1, 1, value.shape[-1]), value], 1)
            out["embeddings.mask_token"] = value.new_zeros(1, value.shape[-1])  # no timm counterpart; unused
        else:
            out["embeddings.position_embedding.weight"] = value[0]
        return "ok"
    special = {("dinov2", "cls_token"): "embeddings.cls_token", ("dinov2", "reg_token"): "embeddings.register_tokens",
               ("siglip", "attn_pool.latent"): "head.probe"}
    if (kind, key) in special:
        out[special[kind, key]] = value
        return "ok"
    if kind == "clip" and key == "cls_token":
        out["embeddings.class_embedding"] = value.reshape(-1)
        return "ok"
    if kind == "siglip" and module in ("attn_pool.q", "attn_pool.kv"):
        return "pool"
    if kind == "clip" and key == "patch_embed.proj.bias":
        return None  # timm's CLIP (pre_norm) patch embedding has no bias, nor has HF's
    if module in top_names and leaf in _LEAVES:
        out[f"{top_names[module]}.{leaf}"] = value
        return "ok"
    return None


def _convert_tower(kind: str, tensors: dict[str, torch.Tensor], tower: str, unmapped: list[str]) -> dict:
    """One tower's timm keys (tower prefix removed) -> HF names; keys with no counterpart go to `unmapped`."""
    out: dict[str, torch.Tensor] = {}
    pool: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        result = _timm_key_to_hf(kind, key, value, out)
        if result == "pool":
            pool[key] = value
        elif result is None:
            unmapped.append(f"{tower}.{key}")
    for leaf in _LEAVES:  # HF's MultiheadAttention holds [q; k; v]; timm has q and a fused [k; v]
        q, kv = pool.pop(f"attn_pool.q.{leaf}", None), pool.pop(f"attn_pool.kv.{leaf}", None)
        if q is not None and kv is not None:
            out[f"head.attention.in_proj_{leaf}"] = torch.cat([q, kv], 0)
        elif q is not None or kv is not None:
            unmapped.append(f"{tower}.attn_pool.{'q' if q is not None else 'kv'}.{leaf}")
    unmapped.extend(f"{tower}.{key}" for key in pool)
    return out


def _hf_tower_to_timm(kind: str, tensors: dict[str, torch.Tensor], tower: str, unmapped: list[str]) -> dict:
    """The reverse of _convert_tower: one tower's HF keys -> timm names (q/k/v joined, DINOv2's class position row
    and mask_token dropped, SigLIP's in_proj split into attn_pool q and kv)."""
    layer_prefix, block_names, attention, top_names = _LAYOUT[kind]
    block_back = {hf: timm for timm, hf in block_names.items()}
    scale_back = {hf: timm for timm, hf in _LAYER_SCALE.items()} if kind == "dinov2" else {}
    top_back = {hf: timm for timm, hf in top_names.items()}
    layer_key = re.compile(rf"^{re.escape(layer_prefix)}\.(\d+)\.(.+)$")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        match = layer_key.match(key)
        if match:
            index, rest = match.groups()
            rest_module = rest.rpartition(".")[0]
            if rest_module.startswith(f"{attention}.") and rest_module.split(".", 1)[1] in _QKV and leaf in _LEAVES:
                qkv.setdefault((index, leaf), {})[rest_module.split(".", 1)[1]] = value
            elif rest in scale_back:
                out[f"blocks.{index}.{scale_back[rest]}"] = value
            elif rest_module in block_back and leaf in _LEAVES:
                out[f"blocks.{index}.{block_back[rest_module]}.{leaf}"] = value
            else:
                unmapped.append(f"{tower}.{key}")
        elif kind == "dinov2" and key == "embeddings.position_embeddings":
            out["pos_embed"] = value[:, 1:]  # timm's no_embed_class holds no class position
        elif kind == "dinov2" and key == "embeddings.mask_token":
            continue  # no timm counterpart
        elif (kind, key) in {("dinov2", "embeddings.cls_token"), ("dinov2", "embeddings.register_tokens"),
                             ("siglip", "head.probe")}:
            out[{"embeddings.cls_token": "cls_token", "embeddings.register_tokens": "reg_token",
                 "head.probe": "attn_pool.latent"}[key]] = value
        elif kind in ("siglip", "clip") and key == "embeddings.position_embedding.weight":
            out["pos_embed"] = value.unsqueeze(0)
        elif kind == "clip" and key == "embeddings.class_embedding":
            out["cls_token"] = value.reshape(1, 1, -1)
        elif kind == "siglip" and module == "head.attention" and leaf in ("in_proj_weight", "in_proj_bias"):
            width = value.shape[0] // 3
            out[f"attn_pool.q.{leaf[len('in_proj_'):]}"] = value[:width].clone()
            out[f"attn_pool.kv.{leaf[len('in_proj_'):]}"] = value[width:].clone()
        elif module in top_back and leaf in _LEAVES:
            out[f"{top_back[module]}.{leaf}"] = value
        else:
            unmapped.append(f"{tower}.{key}")
    for (index, leaf), parts in qkv.items():
        if set(parts) != set(_QKV):
            unmapped.extend(f"{tower}.{layer_prefix}.{index}.{attention}.{name}.{leaf}" for name in parts)
            continue
        out[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat([parts[name] for name in _QKV], 0)
    return out


def _no_counterpart(unmapped: list[str], what: str) -> ValueError:
    unmapped = sorted(unmapped)
    shown = ", ".join(unmapped[:10]) + (f" and {len(unmapped) - 10} more" if len(unmapped) > 10 else "")
    return ValueError(f"vision_backbone: {len(unmapped)} {what} key(s) with no counterpart {shown}")


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
        hf = _convert_tower(TIMM_TOWERS[tower], tensors, tower, unmapped)
        out.update({f"{tower}.{k}": v for k, v in hf.items()})
    if unmapped:
        raise _no_counterpart(unmapped, "timm")
    return out


def hf_vision_to_timm(state: dict[str, torch.Tensor], towers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The reverse: the keys of `towers` (names in TIMM_TOWERS) in HF layout -> timm layout; other keys pass
    through. Raises ValueError (one line) naming HF keys that have no timm counterpart."""
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tower, _, rest = key.partition(".")
        if tower in towers:
            grouped.setdefault(tower, {})[rest] = value
        else:
            out[key] = value
    unmapped: list[str] = []
    for tower, tensors in grouped.items():
        timm = _hf_tower_to_timm(TIMM_TOWERS[tower], tensors, tower, unmapped)
        out.update({f"{tower}.{k}": v for k, v in timm.items()})
    if unmapped:
        raise _no_counterpart(unmapped, "model")
    return out


def reference_to_model_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Flat reference state {group.key} -> this package's state dict names (timm vision towers converted)."""
    return _map_vision(state, timm_vision_to_hf)


def model_to_reference_state(state: dict[str, torch.Tensor], vision_kind: str) -> dict[str, torch.Tensor]:
    """This package's state dict -> flat reference state {group.key}: the towers of `vision_kind` (config.vision.kind)
    in timm's layout, every other key by name."""
    towers = TOWERS_OF_KIND.get(vision_kind, ())
    return _map_vision(state, lambda vision: hf_vision_to_timm(vision, towers))


def _map_vision(state: dict, convert) -> dict:
    prefix = "vision_backbone."
    vision = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    out = {prefix + k: v for k, v in convert(vision).items()}
    out.update({k: v for k, v in state.items() if not k.startswith(prefix)})
    return out


# ---------------------------------------------------------------------------------------------- reading
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."  # torch.save's pickled magic number (old format)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def read_reference_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Flat state dict {group.key: tensor} from a reference .pt, never unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    with path.open("rb") as handle:
        head = handle.read(len(_LEGACY_MAGIC))
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK\x03\x04"):  # begins as a zip archive, but its end (the central directory) is missing
            raise ValueError(f"{path}: truncated checkpoint (a torch zip archive without its end: an interrupted "
                             f"download or copy?)")
        if head != _LEGACY_MAGIC:
            raise ValueError(f"{path}: not a torch checkpoint (neither torch.save's zip archive nor its older "
                             f"pickle format; {path.stat().st_size} bytes)")
    try:
        # mmap: the tensors stay in the file (page cache) instead of a copy in memory: a 7B .pt is 14-28 GiB.
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        blocked = [line for line in str(error).splitlines() if "GLOBAL" in line]
        if blocked:
            raise ValueError(f"{path}: refused, the pickle holds more than tensors (weights_only load failed: "
                             f"{blocked[0].strip()})") from None
        raise ValueError(f"{path}: unreadable checkpoint (truncated or corrupted: {_one_line(error)[-160:]})") from None
    except (EOFError, RuntimeError, OSError, zipfile.BadZipFile) as error:
        reason = _one_line(error) or type(error).__name__
        if "unable to mmap" in reason:
            raise ValueError(f"{path}: the system refused to map the file ({path.stat().st_size / 2**30:.1f} GiB) into "
                             f"memory: it needs RAM + swap at least that large; add swap and run the import again") \
                from None
        raise ValueError(f"{path}: unreadable checkpoint (truncated or corrupted: {reason[:160]})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("model"), dict):
        raise ValueError(f"{path}: expected a dict with a 'model' entry of parameter groups")
    groups = payload["model"]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"{path}: unknown parameter group(s) {unknown}; a reference checkpoint holds {list(GROUPS)}")
    missing = [g for g in GROUPS if g not in groups]
    if missing:
        raise ValueError(f"{path}: missing parameter group(s) {missing}; a reference checkpoint saved with "
                         f"save_full_model holds all of {list(GROUPS)}")
    state = {}
    for group, tensors in groups.items():
        if not isinstance(tensors, dict):
            raise ValueError(f"{path}: group {group} is a {type(tensors).__name__}, expected a state dict")
        for key, value in tensors.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{path}: {group}.{key} is not a tensor")
            if not value.is_floating_point():
                raise ValueError(f"{path}: {group}.{key} holds {value.dtype}, expected floating-point weights")
            state[f"{group}.{key}"] = value
    return state


# ----------------------------------------------------------------------------------------------- checks
def llm_family_in(keys) -> tuple[str, str] | None:
    """(family, a key that shows it) for the llm_backbone keys of a reference state, or None when unknown."""
    keys = [k for k in keys if k.startswith("llm_backbone.")]
    for key in keys:
        if key.endswith("llm.model.final_layernorm.weight") or ".self_attn.dense." in key:
            return "phi", key
    gated = next((k for k in keys if ".mlp.gate_proj." in k), None)
    if gated is not None:
        q_bias = next((k for k in keys if k.endswith(".self_attn.q_proj.bias")), None)
        return ("qwen2", q_bias) if q_bias else ("llama", gated)
    return None


def _shape(shape) -> str:
    return f"({', '.join(str(n) for n in shape)})"


def _listed(keys: list[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_reference_state(state: dict[str, torch.Tensor], expected: dict[str, tuple], family: str, path) -> None:
    """Refuse (one-line ValueError) a reference state that does not fit the model: the LLM family, missing or
    extra keys, shapes, non-finite values. `expected` = {reference key: shape} of the model."""
    found = llm_family_in(state)
    if found is not None and found[0] != family:
        holds, evidence = found
        raise ValueError(
            f"{path}: llm_backbone holds a {LLM_FAMILY_NAMES[holds]} model ({evidence}) but the model config says "
            f"llm.family {family!r}: set llm.family: {holds} and point llm.path (or llm.hf_config) and "
            f"llm.tokenizer_path at the base {LLM_FAMILY_NAMES[holds]} model")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing or extra:
        parts = ([f"{len(missing)} missing ({_listed(missing)})"] if missing else []) + \
                ([f"{len(extra)} not in the model ({_listed(extra)})"] if extra else [])
        raise ValueError(f"{path}: keys do not match the model: {'; '.join(parts)}")
    wrong = [f"{k} is {_shape(state[k].shape)} in the file, {_shape(shape)} in the model"
             for k, shape in expected.items() if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise ValueError(f"{path}: shape mismatch: {wrong[0]}{more}")
    for key, value in state.items():
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{path}: non-finite weights (NaN or Inf) in {key}: refused")


def reference_import_config(config: ModelConfig, state: dict[str, torch.Tensor],
                            need_to_sub: int | None = None) -> ModelConfig:
    """`config` with what the reference's weights run with: REFERENCE_SETTINGS, bicubic resize, need_to_sub (when
    given), and the HF tower fields that reproduce the timm towers found in `state` (TIMM_HF_CONFIG; SigLIP's
    attention-pool head kept when the file holds it), where the config does not set them."""
    data = config.to_dict()
    data.update(REFERENCE_SETTINGS)
    data["privileged_dim"] = 0  # the reference has no privileged head (a training-only head of this package)
    data["vision"]["resize"] = REFERENCE_RESIZE
    if need_to_sub is not None:
        data["need_to_sub"] = need_to_sub
    vision = [k[len("vision_backbone."):] for k in state if k.startswith("vision_backbone.")]
    kinds = {TIMM_TOWERS[k.partition(".")[0]] for k in vision if is_timm_vision_key(k)}
    hf_configs = data["vision"]["hf_configs"]
    for kind in sorted(kinds & set(TIMM_HF_CONFIG)):
        for field_name, value in TIMM_HF_CONFIG[kind].items():
            hf_configs.setdefault(kind, {}).setdefault(field_name, value)
    if any(k.startswith("siglip_featurizer.attn_pool.") for k in vision):
        hf_configs.setdefault("siglip", {}).setdefault("vision_use_head", True)
    data["tokens"] = {}  # filled in again when the model is built
    return ModelConfig.from_dict(data)


def expected_reference_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """{reference key: shape} that `model` (on any device, meta included) loads from and exports to."""
    state = {k: torch.empty(v.shape, device="meta") for k, v in _without_privileged_head(model.state_dict()).items()}
    return {k: tuple(v.shape) for k, v in model_to_reference_state(state, model.config.vision.kind).items()}


def _without_privileged_head(state: dict) -> dict:
    """The state dict without the privileged head's keys (training only; the reference has no such head)."""
    return {k: v for k, v in state.items() if not k.startswith(f"{PRIVILEGED_HEAD}.")}


# ------------------------------------------------------------------------------------ import and export
def _refuse_existing(output: Path, what: str, directory: bool = True) -> None:
    if directory and output.is_dir() and not any(output.iterdir()):
        return  # an empty directory is taken over
    if output.exists():
        raise ValueError(f"{output}: already exists{' and is not empty' if output.is_dir() else ''}; refusing to "
                         f"overwrite it (choose another {what} or remove it)")


def import_reference_checkpoint(pt_path: str | Path, config: ModelConfig, statistics_path: str | Path,
                                output_dir: str | Path, need_to_sub: int | None = None) -> Path:
    """Check a reference .pt against the model described by `config` (local LLM config/tokenizer directories)
    on the meta device, then write a checkpoint directory with the file's weights, renamed and in their own dtype,
    whose config records the reference's settings (reference_import_config). Memory: the file is mapped, not read
    into memory; only the converted vision tensors (fused qkv split apart) are new."""
    output = Path(output_dir)
    _refuse_existing(output, "output directory")
    statistics_path = Path(statistics_path)
    if not statistics_path.is_file():
        raise FileNotFoundError(f"{statistics_path}: no such dataset statistics file")
    try:
        statistics = load_dataset_statistics(statistics_path)
    except json.JSONDecodeError as error:
        raise ValueError(f"{statistics_path}: not valid JSON ({error})") from None
    state = read_reference_state(pt_path)
    config = reference_import_config(config, state, need_to_sub)
    if config.unnorm_key is not None and config.unnorm_key not in statistics:
        raise ValueError(f"unnorm_key {config.unnorm_key!r} not in {statistics_path}: {sorted(statistics)}")
    meta = build_model(config, load_tokenizer(config.llm.tokenizer_path), device="meta")
    check_reference_state(state, expected_reference_shapes(meta), config.llm.family, pt_path)
    # The model exists only on meta (its config and tokenizer are written); the weights go from the file to the
    # output as they are, in the file's dtype (exact), without a copy of the model in memory.
    weights = reference_to_model_state(state)
    return _write_atomically(output, lambda tmp: save_checkpoint(meta, tmp, statistics, weights), directory=True)


def export_reference_checkpoint(checkpoint_dir: str | Path, output_path: str | Path,
                                dtype: torch.dtype = torch.bfloat16) -> Path:
    """A checkpoint directory -> torch.save({"model": {group: state_dict}}) in the reference's layout (its timm
    vision towers, `dtype`), loadable by the reference's load_state_dict calls."""
    output = Path(output_path)
    _refuse_existing(output, "output file", directory=False)
    config = load_config(checkpoint_dir)  # refuse what has no reference layout before loading the weights
    if config.vision.kind not in TOWERS_OF_KIND:
        raise ValueError(f"{checkpoint_dir}: vision.kind {config.vision.kind!r} has no reference counterpart "
                         f"(the reference's towers: {sorted(TOWERS_OF_KIND)})")
    if config.llm.family not in ("llama", "phi"):
        raise ValueError(f"{checkpoint_dir}: llm.family {config.llm.family!r} has no reference backbone (llama, phi)")
    if config.vision.kind == "dinov2_siglip" and not config.vision.hf_configs.get("siglip", {}).get("vision_use_head"):
        raise ValueError(f"{checkpoint_dir}: the model has no SigLIP attention-pool head (vision.hf_configs.siglip."
                         f"vision_use_head is false) but the reference's timm SigLIP holds one (attn_pool.*) and "
                         f"loads strictly")
    model, _ = load_checkpoint(checkpoint_dir, dtype=dtype)  # straight into `dtype`: no fp32 copy of a 7B first
    state = model.state_dict()
    class_row = state.get("vision_backbone.dino_featurizer.embeddings.position_embeddings")
    if class_row is not None and bool(class_row[:, 0].any()):
        raise ValueError(f"{checkpoint_dir}: the DINOv2 class-token position is not zero; timm's DINOv2-reg "
                         f"(no_embed_class) has none, so this tower cannot be written in the reference's layout")
    # The privileged head (training only, model.privileged_head) has no place in the reference: left out.
    state = _without_privileged_head(state)
    reference = model_to_reference_state(state, config.vision.kind)
    groups: dict[str, dict[str, torch.Tensor]] = {group: {} for group in GROUPS}
    for key, value in reference.items():
        group, _, rest = key.partition(".")
        groups[group][rest] = value.detach().to(dtype).contiguous()
    return _write_atomically(output, lambda tmp: torch.save({"model": groups}, tmp), directory=False)


def _write_atomically(output: Path, write, directory: bool) -> Path:
    """write(temporary path next to `output`), then rename it into place; an output that appeared meanwhile is
    refused; on any failure nothing is left."""
    return write_whole(output, write, directory=directory,
                       before_rename=lambda: _refuse_existing(output, "output", directory))
