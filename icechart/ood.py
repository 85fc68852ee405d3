"""Out-of-distribution inputs: say so per pixel instead of printing 99 % (issue 12).

A network's confidence means something only on inputs like those it was trained on. Training
stores, per input channel, the range the *normalised* training features covered
(``meta["input_range"]``: the 0.1 and 99.9 percentiles of every channel over the training
scenes' valid pixels; the stem's channels, which change while training, are not checked).

Rule, at each downscaled pixel with normalised input ``z_c`` (standard deviations of channel c
in training) and training range ``[lo_c, hi_c]``:

* excess ``d = max_c max(lo_c - z_c, z_c - hi_c, 0)``, in standard deviations;
* the pixel is **out of distribution** when ``d > OOD_MARGIN`` (1 standard deviation beyond
  the range): status bit :data:`icechart.classes.STATUS_OOD` (8) at every SAR pixel of its
  block; its charts keep their values;
* its class probabilities (SOD, FLOE, and SIC for a classification head) are mixed with the
  uniform distribution, ``p' = (1 - w) p + w / K`` with ``w = clip(d / (4 OOD_MARGIN), 0.25,
  1)``: the decision (argmax) is unchanged, the confidence layers drop (a 99 % top class of 6
  becomes at most 78 %, and reaches 1/K at 4 standard deviations beyond the range).

A channel the training scenes held constant (e.g. a single acquisition month) has
``lo = hi``: any other value beyond the margin is out of distribution, which is the honest
answer for a model that never saw another month.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

OOD_MARGIN = 1.0
"""Standard deviations beyond the training range before a pixel is out of distribution."""
PERCENTILES = (0.1, 99.9)
_SAMPLE = 200_000  # pixels per channel and scene kept for the percentiles (bounded memory)


def input_range(stacks: Iterable[np.ndarray], norm: Mapping[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """``{"lo": [...], "hi": [...], "percentiles": [...], "margin": ...}`` of normalised
    features over unnormalised ``(C, h, w)`` training stacks (NaN = invalid, left out)."""
    from icechart.features import normalise

    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = []
    for x in stacks:
        x = np.asarray(x)
        finite = np.isfinite(x).all(axis=0).ravel()
        z = normalise(x, norm).reshape(x.shape[0], -1)[:, finite]
        if z.shape[1] > _SAMPLE:
            z = z[:, rng.choice(z.shape[1], _SAMPLE, replace=False)]
        if not parts:
            parts = [[] for _ in range(x.shape[0])]
        for c in range(x.shape[0]):
            parts[c].append(z[c])
    lo, hi = [], []
    for p in parts:
        v = np.concatenate(p) if p else np.zeros(1, np.float32)
        a, b = np.percentile(v, PERCENTILES) if v.size else (0.0, 0.0)
        lo.append(round(float(a), 6))
        hi.append(round(float(b), 6))
    return {"lo": lo, "hi": hi, "percentiles": list(PERCENTILES), "margin": OOD_MARGIN}


def excess(x: np.ndarray, rng: Mapping[str, Any]) -> np.ndarray:
    """Largest distance (standard deviations) of any checked channel of the normalised stack
    ``x`` (C, h, w) beyond its training range; 0 inside. Channels beyond those listed (a
    stem's) are not checked."""
    lo = np.asarray(rng["lo"], np.float32)
    hi = np.asarray(rng["hi"], np.float32)
    n = min(lo.size, x.shape[0])
    d = np.zeros(x.shape[1:], np.float32)
    for c in range(n):
        np.maximum(d, lo[c] - x[c], out=d)
        np.maximum(d, x[c] - hi[c], out=d)
    return d


def excess_raw(raw: np.ndarray, norm: Mapping[str, Any] | None, rng: Mapping[str, Any]) -> np.ndarray:
    """:func:`excess` of an unnormalised stack (normalised with ``norm`` one channel at a time,
    NaN -> 0 as :func:`icechart.features.normalise`), or of a normalised one (``norm`` None)."""
    if norm is None:
        return excess(raw, rng)
    lo = np.asarray(rng["lo"], np.float32)
    hi = np.asarray(rng["hi"], np.float32)
    mean = np.asarray(norm["mean"], np.float32)
    std = np.asarray(norm["std"], np.float32)
    d = np.zeros(raw.shape[1:], np.float32)
    for c in range(min(lo.size, raw.shape[0])):
        z = (raw[c] - mean[c]) / (std[c] if std[c] > 0 else np.float32(1))
        np.nan_to_num(z, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.maximum(d, lo[c] - z, out=d)
        np.maximum(d, z - hi[c], out=d)
    return d


def flag(d: np.ndarray, margin: float = OOD_MARGIN) -> np.ndarray:
    """True where a pixel is out of distribution."""
    return d > margin


def soften(probs: dict[str, np.ndarray], d: np.ndarray, margin: float = OOD_MARGIN) -> dict[str, np.ndarray]:
    """Class probabilities mixed with the uniform distribution at out-of-distribution pixels
    (module docstring); argmax unchanged."""
    w = np.where(flag(d, margin), np.clip(d / (4.0 * margin), 0.25, 1.0), 0.0).astype(np.float32)
    out = {}
    for chart, p in probs.items():
        k = p.shape[0]
        out[chart] = (p * (1 - w)[None] + (w / k)[None]).astype(np.float32)
    return out
