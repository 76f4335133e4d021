"""Importing the reference's .pt layout, refusing pickles with code, and the reference-size build on meta."""
import os
import resource

import numpy as np
import pytest
import torch

from hybridvla_core.actions import DatasetStatistics, save_dataset_statistics
from hybridvla_core.model import Policy, build_model
from hybridvla_core.model.importer import GROUPS, import_reference_checkpoint, read_reference_state
from hybridvla_core.model.presets import reference_7b_config, tiny_config


def reference_layout_pt(model, path):
    """What the reference's torch.save({"model": {group: state_dict}}) holds, for our tiny model."""
    groups = {g: {} for g in GROUPS}
    for key, value in model.state_dict().items():
        group, _, rest = key.partition(".")
        groups[group][rest] = value.to(torch.bfloat16)  # the reference trains and saves in bf16
    torch.save({"model": groups}, path)


def test_reference_layout_imports_and_predicts(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    source = build_model(config)
    torch.nn.init.normal_(source.final_layer.mlp[2].weight, std=0.3)
    reference_layout_pt(source, tmp_path / "step-000100-epoch-01-loss=0.1000.pt")
    assert set(read_reference_state(tmp_path / "step-000100-epoch-01-loss=0.1000.pt")) == set(source.state_dict())
    samples = np.random.default_rng(0).normal(size=(50, 7))
    save_dataset_statistics(tmp_path / "dataset_statistics.json", {"rlbench": DatasetStatistics.from_samples(samples, samples, 5)})
    fresh = tiny_config()
    fresh.unnorm_key = "rlbench"
    out = import_reference_checkpoint(tmp_path / "step-000100-epoch-01-loss=0.1000.pt", fresh,
                                      tmp_path / "dataset_statistics.json", tmp_path / "imported")
    policy = Policy.from_checkpoint(out, theta=0.0)
    for key, value in policy.model.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key].to(torch.bfloat16).float(), rtol=0, atol=0)
    rng = np.random.default_rng(1)
    result = policy.predict({"images": {v: rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for v in ("front", "wrist")},
                             "state": samples[0], "instruction": "close the jar"})
    assert np.all(np.isfinite(result.action)) and result.source == "average"


def test_mismatched_reference_keys_are_named(tmp_path):
    model = build_model(tiny_config())
    groups = {g: {} for g in GROUPS}
    for key, value in model.state_dict().items():
        group, _, rest = key.partition(".")
        groups[group][rest.replace("dino_", "timm_") if group == "vision_backbone" else rest] = value
    groups["vision_backbone"]["blocks.0.attn.qkv.weight"] = torch.zeros(3)
    torch.save({"model": groups}, tmp_path / "ref.pt")
    save_dataset_statistics(tmp_path / "stats.json", {"x": DatasetStatistics.from_samples(np.zeros((2, 7)), np.zeros((2, 7)), 1)})
    with pytest.raises(ValueError, match=r"1 unexpected \(e.g. \['vision_backbone.blocks.0.attn.qkv.weight'\]\)"):
        import_reference_checkpoint(tmp_path / "ref.pt", tiny_config(), tmp_path / "stats.json", tmp_path / "out")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    torch.save({"model": {"projector": {"projector.0.weight": payload}}}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused") as info:
        read_reference_state(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    assert not marker.exists()  # the payload never ran


def test_reference_size_builds_on_meta_without_memory():
    from hybridvla_core.model.hybridvla import HybridVLA
    from hybridvla_core.model.text_tokenizer import build_byte_tokenizer

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.device("meta"):
        model = HybridVLA(reference_7b_config(), build_byte_tokenizer(32000))  # Llama-2's vocabulary shape
    grown_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
    assert all(p.is_meta for p in model.parameters())
    assert grown_gib < 1.0  # 7.6 B fp32 parameters would be 28 GiB
    assert model.config.tokens["bod_id"] == 32001 and model.config.tokens["eod_id"] == 32002  # as the reference

    def count(module):
        return sum(p.numel() for p in module.parameters())

    def vit(width, ffn, depth, extra_per_block=0):
        block = 4 * width * width + 4 * width + 2 * width * ffn + ffn + width + 4 * width + extra_per_block
        return depth * block

    # Llama-2-7B (6,738,415,616 published) + 64 new rows (<PAD>, <BOD>, <EOD>, padded to 32064) in embed and head.
    assert count(model.llm_backbone) == 6_738_415_616 + 2 * 64 * 4096
    dino = vit(1024, 4096, 24, extra_per_block=2 * 1024) + (3 * 14 * 14 * 1024 + 1024) + (1 + 1 + 4) * 1024 \
        + 257 * 1024 + 2 * 1024  # blocks with layer scale, patch conv, cls/mask/registers, positions, norm
    siglip = vit(1152, 4304, 27) + (3 * 14 * 14 * 1152 + 1152) + 256 * 1152 + 2 * 1152
    assert count(model.vision_backbone) == dino + siglip
    assert model.vision_backbone.feature_dim == 2176 and model.tokens_per_image == 256
    assert count(model.projector) == (2176 * 8704 + 8704) + (8704 * 4096 + 4096) + (4096 * 4096 + 4096)
    mlp = lambda i, o, h=4096: i * h + h + h * o + o  # noqa: E731
    assert count(model.x_embedder) == count(model.proprio_embedder) == mlp(7, 4096)
    assert count(model.t_embedder) == mlp(256, 4096)
    assert count(model.final_layer) == 4096 + mlp(4096, 7)
