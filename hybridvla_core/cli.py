"""The `hybridvla` command line: one entry point, one subcommand per capability.

Subcommands register themselves in SUBCOMMANDS as they land; each module exposes
`add_arguments(parser)` and `run(args) -> int`, and is imported only when its subcommand runs, so that
`hybridvla --help` stays fast and a missing optional dependency only affects its own subcommand.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from hybridvla_core.errors import UserError

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("hybridvla_core.tools.doctor", "check the installation: Python packages, ROS 2, messages, rendering"),
    # hybridvla_ros.demo starts the ROS graph's node processes; it imports rclpy only when it runs.
    "demo": ("hybridvla_ros.demo", "the simulated lab through the whole ROS graph (FR3): the trained policy, the "
                                   "bridge and its guards, a bag per episode, a summary per mode (make demo)"),
    "sim": ("hybridvla_core.sim.cli", "the simulated lab without ROS: run the scripted experts, record the demo's "
                                      "demonstrations, probe a checkpoint's targets"),
    "dataset": ("hybridvla_core.datasets.cli", "training sets from recorded bags; recover crashed recordings; resize "
                                               "a set's frames"),
    "train": ("hybridvla_core.tools.train", "train or fine-tune a HybridVLA on a training-set directory (YAML config)"),
    "bench": ("hybridvla_core.tools.bench", "latency of one control step per stage and mode; KV-cache and schedule speed-ups"),
    "import-checkpoint": ("hybridvla_core.tools.import_checkpoint", "import a reference HybridVLA .pt (weights_only) into a checkpoint directory"),
    "export-checkpoint": ("hybridvla_core.tools.export_checkpoint", "write a checkpoint directory as a reference HybridVLA .pt (timm towers, bf16)"),
    "eval": ("hybridvla_core.tools.evaluation", "evaluate a checkpoint: offline on recorded bags (eval bags) or closed loop "
                                          "in the simulated lab (eval sim), with the same policy options"),
    # hybridvla_ros.preflight imports rclpy only when it runs.
    "preflight": ("hybridvla_ros.preflight", "check a robot's live ROS graph before enabling an arm: topics, types, "
                                             "QoS, frames, rates, action servers, TF; one line per check with its fix"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridvla",
        description="HybridVLA for ROS 2: train, evaluate and simulate the diffusion + autoregressive policy.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a user's mistake (a bad file, parameter or option) instead of "
                             "its one-line message")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        # Arguments are added lazily when this subcommand is the one being parsed (see main).
    return parser


def subcommand_parser(name: str):
    """(module, parser) of one subcommand: its module imported, its arguments added."""
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"hybridvla {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(parser)
    return module, parser


def _file_errors() -> tuple[type[BaseException], ...]:
    """A user's mistake: errors.UserError; an OS error on a path the user gave (missing, a file where a directory
    is expected, not writable: its message names the path); a file that does not parse as YAML or JSON."""
    import json

    import yaml

    return UserError, OSError, yaml.YAMLError, json.JSONDecodeError


USER_FILE_ERRORS = _file_errors()


def one_line(error: BaseException) -> str:
    """The error's message on one line (a YAML error spans several: problem, then where)."""
    import json

    text = " ".join(str(error).split())
    if isinstance(error, json.JSONDecodeError):
        text = f"not valid JSON: {text}"
    return text


def main(argv: list[str] | None = None) -> int:
    """`hybridvla [--debug] COMMAND ...`: a user's mistake (USER_FILE_ERRORS) ends in one line and exit status 2;
    --debug shows its traceback instead. Any other exception is a bug and keeps its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    parser = build_parser()
    # Import only the chosen subcommand's module, then parse again with its arguments.
    if argv and argv[0] in SUBCOMMANDS:
        module, sub = subcommand_parser(argv[0])
        args = sub.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except USER_FILE_ERRORS as error:
            if debug:
                raise
            print(f"hybridvla {argv[0]}: {one_line(error)} (--debug shows where)", file=sys.stderr)
            return 2
    parser.parse_args(argv)  # prints help / an error naming the unknown command
    return 2


if __name__ == "__main__":
    sys.exit(main())
