"""Every launch file starts executables that exist as console scripts, with parameter files that exist and
that hold only parameters the nodes declare. The launch files are read with ast (launch and launch_ros
are not installed here); test_launch_pytest.py runs them where they are."""
import ast
from pathlib import Path

import pytest
import yaml

from hybridvla_ros import launching

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))
# The deployment launch files share hybridvla_ros.launching; record.launch.py is checked in test/recording.
DEPLOYMENT_LAUNCH_FILES = [p for p in LAUNCH_FILES if p.name != "record.launch.py"]


def literals(path: Path) -> dict:
    """Module-level NAME = <literal> assignments."""
    values = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return values


def console_scripts() -> set[str]:
    nodes = literals(ROOT / "setup.py")["NODES"]
    return set(nodes) | {"hybridvla"}


def declared_parameters(module: Path) -> set[str]:
    """Keys of the dict literal that a node passes to declare_parameters (its parameter spec)."""
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Dict) and node.keys and all(isinstance(k, ast.Constant) for k in node.keys):
            keys = {k.value for k in node.keys}
            if all(isinstance(v, ast.Tuple) and len(v.elts) == 3 for v in node.values):
                return keys
    raise AssertionError(f"{module}: no parameter spec found")


def test_the_deployment_launch_files_exist():
    assert {"agilex.launch.py", "franka.launch.py", "sim_agilex.launch.py", "sim_franka.launch.py",
            "record.launch.py"} <= {p.name for p in LAUNCH_FILES}


@pytest.mark.parametrize("path", DEPLOYMENT_LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_executables_and_parameter_files_exist(path):
    values = literals(path)
    source = path.read_text()
    assert "launch_description(cameras=CAMERAS, policy=POLICY, robot=ROBOT" in source
    executables = [launching.CAMERA_EXECUTABLE, launching.POLICY_EXECUTABLE] + [e for e, _ in values["ROBOT"]]
    missing = sorted(set(executables) - console_scripts())
    assert not missing, f"{path.name}: executables {missing} are not console scripts in setup.py NODES"
    for params in [values["CAMERAS"], values["POLICY"]] + [p for _, p in values["ROBOT"]]:
        file = ROOT / "config" / params
        assert file.is_file(), f"{path.name}: parameter file config/{params} is missing"
        assert launching.node_names(file), f"config/{params} has no <node name>: ros__parameters: block"
    assert launching.node_names(ROOT / "config" / values["POLICY"]) == [launching.POLICY_NODE_NAME]
    policy_params = declared_parameters(ROOT / "hybridvla_ros" / "policy_node.py")
    assert set(values.get("POLICY_OVERRIDES", {})) <= policy_params


@pytest.mark.parametrize("setup", ["franka", "agilex"])
def test_our_parameter_files_hold_only_declared_parameters(setup):
    for file, module in ((f"cameras_{setup}.yaml", "camera_node.py"), (f"policy_{setup}.yaml", "policy_node.py")):
        declared = declared_parameters(ROOT / "hybridvla_ros" / module)
        data = yaml.safe_load((ROOT / "config" / file).read_text())
        for name, block in data.items():
            unknown = set(block["ros__parameters"]) - declared
            assert not unknown, f"config/{file} [{name}]: {sorted(unknown)} are not parameters of {module}"


def test_camera_and_policy_files_agree_on_views():
    for setup in ("franka", "agilex"):
        cameras = yaml.safe_load((ROOT / "config" / f"cameras_{setup}.yaml").read_text())
        policy = yaml.safe_load((ROOT / "config" / f"policy_{setup}.yaml").read_text())["policy"]["ros__parameters"]
        published = {f"/{c['ros__parameters']['camera_namespace']}/{c['ros__parameters']['camera_name']}/color/image_raw"
                     for c in cameras.values()}
        assert set(policy["image_topics"]) == published
        assert len(policy["view_names"]) == len(policy["image_topics"])
        assert all(f"/{view}/" in topic for view, topic in zip(policy["view_names"], policy["image_topics"]))
