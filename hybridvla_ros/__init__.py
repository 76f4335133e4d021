"""hybridvla_ros: the rclpy nodes. Each node is a thin adapter around hybridvla_core."""
