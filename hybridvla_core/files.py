"""Reading the YAML and JSON files a user gives: a file that does not parse is the user's mistake, said in one line
that names the file and where the parser stopped (UserError), not a parser traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from hybridvla_core.errors import UserError


def read_yaml(path: str | Path) -> Any:
    """The document in `path` (None for an empty file); a missing file raises FileNotFoundError naming it."""
    text = Path(path).read_text()
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
        raise UserError(f"{path}: not valid YAML ({problem}{where}): fix the file or restore it") from None


def read_json(path: str | Path) -> Any:
    """The JSON value in `path`; a missing file raises FileNotFoundError naming it."""
    text = Path(path).read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): fix the "
                        f"file or restore it") from None


def check_output_file(path: str | Path, option: str) -> None:
    """Before long work: `path` can be written as a file (its parent directory exists or can be made, the path is
    not a directory), else UserError naming the option."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a directory: give a file name")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UserError(f"{option} {path}: {parent} is a file, not a directory: choose another path")


def check_output_dir(path: str | Path, option: str) -> None:
    """Before long work: `path` is a directory or can be made one, else UserError naming the option."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is a file, not a directory: choose another path")
