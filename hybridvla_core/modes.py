"""The policy's inference vocabulary, importable without torch (command lines and ROS parameter checks use it
before any model loads): the modes, who decides an averaged step's gripper, and the named presets.

hybridvla_core.model.ensemble and hybridvla_core.model.policy hold the same names (test/core/test_cli_help.py
keeps them equal); everything outside the model imports them from here.
"""
from __future__ import annotations

MODES = ("hybrid", "diffusion", "autoregressive")  # hybrid: the collaborative ensemble of both branches
GRIPPER_RULES = ("average", "autoregressive")       # model.ensemble.GRIPPER_RULES
PRESETS = ("reference", "single-prefill")           # the keys of model.policy.PRESETS
