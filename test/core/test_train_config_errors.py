"""A mistake in a training config or its paths is refused in one line naming the key, the value and what is expected,
before any training step: a misspelt top-level section, a value of the wrong YAML type, a file that is not YAML, an
output directory that cannot be written, a training set whose index.json does not parse."""
import re
import shutil

import numpy as np
import pytest
import torch
import yaml

from hybridvla_core import cli
from hybridvla_core.errors import UserError
from hybridvla_core.model import TrainsetWriter
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.model.training import TrainConfig, train


@pytest.fixture(scope="module")
def trainset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("set")
    rng = np.random.default_rng(0)
    with TrainsetWriter(directory, ["front"], 7, unnorm_key="lab") as writer:
        for i in range(4):
            writer.add({"front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)}, rng.normal(size=7),
                       rng.normal(size=7), "push the button", episode=i)
    return directory


@pytest.fixture
def steps_taken(monkeypatch):
    """How many optimizer steps train() took."""
    taken = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        taken.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    return taken


def _spec(data, output):
    model = tiny_config().to_dict()
    for key in ("action_dim", "convention", "unnorm_key", "tokens"):
        model.pop(key)
    model["views"] = [{"name": "front"}]
    return {"model": model, "data": {"path": str(data)},
            "train": {"output_dir": str(output), "max_steps": 1, "batch_size": 2, "save_every": 0, "progress": False}}


def _cli_error(config, capsys) -> str:
    """`hybridvla train CONFIG`'s one line on stderr; it must exit with status 2."""
    assert cli.main(["train", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_a_misspelt_top_level_section_is_named_with_its_closest_match(trainset, tmp_path, steps_taken):
    spec = {**_spec(trainset, tmp_path / "run"), "trian": {"max_steps": 5}}
    with pytest.raises(UserError, match=r"unknown top-level key 'trian' \(did you mean 'train'\?\); "
                                        r"known: \['model', 'init_from', 'data', 'train'\]"):
        train(spec)
    assert steps_taken == []


@pytest.mark.parametrize("edit,expected", [
    # (a change to a valid config, the message it gets)
    (lambda s: s["train"].update(max_steps="many"), r"train(\.|: )max_steps must be an integer, got 'many'"),
    (lambda s: s.update(data="/some/set"),
     r"'data' must be a mapping \(e\.g\. data: \{path: /some/set\}\), got '/some/set'"),
    (lambda s: s.update(train=5), r"'train' must be a mapping .*got 5$"),
    (lambda s: s["model"].update(views="front"), r"model\.views must be a list of views .*got 'front'"),
    (lambda s: s.update(trian={}), r"unknown top-level key 'trian' \(did you mean 'train'\?\)"),
])
def test_a_wrong_yaml_type_gets_one_line_from_the_command(trainset, tmp_path, capsys, steps_taken, edit, expected):
    spec = _spec(trainset, tmp_path / "run")
    edit(spec)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(spec))
    line = _cli_error(config, capsys)
    assert line.startswith("hybridvla train: ") and re.search(expected, line), line
    assert steps_taken == []


def test_a_config_that_is_a_list_or_not_yaml_names_the_file(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("- a\n")
    assert _cli_error(config, capsys) == (f"hybridvla train: config {config}: training config must be a mapping of "
                                          "sections ['model', 'init_from', 'data', 'train'], got a list")
    config.write_text("train:\n  max_steps: [1, 2\n")  # the list is still open where the file ends, on line 3
    line = _cli_error(config, capsys)
    assert line.startswith(f"hybridvla train: {config}: not valid YAML (") and "at line 3, column 1" in line, line


@pytest.mark.parametrize("field,value", [("max_steps", "many"), ("batch_size", 2.5), ("save_every", True),
                                         ("stop_after", "1"), ("progress", "yes"), ("state_noise_dims", 5),
                                         ("state_noise_dims", ["x"]), ("state_noise", "lots")])
def test_train_fields_of_the_wrong_type_are_named(field, value):
    with pytest.raises(UserError, match=rf"^train\.{field} must be .*, got {re.escape(repr(value))}$"):
        TrainConfig(**{"max_steps": 4, field: value})


def test_an_output_dir_that_cannot_be_made_is_refused_before_training(trainset, tmp_path, steps_taken):
    (tmp_path / "afile.txt").write_text("a regular file")
    output = tmp_path / "afile.txt" / "out"
    with pytest.raises(UserError, match=f"^train.output_dir {output} cannot be created or written "
                                        r"\(Not a directory\): choose a writable directory"):
        train(_spec(trainset, output))
    assert steps_taken == []  # (it used to train, then fail when saving)


def test_an_index_json_that_does_not_parse_is_named(trainset, tmp_path, steps_taken):
    broken = shutil.copytree(trainset, tmp_path / "set")
    index = broken / "index.json"
    index.write_text(index.read_text()[:-5])  # cut short, as a half-copied file
    with pytest.raises(UserError, match=f"^{index}: not valid JSON"):
        train(_spec(broken, tmp_path / "run"))
    assert steps_taken == []
