"""Finding the files the package ships (config/, urdf/, launch/) in a source checkout or an install."""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "hybridvla_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def share_dirs() -> list[Path]:
    """Candidate roots, most specific first: the source tree (editable or --symlink-install), then
    share/hybridvla_ros under this interpreter's prefix and every AMENT_PREFIX_PATH entry."""
    dirs = [SOURCE_ROOT]
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) / "share" / PACKAGE for p in prefixes]
    return dirs


def resource_path(kind: str, name: str) -> Path:
    """Path of a shipped file, e.g. resource_path("config", "sim_franka.yaml").

    Raises FileNotFoundError naming every place that was searched."""
    tried = []
    for root in share_dirs():
        candidate = root / kind / name
        if candidate.exists():
            return candidate
        tried.append(str(candidate))
    raise FileNotFoundError(f"{kind}/{name} not found; searched: {', '.join(tried)}")
