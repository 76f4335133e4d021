"""Value types for the subcommands' numeric options: argparse refuses a value out of range in one line
("argument --seed: expected an integer >= 0, got '-5'") with exit status 2, before any work starts."""
from __future__ import annotations

import argparse
import math


def _number(kind, low: float, strict: bool):
    what = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {low:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


seed = _number(int, 0, strict=False)              # numpy seeds are >= 0
positive_int = _number(int, 0, strict=True)       # counts: episodes, repeats, steps, chunk
positive_float = _number(float, 0.0, strict=True)  # durations [s], rates [Hz]


def device(text: str) -> str:
    """A torch device string (cpu, cuda, cuda:1, ...); a CUDA device only where torch sees one."""
    import torch

    try:
        kind = torch.device(text).type
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: torch sees no CUDA device here (a CPU build, or no driver): use cpu")
    return text
