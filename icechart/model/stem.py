"""Running a network's learned downscaling stem (:class:`icechart.model.unet.Stem`) on scenes.

The stem maps each ``factor x factor`` block of full-resolution HH and HV to ``stem`` channels
at the downscaled grid. Its blocks do not overlap, so a scene is processed in row bands of whole
blocks (bounded memory) with exactly the result of a whole-scene pass: no seams. The inputs are
normalised with the model's ``stem_norm`` (per-polarisation mean and standard deviation of the
training scenes' 80 m pixels) and invalid pixels set to 0, as in training.

The stem's channels are appended after the model's feature channels; the model's ``norm`` lists
them with mean 0 and standard deviation 1, so :func:`icechart.features.normalise` leaves them
as they are and every consumer of "raw" stacks (prediction, calibration, ensembles) works on
``(channels + stem, h, w)`` arrays unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from icechart.features import full_resolution_sar, normalise, output_shape
from icechart.io.scene import Scene

logger = logging.getLogger(__name__)

BAND_BLOCKS = 50
"""Downscaled rows per band (50 x factor 10 = 500 SAR lines of 2 x samples float32)."""


def stem_size(meta: Mapping[str, Any]) -> int:
    """Number of stem channels of a model (0: no stem)."""
    return int(meta.get("arch", {}).get("stem", 0))


def has_stem(model: Any) -> bool:
    return stem_size(model.meta) > 0


def stem_channels(net: Any, full: np.ndarray, stem_norm: Mapping[str, Any]) -> np.ndarray:
    """The stem's output ``(stem, ceil(H/f), ceil(W/f))`` float32 for ``(2, H, W)`` unnormalised
    full-resolution SAR (NaN = invalid)."""
    import torch

    x = normalise(full, stem_norm)  # NaN -> 0
    device = next(net.parameters()).device
    with torch.inference_mode():
        out = net.run_stem(torch.from_numpy(x)[None].to(device))[0]
    return out.float().cpu().numpy()


def scene_stem_channels(model: Any, scene: Scene, *, band_blocks: int = BAND_BLOCKS) -> np.ndarray:
    """The stem's channels for a whole scene, computed band by band (module docstring)."""
    meta = model.meta
    f = int(meta["arch"]["stem_factor"])
    lines, _ = scene.shape
    oh, ow = output_shape(scene.shape, f)
    out = np.empty((stem_size(meta), oh, ow), dtype=np.float32)
    step = max(1, band_blocks) * f
    for r0 in range(0, lines, step):
        r1 = min(r0 + step, lines)
        o0 = r0 // f
        band = stem_channels(model.net, full_resolution_sar(scene, rows=(r0, r1)), meta["stem_norm"])
        out[:, o0 : o0 + band.shape[1]] = band
    return out


def with_stem(model: Any, raw: np.ndarray, *, scene: Scene | None = None, full: np.ndarray | None = None) -> np.ndarray:
    """``raw`` (unnormalised features) with the model's stem channels appended (from ``scene``
    band by band, or from a full-resolution array ``full``); ``raw`` itself without a stem."""
    if not has_stem(model):
        return raw
    if full is not None:
        s = stem_channels(model.net, np.asarray(full, dtype=np.float32), model.meta["stem_norm"])
    elif scene is not None:
        s = scene_stem_channels(model, scene)
    else:
        raise ValueError("a model with a downscaling stem needs the scene or its full-resolution SAR")
    return np.concatenate([raw, s[:, : raw.shape[1], : raw.shape[2]]], axis=0)
