"""The multi-task U-Net and its checkpoints (torch is imported here, not by the CLI group)."""

from __future__ import annotations

from icechart.model.checkpoint import LoadedModel, load_checkpoint, predict_logits, save_checkpoint
from icechart.model.ensemble import EnsembleModel, load_ensemble
from icechart.model.unet import UNet, build_net

__all__ = [
    "EnsembleModel",
    "LoadedModel",
    "UNet",
    "build_net",
    "load_checkpoint",
    "load_ensemble",
    "predict_logits",
    "save_checkpoint",
]
