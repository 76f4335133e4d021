"""The body shared by launch/*.launch.py (launch and launch_ros: a ROS 2 machine only).

Every launch file declares the same arguments and starts, from the YAML files in `config`:
  - one camera_node per block of its cameras file, named after the block (when use_our_cameras);
  - its robot-side nodes (an arm bridge, or the simulated lab and a bridge), named after their file's block;
  - policy_node named `policy` with its policy file, plus the checkpoint and instruction arguments.
Node names come from the parameter files' top-level keys, so a block's parameters always reach its node.
"""
from __future__ import annotations

from pathlib import Path

import yaml

PACKAGE = "hybridvla_ros"
CAMERA_EXECUTABLE = "camera_node"
POLICY_EXECUTABLE = "policy_node"
POLICY_NODE_NAME = "policy"


def node_names(path: Path) -> list[str]:
    """Top-level keys of a ROS 2 parameter file that hold ros__parameters (wildcards excluded)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return [key for key, value in data.items()
            if isinstance(value, dict) and "ros__parameters" in value and "*" not in key]


def launch_description(*, cameras: str, policy: str, robot: list[tuple[str, str]], sim: bool,
                       cameras_by_default: bool, policy_overrides: dict | None = None):
    """cameras / policy: parameter file names in `config`; robot: (executable, parameter file) pairs;
    sim: every node on simulation time (/clock from sim_lab); policy_overrides: parameters over the policy file."""
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def nodes(context):
        config = Path(LaunchConfiguration("config").perform(context)).expanduser()
        checkpoint = LaunchConfiguration("checkpoint").perform(context)
        instruction = LaunchConfiguration("instruction").perform(context)
        preset = LaunchConfiguration("preset").perform(context)
        use_cameras = LaunchConfiguration("use_our_cameras").perform(context).lower() in ("true", "1", "yes")
        if sim and use_cameras:  # sim_lab publishes the views on the very topics camera_node would: mixed frames
            raise ValueError("use_our_cameras:=true in simulation: sim_lab already renders the views on "
                             "/camera/<view>/color/image_raw; leave use_our_cameras false")
        common = {"use_sim_time": sim}
        actions = []
        if use_cameras:
            for name in node_names(config / cameras):
                actions.append(Node(package=PACKAGE, executable=CAMERA_EXECUTABLE, name=name, output="screen",
                                    parameters=[str(config / cameras)]))
        for executable, params in robot:
            for name in node_names(config / params):
                actions.append(Node(package=PACKAGE, executable=executable, name=name, output="screen",
                                    parameters=[str(config / params), common]))
        overrides = {**common, **(policy_overrides or {}), "checkpoint": checkpoint}
        if instruction:
            overrides["instruction"] = instruction
        if preset:
            overrides["preset"] = preset
        actions.append(Node(package=PACKAGE, executable=POLICY_EXECUTABLE, name=POLICY_NODE_NAME, output="screen",
                            parameters=[str(config / policy), overrides]))
        return actions

    default_config = str(Path(get_package_share_directory(PACKAGE)) / "config")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", description="checkpoint directory (config.json, model.safetensors, "
                                                        "dataset_statistics.json)"),
        DeclareLaunchArgument("instruction", default_value="",
                              description="task instruction; empty keeps the policy file's (set it later with "
                                          "/policy/set_instruction)"),
        DeclareLaunchArgument("preset", default_value="",
                              description="inference settings: reference | single-prefill; empty keeps the policy "
                                          "file's (default: the checkpoint's own; README, 'Presets')"),
        DeclareLaunchArgument("config", default_value=default_config,
                              description=f"folder with the parameter files ({cameras}, {policy}, "
                                          f"{', '.join(p for _, p in robot)})"),
        DeclareLaunchArgument("use_our_cameras", default_value=str(cameras_by_default).lower(),
                              description=f"true: start camera_node per block of {cameras}; false: the cameras "
                                          "come from elsewhere (realsense-ros, OrbbecSDK_ROS2, the simulated lab)"),
        OpaqueFunction(function=nodes),
    ])
