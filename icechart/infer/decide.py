"""The one decision rule: network outputs at the model's grid -> charts at the SAR grid.

Used by the products (:meth:`icechart.infer.predict.Prediction.blocks`, on CPU) and by
validation during training (:mod:`icechart.training.validate`, on the training device), so the
scores a checkpoint is selected on are those of the charts it will produce. The rule is written
once, in torch: numpy inputs (the products) are wrapped without a copy (``torch.from_numpy``) and
the results handed back as numpy arrays; tensors (validation) stay on their device, so a GPU run
decides on the GPU and only the scores' small tables come back to the host.

Rule (reference/method.md "Inference"): the low-resolution outputs are upsampled *bilinearly*
between the downscaled pixel centres to every SAR pixel (clamped at the edges); then
SIC = round(clamp(regression, 0, 10)) (argmax of the probabilities for a classification head);
SOD and FLOE = argmax of the probabilities; confidence = the chosen class's probability. Softmax
comes first: the rule interpolates probabilities, not logits. Rounding is half to even
(``torch.round``, as ``numpy.rint``); argmax ties go to the first class (``Tensor.max(dim)``,
which is also several times faster than ``Tensor.argmax(dim)`` on a CPU).

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

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from icechart.classes import N_CLASSES, STATUS_INVALID, STATUS_LAND, STATUS_OUTSIDE
from icechart.infer.threads import one_thread

SIC_MAX = N_CLASSES["SIC"] - 1
"""Largest SIC class (10: 100 %); regression outputs are clamped to [0, SIC_MAX]."""

ICE_CHARTS = ("SOD", "FLOE")
"""Charts whose class 0 is open water and whose other classes are ice (:func:`ice_consistent`)."""

Array = Union[np.ndarray, torch.Tensor]


def as_tensor(a: Array, device: torch.device | str | None = None) -> torch.Tensor:
    """``a`` as a tensor (numpy arrays without a copy where they are writable), on ``device``."""
    if not isinstance(a, torch.Tensor):
        arr = np.asarray(a)
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr, order="C")
        a = torch.from_numpy(arr)
    return a if device is None else a.to(device)


def _out(t: torch.Tensor, numpy: bool) -> Any:
    return t.numpy() if numpy else t


def sic_values_to_classes(v: torch.Tensor) -> torch.Tensor:
    """uint8 SIC classes of regression values ``v`` (clamped in place): round(clamp(v, 0, 10))."""
    return to_uint8(torch.round(v.clamp_(0, SIC_MAX)))


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """``v`` (whole numbers in 0..255) as uint8; on a CPU through numpy (torch's float -> uint8
    cast is several times slower there)."""
    if v.device.type == "cpu" and v.dtype != torch.uint8:
        return torch.from_numpy(v.numpy().astype(np.uint8))
    return v.to(torch.uint8)


def percent(p: torch.Tensor) -> torch.Tensor:
    """uint8 percent of probabilities ``p`` (scaled in place): round(clamp(100 p, 0, 100))."""
    return to_uint8(torch.round(p.mul_(100).clamp_(0, 100)))


def sic_classes(sic: Array) -> Any:
    """uint8 SIC classes of regression values: round(clamp(sic, 0, 10)), half to even (numpy in,
    numpy out; a tensor in, a tensor out)."""
    return _out(sic_values_to_classes(as_tensor(sic).clone()), not isinstance(sic, torch.Tensor))


def _top(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top probability and its class (uint8) over axis 0; ties go to the first class."""
    conf, cls = p.max(dim=0)
    return conf, to_uint8(cls)


def ice_consistent(classes: dict[str, Any], probs: Mapping[str, Any]) -> dict[str, Any]:
    """Make SOD and FLOE agree with SIC (in place; returned): 0 where SIC is 0, else the argmax
    of the probabilities over the ice classes 1.. (never open water)."""
    sic = classes.get("SIC")
    if sic is None:
        return classes
    water = as_tensor(sic) == 0
    for chart in ICE_CHARTS:
        if chart in classes and chart in probs:
            c = as_tensor(classes[chart])
            c.copy_(_top(as_tensor(probs[chart])[1:])[1] + 1)
            c.masked_fill_(water, 0)
    return classes


def lowres_classes(sic: Array | None, probs: Mapping[str, Array]) -> dict[str, Any]:
    """uint8 classes per chart at the model's grid (no masking; :func:`ice_consistent`); numpy
    arrays for numpy inputs."""
    numpy = not any(isinstance(a, torch.Tensor) for a in (sic, *probs.values()))
    out: dict[str, torch.Tensor] = {}
    if sic is not None:
        out["SIC"] = sic_values_to_classes(as_tensor(sic).clone())
    pt = {c: as_tensor(p) for c, p in probs.items()}
    for chart, p in pt.items():
        out[chart] = _top(p)[1]
    ice_consistent(out, pt)  # type: ignore[arg-type]
    return {c: _out(v, numpy) for c, v in out.items()}


@dataclass
class Axis:
    """Bilinear lookup of full-resolution positions into the low-resolution grid (one axis)."""

    i0: torch.Tensor
    i1: torch.Tensor
    t: torch.Tensor

    @classmethod
    def build(cls, positions: np.ndarray, centres: np.ndarray, device: torch.device | str | None = None) -> "Axis":
        n = centres.size
        u = np.interp(positions, centres, np.arange(n, dtype=np.float64))  # clamped at the ends
        i0 = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        t = (u - i0).astype(np.float32)
        return cls(*(torch.from_numpy(a).to(device) if device is not None else torch.from_numpy(a) for a in (i0, i1, t)))


def gather_cols(a: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``a[:, idx]`` of a 2-D tensor. On a CPU through numpy's take, about 7x faster than torch's
    ``index_select`` along the last axis (the upsampling's hottest step); elsewhere torch's."""
    if a.device.type == "cpu":
        return torch.from_numpy(np.take(a.numpy(), idx.numpy(), axis=1))
    return a.index_select(1, idx)


def uniform_cells(cls: torch.Tensor) -> torch.Tensor:
    """True at (i, j) when cls[i, j] == cls[i1, j] == cls[i, j1] == cls[i1, j1] (edges clamped)."""
    p = torch.cat([cls, cls[-1:]], dim=0)
    p = torch.cat([p, p[:, -1:]], dim=1)
    a = p[:-1, :-1]
    return (a == p[1:, :-1]) & (a == p[:-1, 1:]) & (a == p[1:, 1:])


def bilinear(a: torch.Tensor, rows: Axis, cols: Axis) -> torch.Tensor:
    """Bilinear interpolation of a 2-D low-res field at rows x cols (float32 for float32 ``a``)."""
    t = rows.t[:, None]
    r = a.index_select(0, rows.i0) * (1 - t)
    r += a.index_select(0, rows.i1) * t
    s = cols.t
    out = gather_cols(r, cols.i0)
    out *= 1 - s
    out += gather_cols(r, cols.i1) * s
    return out


def argmax_upsampled(
    p: torch.Tensor,
    cls: torch.Tensor,
    conf: torch.Tensor,
    uniform: torch.Tensor,
    rows: Axis,
    cols: Axis,
) -> tuple[torch.Tensor, torch.Tensor]:
    """argmax and top probability (uint8 percent) of bilinearly upsampled probabilities ``p``
    (``cls``, ``conf``, ``uniform``: its low-res argmax, top probability and uniform cells)."""
    out_cls = gather_cols(cls.index_select(0, rows.i0), cols.i0)
    prob = bilinear(conf, rows, cols)
    mixed = gather_cols(uniform.index_select(0, rows.i0), cols.i0).logical_not_()
    rr, cc = mixed.nonzero(as_tuple=True)
    if rr.numel():
        t, s = rows.t[rr], cols.t[cc]
        lw = p.shape[2]
        r0, r1 = rows.i0[rr] * lw, rows.i1[rr] * lw
        j0, j1 = cols.i0[cc], cols.i1[cc]
        u, v = 1 - t, 1 - s
        flat = p.reshape(p.shape[0], -1)
        # every class at once, in the order of the products' sum: p00 w00 + p01 w01 + p10 w10 + p11 w11
        val = gather_cols(flat, r0 + j0) * (u * v)
        val += gather_cols(flat, r0 + j1) * (u * s)
        val += gather_cols(flat, r1 + j0) * (t * v)
        val += gather_cols(flat, r1 + j1) * (t * s)
        best, arg = _top(val)
        out_cls[rr, cc] = arg
        prob[rr, cc] = best
    return out_cls, percent(prob)


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
    device
        Where to decide (default: where the tensors are; CPU for numpy arrays).

    numpy arrays in (the products): numpy arrays out; tensors in (validation): tensors out, on
    ``device``.
    """

    def __init__(
        self,
        sic: Array | None,
        probs: Mapping[str, np.ndarray] | Mapping[str, torch.Tensor],
        centres: tuple[np.ndarray, np.ndarray],
        shape: tuple[int, int],
        *,
        device: torch.device | str | None = None,
    ) -> None:
        given = [a for a in (sic, *probs.values()) if a is not None]
        self.numpy = not any(isinstance(a, torch.Tensor) for a in given)
        if device is None:
            device = next((a.device for a in given if isinstance(a, torch.Tensor)), torch.device("cpu"))
        self.device = torch.device(device)
        self.sic = None if sic is None else as_tensor(sic, self.device)
        self.probs = {c: as_tensor(p, self.device) for c, p in probs.items()}
        self.shape = shape
        self.rc = np.asarray(centres[0])
        self.cols = Axis.build(np.arange(shape[1], dtype=np.float64), np.asarray(centres[1]), self.device)
        has_sic = sic is not None or "SIC" in probs
        # Per chart the probabilities the argmax runs over: SOD/FLOE over their ice classes only
        # when there is a SIC to decide open water (ice_consistent); the others over all.
        self.choice = {c: p[1:] if has_sic and c in ICE_CHARTS else p for c, p in self.probs.items()}
        with one_thread(self.device):
            top = {c: _top(p) for c, p in self.choice.items()}
            self.conf = {c: v[0] for c, v in top.items()}
            self.cls = {c: v[1] for c, v in top.items()}
            self.uniform = {c: uniform_cells(a) for c, a in self.cls.items()}

    def rows(self, rows: slice) -> Axis:
        return Axis.build(np.arange(rows.start, rows.stop, dtype=np.float64), self.rc, self.device)

    def field(self, a: Array, rows: slice) -> Any:
        """Any other low-res field (e.g. the SIC spread) bilinearly at SAR rows ``rows``."""
        with one_thread(self.device):
            return _out(bilinear(as_tensor(a, self.device), self.rows(rows), self.cols), self.numpy)

    def decide(self, rows: slice) -> tuple[dict[str, Any], dict[str, Any]]:
        """uint8 classes per chart and confidence (percent) per probabilistic chart for SAR
        lines ``rows`` (all samples), unmasked."""
        with one_thread(self.device):
            return self._decide(rows)

    def _decide(self, rows: slice) -> tuple[dict[str, Any], dict[str, Any]]:
        ra = self.rows(rows)
        charts: dict[str, torch.Tensor] = {}
        confs: dict[str, torch.Tensor] = {}
        if self.sic is not None:
            charts["SIC"] = sic_values_to_classes(bilinear(self.sic, ra, self.cols))
        for chart, p in self.choice.items():
            charts[chart], confs[chart] = argmax_upsampled(
                p, self.cls[chart], self.conf[chart], self.uniform[chart], ra, self.cols
            )
        water = charts["SIC"] == 0 if "SIC" in charts else None
        for chart in self.choice:
            if water is None or chart not in ICE_CHARTS:
                continue
            c, q = charts[chart], confs[chart]
            c += 1  # ice classes 1..
            if bool(water.any()):
                c.masked_fill_(water, 0)
                confs[chart] = torch.where(water, percent(bilinear(self.probs[chart][0], ra, self.cols)), q)
        return ({k: _out(v, self.numpy) for k, v in charts.items()},
                {k: _out(v, self.numpy) for k, v in confs.items()})

    def blocks(self, block_rows: int) -> Iterator[tuple[slice, dict[str, Any], dict[str, Any]]]:
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
