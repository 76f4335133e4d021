"""The privileged head (issue 30, model side): a training-only head (attention pooling, then an MLP) on the projected
vision tokens that predicts privileged simulator state (block and bowl relative to the gripper). Rows without a label
(NaN) give neither loss nor gradient; privileged_dim 0 leaves the model exactly as before; the Policy never runs the
head; export to the reference layout leaves it out; train() optimises it with its own weight."""
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hybridvla_core.actions import ActionConvention, DatasetStatistics, save_dataset_statistics
from hybridvla_core.model import Policy, TrainsetWriter, build_model, load_checkpoint, save_checkpoint
from hybridvla_core.model.checkpoint import load_config
from hybridvla_core.model.config import ModelConfig
from hybridvla_core.cli import main
from hybridvla_core.model.importer import import_reference_checkpoint, read_reference_state
from hybridvla_core.model.presets import tiny_config, tiny_reference
from hybridvla_core.model.reference_manifest import random_reference_payload, reference_manifest
from hybridvla_core.model.training import TrainConfig, train
from test_train_ddp import train_on_two_ranks

COMMITTED = Path(__file__).resolve().parents[2] / "checkpoints" / "sim_fr3_pick_place"
HEAD_PREFIX = "privileged_head."


def privileged_config(dim=6, **kwargs) -> ModelConfig:
    data = tiny_config(**kwargs).to_dict()
    data["privileged_dim"] = dim
    return ModelConfig.from_dict(data)


def model_with_head(seed=0, dim=6):
    torch.manual_seed(seed)
    return build_model(privileged_config(dim)).eval()


def batch(size, seed=0, views=2):
    generator = torch.Generator().manual_seed(seed)
    return {"pixels": torch.rand(size, views, 3, 32, 32, generator=generator),
            "states": torch.randn(size, 7, generator=generator),
            "actions": torch.randn(size, 1, 7, generator=generator).clamp(-1, 1),
            "privileged": torch.randn(size, 6, generator=generator) * 0.1}


def privileged_loss_and_grads(model, data, rows=None):
    """privileged_loss of `data` (restricted to `rows`) and the gradient it gives every parameter."""
    pick = (lambda x: x) if rows is None else (lambda x: x[rows])
    prompts = [model.prompt_ids("pick up the block")] * len(pick(data["states"]))
    model.zero_grad(set_to_none=True)
    out = model(pick(data["pixels"]), prompts, pick(data["states"]), pick(data["actions"]),
                privileged=pick(data["privileged"]))
    out["privileged_loss"].backward()
    grads = {name: (torch.zeros_like(p) if p.grad is None else p.grad.clone())
             for name, p in model.named_parameters()}
    return out["privileged_loss"].detach(), grads


def test_nan_rows_are_masked_out_exactly():
    model = model_with_head()
    data = batch(4)
    data["privileged"][1, 2] = float("nan")  # one NaN makes the whole row unlabelled
    data["privileged"][3] = float("nan")
    masked, masked_grads = privileged_loss_and_grads(model, data)
    alone, alone_grads = privileged_loss_and_grads(model, data, rows=torch.tensor([0, 2]))
    assert torch.isfinite(masked) and masked > 0
    torch.testing.assert_close(masked, alone, rtol=1e-6, atol=1e-7)
    assert masked_grads.keys() == alone_grads.keys()
    for name in masked_grads:
        assert torch.isfinite(masked_grads[name]).all(), name
        torch.testing.assert_close(masked_grads[name], alone_grads[name], rtol=1e-5, atol=1e-7, msg=name)
    assert any(bool(g.abs().sum() > 0) for n, g in masked_grads.items() if n.startswith(HEAD_PREFIX))
    assert any(bool(g.abs().sum() > 0) for n, g in masked_grads.items() if n.startswith("projector."))


def test_an_all_nan_batch_gives_an_exact_zero_and_zero_gradients():
    model = model_with_head()
    data = batch(3)
    data["privileged"][:] = float("nan")
    loss, grads = privileged_loss_and_grads(model, data)
    assert loss.item() == 0.0
    head = {n: g for n, g in grads.items() if n.startswith(HEAD_PREFIX)}
    assert head and all(torch.isfinite(g).all() and not g.any() for g in head.values())
    assert all(torch.isfinite(g).all() and not g.any() for g in grads.values())


def test_the_head_reads_the_projected_vision_tokens_by_attention():
    model = model_with_head()
    data = batch(2)
    prompts = [model.prompt_ids("pick")] * 2
    out = model(data["pixels"], prompts, data["states"], data["actions"], privileged=data["privileged"])
    tokens = model.encode_images(data["pixels"])  # (B, N, hidden): what enters the LLM
    head = model.privileged_head
    # Written out: each query's softmax over query . token / sqrt(hidden), the weighted tokens concatenated.
    weights = torch.softmax(tokens @ head.queries.T / tokens.shape[-1] ** 0.5, dim=1)   # (B, N, queries)
    pooled = torch.cat([(weights[:, :, q:q + 1] * tokens).sum(1) for q in range(head.queries.shape[0])], dim=1)
    torch.testing.assert_close(out["privileged_prediction"], head.mlp(pooled))
    assert out["privileged_prediction"].shape == (2, 6)
    torch.testing.assert_close(out["loss"], out["diffusion_loss"] + out["ar_loss"] + out["privileged_loss"])
    # Without labels (inference-style callers, older batches) nothing of the head is computed or returned.
    plain = model(data["pixels"], prompts, data["states"], data["actions"])
    assert "privileged_loss" not in plain


def test_the_head_tells_tokens_apart_where_a_mean_could_not():
    """Two token sets with the same mean (one token moved by d, another by -d) give different predictions: the
    head reads the tokens themselves (which keypoint, where), not only their centroid as a mean did."""
    torch.manual_seed(0)
    head = model_with_head().privileged_head
    torch.nn.init.normal_(head.mlp[2].weight, std=0.5)
    tokens = torch.randn(1, 8, head.queries.shape[1])
    moved, d = tokens.clone(), torch.randn(head.queries.shape[1])
    moved[0, 0] += d
    moved[0, 1] -= d
    torch.testing.assert_close(moved.mean(1), tokens.mean(1))
    assert not torch.allclose(head(tokens), head(moved), atol=1e-4)


def test_privileged_dim_zero_keeps_todays_state_dict():
    config = load_config(COMMITTED)  # its config.json predates the field
    assert config.privileged_dim == 0
    with safe_open(str(COMMITTED / "model.safetensors"), framework="pt") as handle:
        committed_keys = set(handle.keys())
    model = build_model(config)
    assert not hasattr(model, "privileged_head")
    assert set(model.state_dict()) == committed_keys
    with_head = build_model(privileged_config(6))
    tiny_keys = set(build_model(tiny_config()).state_dict())
    assert set(with_head.state_dict()) - tiny_keys == {f"{HEAD_PREFIX}queries", f"{HEAD_PREFIX}mlp.0.weight",
                                                        f"{HEAD_PREFIX}mlp.0.bias", f"{HEAD_PREFIX}mlp.2.weight",
                                                        f"{HEAD_PREFIX}mlp.2.bias"}
    assert tiny_keys <= set(with_head.state_dict())
    with pytest.raises(ValueError, match="privileged_dim must be a whole number >= 0"):
        privileged_config(-1)


def test_the_committed_checkpoint_loads_bit_for_bit():
    model, _ = load_checkpoint(COMMITTED)
    state = model.state_dict()
    with safe_open(str(COMMITTED / "model.safetensors"), framework="pt") as handle:
        for key in handle.keys():
            stored = handle.get_tensor(key)
            assert stored.dtype == state[key].dtype and torch.equal(stored, state[key]), key


def statistics(action_dim=7):
    samples = np.random.default_rng(0).normal(size=(50, action_dim))
    return DatasetStatistics.from_samples(samples, samples, 5)


def test_checkpoint_round_trip_with_the_head(tmp_path):
    model = model_with_head(dim=6)
    torch.nn.init.normal_(model.privileged_head.mlp[2].weight, std=0.5)
    save_checkpoint(model, tmp_path / "ckpt", {"lab": statistics()})
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.privileged_dim == 6
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys() and any(k.startswith(HEAD_PREFIX) for k in after)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_policy_predict_never_runs_the_head():
    model = model_with_head()

    def refuse(*_):
        raise AssertionError("the Policy ran the privileged head")

    model.privileged_head.register_forward_hook(refuse)
    rng = np.random.default_rng(0)
    observation = {"images": {v: rng.integers(0, 256, (48, 40, 3), dtype=np.uint8) for v in ("front", "wrist")},
                   "state": rng.normal(size=7), "instruction": "pick up the block"}
    for mode in ("hybrid", "diffusion", "autoregressive"):
        result = Policy(model, statistics(), mode=mode, seed=1).predict(observation)
        assert np.all(np.isfinite(result.action))
    reference = Policy(model, statistics(), mode="hybrid", ar_schedule="reference", seed=1).predict(observation)
    assert np.all(np.isfinite(reference.action))


def test_a_few_steps_reduce_the_privileged_loss():
    model = model_with_head(seed=1).train()
    data = batch(4, seed=2)
    data["privileged"] = torch.tensor([[0.10, -0.05, 0.02, 0.30, 0.10, -0.04]]).expand(4, 6).clone()
    data["privileged"][3] = float("nan")  # an unlabelled row among them
    prompts = [model.prompt_ids("pick up the block")] * 4
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(data["pixels"], prompts, data["states"], data["actions"], privileged=data["privileged"])
        optimizer.zero_grad()
        (out["diffusion_loss"] + out["ar_loss"] + out["privileged_loss"]).backward()
        optimizer.step()
        losses.append(float(out["privileged_loss"].detach()))
    assert all(np.isfinite(losses)) and losses[-1] < 0.2 * losses[0]


# ------------------------------------------------------------------------------------------------ train()
def _write_set(directory, seed=0):
    rng = np.random.default_rng(seed)
    with TrainsetWriter(directory, ["front"], 7, convention=ActionConvention(), unnorm_key="lab") as writer:
        for i in range(4):
            writer.add({"front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)}, rng.normal(size=7),
                       rng.normal(size=7), "pick up the block", episode=i)


def _model_spec(**extra):
    model = tiny_config(views=("front",)).to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    return {**model, **extra}


def _spec(data, output, model=None, max_steps=2, **train_extra):
    spec = {"data": {"path": str(data)},
            "train": {"output_dir": str(output), "max_steps": max_steps, "batch_size": 2, "learning_rate": 1e-2,
                      "save_every": 0, "progress": False, **train_extra}}
    if model is not None:
        spec["model"] = model
    return spec


def _labelled_dataset(monkeypatch, labels):
    """The training set's samples carry "privileged" = labels[index] (what trainset.py adds for sim episodes)."""
    from hybridvla_core.model import trainset

    getitem = trainset.TrainsetDataset.__getitem__

    def with_labels(self, item):
        return {**getitem(self, item), "privileged": torch.as_tensor(labels[item], dtype=torch.float32)}

    monkeypatch.setattr(trainset.TrainsetDataset, "__getitem__", with_labels)


def test_train_optimises_the_weighted_privileged_loss(tmp_path, monkeypatch):
    _write_set(tmp_path / "set")
    labels = np.tile([0.1, -0.05, 0.02, 0.3, 0.1, -0.04], (4, 1))
    labels[1] = np.nan  # a real teleop episode among sim ones
    _labelled_dataset(monkeypatch, labels)
    result = train(_spec(tmp_path / "set", tmp_path / "run", _model_spec(privileged_dim=6), max_steps=12,
                         privileged_loss_weight=2.0))
    history = result["history"]
    assert all(np.isfinite(r["privileged_loss"]) for r in history)
    for record in history:  # the loss optimised includes the weighted privileged term
        expected = record["diffusion_loss"] + record["ar_loss"] + 2.0 * record["privileged_loss"]
        assert record["loss"] == pytest.approx(expected, rel=1e-5)
    assert np.mean([r["privileged_loss"] for r in history[-3:]]) < np.mean([r["privileged_loss"] for r in history[:3]])
    loaded, _ = load_checkpoint(result["checkpoint"])
    assert loaded.config.privileged_dim == 6 and hasattr(loaded, "privileged_head")


def test_train_without_labels_warns_once_and_trains_as_today(tmp_path):
    _write_set(tmp_path / "set")
    with pytest.warns(UserWarning, match="no privileged labels") as caught:
        result = train(_spec(tmp_path / "set", tmp_path / "run", _model_spec(privileged_dim=6), max_steps=5))
    assert len([w for w in caught if "privileged" in str(w.message)]) == 1
    assert all(r["privileged_loss"] == 0.0 for r in result["history"])
    # A model without the head on the same set: today's records, no privileged entry.
    plain = train(_spec(tmp_path / "set", tmp_path / "plain", _model_spec(), max_steps=1))
    assert set(plain["history"][0]) == {"loss", "diffusion_loss", "ar_loss"}


def test_train_refuses_a_privileged_weight_without_the_head(tmp_path):
    _write_set(tmp_path / "set")
    with pytest.raises(ValueError, match="privileged_loss_weight is set but the model has no privileged head"):
        train(_spec(tmp_path / "set", tmp_path / "run", _model_spec(), privileged_loss_weight=1.0))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="privileged_loss_weight"):
            TrainConfig(privileged_loss_weight=bad)


def test_fine_tuning_can_add_the_head_to_a_checkpoint_without_one(tmp_path, monkeypatch):
    _write_set(tmp_path / "set")
    first = train(_spec(tmp_path / "set", tmp_path / "run1", _model_spec(), max_steps=1))["checkpoint"]
    _labelled_dataset(monkeypatch, np.full((4, 6), 0.1))
    second = train(_spec(tmp_path / "set", tmp_path / "run2", max_steps=1, privileged_loss_weight=0.5)
                   | {"init_from": str(first), "model": {"privileged_dim": 6}})["checkpoint"]
    tuned, _ = load_checkpoint(second)
    assert tuned.config.privileged_dim == 6 and hasattr(tuned, "privileged_head")
    with pytest.raises(ValueError, match="cannot change"):
        train(_spec(tmp_path / "set", tmp_path / "run3", max_steps=1)
              | {"init_from": str(second), "model": {"privileged_dim": 3}})


# ----------------------------------------------------------------------------------- reference layout
def test_export_leaves_the_head_out_and_import_has_none(tmp_path, capsys):
    spec, config = tiny_reference("2.7b-like")
    torch.save(random_reference_payload(reference_manifest(spec), seed=1), tmp_path / "ref.pt")
    save_dataset_statistics(tmp_path / "statistics.json", {"rlbench": statistics()})
    imported = import_reference_checkpoint(tmp_path / "ref.pt", ModelConfig.from_dict({**config, "privileged_dim": 6}),
                                           tmp_path / "statistics.json", tmp_path / "imported")
    model, _ = load_checkpoint(imported)
    assert model.config.privileged_dim == 0 and not hasattr(model, "privileged_head")
    # Give it a head (as fine-tuning with labels would), save, export: the reference layout has no such keys.
    data = model.config.to_dict()
    data["privileged_dim"] = 6
    with_head = build_model(ModelConfig.from_dict(data), model.tokenizer)
    with_head.load_state_dict(model.state_dict(), strict=False)
    save_checkpoint(with_head, tmp_path / "with_head", {"rlbench": statistics()})
    assert main(["export-checkpoint", str(tmp_path / "with_head"), "--output", str(tmp_path / "out.pt"),
                 "--dtype", "float32"]) == 0
    said = capsys.readouterr().out.splitlines()
    assert [line for line in said if "privileged head" in line] == [
        "left out the privileged head (privileged_head.*, training only): the reference has no such head"]
    exported = read_reference_state(tmp_path / "out.pt")
    original = read_reference_state(tmp_path / "ref.pt")
    assert set(exported) == set(original) and not any("privileged" in k for k in exported)


DDP_WORKER = textwrap.dedent("""
    import os, sys, yaml, torch
    from safetensors.torch import save_file
    from hybridvla_core.model import trainset
    from hybridvla_core.model.training import train
    getitem = trainset.TrainsetDataset.__getitem__
    def with_labels(self, item):  # odd samples are unlabelled (real teleop), even ones sim-labelled
        label = torch.full((6,), float("nan")) if item % 2 else torch.full((6,), 0.1 * item)
        return {**getitem(self, item), "privileged": label}
    trainset.TrainsetDataset.__getitem__ = with_labels
    result = train(yaml.safe_load(open(sys.argv[1])))
    state = {k: v.detach().contiguous().clone() for k, v in result["model"].state_dict().items()}
    save_file(state, os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"))
""")


@pytest.mark.timeout(300)
def test_two_gloo_processes_train_the_head_from_a_yaml_config(tmp_path):
    """model.privileged_dim from YAML; under DDP the head's parameters stay identical on both ranks and move."""
    _write_set(tmp_path / "set")
    spec = _spec(tmp_path / "set", tmp_path / "run", _model_spec(privileged_dim=6), max_steps=1,
                 privileged_loss_weight=0.5)
    rank0 = train_on_two_ranks(tmp_path, spec, DDP_WORKER)
    assert f"{HEAD_PREFIX}mlp.2.weight" in rank0
    saved, _ = load_checkpoint(tmp_path / "run" / "final")
    assert saved.config.privileged_dim == 6
