"""Named model configs: tiny ones for tests and the simulated lab, and the reference 7B shapes."""
from __future__ import annotations

from hybridvla_core.model.config import ModelConfig


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


def reference_7b_config(views=("front",)) -> ModelConfig:
    """Llama-2-7B + DINOv2-L/14-reg4 + SigLIP-so400m/14 at 224 px (hidden sizes as the reference). Needs a Llama
    tokenizer directory (llm.tokenizer_path) to build with the right vocabulary; see build_reference_shapes."""
    return ModelConfig.from_dict({
        "llm": {"family": "llama", "hf_config": dict(LLAMA2_7B)},
        "vision": {"kind": "dinov2_siglip", "image_size": 224},
        "views": [{"name": v} for v in views], "action_dim": 7,
    })
