"""A checkpoint directory that cannot be used is refused in one line naming the file and what is wrong (never a
traceback from safetensors or load_state_dict, never NaN weights that evaluate as 'MAE nan'); each case is a
directory damaged on purpose, as a half-copied or diverged checkpoint would be."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.model import Policy, build_model, save_checkpoint
from hybridvla_core.model.checkpoint import CheckpointError
from hybridvla_core.model.presets import tiny_config


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    samples = np.random.default_rng(0).normal(size=(20, 7))
    return save_checkpoint(build_model(tiny_config()), tmp_path_factory.mktemp("ckpt") / "good",
                           {"lab": DatasetStatistics.from_samples(samples, samples, 2)})


def damaged(good, tmp_path, edit_weights=None, weights_bytes=None, config_text=None):
    directory = tmp_path / "bad"
    shutil.copytree(good, directory)
    weights = directory / "model.safetensors"
    if edit_weights is not None:
        state = load_file(str(weights))
        edit_weights(state)
        save_file(state, str(weights))
    if weights_bytes is not None:
        weights.write_bytes(weights_bytes(weights.read_bytes()))
    if config_text is not None:
        (directory / "config.json").write_text(config_text((directory / "config.json").read_text()))
    return directory


def refused(directory) -> str:
    with pytest.raises(CheckpointError) as info:
        Policy.from_checkpoint(directory)
    message = str(info.value)
    assert "\n" not in message and str(directory) in message
    return message


def test_good_checkpoint_loads(good):
    assert Policy.from_checkpoint(good).config.action_dim == 7


def test_truncated_weights(good, tmp_path):
    message = refused(damaged(good, tmp_path, weights_bytes=lambda b: b[: len(b) // 2]))
    assert "not a readable safetensors file" in message and "copy the checkpoint again" in message


def test_random_bytes_as_weights(good, tmp_path):
    message = refused(damaged(good, tmp_path, weights_bytes=lambda b: np.random.default_rng(0).bytes(4096)))
    assert "not a readable safetensors file" in message


def test_missing_key(good, tmp_path):
    message = refused(damaged(good, tmp_path, edit_weights=lambda s: s.pop("final_layer.mlp.fc2.weight")))
    assert "1 missing (e.g. final_layer.mlp.fc2.weight)" in message


def test_extra_key(good, tmp_path):
    message = refused(damaged(good, tmp_path, edit_weights=lambda s: s.update(stray=torch.zeros(2))))
    assert "1 the model does not have (e.g. stray)" in message


def test_wrong_shape_names_both(good, tmp_path):
    message = refused(damaged(good, tmp_path, edit_weights=lambda s: s.update(
        {"x_embedder.mlp.fc1.weight": torch.zeros(64, 14)})))
    assert "x_embedder.mlp.fc1.weight is (64, 14) in the file but (64, 7) in the model" in message


def test_nan_weights(good, tmp_path):
    def poison(state):
        state["proprio_embedder.mlp.fc2.bias"][3] = float("nan")
    message = refused(damaged(good, tmp_path, edit_weights=poison))
    assert "non-finite weights (NaN or Inf) in proprio_embedder.mlp.fc2.bias" in message


def test_half_written_config(good, tmp_path):
    message = refused(damaged(good, tmp_path, config_text=lambda text: text[: len(text) // 2]))
    assert "config.json: not valid JSON" in message


def test_config_with_a_bad_value(good, tmp_path):
    def edit(text):
        data = json.loads(text)
        data["token_layout"] = "sideways"
        return json.dumps(data)
    message = refused(damaged(good, tmp_path, config_text=edit))
    assert "token_layout must be one of ('reference', 'compact'), got 'sideways'" in message


@pytest.mark.parametrize("field, value, said", [
    ("chunk", "one", "chunk must be an integer, got 'one'"), ("theta", True, "theta must be a number, got True"),
    ("diffusion.ddim_steps", 2.5, "ddim_steps must be an integer, got 2.5")])
def test_config_with_a_value_of_the_wrong_type(good, tmp_path, field, value, said):
    """A string where a number belongs (a hand-edited config.json, a training YAML) was a TypeError from a range
    check; a float step count would have reached range()."""
    def edit(text):
        data = json.loads(text)
        section, _, key = field.rpartition(".")
        (data[section] if section else data)[key] = value
        return json.dumps(data)
    assert said in refused(damaged(good, tmp_path, config_text=edit))


@pytest.mark.parametrize("command", [["eval", "sim"], ["sim", "probe-targets"]])
def test_sim_commands_say_it_in_one_line(good, tmp_path, capsys, command):
    from hybridvla_core.cli import main

    bad = damaged(good, tmp_path, weights_bytes=lambda b: b[: len(b) // 3])
    assert main([*command, str(bad), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "not a readable safetensors file" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_a_checkpoint_from_before_token_layout_keeps_its_layout(good, tmp_path):
    """config.json files written before `token_layout` existed describe models trained without separators."""
    def drop(text):
        data = json.loads(text)
        data.pop("token_layout")
        return json.dumps(data)
    old = damaged(good, tmp_path, config_text=drop)
    assert json.loads((good / "config.json").read_text())["token_layout"] == "reference"
    assert Policy.from_checkpoint(old).config.token_layout == "compact"


def test_eval_bags_reports_the_good_checkpoint_and_names_the_damaged_one(good, tmp_path, capsys):
    """--checkpoint GOOD --compare BAD: GOOD's results are written, BAD is named with its reason (it used to end in a
    traceback after GOOD was evaluated, and nothing was written), and the exit status says not all were evaluated
    (it was 0)."""
    import sys
    from pathlib import Path

    from hybridvla_core.cli import main

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
    from test_build_streaming import write_bag

    bag = write_bag(tmp_path / "bag", 0, size=(32, 32))
    bad = damaged(good, tmp_path, weights_bytes=lambda b: b[: len(b) // 2])
    out = tmp_path / "eval"
    assert main(["eval", "bags", str(good), str(bag), "--compare", str(bad), "--max-steps", "3",
                 "--no-plots", "-o", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["results"]) == [good.name] and summary["results"][good.name]["steps"] == 3
    assert [c["path"] for c in summary["checkpoints_not_evaluated"]] == [str(bad)]
    assert "not a readable safetensors file" in summary["checkpoints_not_evaluated"][0]["reason"]
    err = capsys.readouterr().err
    assert f"skipped checkpoint {bad}" in err and f"not evaluated (see the lines above): {bad}" in err, err


@pytest.mark.parametrize("side_file, damage, said", [
    ("dataset_statistics.json", "truncate", "not valid JSON"), ("dataset_statistics.json", "remove", "missing"),
    ("training_seeds.json", "truncate", "not valid JSON"), ("tokenizer.json", "remove", "does not load"),
    ("dataset_statistics.json", "rename the entry", "not in dataset statistics ['other_key']")])
def test_a_damaged_side_file_of_a_checkpoint_is_named_in_one_line(side_file, damage, said, tmp_path, capsys):
    """The files beside the weights (statistics, trained seeds, tokenizer) gave parser tracebacks or a bare
    '[Errno 2]'; a transformers tokenizer error spanned five lines."""
    from pathlib import Path

    from hybridvla_core.cli import main

    shipped = Path(__file__).resolve().parents[2] / "checkpoints" / "sim_fr3_pick_place"
    directory = shutil.copytree(shipped, tmp_path / "ckpt")
    path = directory / side_file
    if damage == "remove":
        path.unlink()
    elif damage == "truncate":
        path.write_text(path.read_text()[: len(path.read_text()) // 2])
    else:  # statistics under a key the checkpoint's unnorm_key does not name
        path.write_text(json.dumps({"other_key": next(iter(json.loads(path.read_text()).values()))}))
    assert main(["sim", "probe-targets", str(directory), "--episodes", "1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and said in err[0], err
    named = directory if side_file == "tokenizer.json" else path if damage != "rename the entry" else "unnorm_key"
    assert str(named) in err[0], err
