"""DDPM training schedule (squaredcos_cap_v2) and deterministic DDIM sampling (eta 0, no clipping), written
from the formulas of Nichol & Dhariwal (2021) and Song et al. (2021). The denoiser predicts either the noise
("epsilon", the paper and reference) or the clean sample ("sample": x_0 directly; for low-dimensional actions
its error is the action error itself, where an epsilon error is amplified by sqrt(1 - abar) / sqrt(abar))."""
from __future__ import annotations

import math

import torch

from hybridvla_core.model.config import PREDICTION_TYPES, TIMESTEP_SPACINGS


def cosine_betas(train_steps: int, max_beta: float = 0.999) -> torch.Tensor:
    """betas of the squaredcos_cap_v2 schedule: 1 - abar(t+1)/abar(t), abar(s) = cos^2((s + 0.008)/1.008 * pi/2)."""
    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / train_steps) / alpha_bar(i / train_steps), max_beta)
             for i in range(train_steps)]
    return torch.tensor(betas, dtype=torch.float64)


class DiffusionSchedule:
    def __init__(self, train_steps: int = 100, prediction_type: str = "epsilon", timestep_spacing: str = "leading"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}")
        self.train_steps = train_steps
        self.prediction_type = prediction_type
        self.timestep_spacing = timestep_spacing
        self.alphas_cumprod = torch.cumprod(1.0 - cosine_betas(train_steps), dim=0)  # float64

    @classmethod
    def from_config(cls, config) -> "DiffusionSchedule":
        """The schedule a model's DiffusionConfig describes."""
        return cls(config.train_steps, config.prediction_type, config.timestep_spacing)

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; timesteps (B,) integer."""
        abar = self.alphas_cumprod.to(clean.device)[timesteps].to(clean.dtype)
        shape = (-1,) + (1,) * (clean.dim() - 1)
        return abar.sqrt().view(shape) * clean + (1 - abar).sqrt().view(shape) * noise

    def target(self, clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser is trained to output."""
        return noise if self.prediction_type == "epsilon" else clean

    def predict_clean(self, noisy: torch.Tensor, output: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_0 estimate from one denoiser output."""
        if self.prediction_type == "sample":
            return output
        eps = output
        abar = self.alphas_cumprod.to(noisy.device)[timesteps].to(noisy.dtype)
        shape = (-1,) + (1,) * (noisy.dim() - 1)
        return (noisy - (1 - abar).sqrt().view(shape) * eps) / abar.sqrt().view(shape)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """'leading' spacing: 4 steps of 100 -> [75, 50, 25, 0]; 'trailing': [99, 74, 49, 24] (the last step
        returns the x_0 estimate made at t = 24, without asking the denoiser at t = 0)."""
        ratio = self.train_steps // steps
        if self.timestep_spacing == "trailing":
            return [self.train_steps - 1 - i * ratio for i in range(steps)]
        return [i * ratio for i in reversed(range(steps))]

    def ddim_step(self, sample: torch.Tensor, output: torch.Tensor, timestep: int, steps: int) -> torch.Tensor:
        """x_{t - ratio} from x_t and the denoiser's output, eta = 0; the step after t = 0 uses abar = 1 (returns
        the x_0 estimate)."""
        previous = timestep - self.train_steps // steps
        abar = self.alphas_cumprod[timestep].item()
        abar_previous = self.alphas_cumprod[previous].item() if previous >= 0 else 1.0
        if self.prediction_type == "sample":
            clean = output
            eps = (sample - math.sqrt(abar) * clean) / math.sqrt(1 - abar)
        else:
            eps = output
            clean = (sample - math.sqrt(1 - abar) * eps) / math.sqrt(abar)
        return math.sqrt(abar_previous) * clean + math.sqrt(1 - abar_previous) * eps
