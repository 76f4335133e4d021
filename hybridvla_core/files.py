"""Files a user gives and outputs we write: a YAML or JSON file that does not parse is the user's mistake, said in
one line that names the file and where the parser stopped (UserError), not a parser traceback; an output path is
checked before long work; an output is written whole (write_whole), never left half-written."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
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


def write_whole(output: str | Path, write, *, directory: bool, before_rename=None) -> Path:
    """write(a hidden temporary sibling of `output`: a directory, or a file), then rename it to `output`. A reader
    never sees a half-written output and a crash leaves only the hidden sibling; a renamed file is a new inode, so
    hard links to the old one keep their contents. An existing output is replaced; before_rename() may refuse
    that (it runs just before the rename). On any failure the temporary is removed."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{output.name}.partial-"
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=output.parent))
    else:
        handle, name = tempfile.mkstemp(prefix=prefix, dir=output.parent)
        os.close(handle)
        tmp = Path(name)
    try:
        write(tmp)
        if before_rename is not None:
            before_rename()
        if directory and output.is_dir():
            shutil.rmtree(output)  # a rename needs the name free
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        raise
    return output
