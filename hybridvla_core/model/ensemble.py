"""Collaborative action ensemble (paper section 3.3, reference script's gripper handling)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from hybridvla_core.actions import gripper_indices
from hybridvla_core.modes import GRIPPER_RULES, MODES

# The reference script's gate: sum of the 6 non-gripper confidences > 5.8, i.e. their mean > 5.8 / 6 = 0.9667
# (the paper's text says 0.96).
REFERENCE_THETA = 5.8 / 6


class EnsembleDecision(NamedTuple):
    action: np.ndarray  # (action_dim,) normalised, grippers binarised
    source: str  # "average" | "diffusion" | "autoregressive"
    mean_confidence: float  # mean over the non-gripper tokens (nan when no AR tokens)


def binarize_grippers(action: np.ndarray) -> np.ndarray:
    out = np.array(action, dtype=np.float64, copy=True)
    idx = gripper_indices(out.shape[-1])
    out[..., idx] = (out[..., idx] > 0.5).astype(np.float64)
    return out


def non_gripper_mean_confidence(confidence: np.ndarray) -> float:
    confidence = np.asarray(confidence, dtype=np.float64)
    keep = np.ones(confidence.shape[-1], dtype=bool)
    keep[gripper_indices(confidence.shape[-1])] = False
    return float(confidence[keep].mean())


def ensemble(diffusion_action, ar_action, confidence, mode: str, theta: float,
             gripper: str = "average") -> EnsembleDecision:
    """hybrid: average both branches when the mean non-gripper confidence is strictly above theta, else
    diffusion. Grippers are binarised (> 0.5 -> 1) in each branch; an averaged step's gripper is, by
    `gripper`, the binarised average (two branches that disagree average to 0.5 -> 0, closed) or the
    autoregressive branch's."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if gripper not in GRIPPER_RULES:
        raise ValueError(f"gripper rule must be one of {GRIPPER_RULES}, got {gripper!r}")
    diffusion = None if diffusion_action is None else binarize_grippers(diffusion_action)
    ar = None if ar_action is None else binarize_grippers(ar_action)
    mean_conf = float("nan") if confidence is None else non_gripper_mean_confidence(confidence)
    if mode == "diffusion":
        return EnsembleDecision(diffusion, "diffusion", mean_conf)
    if mode == "autoregressive":
        return EnsembleDecision(ar, "autoregressive", mean_conf)
    if mean_conf > theta:
        fused = binarize_grippers((diffusion + ar) / 2.0)
        if gripper == "autoregressive":
            idx = gripper_indices(fused.shape[-1])
            fused[idx] = ar[idx]
        return EnsembleDecision(fused, "average", mean_conf)
    return EnsembleDecision(diffusion, "diffusion", mean_conf)
