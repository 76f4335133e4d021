"""The policy's inference vocabulary, importable without torch (command lines and ROS parameter checks use it
before any model loads): the modes, who decides an averaged step's gripper, and the named presets.

The model imports them from here too; model.policy.PRESETS holds each preset's settings under these names
(test/core/test_cli_help.py keeps the two equal).
"""
from __future__ import annotations

MODES = ("hybrid", "diffusion", "autoregressive")  # hybrid: the collaborative ensemble of both branches
# Who decides the gripper when both branches are averaged: "average" (the reference: the binarised average, so a
# disagreement closes) or "autoregressive" (the AR branch's binarised gripper).
GRIPPER_RULES = ("average", "autoregressive")
PRESETS = ("reference", "single-prefill")           # the keys of model.policy.PRESETS
