"""The one decision rule: network outputs at the model's grid -> charts at the SAR grid.

Used by the products (:meth:`icechart.infer.predict.Prediction.blocks`) and by validation during
training (:mod:`icechart.training.validate`), so the scores a checkpoint is selected on are those
of the charts it will produce.

Rule (reference/method.md "Inference"): the low-resolution outputs are upsampled *bilinearly*
between the downscaled pixel centres to every SAR pixel (clamped at the edges); then
SIC = round(clamp(regression, 0, 10)) (argmax of the probabilities for a classification head);
SOD and FLOE = argmax of the probabilities; confidence = the chosen class's probability. Softmax
comes first: the rule interpolates probabilities, not logits.

The three charts agree with each other, as an egg code must (SIGRID-3: ice present => a stage;
the AI4Arctic labels obey the same rule, ai4arctic.md: SIC 0 forces SOD and FLOE to 0): where SIC
is 0, SOD and FLOE are open water (class 0, confidence = its probability); where SIC > 0 they are
the argmax over the *ice* classes (1..), never open water (:func:`ice_consistent`). SIC decides
because it is the concentration head and the one the polygons' CT comes from.

The cost stays near that of upsampling one channel: where the four low-resolution neighbours of
a pixel agree on the class, the argmax of any convex combination of their probability vectors is
that class and its probability is the bilinear interpolation of the neighbours' confidences
(exact, not an approximation); only pixels between disagreeing neighbours (class boundaries)
interpolate every class probability. Blocks of rows keep memory flat for any scene size.

Masks: :func:`status_flags` gives the product's ``status_flag`` bits
(:data:`icechart.classes.STATUS_LAND` and friends) from the SAR validity and land masks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from icechart.classes import N_CLASSES, STATUS_INVALID, STATUS_LAND, STATUS_OUTSIDE

SIC_MAX = N_CLASSES["SIC"] - 1
"""Largest SIC class (10: 100 %); regression outputs are clamped to [0, SIC_MAX]."""


def sic_classes(sic: np.ndarray) -> np.ndarray:
    """uint8 SIC classes of regression values: round(clamp(sic, 0, 10)), half to even."""
    v = np.clip(sic, 0, SIC_MAX)
    return np.rint(v).astype(np.uint8)


ICE_CHARTS = ("SOD", "FLOE")
"""Charts whose class 0 is open water and whose other classes are ice (:func:`ice_consistent`)."""


def ice_consistent(classes: dict[str, np.ndarray], probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Make SOD and FLOE agree with SIC (in place; returned): 0 where SIC is 0, else the argmax
    of the probabilities over the ice classes 1.. (never open water)."""
    sic = classes.get("SIC")
    if sic is None:
        return classes
    water = sic == 0
    for chart in ICE_CHARTS:
        if chart in classes and chart in probs:
            c = classes[chart]
            c[:] = (probs[chart][1:].argmax(axis=0) + 1).astype(c.dtype)
            c[water] = 0
    return classes


def lowres_classes(sic: np.ndarray | None, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 classes per chart at the model's grid (no masking; :func:`ice_consistent`)."""
    out: dict[str, np.ndarray] = {}
    if sic is not None:
        out["SIC"] = sic_classes(sic)
    for chart, p in probs.items():
        out[chart] = p.argmax(axis=0).astype(np.uint8)
    return ice_consistent(out, probs)


@dataclass
class Axis:
    """Bilinear lookup of full-resolution positions into the low-resolution grid (one axis)."""

    i0: np.ndarray
    i1: np.ndarray
    t: np.ndarray

    @classmethod
    def build(cls, positions: np.ndarray, centres: np.ndarray) -> "Axis":
        n = centres.size
        u = np.interp(positions, centres, np.arange(n, dtype=np.float64))  # clamped at the ends
        i0 = np.minimum(np.floor(u).astype(np.intp), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        t = (u - i0).astype(np.float32)
        return cls(i0, i1, t)


def uniform_cells(cls: np.ndarray) -> np.ndarray:
    """True at (i, j) when cls[i, j] == cls[i1, j] == cls[i, j1] == cls[i1, j1] (edges clamped)."""
    p = np.pad(cls, ((0, 1), (0, 1)), mode="edge")
    a = p[:-1, :-1]
    return (a == p[1:, :-1]) & (a == p[:-1, 1:]) & (a == p[1:, 1:])


def bilinear(a: np.ndarray, rows: Axis, cols: Axis) -> np.ndarray:
    """Bilinear interpolation of a 2-D low-res field at rows x cols (float32)."""
    t = rows.t[:, None]
    r = a[rows.i0] * (1 - t) + a[rows.i1] * t
    s = cols.t
    out = r[:, cols.i0]
    out *= 1 - s
    out += r[:, cols.i1] * s
    return out


def argmax_upsampled(
    p: np.ndarray,
    cls: np.ndarray,
    conf: np.ndarray,
    uniform: np.ndarray,
    rows: Axis,
    cols: Axis,
) -> tuple[np.ndarray, np.ndarray]:
    """argmax and top probability (uint8 percent) of bilinearly upsampled probabilities ``p``
    (``cls``, ``conf``, ``uniform``: its low-res argmax, top probability and uniform cells)."""
    out_cls = cls[rows.i0][:, cols.i0]
    prob = bilinear(conf, rows, cols)
    mixed = ~uniform[rows.i0][:, cols.i0]
    rr, cc = np.nonzero(mixed)
    if rr.size:
        i0, i1, t = rows.i0[rr], rows.i1[rr], rows.t[rr]
        j0, j1, s = cols.i0[cc], cols.i1[cc], cols.t[cc]
        w00 = (1 - t) * (1 - s)
        w01 = (1 - t) * s
        w10 = t * (1 - s)
        w11 = t * s
        best = np.full(rr.size, -1.0, dtype=np.float32)
        arg = np.zeros(rr.size, dtype=np.uint8)
        for k in range(p.shape[0]):
            pk = p[k]
            v = pk[i0, j0] * w00 + pk[i0, j1] * w01 + pk[i1, j0] * w10 + pk[i1, j1] * w11
            better = v > best
            best[better] = v[better]
            arg[better] = k
        out_cls[rr, cc] = arg
        prob[rr, cc] = best
    np.multiply(prob, 100, out=prob)
    return out_cls, np.rint(np.clip(prob, 0, 100)).astype(np.uint8)


class Upsampler:
    """Full-resolution decisions of one scene's low-resolution outputs, by row blocks.

    Parameters
    ----------
    sic
        ``(h, w)`` SIC regression in class units (unclamped), or None for a classification head.
    probs
        Per chart ``(n, h, w)`` probabilities (SOD, FLOE; SIC for a classification head).
    centres
        SAR (row, col) positions of the low-resolution pixel centres
        (:func:`icechart.features.pixel_centres`).
    shape
        SAR (lines, samples).
    """

    def __init__(
        self,
        sic: np.ndarray | None,
        probs: dict[str, np.ndarray],
        centres: tuple[np.ndarray, np.ndarray],
        shape: tuple[int, int],
    ) -> None:
        self.sic = sic
        self.probs = probs
        self.shape = shape
        self.rc = centres[0]
        self.cols = Axis.build(np.arange(shape[1], dtype=np.float64), centres[1])
        has_sic = sic is not None or "SIC" in probs
        # Per chart the probabilities the argmax runs over: SOD/FLOE over their ice classes only
        # when there is a SIC to decide open water (ice_consistent); the others over all.
        self.choice = {c: p[1:] if has_sic and c in ICE_CHARTS else p for c, p in probs.items()}
        self.cls = {c: p.argmax(axis=0).astype(np.uint8) for c, p in self.choice.items()}
        self.conf = {c: p.max(axis=0) for c, p in self.choice.items()}
        self.uniform = {c: uniform_cells(a) for c, a in self.cls.items()}

    def rows(self, rows: slice) -> Axis:
        return Axis.build(np.arange(rows.start, rows.stop, dtype=np.float64), self.rc)

    def field(self, a: np.ndarray, rows: slice) -> np.ndarray:
        """Any other low-res field (e.g. the SIC spread) bilinearly at SAR rows ``rows``."""
        return bilinear(a, self.rows(rows), self.cols)

    def decide(self, rows: slice) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """uint8 classes per chart and confidence (percent) per probabilistic chart for SAR
        lines ``rows`` (all samples), unmasked."""
        ra = self.rows(rows)
        charts: dict[str, np.ndarray] = {}
        confs: dict[str, np.ndarray] = {}
        if self.sic is not None:
            v = bilinear(self.sic, ra, self.cols)
            np.clip(v, 0, SIC_MAX, out=v)
            charts["SIC"] = np.rint(v).astype(np.uint8)
        for chart, p in self.choice.items():
            charts[chart], confs[chart] = argmax_upsampled(
                p, self.cls[chart], self.conf[chart], self.uniform[chart], ra, self.cols
            )
        water = charts["SIC"] == 0 if "SIC" in charts else None
        for chart in self.choice:
            if water is None or chart not in ICE_CHARTS:
                continue
            c, q = charts[chart], confs[chart]
            c += np.uint8(1)  # ice classes 1..
            if water.any():
                c[water] = 0
                p0 = bilinear(self.probs[chart][0], ra, self.cols)[water]
                q[water] = np.rint(np.clip(p0 * 100, 0, 100)).astype(np.uint8)
        return charts, confs

    def blocks(self, block_rows: int) -> Iterator[tuple[slice, dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Yield ``(rows, classes, confidence)`` for consecutive blocks of ``block_rows`` lines."""
        lines = self.shape[0]
        for r0 in range(0, lines, block_rows):
            rows = slice(r0, min(r0 + block_rows, lines))
            yield (rows, *self.decide(rows))


def status_flags(valid: np.ndarray, land: np.ndarray) -> np.ndarray:
    """``status_flag`` bits for whole lines: land, invalid SAR, outside the swath (invalid
    pixels before the first / after the last valid pixel of a line)."""
    status = np.zeros(valid.shape, dtype=np.uint8)
    status[land] |= STATUS_LAND
    status[~valid] |= STATUS_INVALID
    n = valid.shape[1]
    any_valid = valid.any(axis=1)
    first = np.where(any_valid, valid.argmax(axis=1), n)
    last = np.where(any_valid, n - 1 - valid[:, ::-1].argmax(axis=1), -1)
    col = np.arange(n)
    outside = (col[None, :] < first[:, None]) | (col[None, :] > last[:, None])
    status[outside] |= STATUS_OUTSIDE
    return status
