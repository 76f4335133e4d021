"""`hybridvla eval bags` and `hybridvla eval sim` take one set of policy options, defined once
(evaluation.add_policy_arguments), and both honour each of them: --mode all evaluates every mode, --ddim-steps
and --ensemble-gripper reach the policy, --json writes the results, an out-of-range value is refused in one line
by either target."""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hybridvla_core.actions import DatasetStatistics
from hybridvla_core.cli import main, subcommand_parser
from hybridvla_core.model import build_model, save_checkpoint
from hybridvla_core.model.presets import tiny_config
from hybridvla_core.modes import MODES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
from test_build_streaming import write_bag  # noqa: E402

POLICY_OPTIONS = {"mode", "preset", "theta", "ddim_steps", "ensemble_gripper", "device", "json"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    samples = np.random.default_rng(0).normal(size=(20, 7))
    return save_checkpoint(build_model(tiny_config()), tmp_path_factory.mktemp("ckpt") / "tiny",
                           {"lab": DatasetStatistics.from_samples(samples, samples, 2)})


def _targets():
    _, parser = subcommand_parser("eval")
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


def test_both_targets_have_the_same_policy_options():
    options = {}
    for name, parser in _targets().items():
        options[name] = {a.dest: (tuple(a.option_strings), a.choices and tuple(a.choices), a.default, a.help)
                         for a in parser._actions if a.dest in POLICY_OPTIONS}
    assert set(options) == {"bags", "sim"}
    assert set(options["bags"]) == POLICY_OPTIONS and options["bags"] == options["sim"]
    assert options["sim"]["mode"][1] == (*MODES, "all")


def test_eval_bags_honours_every_mode_the_ddim_steps_and_the_json_file(checkpoint, tmp_path):
    bag = write_bag(tmp_path / "bag", 0, size=(32, 32))
    out, report = tmp_path / "eval", tmp_path / "report.json"
    assert main(["eval", "bags", str(checkpoint), str(bag), "--mode", "all", "--ddim-steps", "2",
                 "--ensemble-gripper", "autoregressive", "--max-steps", "2", "--no-plots", "-o", str(out),
                 "--json", str(report)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(report.read_text()) == summary
    assert {label: r["mode"] for label, r in summary["results"].items()} == {f"tiny_{m}": m for m in MODES}
    assert summary["results"]["tiny_diffusion"]["sources"]["diffusion"] == 2  # the mode reached the policy
    assert summary["results"]["tiny_autoregressive"]["sources"]["autoregressive"] == 2
    assert summary["settings"]["ddim_steps"] == 2 and summary["settings"]["ensemble_gripper"] == "autoregressive"


@pytest.mark.parametrize("target", ["bags", "sim"])
def test_an_out_of_range_policy_option_is_refused_in_one_line_by_either_target(checkpoint, tmp_path, capsys,
                                                                               target):
    extra = [str(tmp_path)] if target == "bags" else []
    for option, value, line in [("--theta", "1.5", "error: --theta must be in [0, 1], got 1.5"),
                                ("--ddim-steps", "0", "error: --ddim-steps must be >= 1, got 0")]:
        assert main(["eval", target, str(checkpoint), *extra, option, value]) == 2
        assert capsys.readouterr().err.strip() == line
