"""The HybridVLA model, its inference engine, checkpoints and training data.

Entry points:
    Policy.from_checkpoint(directory, device="cpu", dtype=None, mode="hybrid", theta=None, ddim_steps=None,
                           ar_schedule=None, unnorm_key=None, seed=0, ensemble_gripper=None)
        .predict(observation) -> ActionResult
    build_model(config), save_checkpoint(model, directory, statistics), load_checkpoint(directory)
    TrainsetWriter / TrainsetDataset: the training-set directory format (see hybridvla_core.model.trainset)
"""
from hybridvla_core.model.checkpoint import build_model, load_checkpoint, save_checkpoint
from hybridvla_core.model.config import (DiffusionConfig, LLMConfig, ModelConfig, ViewConfig,
                                         VisionConfig)
from hybridvla_core.model.policy import ActionResult, Observation, Policy
from hybridvla_core.model.trainset import TrainsetDataset, TrainsetWriter

__all__ = [
    "ActionResult", "DiffusionConfig", "LLMConfig", "ModelConfig", "Observation", "Policy", "TrainsetDataset",
    "TrainsetWriter", "ViewConfig", "VisionConfig", "build_model", "load_checkpoint", "save_checkpoint",
]
