"""The hardware side without ROS: arm bridge logic (arm_bridge), the Piper over CAN (piper_can), bring-up checks
(preflight), teleoperation mappings (teleop) and the camera drivers (cameras)."""
