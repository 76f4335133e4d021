"""hybridvla_core: everything of hybridvla that needs no ROS, laid out by role (each package imports only those
listed before it):

  errors, resources, modes, actions  shared vocabulary: one-line user errors, packaged files, the policy's
                                     modes and presets, action conventions and dataset statistics
  model/       the HybridVLA model, its inference (Policy), checkpoints, import/export, training
  runtime/     the control loop, the guard pipeline every target passes, arm kinematics
  recording/   rosbag2 MCAP episode bags, the episode recorder, crash recovery
  datasets/    training sets built from recorded bags
  robots/      arm bridge logic, the Piper over CAN, bring-up checks, teleoperation, camera drivers
  sim/         the simulated lab (MuJoCo) behind the robots' interfaces
  tools/       the bodies of the `hybridvla` subcommands (cli.py): bench, evaluation, import, doctor, ...

Nothing here imports rclpy or any ROS package: the nodes in hybridvla_ros are thin adapters around it.
"""

__version__ = "0.1.0"
