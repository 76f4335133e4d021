"""The reference's timm-layout vision keys converted onto this package's HF towers, checked numerically.

Tiny towers with the reference models' architecture options (DINOv2: 4 registers, no class position, layer scale;
SigLIP: no class token, attention-pool head; CLIP: pre-norm, no patch bias, QuickGELU as the reference builds it)
get random timm-layout weights; after timm_vision_to_hf the HF towers must give the second-to-last layer's patch
features of the timm forward, and hf_vision_to_timm must give the timm weights back bit for bit.
The timm side is timm's VisionTransformer where timm imports; timm needs torchvision, and the torchvision on
PyPI is a CUDA build that does not load against the CPU torch installed here, so these machines check against
`timm_forward` below: the timm ViT forward written out from its architecture (pre-norm blocks, fused qkv, layer
scale, class/register tokens and positions, MAP head, GELU / QuickGELU). Both were run once against timm 1.0.31
(exact GELU for CLIP) and again against timm 0.9.10, the reference's version (QuickGELU for CLIP), with
torchvision stubbed out (timm's ViT forward never calls it): every test here passed, HF towers vs timm's
VisionTransformer max |diff| 0 for the patch features and 5e-7 for the MAP head (fp32).
"""
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridvla_core.actions import DatasetStatistics, save_dataset_statistics
from hybridvla_core.model import Policy, build_model
from hybridvla_core.model.config import VisionConfig
from hybridvla_core.model.importer import (GROUPS, TIMM_HF_CONFIG, hf_vision_to_timm, import_reference_checkpoint,
                                           timm_vision_to_hf)
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.vision import (CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, SIGLIP_MEAN, SIGLIP_STD,
                                         CLIPTower, DinoSigLIPTower)

WIDTH, DEPTH, HEADS, PATCH, IMAGE = 32, 3, 2, 14, 42  # a 3x3 patch grid
GRID = IMAGE // PATCH
# The reference models' options, at tiny width/depth.
SPECS = {
    "dinov2": dict(class_token=True, reg_tokens=4, no_embed_class=True, layer_scale=True, pre_norm=False,
                   patch_bias=True, mlp=4 * WIDTH, eps=1e-6, map_head=False, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   act=None),
    "siglip": dict(class_token=False, reg_tokens=0, no_embed_class=False, layer_scale=False, pre_norm=False,
                   patch_bias=True, mlp=2 * WIDTH, eps=1e-6, map_head=True, mean=SIGLIP_MEAN, std=SIGLIP_STD,
                   act=None),
    # models/backbones/vision/clip_vit.py: override_act_layer="quick_gelu" for the ".openai" CLIP towers.
    "clip": dict(class_token=True, reg_tokens=0, no_embed_class=False, layer_scale=False, pre_norm=True,
                 patch_bias=False, mlp=4 * WIDTH, eps=1e-5, map_head=False, mean=CLIP_MEAN, std=CLIP_STD,
                 act="quick_gelu"),
}
ACTIVATIONS = {None: F.gelu, "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}  # timm's GELU / QuickGELU
HF_TINY = {
    "dinov2": dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, mlp_ratio=4),
    "siglip": dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=2 * WIDTH,
                   **TIMM_HF_CONFIG["siglip"]),
    "clip": dict(hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * WIDTH,
                 **TIMM_HF_CONFIG["clip"]),
}


def real_timm_vit():
    try:
        from timm.models.vision_transformer import VisionTransformer
    except Exception:  # not installed, or its torchvision does not load against this torch
        return None
    return VisionTransformer


def timm_layout_state(kind: str, seed: int) -> dict[str, torch.Tensor]:
    """Random weights under timm's VisionTransformer key names and shapes for `kind`'s options."""
    spec, g = SPECS[kind], torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    def linear(name, out_dim, in_dim):
        state[f"{name}.weight"] = rand(out_dim, in_dim, scale=in_dim ** -0.5)
        state[f"{name}.bias"] = rand(out_dim, scale=0.1)

    def norm(name):
        state[f"{name}.weight"] = 1.0 + rand(WIDTH, scale=0.1)
        state[f"{name}.bias"] = rand(WIDTH, scale=0.1)

    state: dict[str, torch.Tensor] = {}
    prefix = int(spec["class_token"]) + spec["reg_tokens"]
    if spec["class_token"]:
        state["cls_token"] = rand(1, 1, WIDTH, scale=0.5)
    if spec["reg_tokens"]:
        state["reg_token"] = rand(1, spec["reg_tokens"], WIDTH, scale=0.5)
    state["pos_embed"] = rand(1, GRID * GRID + (0 if spec["no_embed_class"] else prefix), WIDTH, scale=0.5)
    state["patch_embed.proj.weight"] = rand(WIDTH, 3, PATCH, PATCH, scale=(3 * PATCH * PATCH) ** -0.5)
    if spec["patch_bias"]:
        state["patch_embed.proj.bias"] = rand(WIDTH, scale=0.1)
    if spec["pre_norm"]:
        norm("norm_pre")
    for i in range(DEPTH):
        block = f"blocks.{i}"
        norm(f"{block}.norm1")
        linear(f"{block}.attn.qkv", 3 * WIDTH, WIDTH)
        linear(f"{block}.attn.proj", WIDTH, WIDTH)
        norm(f"{block}.norm2")
        linear(f"{block}.mlp.fc1", spec["mlp"], WIDTH)
        linear(f"{block}.mlp.fc2", WIDTH, spec["mlp"])
        if spec["layer_scale"]:
            state[f"{block}.ls1.gamma"] = rand(WIDTH, scale=0.5)
            state[f"{block}.ls2.gamma"] = rand(WIDTH, scale=0.5)
    norm("norm")
    if spec["map_head"]:
        state["attn_pool.latent"] = rand(1, 1, WIDTH, scale=0.5)
        linear("attn_pool.q", WIDTH, WIDTH)
        linear("attn_pool.kv", 2 * WIDTH, WIDTH)
        linear("attn_pool.proj", WIDTH, WIDTH)
        norm("attn_pool.norm")
        linear("attn_pool.mlp.fc1", spec["mlp"], WIDTH)
        linear("attn_pool.mlp.fc2", WIDTH, spec["mlp"])
    return state


def _attention(q, k, v):
    # (B, tokens, WIDTH) each -> heads -> softmax(q k^T / sqrt(d)) v -> (B, tokens, WIDTH)
    def heads(x):
        return x.unflatten(-1, (HEADS, WIDTH // HEADS)).transpose(1, 2)

    out = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) * (WIDTH // HEADS) ** -0.5, dim=-1) @ heads(v)
    return out.transpose(1, 2).flatten(2)


def timm_forward(state: dict, kind: str, pixels: torch.Tensor):
    """timm's ViT forward on a timm-layout state: (second-to-last block's patch tokens, MAP-head output or None).
    `pixels` are already normalised as the model expects."""
    spec = SPECS[kind]

    def ln(x, name):
        return F.layer_norm(x, (WIDTH,), state[f"{name}.weight"], state[f"{name}.bias"], spec["eps"])

    def lin(x, name):
        return F.linear(x, state[f"{name}.weight"], state.get(f"{name}.bias"))

    x = F.conv2d(pixels, state["patch_embed.proj.weight"], state.get("patch_embed.proj.bias"), stride=PATCH)
    x = x.flatten(2).transpose(1, 2)
    batch = x.shape[0]
    prefix = [state[n].expand(batch, -1, -1) for n in ("cls_token", "reg_token") if n in state]
    if spec["no_embed_class"]:  # positions for the patches only, prefix tokens get none
        x = torch.cat(prefix + [x + state["pos_embed"]], dim=1)
    else:
        x = torch.cat(prefix + [x], dim=1) + state["pos_embed"]
    if spec["pre_norm"]:
        x = ln(x, "norm_pre")
    outputs = []
    for i in range(DEPTH):
        b = f"blocks.{i}"
        q, k, v = lin(ln(x, f"{b}.norm1"), f"{b}.attn.qkv").chunk(3, dim=-1)
        update = lin(_attention(q, k, v), f"{b}.attn.proj")
        x = x + (update * state[f"{b}.ls1.gamma"] if spec["layer_scale"] else update)
        update = lin(ACTIVATIONS[spec["act"]](lin(ln(x, f"{b}.norm2"), f"{b}.mlp.fc1")), f"{b}.mlp.fc2")
        x = x + (update * state[f"{b}.ls2.gamma"] if spec["layer_scale"] else update)
        outputs.append(x)
    patches = outputs[-2][:, sum(t.shape[1] for t in prefix):]  # the reference drops class/register tokens
    pooled = None
    if spec["map_head"]:
        x = ln(x, "norm")
        latent = state["attn_pool.latent"].expand(batch, -1, -1)
        k, v = lin(x, "attn_pool.kv").chunk(2, dim=-1)
        y = lin(_attention(lin(latent, "attn_pool.q"), k, v), "attn_pool.proj")
        y = y + lin(F.gelu(lin(ln(y, "attn_pool.norm"), "attn_pool.mlp.fc1")), "attn_pool.mlp.fc2")
        pooled = y[:, 0]
    return patches, pooled


def real_timm_forward(state: dict, kind: str, pixels: torch.Tensor):
    """The same with timm's own VisionTransformer, features taken as the reference takes them."""
    spec = SPECS[kind]
    model = real_timm_vit()(
        img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS, mlp_ratio=spec["mlp"] / WIDTH,
        num_classes=0, class_token=spec["class_token"], reg_tokens=spec["reg_tokens"],
        no_embed_class=spec["no_embed_class"], init_values=1.0 if spec["layer_scale"] else None,
        global_pool="map" if spec["map_head"] else "token", pre_norm=spec["pre_norm"],
        norm_layer=partial(torch.nn.LayerNorm, eps=spec["eps"]), act_layer=spec["act"])
    model.load_state_dict(state, strict=True)  # the synthetic state has exactly timm's keys and shapes
    model.eval()
    with torch.no_grad():
        patches = model.get_intermediate_layers(pixels, n=[DEPTH - 2])[0]
        pooled = model(pixels) if spec["map_head"] else None
    return patches, pooled


def normalised(pixels, kind):
    mean = torch.tensor(SPECS[kind]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(SPECS[kind]["std"]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def _forward(implementation):
    if implementation == "timm":
        if real_timm_vit() is None:
            pytest.skip("timm does not import here (its torchvision needs a matching torch build)")
        return real_timm_forward
    return timm_forward


def _max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("implementation", ["reimplementation", "timm"])
def test_dinov2_siglip_tower_matches_timm(implementation):
    forward = _forward(implementation)
    torch.manual_seed(0)
    dino, siglip = timm_layout_state("dinov2", 1), timm_layout_state("siglip", 2)
    with_head = {**HF_TINY["siglip"], "vision_use_head": True}  # to check the attention-pool head's mapping too
    tower = DinoSigLIPTower(IMAGE, {"dinov2": HF_TINY["dinov2"], "siglip": with_head})
    converted = timm_vision_to_hf({**{f"dino_featurizer.{k}": v for k, v in dino.items()},
                                   **{f"siglip_featurizer.{k}": v for k, v in siglip.items()}})
    tower.load_state_dict(converted, strict=True)
    tower.eval()
    pixels = torch.rand(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        ours = tower(pixels)
        pooled = tower.siglip_featurizer(pixel_values=normalised(pixels, "siglip")).pooler_output
        dino_patches, _ = forward(dino, "dinov2", normalised(pixels, "dinov2"))
        siglip_patches, siglip_pooled = forward(siglip, "siglip", normalised(pixels, "siglip"))
    assert ours.shape == (2, GRID * GRID, 2 * WIDTH)
    assert dino_patches.shape == siglip_patches.shape == (2, GRID * GRID, WIDTH)
    reference = torch.cat([dino_patches, siglip_patches], dim=-1)
    assert reference.abs().mean() > 0.1  # features of substance, not near-zero
    print(f"[{implementation}] dinov2+siglip patches max |diff| {_max_diff(ours, reference):.2e}, "
          f"siglip MAP head {_max_diff(pooled, siglip_pooled):.2e}")
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, siglip_pooled, rtol=0, atol=1e-5)


@pytest.mark.parametrize("implementation", ["reimplementation", "timm"])
def test_clip_tower_matches_timm(implementation):
    forward = _forward(implementation)
    clip = timm_layout_state("clip", 3)
    tower = CLIPTower(IMAGE, {"clip": HF_TINY["clip"]})
    tower.load_state_dict(timm_vision_to_hf({f"featurizer.{k}": v for k, v in clip.items()}), strict=True)
    tower.eval()
    pixels = torch.rand(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        ours = tower(pixels)
        reference, _ = forward(clip, "clip", normalised(pixels, "clip"))
    print(f"[{implementation}] clip patches max |diff| {_max_diff(ours, reference):.2e}")
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_conversion_splits_qkv_and_fills_what_timm_lacks():
    dino = timm_layout_state("dinov2", 4)
    out = timm_vision_to_hf({f"dino_featurizer.{k}": v for k, v in dino.items()} | {"projector_like.x": torch.ones(1)})
    layer = "dino_featurizer.encoder.layer.1.attention"
    qkv = dino["blocks.1.attn.qkv.weight"]
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(out[f"{layer}.{name}.weight"], qkv[i * WIDTH:(i + 1) * WIDTH])
    positions = out["dino_featurizer.embeddings.position_embeddings"]
    assert positions.shape == (1, 1 + GRID * GRID, WIDTH) and not positions[:, 0].any()  # no class position
    assert not out["dino_featurizer.embeddings.mask_token"].any()
    assert torch.equal(out["dino_featurizer.encoder.layer.2.layer_scale2.lambda1"], dino["blocks.2.ls2.gamma"])
    assert torch.equal(out["projector_like.x"], torch.ones(1))  # non-timm keys pass through


@pytest.mark.parametrize("kind, tower", [("dinov2", "dino_featurizer"), ("siglip", "siglip_featurizer"),
                                         ("clip", "featurizer")])
def test_rename_table_goes_back_bit_for_bit(kind, tower):
    timm = {f"{tower}.{k}": v.to(torch.bfloat16) for k, v in timm_layout_state(kind, 7).items()}
    back = hf_vision_to_timm(timm_vision_to_hf(timm), (tower,))
    assert set(back) == set(timm)
    for key, value in timm.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key].view(torch.int16), value.view(torch.int16)), key
    hf = timm_vision_to_hf(timm)
    if kind == "dinov2":  # filled on import, dropped on export: no timm counterpart
        assert f"{tower}.embeddings.mask_token" in hf and not any("mask_token" in k for k in back)


def tiny_timm_reference_config():
    config = tiny_config(views=("front",))
    siglip = {k: v for k, v in HF_TINY["siglip"].items() if k != "hidden_act"}  # the import fills it in
    config.vision = VisionConfig(kind="dinov2_siglip", image_size=IMAGE,
                                 hf_configs={"dinov2": dict(HF_TINY["dinov2"]), "siglip": siglip})
    return config


def write_timm_reference_pt(path, extra_vision=None):
    """A reference-layout .pt whose vision_backbone holds timm keys (bf16, as the reference saves)."""
    torch.manual_seed(0)
    source = build_model(tiny_timm_reference_config())
    groups = {g: {} for g in GROUPS}
    for key, value in source.state_dict().items():
        group, _, rest = key.partition(".")
        if group != "vision_backbone":
            groups[group][rest] = value.to(torch.bfloat16)
    timm = {"dino_featurizer": timm_layout_state("dinov2", 5), "siglip_featurizer": timm_layout_state("siglip", 6)}
    for tower, state in timm.items():
        groups["vision_backbone"].update({f"{tower}.{k}": v.to(torch.bfloat16) for k, v in state.items()})
    groups["vision_backbone"].update(extra_vision or {})
    torch.save({"model": groups}, path)
    return {tower: {k: v.to(torch.bfloat16).float() for k, v in state.items()} for tower, state in timm.items()}


def _statistics(tmp_path):
    samples = np.random.default_rng(0).normal(size=(50, 7))
    save_dataset_statistics(tmp_path / "dataset_statistics.json",
                            {"rlbench": DatasetStatistics.from_samples(samples, samples, 5)})
    return tmp_path / "dataset_statistics.json", samples


def test_reference_pt_with_timm_vision_keys_imports_and_predicts(tmp_path):
    timm = write_timm_reference_pt(tmp_path / "ref.pt")
    statistics, samples = _statistics(tmp_path)
    config = tiny_timm_reference_config()
    config.unnorm_key = "rlbench"
    out = import_reference_checkpoint(tmp_path / "ref.pt", config, statistics, tmp_path / "imported")
    assert "hidden_act" not in config.vision.hf_configs["siglip"]  # the caller's config is left alone
    policy = Policy.from_checkpoint(out, theta=0.0)
    assert policy.model.config.vision.hf_configs["siglip"]["hidden_act"] == "gelu"  # recorded: timm's exact GELU
    tower = policy.model.vision_backbone
    pixels = torch.rand(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        ours = tower(pixels.to(next(tower.parameters()).dtype)).float()
        dino, _ = timm_forward(timm["dino_featurizer"], "dinov2", normalised(pixels, "dinov2"))
        siglip, _ = timm_forward(timm["siglip_featurizer"], "siglip", normalised(pixels, "siglip"))
    print(f"imported tower max |diff| {_max_diff(ours, torch.cat([dino, siglip], -1)):.2e}")
    torch.testing.assert_close(ours, torch.cat([dino, siglip], -1), rtol=0, atol=1e-5)
    rng = np.random.default_rng(1)
    result = policy.predict({"images": {"front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)},
                             "state": samples[0], "instruction": "close the jar"})
    assert np.all(np.isfinite(result.action))


def test_unmappable_timm_keys_are_refused_by_name(tmp_path):
    unmappable = {"dino_featurizer.blocks.0.attn.q_bias": torch.zeros(WIDTH),  # BEiT-style split bias
                  "siglip_featurizer.head.weight": torch.zeros(3, WIDTH)}  # a classifier the reference never had
    write_timm_reference_pt(tmp_path / "ref.pt", extra_vision=unmappable)
    statistics, _ = _statistics(tmp_path)
    message = (r"keys do not match the model: 2 not in the model \(vision_backbone\.dino_featurizer\.blocks\.0\."
               r"attn\.q_bias, vision_backbone\.siglip_featurizer\.head\.weight\)$")
    with pytest.raises(ValueError, match=message) as info:
        import_reference_checkpoint(tmp_path / "ref.pt", tiny_timm_reference_config(), statistics, tmp_path / "out")
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()
