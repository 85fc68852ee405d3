"""Calibrated confidence: temperature scaling and expected calibration error (numpy + scipy only).

Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML) divides
a classifier's logits by one scalar ``T > 0`` per output, fitted by minimising the negative
log-likelihood (NLL) of held-out labels; it changes the confidences, never the argmax. Here it
is applied to *probabilities* ``p`` as ``p**(1/T)`` renormalised, which equals
``softmax(z / T)`` for ``p = softmax(z)`` (``log p`` and ``z`` differ by a constant per pixel)
and extends unchanged to an ensemble's averaged probabilities, whose temperature is fitted on
``log(mean p)`` (Lakshminarayanan et al. 2017 average member probabilities; Rahaman and
Thiery 2021 calibrate the averaged output, not the members).

The NLL of ``softmax(z / T)`` is convex in ``1/T``, so a bounded one-dimensional search on
``log T`` (Brent's method, :func:`scipy.optimize.minimize_scalar`) finds the global minimum.

Expected calibration error (Naeini et al. 2015; Guo et al. 2017): the top-class confidence
is binned into 15 equal-width bins on [0, 1]; ``ECE = sum_b n_b / N * |acc_b - conf_b|``.
:class:`ReliabilityAccumulator` keeps per-bin counts, confidence sums and hit counts, so ECE
streams over any number of pixels (``icechart score`` reads the product's ``SOD_confidence``
and ``FLOE_confidence`` layers, uint8 percent, by row blocks).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icechart.classes import FILL

logger = logging.getLogger(__name__)

ECE_BINS = 15
"""Equal-width confidence bins of the ECE (Guo et al. 2017 use 15)."""
T_MIN, T_MAX = 0.05, 20.0
"""Search interval of the temperature."""
MAX_FIT_PIXELS = 1_000_000
"""Pixels drawn (seeded, without replacement) when more are offered to :func:`fit_temperature`."""
_TINY = 1e-12


# ---------------------------------------------------------------------------------------------
# temperature scaling
# ---------------------------------------------------------------------------------------------
def apply_temperature(probs: np.ndarray, temperature: float, *, axis: int = 0) -> np.ndarray:
    """Temperature-scaled probabilities: ``p**(1/T)`` renormalised along ``axis`` (float32).

    Parameters
    ----------
    probs
        Class probabilities (classes along ``axis``), e.g. ``(n_classes, h, w)``.
    temperature
        ``T > 0``; 1 returns a copy of ``probs``; ``T > 1`` softens, ``T < 1`` sharpens.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    p = np.asarray(probs, dtype=np.float32)
    if temperature == 1.0:
        return p.copy()
    logp = np.log(np.maximum(p, np.float32(_TINY)))
    logp *= np.float32(1.0 / temperature)
    logp -= logp.max(axis=axis, keepdims=True)
    np.exp(logp, out=logp)
    logp /= logp.sum(axis=axis, keepdims=True)
    return logp


def _log_softmax(z: np.ndarray) -> np.ndarray:
    """log softmax over axis 0 of a (k, n) float64 array."""
    m = z.max(axis=0, keepdims=True)
    return z - (m + np.log(np.exp(z - m).sum(axis=0, keepdims=True)))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Parameters
    ----------
    logits
        ``(n_classes, n)`` logits or log-probabilities.
    labels
        ``(n,)`` integer classes in ``0..n_classes-1``.
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    lp = _log_softmax(z)
    y = np.asarray(labels, dtype=np.intp)
    return float(-lp[y, np.arange(y.size)].mean())


@dataclass
class TemperatureFit:
    """One fitted temperature with its NLL and ECE before and after (on the fitting pixels)."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    pixels: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "temperature": round(self.temperature, 6),
            "nll_before": round(self.nll_before, 6),
            "nll_after": round(self.nll_after, 6),
            "ece_before": round(self.ece_before, 6),
            "ece_after": round(self.ece_after, 6),
            "pixels": self.pixels,
        }


def fit_temperature(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    max_pixels: int = MAX_FIT_PIXELS,
    seed: int = 0,
) -> TemperatureFit:
    """Fit ``T`` minimising the NLL of ``labels`` under ``softmax(logits / T)``.

    Parameters
    ----------
    logits
        ``(n_classes, n)`` logits, or log-probabilities (e.g. ``log`` of an ensemble's averaged
        probabilities): both give the same fit.
    labels
        ``(n,)`` integer classes; pixels labelled outside ``0..n_classes-1`` (255) are dropped.
    max_pixels
        At most this many pixels are used (a seeded random subset).
    seed
        Seed of that subset.

    Returns
    -------
    TemperatureFit

    Raises
    ------
    ValueError
        No labelled pixel.
    """
    z = np.asarray(logits)
    y = np.asarray(labels).reshape(-1)
    z = z.reshape(z.shape[0], -1)
    keep = y < z.shape[0]
    if not keep.all():
        z, y = z[:, keep], y[keep]
    if y.size == 0:
        raise ValueError("no labelled pixels to fit a temperature on")
    if y.size > max_pixels:
        idx = np.sort(np.random.default_rng(seed).choice(y.size, size=max_pixels, replace=False))
        z, y = z[:, idx], y[idx]
    z = z.astype(np.float64)
    y = y.astype(np.intp)
    cols = np.arange(y.size)

    def objective(log_t: float) -> float:
        lp = _log_softmax(z * math.exp(-log_t))
        return float(-lp[y, cols].mean())

    from scipy.optimize import minimize_scalar

    res = minimize_scalar(objective, bounds=(math.log(T_MIN), math.log(T_MAX)), method="bounded",
                          options={"xatol": 1e-5})  # fmt: skip
    t = float(math.exp(res.x))
    before, after = objective(0.0), float(res.fun)
    if after > before:  # the bounded search never does worse than T = 1
        t, after = 1.0, before
    p0 = np.exp(_log_softmax(z))
    p1 = np.exp(_log_softmax(z / t))
    ece0 = expected_calibration_error(p0.max(axis=0), p0.argmax(axis=0) == y)
    ece1 = expected_calibration_error(p1.max(axis=0), p1.argmax(axis=0) == y)
    logger.debug("temperature %.4f: NLL %.4f -> %.4f, ECE %.4f -> %.4f", t, before, after, ece0, ece1)
    return TemperatureFit(t, before, after, ece0, ece1, int(y.size))


# ---------------------------------------------------------------------------------------------
# expected calibration error
# ---------------------------------------------------------------------------------------------
def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    c = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
    return np.minimum((c * n_bins).astype(np.intp), n_bins - 1)


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = ECE_BINS
) -> float:
    """ECE of top-class ``confidence`` (in [0, 1]) against ``correct`` (bool), equal-width bins.

    Bin ``b`` holds confidences in ``[b / n_bins, (b + 1) / n_bins)`` (1.0 in the last).
    NaN when there is no pixel.
    """
    acc = ReliabilityAccumulator(n_bins)
    acc.update(confidence, correct)
    return acc.ece()


@dataclass
class ReliabilityAccumulator:
    """Per-bin counts of a reliability diagram, for streaming ECE.

    Attributes
    ----------
    n_bins
        Number of equal-width confidence bins on [0, 1].
    count, conf_sum, correct
        Per bin: pixels, sum of confidences, correct top-class decisions.
    """

    n_bins: int = ECE_BINS
    count: np.ndarray = field(init=False)
    conf_sum: np.ndarray = field(init=False)
    correct: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.count = np.zeros(self.n_bins, np.int64)
        self.conf_sum = np.zeros(self.n_bins, np.float64)
        self.correct = np.zeros(self.n_bins, np.int64)

    def update(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        """Add pixels: ``confidence`` in [0, 1] and whether the top class was right."""
        c = np.asarray(confidence, dtype=np.float64).reshape(-1)
        ok = np.asarray(correct, dtype=bool).reshape(-1)
        if c.shape != ok.shape:
            raise ValueError(f"confidence has {c.size} values, correct {ok.size}")
        b = _bin_index(c, self.n_bins)
        self.count += np.bincount(b, minlength=self.n_bins)
        self.conf_sum += np.bincount(b, weights=c, minlength=self.n_bins)
        self.correct += np.bincount(b, weights=ok, minlength=self.n_bins).astype(np.int64)

    def update_percent(self, reference: np.ndarray, predicted: np.ndarray, confidence: np.ndarray) -> None:
        """Add product pixels: uint8 classes and confidence in percent; 255 anywhere is skipped."""
        ref = np.asarray(reference).reshape(-1)
        pred = np.asarray(predicted).reshape(-1)
        conf = np.asarray(confidence).reshape(-1)
        use = (ref != FILL) & (pred != FILL) & (conf != FILL)
        if not use.any():
            return
        self.update(conf[use].astype(np.float64) / 100.0, ref[use] == pred[use])

    def add(self, other: "ReliabilityAccumulator") -> None:
        """Merge another accumulator with the same bins."""
        if other.n_bins != self.n_bins:
            raise ValueError("reliability accumulators differ in bins")
        self.count += other.count
        self.conf_sum += other.conf_sum
        self.correct += other.correct

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Expected calibration error in [0, 1] (NaN without pixels)."""
        n = self.n
        if n == 0:
            return math.nan
        nz = self.count > 0
        gap = np.abs(self.correct[nz] / self.count[nz] - self.conf_sum[nz] / self.count[nz])
        return float((self.count[nz] * gap).sum() / n)

    def max_gap(self) -> float:
        """Maximum calibration error over non-empty bins (NaN without pixels)."""
        nz = self.count > 0
        if not nz.any():
            return math.nan
        return float(np.abs(self.correct[nz] / self.count[nz] - self.conf_sum[nz] / self.count[nz]).max())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ECE, MCE, pixels and per bin (lo, hi, count, mean confidence, accuracy)."""
        bins = []
        for b in range(self.n_bins):
            k = int(self.count[b])
            bins.append({
                "lo": b / self.n_bins,
                "hi": (b + 1) / self.n_bins,
                "count": k,
                "confidence": float(self.conf_sum[b] / k) if k else None,
                "accuracy": float(self.correct[b] / k) if k else None,
            })  # fmt: skip
        ece = self.ece()
        mce = self.max_gap()
        return {
            "ece": None if math.isnan(ece) else ece,
            "mce": None if math.isnan(mce) else mce,
            "n_pixels": self.n,
            "n_bins": self.n_bins,
            "bins": bins,
        }
