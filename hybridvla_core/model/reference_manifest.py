"""The key names and shapes of a reference HybridVLA checkpoint (torch.save({"model": {group: state_dict}})), written
from the reference code's module structure, NOT from this package's model:

- vision_backbone: the reference's timm VisionTransformer(s), timm.create_model(name, num_classes=0, img_size=224)
  (models/backbones/vision/*.py), named as timm 0.9.10 names them: cls_token / reg_token / pos_embed (no class or
  register positions when no_embed_class), patch_embed.proj (no bias under pre_norm, CLIP), norm_pre (pre_norm
  only), blocks.N.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma} (layer scale only
  with init_values, DINOv2), norm (fc_norm is an Identity for global_pool token/map), attn_pool.{latent, q, kv,
  proj, norm, mlp.fc1, mlp.fc2} (global_pool "map", SigLIP; num_classes=0 keeps it), head an Identity.
  DinoSigLIPViTBackbone holds dino_featurizer + siglip_featurizer, CLIPViTBackbone holds featurizer.
- projector: util/nn_utils.py, `projector` = nn.Sequential of Linear / GELU: Linear i sits at index 2 i.
- llm_backbone: `llm` = the HF {Llama,Phi}ForCausalLM of transformers 4.40 (llm.model.*, llm.lm_head.*); the
  rotary inv_freq / cos / sin caches are non-persistent buffers, not in the state dict. Embedding rows: the
  reference adds <PAD> (Llama "<PAD>", Phi "<|pad|>"), then <BOD> and <EOD>, and resizes each time with
  resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64): rows = ceil((len(tokenizer) + 3) / 64) * 64.
- heads (models/diffusion/models.py, token_size = the LLM's hidden size): ActionEmbedder (x_embedder,
  proprio_embedder) = timm Mlp(action_dim -> H -> H) held as `mlp` (fc1, fc2); TimestepEmbedder: mlp =
  Sequential(Linear(256, H), SiLU, Linear(H, H)) -> mlp.0, mlp.2; FinalLayer: norm_final = timm RmsNorm (weight
  only), mlp = Mlp(H -> H -> action_dim). The z_embedder (LabelEmbedder) holds no parameters and is no saved group.

`reference_manifest(spec)` builds {group: {key: shape}} from the sizes in a ReferenceSpec; HYBRIDVLA_7B and
HYBRIDVLA_2_7B hold the released models' sizes, and reference_manifests/*.json the committed result
(scripts/write_reference_manifests.py writes them; `--verify` checks them against timm / transformers themselves).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

MANIFEST_DIR = Path(__file__).with_name("reference_manifests")
GROUPS = ("vision_backbone", "projector", "llm_backbone", "x_embedder", "t_embedder", "final_layer",
          "proprio_embedder")
VOCAB_MULTIPLE = 64  # resize_token_embeddings(..., pad_to_multiple_of=64)
ADDED_TOKENS = 3  # <PAD>, <BOD>, <EOD>
TIMESTEP_FEATURES = 256  # TimestepEmbedder(frequency_embedding_size=256)

Manifest = dict[str, dict[str, tuple[int, ...]]]


@dataclass(frozen=True)
class TimmViT:
    """The timm VisionTransformer options that decide its state dict."""

    embed_dim: int
    depth: int
    mlp_ratio: float
    patch: int
    image_size: int
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False
    pre_norm: bool = False
    layer_scale: bool = False  # init_values set: blocks.N.ls1/ls2.gamma
    map_head: bool = False  # global_pool "map": attn_pool.*

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)  # timm: hidden_features=int(dim * mlp_ratio)


@dataclass(frozen=True)
class ReferenceSpec:
    name: str
    towers: tuple[tuple[str, TimmViT], ...]  # (attribute in the vision backbone, its timm ViT)
    projector: tuple[int, ...]  # widths of the projector's Linear layers, in -> ... -> out
    llm_family: str  # "llama" | "phi"
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tokenizer_len: int  # len(tokenizer) of the base LLM, before the reference adds its 3 tokens
    action_dim: int = 7

    @property
    def vocab_rows(self) -> int:
        return math.ceil((self.tokenizer_len + ADDED_TOKENS) / VOCAB_MULTIPLE) * VOCAB_MULTIPLE

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["towers"] = [[name, dataclasses.asdict(vit)] for name, vit in self.towers]
        data["projector"] = list(self.projector)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ReferenceSpec":
        data = dict(data)
        data["towers"] = tuple((name, TimmViT(**vit)) for name, vit in data["towers"])
        data["projector"] = tuple(data["projector"])
        return cls(**data)


# timm 0.9.10 model definitions (vision_transformer.py), built by the reference with img_size=224.
DINOV2_L14_REG4 = TimmViT(embed_dim=1024, depth=24, mlp_ratio=4.0, patch=14, image_size=224, reg_tokens=4,
                          no_embed_class=True, layer_scale=True)  # vit_large_patch14_reg4_dinov2
SIGLIP_SO400M_14 = TimmViT(embed_dim=1152, depth=27, mlp_ratio=3.7362, patch=14, image_size=224, class_token=False,
                           map_head=True)  # vit_so400m_patch14_siglip_224
CLIP_L14 = TimmViT(embed_dim=1024, depth=24, mlp_ratio=4.0, patch=14, image_size=224,
                   pre_norm=True)  # vit_large_patch14_clip_224

# Llama-2-7b-hf: hidden 4096, 32 layers, 32 heads (no GQA), intermediate 11008, tokenizer 32000 tokens.
HYBRIDVLA_7B = ReferenceSpec(
    name="hybridvla-7b", towers=(("dino_featurizer", DINOV2_L14_REG4), ("siglip_featurizer", SIGLIP_SO400M_14)),
    projector=(1024 + 1152, 4 * (1024 + 1152), 4096, 4096), llm_family="llama", hidden=4096, layers=32,
    intermediate=11008, heads=32, kv_heads=32, tokenizer_len=32000)
# microsoft/phi-2: hidden 2560, 32 layers, 32 heads, intermediate 10240; tokenizer vocab_size 50257 + 38 added = 50295.
HYBRIDVLA_2_7B = ReferenceSpec(
    name="hybridvla-2.7b", towers=(("featurizer", CLIP_L14),), projector=(1024, 2560, 2560), llm_family="phi",
    hidden=2560, layers=32, intermediate=10240, heads=32, kv_heads=32, tokenizer_len=50295)
RELEASED = {spec.name: spec for spec in (HYBRIDVLA_7B, HYBRIDVLA_2_7B)}


def timm_vit_keys(vit: TimmViT) -> dict[str, tuple[int, ...]]:
    """timm VisionTransformer(num_classes=0) state dict, in timm's order."""
    d, hidden = vit.embed_dim, vit.mlp_hidden
    grid = (vit.image_size // vit.patch) ** 2
    prefix = int(vit.class_token) + vit.reg_tokens
    out: dict[str, tuple[int, ...]] = {}

    def linear(name: str, out_dim: int, in_dim: int) -> None:
        out[f"{name}.weight"], out[f"{name}.bias"] = (out_dim, in_dim), (out_dim,)

    def norm(name: str) -> None:
        out[f"{name}.weight"], out[f"{name}.bias"] = (d,), (d,)

    if vit.class_token:
        out["cls_token"] = (1, 1, d)
    if vit.reg_tokens:
        out["reg_token"] = (1, vit.reg_tokens, d)
    out["pos_embed"] = (1, grid if vit.no_embed_class else grid + prefix, d)
    out["patch_embed.proj.weight"] = (d, 3, vit.patch, vit.patch)
    if not vit.pre_norm:  # PatchEmbed(bias=not pre_norm)
        out["patch_embed.proj.bias"] = (d,)
    if vit.pre_norm:
        norm("norm_pre")
    for i in range(vit.depth):
        block = f"blocks.{i}"
        norm(f"{block}.norm1")
        linear(f"{block}.attn.qkv", 3 * d, d)  # qkv_bias=True
        linear(f"{block}.attn.proj", d, d)
        if vit.layer_scale:
            out[f"{block}.ls1.gamma"] = (d,)
        norm(f"{block}.norm2")
        linear(f"{block}.mlp.fc1", hidden, d)
        linear(f"{block}.mlp.fc2", d, hidden)
        if vit.layer_scale:
            out[f"{block}.ls2.gamma"] = (d,)
    norm("norm")
    if vit.map_head:  # AttentionPoolLatent(embed_dim, mlp_ratio=mlp_ratio, latent_len=1)
        out["attn_pool.latent"] = (1, 1, d)
        linear("attn_pool.q", d, d)
        linear("attn_pool.kv", 2 * d, d)
        linear("attn_pool.proj", d, d)
        norm("attn_pool.norm")
        linear("attn_pool.mlp.fc1", hidden, d)
        linear("attn_pool.mlp.fc2", d, hidden)
    return out


def llm_keys(spec: ReferenceSpec) -> dict[str, tuple[int, ...]]:
    """The HF causal LM's state dict (transformers 4.40 names) under the backbone's `llm.` attribute."""
    h, inter, rows = spec.hidden, spec.intermediate, spec.vocab_rows
    kv = spec.kv_heads * (h // spec.heads)
    out: dict[str, tuple[int, ...]] = {"llm.model.embed_tokens.weight": (rows, h)}
    for i in range(spec.layers):
        layer = f"llm.model.layers.{i}"
        if spec.llm_family == "llama":  # no biases (attention_bias False, mlp_bias absent in 4.40)
            for name, shape in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (kv, h)),
                                ("self_attn.v_proj", (kv, h)), ("self_attn.o_proj", (h, h)),
                                ("mlp.gate_proj", (inter, h)), ("mlp.up_proj", (inter, h)),
                                ("mlp.down_proj", (h, inter))):
                out[f"{layer}.{name}.weight"] = shape
            out[f"{layer}.input_layernorm.weight"] = (h,)
            out[f"{layer}.post_attention_layernorm.weight"] = (h,)
        elif spec.llm_family == "phi":  # biases everywhere, one LayerNorm per (parallel) block
            for name, shape in (("self_attn.q_proj", (h, h)), ("self_attn.k_proj", (kv, h)),
                                ("self_attn.v_proj", (kv, h)), ("self_attn.dense", (h, h)),
                                ("mlp.fc1", (inter, h)), ("mlp.fc2", (h, inter))):
                out[f"{layer}.{name}.weight"], out[f"{layer}.{name}.bias"] = shape, shape[:1]
            out[f"{layer}.input_layernorm.weight"], out[f"{layer}.input_layernorm.bias"] = (h,), (h,)
        else:
            raise ValueError(f"no reference LLM backbone for family {spec.llm_family!r}")
    if spec.llm_family == "llama":
        out["llm.model.norm.weight"] = (h,)
        out["llm.lm_head.weight"] = (rows, h)
    else:
        out["llm.model.final_layernorm.weight"], out["llm.model.final_layernorm.bias"] = (h,), (h,)
        out["llm.lm_head.weight"], out["llm.lm_head.bias"] = (rows, h), (rows,)
    return out


def _mlp(in_dim: int, hidden: int, out_dim: int, prefix: str = "mlp") -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.fc1.weight": (hidden, in_dim), f"{prefix}.fc1.bias": (hidden,),
            f"{prefix}.fc2.weight": (out_dim, hidden), f"{prefix}.fc2.bias": (out_dim,)}


def reference_manifest(spec: ReferenceSpec) -> Manifest:
    """{group: {key: shape}} of the reference checkpoint with `spec`'s sizes."""
    vision: dict[str, tuple[int, ...]] = {}
    for tower, vit in spec.towers:
        vision.update({f"{tower}.{key}": shape for key, shape in timm_vit_keys(vit).items()})
    projector: dict[str, tuple[int, ...]] = {}
    for i, (in_dim, out_dim) in enumerate(zip(spec.projector, spec.projector[1:])):
        projector[f"projector.{2 * i}.weight"], projector[f"projector.{2 * i}.bias"] = (out_dim, in_dim), (out_dim,)
    h, a = spec.hidden, spec.action_dim
    return {
        "vision_backbone": vision,
        "projector": projector,
        "llm_backbone": llm_keys(spec),
        "x_embedder": _mlp(a, h, h),
        "t_embedder": {"mlp.0.weight": (h, TIMESTEP_FEATURES), "mlp.0.bias": (h,), "mlp.2.weight": (h, h),
                       "mlp.2.bias": (h,)},
        "final_layer": {"norm_final.weight": (h,), **_mlp(h, h, a)},
        "proprio_embedder": _mlp(a, h, h),
    }


def manifest_text(spec: ReferenceSpec) -> str:
    """The committed JSON: the spec, then one line per key (diff-friendly)."""
    lines = ["{", f'  "spec": {json.dumps(spec.to_dict())},', '  "groups": {']
    manifest = reference_manifest(spec)
    for g, group in enumerate(GROUPS):
        lines.append(f'    "{group}": {{')
        items = list(manifest[group].items())
        for k, (key, shape) in enumerate(items):
            lines.append(f'      "{key}": {json.dumps(list(shape))}' + ("," if k < len(items) - 1 else ""))
        lines.append("    }" + ("," if g < len(GROUPS) - 1 else ""))
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def manifest_path(name: str) -> Path:
    return MANIFEST_DIR / f"{name}.json"


def load_manifest(name: str) -> tuple[ReferenceSpec, Manifest]:
    """The committed manifest `name` (e.g. "hybridvla-7b"): its spec and {group: {key: shape}}."""
    data = json.loads(manifest_path(name).read_text())
    groups = {group: {key: tuple(shape) for key, shape in keys.items()} for group, keys in data["groups"].items()}
    return ReferenceSpec.from_dict(data["spec"]), groups


def random_reference_payload(manifest: Manifest, seed: int = 0, dtype=None) -> dict:
    """{"model": {group: {key: random tensor}}} with the manifest's names and shapes (bf16 by default, as the
    reference's checkpoints of bf16 training), for tests and dry runs."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    dtype = torch.bfloat16 if dtype is None else dtype
    return {"model": {group: {key: (torch.randn(shape, generator=generator) * 0.05).to(dtype)
                              for key, shape in keys.items()} for group, keys in manifest.items()}}
