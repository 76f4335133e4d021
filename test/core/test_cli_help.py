"""`hybridvla --help` lists every subcommand, and every option of every subcommand (and of each of its own
subcommands) says what it is for. The expected subcommands are written out here by hand: a new one, or a
renamed one, has to be added on purpose. Also: the policy's modes have one light home (hybridvla_core.modes)
that the model's own definitions agree with."""
import argparse

from hybridvla_core.cli import SUBCOMMANDS, build_parser, subcommand_parser

EXPECTED = {
    "doctor", "demo", "train", "bench", "import-checkpoint", "export-checkpoint", "preflight",
    "sim", "sim run-experts", "sim record-demos", "sim probe-targets",
    "dataset", "dataset build", "dataset merge", "dataset recover", "dataset resize",
    "eval", "eval bags", "eval sim",
}


def _walk(parser: argparse.ArgumentParser, name: str):
    """(name, parser) of this parser and of every subparser below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


def _all_parsers():
    for name in SUBCOMMANDS:
        _, parser = subcommand_parser(name)
        yield from _walk(parser, name)


def test_the_subcommands_are_the_expected_ones():
    assert {name for name, _ in _all_parsers()} == EXPECTED


def test_every_option_and_subcommand_has_help():
    missing = []
    for name, parser in [("hybridvla", build_parser()), *_all_parsers()]:
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {choice.dest}" for choice in action._choices_actions
                            if not (choice.help or "").strip()]
                continue
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"


def test_the_modes_have_one_home_that_the_model_agrees_with():
    from hybridvla_core import modes
    from hybridvla_core.model import ensemble, policy

    assert ensemble.MODES is modes.MODES and ensemble.GRIPPER_RULES is modes.GRIPPER_RULES
    assert tuple(policy.PRESETS) == modes.PRESETS
