"""Teleoperated recording: cameras, the arm bridge (or the simulated lab and a bridge), teleop and the recorder.

  ros2 launch hybridvla_ros record.launch.py robot:=franka instruction:="put the red block in the blue bowl"
  ros2 launch hybridvla_ros record.launch.py robot:=agilex instruction:="fold the towel"
  ros2 launch hybridvla_ros record.launch.py robot:=sim_franka instruction:="put the red block in the blue bowl"
      [config:=/path/to/config] [use_our_cameras:=true|false] [teleop:=true|false] [recorder:=true|false]
      [output_dir:=/data/bags]

Under launch the recorder has no terminal: control it with
  ros2 service call /recorder/episode hybridvla_msgs/srv/EpisodeControl "{command: 0, instruction: ''}"
or start it with recorder:=false and run `ros2 run hybridvla_ros recorder --ros-args --params-file
config/record_<robot>.yaml` in its own terminal for single-key control. A keyboard teleop (record_sim_franka.yaml)
is not launched: it needs a terminal, so it runs in one of its own (launch says how).
The bridge starts disabled: ros2 service call /<bridge>/enable std_srvs/srv/SetBool "{data: true}".
"""
from __future__ import annotations

from pathlib import Path

# robot -> (cameras file or None, [(executable, parameter file)] of the robot side, recording file, sim time)
ROBOTS = {
    "franka": ("cameras_franka.yaml", [("franka_bridge", "franka.yaml")], "record_franka.yaml", False),
    "agilex": ("cameras_agilex.yaml", [("agilex_bridge", "agilex.yaml")], "record_agilex.yaml", False),
    "sim_franka": ("cameras_franka.yaml", [("sim_lab", "sim_franka.yaml"), ("franka_bridge", "franka.yaml")],
                   "record_sim_franka.yaml", True),
}
# Where our camera nodes run by default: on the robots; the simulated lab renders its own views.
CAMERAS_BY_DEFAULT = {"franka": True, "agilex": True, "sim_franka": False}


def node_names(path: Path) -> list[str]:
    """Top-level keys of a ROS 2 parameter file that hold ros__parameters."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    return [k for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v and "*" not in k]


def keyboard_teleop(path: Path) -> bool:
    """Whether the file's teleop reads the keyboard: it needs a terminal, which a launched process lacks (launch
    gives it a pipe for stdin), so it runs in its own terminal instead."""
    import yaml

    block = (yaml.safe_load(Path(path).read_text()) or {}).get("teleop") or {}
    return (block.get("ros__parameters") or {}).get("device") == "keyboard"


def plan(robot: str, config: Path, *, use_our_cameras: bool, teleop: bool, recorder: bool,
         instruction: str = "", output_dir: str = "") -> list[tuple[str, str, list]]:
    """(executable, node name, parameters) of every node to start; parameters = files and override dicts."""
    if robot not in ROBOTS:
        raise ValueError(f"robot:={robot} is not one of {', '.join(ROBOTS)}")
    cameras, robot_side, record, sim = ROBOTS[robot]
    if sim and use_our_cameras:  # sim_lab publishes the views on the very topics camera_node would: mixed frames
        raise ValueError(f"use_our_cameras:=true with robot:={robot}: sim_lab already renders the views on "
                         f"/camera/<view>/color/image_raw; leave use_our_cameras at its default")
    common = {"use_sim_time": sim}
    nodes = []
    if use_our_cameras:
        nodes += [("camera_node", name, [str(config / cameras)]) for name in node_names(config / cameras)]
    for executable, params in robot_side:
        nodes += [(executable, name, [str(config / params), common]) for name in node_names(config / params)]
    names = node_names(config / record)
    if teleop and "teleop" in names and not keyboard_teleop(config / record):
        nodes.append(("teleop", "teleop", [str(config / record), common]))
    if recorder:
        overrides = dict(common)
        if instruction:
            overrides["instruction"] = instruction
        if output_dir:
            overrides["output_dir"] = output_dir
        nodes.append(("recorder", "recorder", [str(config / record), overrides]))
    return nodes


def generate_launch_description():
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def truth(context, name: str) -> bool:
        return LaunchConfiguration(name).perform(context).lower() in ("true", "1", "yes")

    def nodes(context):
        robot = LaunchConfiguration("robot").perform(context)
        cameras = LaunchConfiguration("use_our_cameras").perform(context)
        use_cameras = CAMERAS_BY_DEFAULT.get(robot, False) if cameras == "default" else truth(context, "use_our_cameras")
        steps = plan(robot, Path(LaunchConfiguration("config").perform(context)).expanduser(),
                     use_our_cameras=use_cameras, teleop=truth(context, "teleop"), recorder=truth(context, "recorder"),
                     instruction=LaunchConfiguration("instruction").perform(context),
                     output_dir=LaunchConfiguration("output_dir").perform(context))
        actions = [Node(package="hybridvla_ros", executable=executable, name=name, output="screen",
                        parameters=params) for executable, name, params in steps]
        record = Path(LaunchConfiguration("config").perform(context)).expanduser() / ROBOTS[robot][2]
        if truth(context, "teleop") and keyboard_teleop(record):
            actions.append(LogInfo(msg=f"keyboard teleop needs a terminal: run `ros2 run hybridvla_ros teleop "
                                       f"--ros-args --params-file {record}` in a terminal of its own"))
        return actions

    default_config = str(Path(get_package_share_directory("hybridvla_ros")) / "config")
    return LaunchDescription([
        DeclareLaunchArgument("robot", description=f"one of {', '.join(ROBOTS)}"),
        DeclareLaunchArgument("instruction", default_value="", description="task instruction of the episodes"),
        DeclareLaunchArgument("config", default_value=default_config, description="folder with the parameter files"),
        DeclareLaunchArgument("use_our_cameras", default_value="default",
                              description="true/false; default: true on the robots, false in the simulated lab"),
        DeclareLaunchArgument("teleop", default_value="true",
                              description="start teleop from record_<robot>.yaml (SpaceMouse / leader arms)"),
        DeclareLaunchArgument("recorder", default_value="true",
                              description="start the recorder (false: run it in a terminal for key control)"),
        DeclareLaunchArgument("output_dir", default_value="", description="bag folder (default: the file's)"),
        OpaqueFunction(function=nodes),
    ])
