"""Reference checkpoints in and out: a .pt with the reference's key names (made from the manifest generator at tiny
sizes with random tensors, never from this package's state_dict) imports bit for bit and exports back bit for bit;
bad input is refused with one line and leaves no output; the reference-size build on meta."""
import json
import os
import resource

import numpy as np
import pytest
import torch
import yaml

from hybridvla_core.actions import DatasetStatistics, save_dataset_statistics
from hybridvla_core.cli import main
from hybridvla_core.model import Policy
from hybridvla_core.model.importer import GROUPS, read_reference_state
from hybridvla_core.model.presets import TINY_HIDDEN, TINY_REFERENCE, TINY_WIDTH, reference_7b_config, tiny_reference
from hybridvla_core.model.reference_manifest import random_reference_payload, reference_manifest

WIDTH, HIDDEN = TINY_WIDTH, TINY_HIDDEN


def tiny_model_config(which: str) -> dict:
    return tiny_reference(which)[1]


SPECS = {which: tiny_reference(which)[0] for which in TINY_REFERENCE}


@pytest.fixture
def files(tmp_path):
    """Writes the inputs of an import: the reference .pt (optionally edited), the model config, the statistics."""
    samples = np.random.default_rng(0).normal(size=(50, 7))
    save_dataset_statistics(tmp_path / "dataset_statistics.json",
                            {"rlbench": DatasetStatistics.from_samples(samples, samples, 5)})

    def write(which="7b-like", edit=None, config_format="yaml", config_edit=None):
        payload = random_reference_payload(reference_manifest(SPECS[which]), seed=1)
        if edit is not None:
            edit(payload["model"])
        torch.save(payload, tmp_path / "step-000100-epoch-01-loss=0.1000.pt")
        config = tiny_model_config(which)
        if config_edit is not None:
            config_edit(config)
        config_path = tmp_path / f"model.{config_format}"
        config_path.write_text(json.dumps(config) if config_format == "json" else yaml.safe_dump(config))
        return payload["model"], ["import-checkpoint", str(tmp_path / "step-000100-epoch-01-loss=0.1000.pt"),
                                  "--model-config", str(config_path),
                                  "--statistics", str(tmp_path / "dataset_statistics.json"),
                                  "--output", str(tmp_path / "imported")]
    return write


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The raw bits, so that -0.0 / 0.0 and every NaN payload count."""
    return tensor.contiguous().view({torch.bfloat16: torch.int16, torch.float32: torch.int32}[tensor.dtype])


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


@pytest.mark.parametrize("which", ["7b-like", "2.7b-like"])
def test_reference_pt_imports_bit_exact_and_exports_back_bit_for_bit(files, tmp_path, capsys, which):
    from safetensors.torch import load_file

    groups, argv = files(which)
    assert main(argv) == 0, capsys.readouterr().err
    saved = load_file(str(tmp_path / "imported" / "model.safetensors"))
    # The groups that map by name hold the file's values in the file's dtype (bf16 here), bit for bit.
    for group in GROUPS[1:]:
        for key, value in groups[group].items():
            assert same_bits(saved[f"{group}.{key}"], value), f"{group}.{key}"
    # timm's fused qkv = [q; k; v] rows (timm Attention: qkv.reshape(B, N, 3, heads, head_dim)).
    tower, layer, attention = (("dino_featurizer", "encoder.layer", "attention") if which == "7b-like"
                               else ("featurizer", "encoder.layers", "self_attn"))
    qkv = groups["vision_backbone"][f"{tower}.blocks.1.attn.qkv.weight"]
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        ours = saved[f"vision_backbone.{tower}.{layer}.1.{attention}.{name}.weight"]
        assert same_bits(ours, qkv[i * WIDTH:(i + 1) * WIDTH])

    config = json.loads((tmp_path / "imported" / "config.json").read_text())
    assert config["token_layout"] == "reference" and config["ar_conditioning"] == "noisy"
    assert config["theta"] == 5.8 / 6  # the reference script's gate: sum of 6 confidences > 5.8
    assert config["vision"]["resize"] == "bicubic" and config["ensemble_gripper"] == "average"
    assert config["need_to_sub"] == 0  # the released README's --need_to_sub 0
    act = {"7b-like": ("siglip", "gelu"), "2.7b-like": ("clip", "quick_gelu")}[which]  # timm so400m / clip_vit.py
    assert config["vision"]["hf_configs"][act[0]]["hidden_act"] == act[1]

    assert main(["export-checkpoint", str(tmp_path / "imported"), "--output", str(tmp_path / "back.pt")]) == 0
    back = torch.load(tmp_path / "back.pt", map_location="cpu", weights_only=True)["model"]
    assert list(back) == list(GROUPS)
    for group in GROUPS:
        assert set(back[group]) == set(groups[group]), group
        for key, value in groups[group].items():
            assert same_bits(back[group][key], value), f"{group}.{key}"

    policy = Policy.from_checkpoint(tmp_path / "imported")
    rng = np.random.default_rng(1)
    result = policy.predict({"images": {"front": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)},
                             "state": np.zeros(7), "instruction": "close the jar"})
    assert np.all(np.isfinite(result.action))


@pytest.mark.parametrize("config_need_to_sub, option, recorded", [(None, None, 0), (7, None, 7), (7, "3", 3)])
def test_need_to_sub_comes_from_the_option_or_the_model_config(files, tmp_path, capsys, config_need_to_sub, option,
                                                                recorded):
    edit = (lambda c: c.update(need_to_sub=config_need_to_sub)) if config_need_to_sub is not None else None
    _, argv = files(config_edit=edit)
    assert main(argv + (["--need-to-sub", option] if option else [])) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "imported" / "config.json").read_text())["need_to_sub"] == recorded


def test_json_model_config_is_read_as_json(files, tmp_path, capsys):
    # YAML 1.1 reads 1e-06 (no dot) as a string; JSON reads a number.
    _, argv = files(config_format="json", config_edit=lambda c: c["llm"]["hf_config"].update(rms_norm_eps=1e-06))
    assert "1e-06" in (tmp_path / "model.json").read_text()
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "imported" / "config.json").read_text())["llm"]["hf_config"]["rms_norm_eps"] == 1e-06


def refused(argv, capsys, tmp_path, *fragments):
    """The CLI exits 2 with one line naming `fragments`, and leaves no output (nor a partial one)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybridvla import-checkpoint: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not (tmp_path / "imported").exists()
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]
    return err


def test_missing_group_is_refused(files, tmp_path, capsys):
    _, argv = files(edit=lambda groups: groups.pop("final_layer"))
    refused(argv, capsys, tmp_path, "missing parameter group(s) ['final_layer']")


def test_missing_head_key_is_refused(files, tmp_path, capsys):
    _, argv = files(edit=lambda groups: groups["final_layer"].pop("mlp.fc2.bias"))
    refused(argv, capsys, tmp_path, "keys do not match the model: 1 missing (final_layer.mlp.fc2.bias)")


def test_extra_head_key_is_refused(files, tmp_path, capsys):
    _, argv = files(edit=lambda groups: groups["x_embedder"].update({"mlp.fc3.weight": torch.zeros(3, 3)}))
    refused(argv, capsys, tmp_path, "1 not in the model (x_embedder.mlp.fc3.weight)")


def test_shape_mismatch_names_the_key_and_both_shapes(files, tmp_path, capsys):
    def six_dim_actions(groups):
        groups["x_embedder"]["mlp.fc1.weight"] = torch.zeros(HIDDEN, 6, dtype=torch.bfloat16)
    _, argv = files(edit=six_dim_actions)
    refused(argv, capsys, tmp_path,
            f"x_embedder.mlp.fc1.weight is ({HIDDEN}, 6) in the file, ({HIDDEN}, 7) in the model")


def test_wrong_llm_family_says_which_family_the_file_holds(files, tmp_path, capsys):
    _, argv = files("2.7b-like", config_edit=lambda c: c.update(llm=tiny_model_config("7b-like")["llm"]))
    refused(argv, capsys, tmp_path, "llm_backbone holds a Phi model", "llm.family 'llama'", "set llm.family: phi")


def test_non_finite_weights_are_refused_naming_the_first(files, tmp_path, capsys):
    def poison(groups):
        groups["projector"]["projector.2.weight"][0, 0] = float("nan")
        groups["final_layer"]["mlp.fc1.bias"][3] = float("inf")
    _, argv = files(edit=poison)
    refused(argv, capsys, tmp_path, "non-finite weights (NaN or Inf) in projector.projector.2.weight")


def test_truncated_pt_is_refused(files, tmp_path, capsys):
    _, argv = files()
    data = (tmp_path / "step-000100-epoch-01-loss=0.1000.pt").read_bytes()
    (tmp_path / "step-000100-epoch-01-loss=0.1000.pt").write_bytes(data[:len(data) // 2])
    refused(argv, capsys, tmp_path, "truncated checkpoint")


def test_random_bytes_pt_is_refused(files, tmp_path, capsys):
    _, argv = files()
    (tmp_path / "step-000100-epoch-01-loss=0.1000.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    refused(argv, capsys, tmp_path, "not a torch checkpoint")


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused(files, tmp_path, capsys):
    marker = tmp_path / "pwned"
    payload = _Payload()
    payload.marker = marker
    torch.save({"model": {"projector": {"projector.0.weight": payload}}}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused") as info:
        read_reference_state(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    _, argv = files()
    argv[1] = str(tmp_path / "evil.pt")
    refused(argv, capsys, tmp_path, "refused, the pickle holds more than tensors")
    assert not marker.exists()  # the payload never ran


def test_a_file_the_system_will_not_map_says_to_add_swap(files, tmp_path, capsys, monkeypatch):
    """The .pt is mapped, not read into memory; Linux refuses a copy-on-write mapping larger than RAM + swap with
    this RuntimeError (torch's wording, as a 28 GiB file gave on a 24 GiB machine)."""
    def refuse(path, **kwargs):
        assert kwargs.get("mmap") is True  # a zip-format .pt (torch.save's) is mapped
        raise RuntimeError(f"unable to mmap 30377276644 bytes from file <{path}>: Cannot allocate memory (12)")
    monkeypatch.setattr(torch, "load", refuse)
    _, argv = files()
    refused(argv, capsys, tmp_path, "RAM + swap", "add swap")


def test_existing_output_is_never_overwritten(files, tmp_path, capsys):
    _, argv = files()
    (tmp_path / "imported").mkdir()
    (tmp_path / "imported" / "notes.txt").write_text("keep me")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists and is not empty; refusing to overwrite it" in err
    assert os.listdir(tmp_path / "imported") == ["notes.txt"]


def test_a_write_that_fails_leaves_nothing(files, tmp_path, capsys, monkeypatch):
    import hybridvla_core.model.importer as importer

    def fail_half_way(model, directory, statistics, weights=None):
        (directory / "config.json").write_text("{}")
        raise OSError("No space left on device")
    monkeypatch.setattr(importer, "save_checkpoint", fail_half_way)
    _, argv = files()
    refused(argv, capsys, tmp_path, "No space left on device")


def test_export_refuses_an_existing_file_and_a_dinov2_class_position(files, tmp_path, capsys):
    from hybridvla_core.model import load_checkpoint, save_checkpoint

    _, argv = files()
    assert main(argv) == 0, capsys.readouterr().err
    (tmp_path / "back.pt").write_bytes(b"x")
    assert main(["export-checkpoint", str(tmp_path / "imported"), "--output", str(tmp_path / "back.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybridvla export-checkpoint: ") and "already exists" in err
    assert (tmp_path / "back.pt").read_bytes() == b"x"

    model, statistics = load_checkpoint(tmp_path / "imported")
    with torch.no_grad():  # timm's no_embed_class DINOv2 has no class position to write this into
        model.vision_backbone.dino_featurizer.embeddings.position_embeddings[0, 0, 0] = 1.0
    save_checkpoint(model, tmp_path / "trained", statistics)
    assert main(["export-checkpoint", str(tmp_path / "trained"), "--output", str(tmp_path / "out.pt")]) == 2
    assert "class-token position is not zero" in capsys.readouterr().err
    assert not (tmp_path / "out.pt").exists()


def test_export_refuses_a_tower_the_reference_does_not_have(tmp_path, capsys):
    from pathlib import Path

    demo = Path(__file__).resolve().parents[2] / "checkpoints" / "sim_fr3_pick_place"  # keypoint tower
    assert main(["export-checkpoint", str(demo), "--output", str(tmp_path / "demo.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vision.kind 'keypoints' has no reference counterpart" in err
    assert not (tmp_path / "demo.pt").exists()


def test_reference_size_builds_on_meta_without_memory():
    from hybridvla_core.model.hybridvla import HybridVLA
    from hybridvla_core.model.text_tokenizer import reference_shaped_tokenizer

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.device("meta"):
        model = HybridVLA(reference_7b_config(), reference_shaped_tokenizer("llama-2"))
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
