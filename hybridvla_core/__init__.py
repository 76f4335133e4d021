"""hybridvla_core: everything of hybridvla that needs no ROS.

The model, its inference engine and training, datasets from bags, action math, kinematics and safety
guards, the simulated lab and evaluation. Nothing here imports rclpy or any ROS package: the nodes in
hybridvla_ros are thin adapters around these functions.
"""

__version__ = "0.1.0"
