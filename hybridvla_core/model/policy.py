"""The inference engine: one control step from an observation to an action in robot units.

Schedules (ar_schedule):
  "single" (default for ar_conditioning "denoised"): ONE prefill of [BOS][views][prompt]<BOD>[state]; each
    DDIM step feeds only [t, x_1..x_T] against that cache and crops them again; then [t=0, denoised action,
    <EOD>] and the greedy AR tokens decode on the same cache.
  "reference" (default for ar_conditioning "noisy"; the benchmark baseline): the same cached diffusion, then
    a separate AR pass that recomputes the views and the prefix and puts FRESH noise at a random timestep
    between <BOD> and <EOD>, as the reference code does (one prefill of prefix + [t, noise, <EOD>], then the
    greedy tokens on that cache).

Presets (preset=..., the policy node's `preset`, --preset of hybridvla eval bags / eval sim) name a set of the
settings above; explicit settings still override them. None keeps the checkpoint's own (an imported reference
checkpoint's config.json holds the reference's, so it runs as "reference" by default):
  "reference": the reference's inference script: AR tokens in a second pass on fresh noise at a random timestep,
    gate sum(conf[:6]) > 5.8 (theta = REFERENCE_THETA), the binarised average's gripper. (The resize filter,
    token layout and need_to_sub are the checkpoint's: properties of the weights, not choices at run time.)
  "single-prefill": this project's: one prefill serves both branches, the AR tokens follow the denoised action
    at t = 0 (for a checkpoint trained with ar_conditioning "noisy" that is a train/test mismatch: measure it).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from hybridvla_core.actions import DatasetStatistics, select_statistics
from hybridvla_core.model.ensemble import GRIPPER_RULES, MODES, REFERENCE_THETA, binarize_grippers, ensemble
from hybridvla_core.model.hybridvla import HybridVLA
from hybridvla_core.model.vision import images_to_pixels

AR_SCHEDULES = ("single", "reference")
PRESETS = {
    "reference": {"ar_schedule": "reference", "theta": REFERENCE_THETA, "ensemble_gripper": "average"},
    "single-prefill": {"ar_schedule": "single"},
}


def preset_settings(preset: str | None) -> dict:
    """The settings a preset names ({} for None); ValueError naming the choices for an unknown one."""
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    return dict(PRESETS[preset])


@dataclass
class Observation:
    images: Mapping[str, np.ndarray]  # view name -> HxWx3 uint8 RGB
    state: np.ndarray  # (action_dim,) robot units: [x, y, z (m), roll, pitch, yaw (rad), gripper] per arm
    instruction: str


@dataclass
class ActionResult:
    action: np.ndarray  # (D,) robot units, the action to execute now (grippers 0/1)
    action_chunk: np.ndarray  # (T, D) robot units: row 0 = action, later rows from the diffusion chunk
    diffusion_action: np.ndarray | None  # (D,) robot units, first action of the diffusion chunk
    diffusion_chunk: np.ndarray | None  # (T, D) robot units
    ar_action: np.ndarray | None  # (D,) robot units
    token_confidence: np.ndarray | None  # (D,) per AR token, probability under the full-vocabulary softmax
    mean_confidence: float  # mean over the non-gripper tokens; nan without AR
    source: str  # "average" | "diffusion" | "autoregressive"
    timings_ms: dict = field(default_factory=dict)  # stage -> milliseconds, plus "total"


class _Stopwatch:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.timings: dict[str, float] = {}
        self._last = self._now()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def lap(self, stage: str) -> None:
        now = self._now()
        self.timings[stage] = self.timings.get(stage, 0.0) + (now - self._last) * 1000.0
        self._last = now


class Policy:
    def __init__(self, model: HybridVLA, statistics: DatasetStatistics, mode: str = "hybrid",
                 theta: float | None = None, ddim_steps: int | None = None, ar_schedule: str | None = None,
                 seed: int = 0, ensemble_gripper: str | None = None, preset: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        config = model.config
        named = preset_settings(preset)
        theta = named.get("theta") if theta is None else theta
        ar_schedule = ar_schedule or named.get("ar_schedule")
        ensemble_gripper = ensemble_gripper or named.get("ensemble_gripper")
        self.preset = preset
        ar_schedule = ar_schedule or ("single" if config.ar_conditioning == "denoised" else "reference")
        if ar_schedule not in AR_SCHEDULES:
            raise ValueError(f"ar_schedule must be one of {AR_SCHEDULES}, got {ar_schedule!r}")
        if statistics.action.q01.shape[0] != config.action_dim:
            raise ValueError(f"statistics have {statistics.action.q01.shape[0]} action dims, model {config.action_dim}")
        self.model = model.eval()
        self.config = config
        self.statistics = statistics
        self.mode = mode
        self.theta = config.theta if theta is None else float(theta)
        self.ensemble_gripper = config.ensemble_gripper if ensemble_gripper is None else ensemble_gripper
        if self.ensemble_gripper not in GRIPPER_RULES:
            raise ValueError(f"ensemble_gripper must be one of {GRIPPER_RULES}, got {self.ensemble_gripper!r}")
        self.ddim_steps = config.diffusion.ddim_steps if ddim_steps is None else int(ddim_steps)
        if not 1 <= self.ddim_steps <= config.diffusion.train_steps:
            raise ValueError(f"ddim_steps must be in 1..{config.diffusion.train_steps}, got {self.ddim_steps}")
        self.ar_schedule = ar_schedule
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self._prompt_cache: dict[str, list[int]] = {}

    @classmethod
    def from_checkpoint(cls, directory: str | Path, device: str = "cpu", dtype: torch.dtype | str | None = None,
                        mode: str = "hybrid", theta: float | None = None, ddim_steps: int | None = None,
                        ar_schedule: str | None = None, unnorm_key: str | None = None, seed: int = 0,
                        ensemble_gripper: str | None = None, preset: str | None = None) -> "Policy":
        """dtype defaults to float32 on CPU and bfloat16 on CUDA; theta, ddim_steps and ensemble_gripper
        default to the preset's, then the checkpoint's."""
        preset_settings(preset)  # an unknown preset is refused before the weights load
        from hybridvla_core.model.checkpoint import load_checkpoint

        device = torch.device(device)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        model, statistics = load_checkpoint(directory, device, dtype)
        key = unnorm_key if unnorm_key is not None else model.config.unnorm_key
        return cls(model, select_statistics(statistics, key), mode, theta, ddim_steps, ar_schedule, seed,
                   ensemble_gripper, preset)

    # ------------------------------------------------------------------------------------------------ inputs
    def _validate(self, observation) -> Observation:
        if isinstance(observation, Mapping):
            missing = {"images", "state", "instruction"} - set(observation)
            if missing:
                raise ValueError(f"observation lacks {sorted(missing)}")
            observation = Observation(observation["images"], observation["state"], observation["instruction"])
        for name in self.config.view_names:
            if name not in observation.images:
                raise ValueError(f"observation is missing view {name!r} (the model expects {self.config.view_names})")
            image = np.asarray(observation.images[name])
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"view {name!r} must be an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
        state = np.asarray(observation.state, dtype=np.float64)
        if state.shape != (self.config.action_dim,):
            raise ValueError(f"state must have shape ({self.config.action_dim},), got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError(f"state contains non-finite values: {state.tolist()}")
        if not isinstance(observation.instruction, str) or not observation.instruction.strip():
            raise ValueError("instruction must be a non-empty string")
        return Observation(observation.images, state, observation.instruction)

    def _prompt(self, instruction: str) -> list[int]:
        if instruction not in self._prompt_cache:
            self._prompt_cache[instruction] = self.model.prompt_ids(instruction)
        return self._prompt_cache[instruction]

    def _pixels(self, observation: Observation) -> torch.Tensor:
        images = [observation.images[name] for name in self.config.view_names]
        return images_to_pixels(images, self.config.vision.image_size, self.model.device, self.model.dtype,
                                self.config.view_crops, self.config.vision.resize).unsqueeze(0)

    def prefix(self, observation: Observation) -> torch.Tensor:
        """Embeddings of [BOS][views][prompt]<BOD>[state] for one observation, (1, L, H)."""
        model = self.model
        state = torch.as_tensor(self.statistics.proprio.normalize(observation.state), dtype=torch.float32,
                                device=model.device).unsqueeze(0)
        embeds, _, _ = model.build_prefix(model.encode_images(self._pixels(observation)),
                                          [self._prompt(observation.instruction)], state)
        return embeds

    def sample_noise(self) -> torch.Tensor:
        return torch.randn((1, self.config.chunk, self.config.action_dim), generator=self.generator,
                           device=self.model.device)

    # --------------------------------------------------------------------------------------------- predict
    @torch.inference_mode()
    def predict(self, observation, noise: torch.Tensor | None = None) -> ActionResult:
        """One control step. noise (1, T, D) fixes the diffusion's starting sample (else drawn from the
        policy's seeded generator)."""
        observation = self._validate(observation)
        model = self.model
        watch = _Stopwatch(model.device)
        run_diffusion = self.mode != "autoregressive" or self.ar_schedule == "single"
        run_ar = self.mode != "diffusion"
        noise = self.sample_noise() if noise is None else noise.to(model.device, torch.float32)
        watch.lap("preprocess")
        diffusion = ar = confidence = None
        if run_diffusion:
            prefix = self.prefix(observation)
            watch.lap("vision_prefix")
            steps = model.prefill(prefix)
            watch.lap("prefill")
            diffusion = model.denoise_cached(steps, noise, self.ddim_steps)
            watch.lap("denoise")
        if run_ar:
            if self.ar_schedule == "single":
                zero_t = torch.zeros(1, dtype=torch.long, device=model.device)
                ar, confidence, _ = model.decode_actions(steps, zero_t, diffusion.clamp(-1, 1))
            else:
                # The reference's separate AR pass: views and prefix recomputed, then one prefill of the prefix
                # and [random t, fresh noise, <EOD>] together, then the greedy tokens.
                random_t = torch.randint(0, model.schedule.train_steps, (1,), generator=self.generator,
                                         device=model.device)
                ar, confidence, _ = model.decode_actions_uncached(self.prefix(observation), random_t,
                                                                  self.sample_noise())
            watch.lap("autoregressive")
        result = self._finish(diffusion, ar, confidence)
        watch.lap("ensemble")
        result.timings_ms = {**watch.timings, "total": sum(watch.timings.values())}
        return result

    def _finish(self, diffusion, ar, confidence) -> ActionResult:
        unnormalize = self.statistics.action.unnormalize
        diffusion_chunk = None if diffusion is None else diffusion[0].clamp(-1, 1).double().cpu().numpy()
        ar_action = None if ar is None else ar[0].double().cpu().numpy()
        confidence = None if confidence is None else confidence[0].float().cpu().numpy()
        decision = ensemble(None if diffusion_chunk is None else diffusion_chunk[0], ar_action, confidence,
                            self.mode, self.theta, self.ensemble_gripper)
        action = unnormalize(decision.action)
        if diffusion_chunk is not None:
            chunk = unnormalize(binarize_grippers(diffusion_chunk))
            chunk[0] = action
        else:
            chunk = action[None]
        return ActionResult(
            action=action, action_chunk=chunk,
            diffusion_action=None if diffusion_chunk is None else unnormalize(diffusion_chunk[0]),
            diffusion_chunk=None if diffusion_chunk is None else unnormalize(diffusion_chunk),
            ar_action=None if ar_action is None else unnormalize(ar_action),
            token_confidence=confidence, mean_confidence=decision.mean_confidence, source=decision.source,
        )
