"""Training entry points: ``train(config) -> RunResult`` and ``train_runs`` (the ``--runs N``
study). The implementation lives in :mod:`icechart.training`."""

from __future__ import annotations

import logging

from icechart.training.config import TrainConfig, load_train_config, preset_names
from icechart.training.loop import RunResult, train, train_runs

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "TrainConfig", "load_train_config", "preset_names", "train", "train_runs"]
