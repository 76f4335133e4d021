"""ament_python package hybridvla_ros: the nodes (hybridvla_ros) and the ROS-free core (hybridvla_core)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "hybridvla_ros"

# Every node is a console script: `ros2 run hybridvla_ros <name>` on a ROS 2 PC, plain `<name>` in the
# development venv. Add one line per node as it lands. Everything else is a subcommand of `hybridvla`.
NODES = {
    "camera_node": "hybridvla_ros.camera_node:main",
    "policy_node": "hybridvla_ros.policy_node:main",
    "sim_lab": "hybridvla_ros.sim_lab_node:main",
    "franka_bridge": "hybridvla_ros.franka_bridge_node:main",
    "agilex_bridge": "hybridvla_ros.agilex_bridge_node:main",
    "recorder": "hybridvla_ros.recorder_node:main",
    "teleop": "hybridvla_ros.teleop_node:main",
    "bag_replay": "hybridvla_ros.bag_replay_node:main",
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["hybridvla_core", "hybridvla_core.*", "hybridvla_ros", "hybridvla_ros.*"]),
    package_data={"hybridvla_core": ["assets/**/*", "model/reference_manifests/*.json"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/urdf", glob("urdf/*.urdf") + glob("urdf/*.xacro")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="hybridvla developers",
    maintainer_email="hybridvla@example.org",
    description="HybridVLA policy deployment on ROS 2: cameras, policy, guarded arm bridges, recording, evaluation.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [f"{name}={target}" for name, target in NODES.items()]
        + ["hybridvla=hybridvla_core.cli:main"],
    },
)
