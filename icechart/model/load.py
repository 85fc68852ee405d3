"""Loading a model for inference, and the one rule for choosing its device.

:func:`resolve_device` is used by ``predict``, ``train`` and ``calibrate`` alike: ``auto`` picks
CUDA when a GPU is visible, else the CPU; asking for ``cuda`` on a machine without one is
:class:`~icechart.errors.DeviceError`, exit 69 (sysexits EX_UNAVAILABLE: the service the run
needs is not there, whatever the command). torch is imported only when called.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icechart.errors import DeviceError

if TYPE_CHECKING:
    from icechart.model.checkpoint import LoadedModel
    from icechart.model.ensemble import EnsembleModel

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda[:N]`` must be available.

    Raises
    ------
    DeviceError
        ``cuda`` asked for without a CUDA device, or an unknown device name (69).
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"--device {device} was asked for but no CUDA device is available; use --device auto or cpu"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise DeviceError(f"unknown device {device!r}; use {', '.join(DEVICES)}")
    return device


def load_model(
    spec: "str | Path | LoadedModel | EnsembleModel | None" = None, *, device: str = "cpu"
) -> "LoadedModel | EnsembleModel":
    """Load a model once for many scenes.

    Parameters
    ----------
    spec
        A registry id, a checkpoint file, a training run directory, a shipped model directory,
        an ensemble manifest (``ensemble.toml``, or the directory of ``icechart train --runs N``
        holding it; :mod:`icechart.model.ensemble`), an already loaded model (returned as is,
        moved to ``device``), or None for the default shipped model.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    LoadedModel or EnsembleModel
        With ``.contract`` (:class:`~icechart.model.contract.ModelContract`) parsed.

    Raises
    ------
    ModelError
        Missing, unknown or corrupt model; ensemble members whose input contracts differ (69).
    DeviceError
        The device is not available (69).
    """
    from icechart.model.checkpoint import LoadedModel, load_checkpoint
    from icechart.model.ensemble import EnsembleModel, load_ensemble, manifest_file
    from icechart.model.registry import registry_id, resolve_model

    dev = resolve_device(device)
    if isinstance(spec, EnsembleModel):
        return spec.to(dev)
    if isinstance(spec, LoadedModel):
        spec.net.to(dev).eval()
        return spec
    path = resolve_model(spec)
    model: Any
    if manifest_file(path) is not None:
        model = load_ensemble(path, device=dev)
    else:
        model = load_checkpoint(path, device=dev)
    model.contract  # parse (and check) the contract once, now
    rid = registry_id(spec)
    if rid and model.model_id.startswith(("ckpt-", "ens-")):
        model.model_id = rid
    logger.info("model %s (sha256 %s...) on %s", model.model_id, model.sha256[:12], dev)
    return model
