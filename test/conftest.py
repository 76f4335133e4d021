"""Test-session environment: keep DDS on loopback in a domain of its own, render without a display,
never reach for a model hub."""
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # test/vendor_interfaces.py: what the vendor stacks publish

# Set before anything imports rclpy or mujoco; child processes inherit them.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # Iron and later
os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # Humble
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
