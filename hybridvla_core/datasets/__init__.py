"""Datasets from rosbag2 bags: resampled episodes (extract), training sets (build), `hybridvla dataset` (cli)."""
