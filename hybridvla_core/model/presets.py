"""Named model configs: tiny ones for tests and the simulated lab, and the reference 7B shapes."""
from __future__ import annotations

from hybridvla_core.model.config import ModelConfig
from hybridvla_core.model.reference_manifest import ReferenceSpec, TimmViT
from hybridvla_core.model.text_tokenizer import BYTE_VOCAB


def tiny_llama(hidden: int = 64, layers: int = 2, heads: int = 4, vocab: int = 515) -> dict:
    return {"vocab_size": vocab, "hidden_size": hidden, "intermediate_size": 2 * hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": heads, "max_position_embeddings": 2048}


def tiny_config(action_dim: int = 7, chunk: int = 1, views=("front", "wrist"), image_size: int = 32,
                ar_conditioning: str = "denoised", family: str = "llama", hidden: int = 64, layers: int = 2,
                repeated_samples: int = 2, wrist_tokens: int | None = 4) -> ModelConfig:
    """A model of a few hundred thousand parameters with the byte tokenizer; views named "wrist*" get
    `wrist_tokens` tokens."""
    hf_config = tiny_llama(hidden, layers)
    if family == "phi":
        hf_config = {**hf_config, "partial_rotary_factor": 0.5}
    return ModelConfig.from_dict({
        "llm": {"family": family, "hf_config": hf_config},
        "vision": {"kind": "small", "image_size": image_size,
                   "small": {"width": 32, "depth": 1, "heads": 2, "patch": 8}},
        "views": [{"name": v, "tokens": wrist_tokens if v.startswith("wrist") else None} for v in views],
        "action_dim": action_dim, "chunk": chunk, "ar_conditioning": ar_conditioning,
        "diffusion": {"repeated_samples": repeated_samples},
    })


LLAMA2_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2}


PHI2 = {"vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 2048,
        "partial_rotary_factor": 0.4, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new", "bos_token_id": 50256,
        "eos_token_id": 50256}


def reference_2_7b_config(views=("front",)) -> ModelConfig:
    """Phi-2 + CLIP ViT-L/14 at 224 px (the reference's 2.7B shapes); build it with
    text_tokenizer.reference_shaped_tokenizer("phi-2") or a Phi-2 tokenizer directory."""
    return ModelConfig.from_dict({
        "llm": {"family": "phi", "hf_config": dict(PHI2)},
        "vision": {"kind": "clip", "image_size": 224},
        "views": [{"name": v} for v in views], "action_dim": 7,
    })


def reference_7b_config(views=("front",)) -> ModelConfig:
    """Llama-2-7B + DINOv2-L/14-reg4 + SigLIP-so400m/14 at 224 px (hidden sizes as the reference); build it with
    text_tokenizer.reference_shaped_tokenizer("llama-2") or a Llama-2 tokenizer directory."""
    return ModelConfig.from_dict({
        "llm": {"family": "llama", "hf_config": dict(LLAMA2_7B)},
        "vision": {"kind": "dinov2_siglip", "image_size": 224},
        "views": [{"name": v} for v in views], "action_dim": 7,
    })


# A tiny reference checkpoint: the released models' structure (timm towers with the reference's options, the LLM
# family, projector, heads) at a few hundred thousand parameters, and this package's model config for it.
TINY_WIDTH, TINY_HIDDEN, TINY_IMAGE = 32, 64, 42  # towers 32 wide, a 64-wide LLM, a 3x3 patch grid (patch 14)
_TINY_TOWERS = {  # DINOv2-reg4: no class position, layer scale; SigLIP: no class token, MAP head; CLIP: pre-norm
    "dino": TimmViT(embed_dim=TINY_WIDTH, depth=2, mlp_ratio=4.0, patch=14, image_size=TINY_IMAGE, reg_tokens=4,
                    no_embed_class=True, layer_scale=True),
    "siglip": TimmViT(embed_dim=TINY_WIDTH, depth=2, mlp_ratio=2.0, patch=14, image_size=TINY_IMAGE,
                      class_token=False, map_head=True),
    "clip": TimmViT(embed_dim=TINY_WIDTH, depth=2, mlp_ratio=4.0, patch=14, image_size=TINY_IMAGE, pre_norm=True),
}
TINY_REFERENCE = ("7b-like", "2.7b-like")


def tiny_reference(which: str, views=("front",)) -> tuple[ReferenceSpec, dict]:
    """(the reference-layout spec for reference_manifest, this package's model config as a dict) of a tiny
    7B-like (Llama + DINOv2/SigLIP) or 2.7B-like (Phi + CLIP) model; the LLM is configured inline and uses the
    tiny byte tokenizer (llm.tokenizer_path None), so no file is needed."""
    llm = dict(hidden=TINY_HIDDEN, layers=2, intermediate=2 * TINY_HIDDEN, heads=4, kv_heads=4,
               tokenizer_len=BYTE_VOCAB)  # the byte tokenizer's length before <PAD>/<BOD>/<EOD> are added
    hf = tiny_llama(TINY_HIDDEN, 2)
    tower = {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": TINY_WIDTH}
    if which == "7b-like":
        spec = ReferenceSpec(name="tiny-7b", towers=(("dino_featurizer", _TINY_TOWERS["dino"]),
                                                     ("siglip_featurizer", _TINY_TOWERS["siglip"])),
                             projector=(2 * TINY_WIDTH, 8 * TINY_WIDTH, TINY_HIDDEN, TINY_HIDDEN), llm_family="llama",
                             **llm)
        config = {"llm": {"family": "llama", "hf_config": hf},
                  "vision": {"kind": "dinov2_siglip", "image_size": TINY_IMAGE, "hf_configs": {
                      "dinov2": {**tower, "mlp_ratio": 4}, "siglip": {**tower, "intermediate_size": 2 * TINY_WIDTH}}}}
    elif which == "2.7b-like":
        spec = ReferenceSpec(name="tiny-2.7b", towers=(("featurizer", _TINY_TOWERS["clip"]),),
                             projector=(TINY_WIDTH, TINY_HIDDEN, TINY_HIDDEN), llm_family="phi", **llm)
        config = {"llm": {"family": "phi", "hf_config": {**hf, "partial_rotary_factor": 0.4}},
                  "vision": {"kind": "clip", "image_size": TINY_IMAGE,
                             "hf_configs": {"clip": {**tower, "intermediate_size": 4 * TINY_WIDTH}}}}
    else:
        raise ValueError(f"tiny reference model must be one of {TINY_REFERENCE}, got {which!r}")
    config.update({"views": list(views), "action_dim": 7, "unnorm_key": "rlbench"})
    return spec, config
