"""The workspace: colcon finds both packages with the README's invocation, in the repository and in a
standard ROS 2 workspace layout; the set-up is idempotent; the CLI answers."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLCON = Path(sys.executable).with_name("colcon")


def _colcon_list(cwd, *base_paths):
    out = subprocess.run([str(COLCON), "list", "--base-paths", *base_paths], cwd=cwd, check=True,
                         capture_output=True, text=True).stdout
    return {line.split("\t")[0]: line.split("\t")[2] for line in out.splitlines() if line.strip()}


def _readme_build_command():
    commands = [line.strip() for line in (ROOT / "README.md").read_text().splitlines()
                if "colcon build" in line and "--base-paths" in line]
    assert len(commands) == 1, commands
    return commands[0]


@pytest.mark.skipif(not COLCON.exists(), reason="colcon is not installed in this environment")
def test_readme_colcon_invocation_finds_both_packages_in_a_workspace(tmp_path):
    command = _readme_build_command()
    base_paths = re.search(r"--base-paths ((?:\S+ ?)+)", command).group(1).split()
    src = tmp_path / "ws" / "src" / "hybridvla"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "install", "log", "__pycache__"))
    ws = tmp_path / "ws"
    found = _colcon_list(ws, *base_paths)
    assert found == {"hybridvla_ros": "(ros.ament_python)", "hybridvla_msgs": "(ros.ament_cmake)"}
    # the pitfall the README warns about: plain discovery stops at the root package.xml
    assert set(_colcon_list(ws, "src")) == {"hybridvla_ros"}


@pytest.mark.skipif(not COLCON.exists(), reason="colcon is not installed in this environment")
def test_colcon_finds_both_packages_in_the_repository():
    found = _colcon_list(ROOT, ".", "hybridvla_msgs")
    assert found["hybridvla_ros"] == "(ros.ament_python)" and found["hybridvla_msgs"] == "(ros.ament_cmake)"
    assert (ROOT / ".venv" / "COLCON_IGNORE").exists() or not (ROOT / ".venv").exists()


def test_every_interface_file_is_built_and_documented():
    cmake = (ROOT / "hybridvla_msgs" / "CMakeLists.txt").read_text()
    for path in sorted((ROOT / "hybridvla_msgs").glob("*/*.*")):
        if path.suffix in (".msg", ".srv"):
            assert f'"{path.parent.name}/{path.name}"' in cmake, f"{path.name} is not in rosidl_generate_interfaces"
            for line in path.read_text().splitlines():
                code = line.split("#")[0].strip()
                if code and code != "---":
                    assert "#" in line, f"{path.name}: field without a comment (unit/frame): {line!r}"


def test_setup_second_run_is_a_no_op():
    if not (ROOT / ".venv" / ".hybridvla-setup").exists():
        pytest.skip("the project venv was not made by scripts/setup.sh")

    def setup():
        return subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh")], capture_output=True, text=True, check=True,
                              env={"PATH": "/usr/bin:/bin", "HYBRIDVLA_VENV": str(ROOT / ".venv")}).stdout

    first = setup()  # brings the venv up to date if the tree changed since `make`
    assert first.startswith("[setup] up to date") or "[setup] done in" in first, first
    assert setup().startswith("[setup] up to date")


def test_cli_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "doctor" in out
    bad = subprocess.run([sys.executable, "-m", "hybridvla_core.cli", "frobnicate"], capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'frobnicate'" in bad.stderr
