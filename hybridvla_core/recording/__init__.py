"""Recording: rosbag2 MCAP episode bags (bags), the episode recorder (recorder), its terminal keys (terminal_keys) and
crash recovery (recovery)."""
