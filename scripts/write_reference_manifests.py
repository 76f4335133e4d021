#!/usr/bin/env python3
"""Write (or check) hybridvla_core/model/reference_manifests/*.json: the key names and shapes of the released
HybridVLA checkpoints, from hybridvla_core.model.reference_manifest.

    python scripts/write_reference_manifests.py            # (re)write the JSON files
    python scripts/write_reference_manifests.py --check    # exit 1 when a committed file differs from the generator
    python scripts/write_reference_manifests.py --verify --reference-repo DIR
        # build the reference's own modules and compare their state dicts with the manifests: needs the reference's
        # libraries importable (timm==0.9.10, transformers==4.40.1; torchvision may be a stub, the ViTs never call
        # it) and a checkout of PKU-HMI-Lab/Hybrid-VLA at DIR (its projector and diffusion heads are imported from
        # there). The ViTs are built on the CPU (about 5 GB), the LLMs on the meta device.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hybridvla_core.model.reference_manifest import (  # noqa: E402
    RELEASED, ReferenceSpec, manifest_path, manifest_text, reference_manifest)

TIMM_NAMES = {"dino_featurizer": ("vit_large_patch14_reg4_dinov2", {}),
              "siglip_featurizer": ("vit_so400m_patch14_siglip_224", {}),
              "featurizer": ("vit_large_patch14_clip_224", {"act_layer": "quick_gelu"})}  # clip_vit.py's override


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _shapes(module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def reference_state_shapes(spec: ReferenceSpec, repo: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """{group: {key: shape}} of the reference's own modules built with `spec`'s sizes."""
    import timm
    import torch
    import transformers

    # The reference's util/__init__ pulls in its data pipeline; the two files needed here stand alone.
    util = types.ModuleType("util")
    diffusion_utils = _load_file("util.diffusion_utils", repo / "util" / "diffusion_utils.py")
    util.discretized_gaussian_log_likelihood = diffusion_utils.discretized_gaussian_log_likelihood
    util.normal_kl = diffusion_utils.normal_kl
    sys.modules["util"] = util
    nn_utils = _load_file("util.nn_utils", repo / "util" / "nn_utils.py")
    heads = _load_file("reference_diffusion_models", repo / "models" / "diffusion" / "models.py")

    vision = {}
    for tower, vit in spec.towers:
        name, extra = TIMM_NAMES[tower]
        model = timm.create_model(name, pretrained=False, num_classes=0, img_size=vit.image_size, **extra)
        vision.update({f"{tower}.{k}": v for k, v in _shapes(model).items()})
        del model

    fused = len(spec.projector) == 4
    projector_cls = nn_utils.FusedMLPProjector if fused else nn_utils.MLPProjector
    with torch.device("meta"):
        projector = projector_cls(spec.projector[0], spec.projector[-1])
        if spec.llm_family == "llama":
            config = transformers.LlamaConfig(hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                                              num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                                              num_key_value_heads=spec.kv_heads, vocab_size=32000)
            llm = transformers.LlamaForCausalLM(config)
        else:
            config = transformers.PhiConfig(hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                                            num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                                            partial_rotary_factor=0.4, vocab_size=51200)
            llm = transformers.PhiForCausalLM(config)
        # As llama2.py / phi.py and train.py: + pad token, resize; + <BOD> <EOD>, resize (multiples of 64).
        llm.resize_token_embeddings(spec.tokenizer_len + 1, pad_to_multiple_of=64)
        llm.resize_token_embeddings(spec.tokenizer_len + 3, pad_to_multiple_of=64)
        backbone = torch.nn.Module()
        backbone.llm = llm
        groups = {
            "vision_backbone": vision,
            "projector": _shapes(projector),
            "llm_backbone": _shapes(backbone),
            "x_embedder": _shapes(heads.ActionEmbedder(spec.action_dim, spec.hidden)),
            "t_embedder": _shapes(heads.TimestepEmbedder(spec.hidden)),
            "final_layer": _shapes(heads.FinalLayer(spec.hidden, spec.action_dim)),
            "proprio_embedder": _shapes(heads.ActionEmbedder(spec.action_dim, spec.hidden)),
        }
    return groups


def verify(spec: ReferenceSpec, repo: Path) -> bool:
    actual, expected = reference_state_shapes(spec, repo), reference_manifest(spec)
    same = True
    for group, keys in expected.items():
        got = actual[group]
        missing, extra = [k for k in keys if k not in got], [k for k in got if k not in keys]
        wrong = [f"{k} {got[k]} != {keys[k]}" for k in keys if k in got and got[k] != keys[k]]
        order = list(got) == list(keys)
        print(f"{spec.name} {group}: {len(keys)} keys, missing {missing[:3]}, extra {extra[:3]}, "
              f"shape mismatches {wrong[:3]}, same order {order}")
        same &= not (missing or extra or wrong)
    return same


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare the committed files with the generator")
    parser.add_argument("--verify", action="store_true", help="compare with the reference's own modules")
    parser.add_argument("--reference-repo", type=Path, help="a PKU-HMI-Lab/Hybrid-VLA checkout (for --verify)")
    args = parser.parse_args(argv)
    if args.verify:
        if args.reference_repo is None:
            parser.error("--verify needs --reference-repo")
        import timm
        import transformers
        print(f"timm {timm.__version__}, transformers {transformers.__version__}")
        return 0 if all([verify(spec, args.reference_repo) for spec in RELEASED.values()]) else 1
    status = 0
    for name, spec in RELEASED.items():
        path, text = manifest_path(name), manifest_text(spec)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                print(f"{path}: differs from the generator; run {Path(__file__).name}")
                status = 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path} ({sum(len(k) for k in reference_manifest(spec).values())} keys)")
    return status


if __name__ == "__main__":
    sys.exit(main())
