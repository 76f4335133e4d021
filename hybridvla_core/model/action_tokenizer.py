"""OpenVLA-style discretisation of normalised actions into the top 256 ids of the base vocabulary."""
from __future__ import annotations

import numpy as np
import torch

NUM_BINS = 256


class ActionTokenizer:
    """256 uniform bin edges over [-1, 1] (255 bins with centres); a -> id = base_vocab_size - digitize(a),
    so ids occupy [base_vocab_size - 256, base_vocab_size - 1] (Llama: 31744..31999)."""

    def __init__(self, base_vocab_size: int):
        if base_vocab_size <= NUM_BINS:
            raise ValueError(f"the base vocabulary ({base_vocab_size}) must be larger than {NUM_BINS} action bins")
        self.base_vocab_size = base_vocab_size
        self.bins = np.linspace(-1.0, 1.0, NUM_BINS)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.first_id = base_vocab_size - NUM_BINS  # lowest id an action token can take
        self.bin_width = self.bins[1] - self.bins[0]

    def encode(self, actions) -> np.ndarray:
        """Normalised actions (any shape) -> token ids of the same shape."""
        clipped = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
        return (self.base_vocab_size - np.digitize(clipped, self.bins)).astype(np.int64)

    def decode(self, token_ids) -> np.ndarray:
        """Token ids -> normalised actions at the bin centres."""
        digitized = np.clip(self.base_vocab_size - np.asarray(token_ids, dtype=np.int64), 1, self.bin_centers.shape[0])
        return self.bin_centers[digitized - 1]

    def decode_torch(self, token_ids: torch.Tensor) -> torch.Tensor:
        centers = torch.as_tensor(self.bin_centers, device=token_ids.device, dtype=torch.float32)
        digitized = (self.base_vocab_size - token_ids).clamp(1, centers.shape[0])
        return centers[digitized - 1]
