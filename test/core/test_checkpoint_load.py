"""load_checkpoint builds the model straight in the dtype it is asked for (no fp32 copy first: a 7B in bf16 takes
14 GiB, not 28 first), and what it gives equals, bit for bit, the straightforward route: the model built in fp32, filled by
safetensors' own load_model, then cast with Module.to. benchmarks/checkpoint_load.py measures the memory."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_model

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import build_model, load_checkpoint, save_checkpoint
from hybridvla_core.model.presets import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    model = build_model(tiny_config(action_dim=7, views=("front", "wrist"), image_size=32))
    samples = np.random.default_rng(0).normal(size=(20, 7))
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny",
                           {"lab": DatasetStatistics.from_samples(samples, samples, 2)})


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_weights_and_buffers_equal_loading_in_fp32_then_casting(checkpoint, dtype):
    model, _ = load_checkpoint(checkpoint, "cpu", dtype)
    expected = build_model(model.config, model.tokenizer)
    load_model(expected, str(checkpoint / "model.safetensors"), strict=True)
    if dtype is not None:
        expected.to(dtype)
    ours = dict(model.named_parameters()) | dict(model.named_buffers())
    theirs = dict(expected.named_parameters()) | dict(expected.named_buffers())
    assert sorted(ours) == sorted(theirs)
    assert {key for key in ours if ours[key].dtype != theirs[key].dtype} == set()
    assert [key for key in ours if not torch.equal(ours[key], theirs[key])] == []
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert all(p.requires_grad for p in model.parameters())  # a fine-tune (init_from) trains what it loads


def test_building_a_module_after_a_load_is_not_affected(checkpoint):
    load_checkpoint(checkpoint, "cpu", torch.bfloat16)
    layer = torch.nn.Linear(3, 2)  # the parameter hook is gone: weights are real and random again
    assert layer.weight.device.type == "cpu" and bool(layer.weight.abs().sum() > 0)


def test_the_weights_reader_gives_what_safetensors_reads(tmp_path):
    """The plain-read reader (no copy-on-write mapping of the whole file) against safetensors' own load_file, for
    every dtype a checkpoint may hold, with the format's metadata block present."""
    from safetensors.torch import load_file, save_file

    from hybridvla_core.model.checkpoint import _read_tensors

    generator = torch.Generator().manual_seed(0)
    tensors = {f"t_{dtype}".replace("torch.", ""): (torch.randn(5, 3, generator=generator) * 100).to(dtype)
               for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int8,
                             torch.bool)}
    tensors["scalar"] = torch.tensor(2.5)
    tensors["empty"] = torch.zeros(0, 4)
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    expected = load_file(str(path))
    ours = dict(_read_tensors(path))
    assert sorted(ours) == sorted(expected)
    assert [k for k in ours if not (ours[k].dtype == expected[k].dtype and ours[k].shape == expected[k].shape
                                    and torch.equal(ours[k], expected[k]))] == []


def test_a_model_with_tied_embeddings_loads_back_tied(tmp_path):
    """Qwen2-0.5B / 1.5B ship tie_word_embeddings: true. safetensors' save_model stores the shared tensor once, under
    one of its two names; loading must accept that and keep the LM head and the embedding one parameter."""
    from safetensors import safe_open

    config = tiny_config(family="qwen2")
    config.llm.hf_config["tie_word_embeddings"] = True
    torch.manual_seed(4)
    model = build_model(config)
    samples = np.random.default_rng(0).normal(size=(20, 7))
    directory = save_checkpoint(model, tmp_path / "tied", {"lab": DatasetStatistics.from_samples(samples, samples, 2)})
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        stored = [key for key in handle.keys() if key.endswith(("embed_tokens.weight", "lm_head.weight"))]
    assert len(stored) == 1  # one copy in the file

    loaded, _ = load_checkpoint(directory, "cpu", torch.bfloat16)
    llm = loaded.llm_backbone.llm
    assert llm.get_output_embeddings().weight is llm.get_input_embeddings().weight
    expected = model.llm_backbone.llm.get_input_embeddings().weight.detach().to(torch.bfloat16)
    assert torch.equal(llm.get_input_embeddings().weight, expected)
