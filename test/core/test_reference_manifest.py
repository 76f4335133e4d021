"""The released checkpoints' key names and shapes (reference_manifests/*.json) against published sizes and the
reference code, and against this package's full-size models built on the meta device (no memory, no download):
every manifest key maps through the importer's rename table onto a parameter of the same shape, the model's
parameters map back onto the manifest, and nothing is left over on either side."""
import pytest
import torch

from hybridvla_core.model.config import ModelConfig
from hybridvla_core.model.hybridvla import HybridVLA
from hybridvla_core.model.importer import (expected_reference_shapes, reference_import_config,
                                           reference_to_model_state)
from hybridvla_core.model.presets import reference_7b_config
from hybridvla_core.model.reference_manifest import RELEASED, load_manifest, manifest_path, manifest_text
from hybridvla_core.model.text_tokenizer import reference_shaped_tokenizer

# microsoft/phi-2 config.json (transformers PhiConfig).
PHI2 = {"vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
        "num_attention_heads": 32, "partial_rotary_factor": 0.4, "layer_norm_eps": 1e-5,
        "max_position_embeddings": 2048}


def phi2_clip_config() -> ModelConfig:
    return ModelConfig.from_dict({"llm": {"family": "phi", "hf_config": dict(PHI2)},
                                  "vision": {"kind": "clip", "image_size": 224}, "views": ["front"], "action_dim": 7})


MODELS = {"hybridvla-7b": (reference_7b_config, "llama-2"), "hybridvla-2.7b": (phi2_clip_config, "phi-2")}


def count(keys: dict) -> int:
    total = 0
    for shape in keys.values():
        n = 1
        for size in shape:
            n *= size
        total += n
    return total


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_committed_manifest_is_what_the_generator_writes(name):
    assert manifest_path(name).read_text() == manifest_text(RELEASED[name]), \
        "run scripts/write_reference_manifests.py"


def test_llm_groups_match_the_published_model_sizes():
    _, llama = load_manifest("hybridvla-7b")
    _, phi = load_manifest("hybridvla-2.7b")
    # Llama-2-7B: 6,738,415,616 parameters with 32000 rows; the reference pads <PAD> <BOD> <EOD> to 32064 rows.
    assert llama["llm_backbone"]["llm.model.embed_tokens.weight"] == (32064, 4096)
    assert count(llama["llm_backbone"]) == 6_738_415_616 + 2 * 64 * 4096
    # Phi-2: 2,779,683,840 parameters with 51200 rows; resize_token_embeddings(50298, pad_to_multiple_of=64)
    # shrinks embedding, head and head bias to 50304 rows.
    assert phi["llm_backbone"]["llm.lm_head.bias"] == (50304,)
    assert count(phi["llm_backbone"]) == 2_779_683_840 - (51200 - 50304) * (2 * 2560 + 1)
    assert "llm.model.final_layernorm.bias" in phi["llm_backbone"]
    assert not any("rotary" in key or "inv_freq" in key for m in (llama, phi) for key in m["llm_backbone"])


def test_vision_projector_and_heads_as_the_reference_code_names_them():
    _, seven = load_manifest("hybridvla-7b")
    _, small = load_manifest("hybridvla-2.7b")
    vision = seven["vision_backbone"]
    # timm 0.9.10 at img_size=224: DINOv2-reg4 holds 256 patch positions (no_embed_class), a class token and 4
    # registers, layer scale; SigLIP has no class token and keeps its attention-pool head with num_classes=0.
    assert vision["dino_featurizer.pos_embed"] == (1, 256, 1024)
    assert vision["dino_featurizer.reg_token"] == (1, 4, 1024) and vision["dino_featurizer.cls_token"] == (1, 1, 1024)
    assert vision["dino_featurizer.blocks.23.ls2.gamma"] == (1024,)
    assert vision["siglip_featurizer.pos_embed"] == (1, 256, 1152) and "siglip_featurizer.cls_token" not in vision
    assert vision["siglip_featurizer.blocks.26.mlp.fc1.weight"] == (4304, 1152)
    assert vision["siglip_featurizer.attn_pool.kv.weight"] == (2304, 1152)
    assert not any(k.endswith(("fc_norm.weight", "norm_pre.weight", "head.weight")) for k in vision)
    clip = small["vision_backbone"]
    # CLIP (pre_norm): class position included, no patch-embedding bias, norm_pre present.
    assert clip["featurizer.pos_embed"] == (1, 257, 1024) and "featurizer.patch_embed.proj.bias" not in clip
    assert "featurizer.norm_pre.weight" in clip and "featurizer.blocks.23.ls1.gamma" not in clip
    # The facts' projector widths: fused 2176 -> 8704 -> 4096 -> 4096; gelu-mlp 1024 -> 2560 -> 2560.
    fused = [seven["projector"][f"projector.{i}.weight"] for i in (0, 2, 4)]
    assert fused == [(8704, 2176), (4096, 8704), (4096, 4096)]
    assert [small["projector"][f"projector.{i}.weight"] for i in (0, 2)] == [(2560, 1024), (2560, 2560)]
    # The head keys the facts list (timm Mlp as `mlp`, Sequential t_embedder, RMSNorm weight only).
    mlp = {"mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"}
    for manifest, hidden in ((seven, 4096), (small, 2560)):
        assert set(manifest["x_embedder"]) == set(manifest["proprio_embedder"]) == mlp
        assert set(manifest["t_embedder"]) == {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"}
        assert set(manifest["final_layer"]) == {"norm_final.weight"} | mlp
        assert manifest["x_embedder"]["mlp.fc1.weight"] == (hidden, 7)
        assert manifest["t_embedder"]["mlp.0.weight"] == (hidden, 256)
        assert manifest["final_layer"]["mlp.fc2.weight"] == (7, hidden)
        assert not any(group.startswith("z_embedder") for group in manifest)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_manifest_maps_onto_the_full_size_model_both_ways(name):
    make_config, tokenizer = MODELS[name]
    _, manifest = load_manifest(name)
    flat = {f"{group}.{key}": torch.empty(shape, device="meta") for group, keys in manifest.items()
            for key, shape in keys.items()}
    config = reference_import_config(make_config(), flat)  # what an import of this file builds
    with torch.device("meta"):
        model = HybridVLA(config, reference_shaped_tokenizer(tokenizer))
    ours = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    imported = {key: tuple(value.shape) for key, value in reference_to_model_state(flat).items()}
    assert sorted(set(imported) - set(ours)) == []  # every manifest key lands on a parameter
    assert sorted(set(ours) - set(imported)) == []  # every parameter is filled from the file
    assert [k for k in ours if ours[k] != imported[k]] == []
    exported = expected_reference_shapes(model)
    assert list(exported) and exported == {key: tuple(value.shape) for key, value in flat.items()}
