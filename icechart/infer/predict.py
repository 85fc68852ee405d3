"""Prediction: scene -> features -> U-Net (tiled) -> charts at the model's and the SAR resolution.

The network runs at the downscaled grid (factor 10: 800 m) on the features its checkpoint was
trained with (:mod:`icechart.features`, settings from the checkpoint metadata). Large scenes are
cut into overlapping tiles blended with raised-cosine weights (:mod:`icechart.infer.tiling`);
a scene whose downscaled grid fits in ``tile_size`` goes through in one pass.

Decisions (reference/method.md "Inference"): SIC = round(clamp(regression, 0, 10)) (argmax for a
classification head); SOD and FLOE = argmax of the softmax; confidence = the chosen class's
probability.

Full resolution. The low-resolution probabilities are upsampled *bilinearly* to the SAR grid
before deciding, by row blocks (:meth:`Prediction.blocks`), so the full-resolution charts never
exist as float stacks. The cost stays near that of upsampling one channel: where the four
low-resolution neighbours of a pixel agree on the class, the argmax of any convex combination
of their probability vectors is that class and its probability is the bilinear interpolation of
the neighbours' confidences (exact, not an approximation); only pixels between disagreeing
neighbours (class boundaries) interpolate every class probability.

Masks: pixels with invalid SAR or on land are 255 in every chart; ``status_flag`` has bit 1 land,
bit 2 invalid SAR, bit 4 outside the swath (invalid SAR connected to the left or right image
edge along its line; such pixels carry bits 2 and 4).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icechart.classes import CHARTS, FILL, N_CLASSES
from icechart.errors import BadDataError, ModelError, TryAgainError, first_line
from icechart.infer.tiling import Blender, iter_tiles
from icechart.io import contract as C
from icechart.io.scene import Scene, open_scene

if TYPE_CHECKING:  # torch stays out of `import icechart`
    import xarray as xr

    from icechart.model.checkpoint import LoadedModel
    from icechart.model.ensemble import EnsembleModel

logger = logging.getLogger(__name__)

DEFAULT_TILE = 512
"""Downscaled pixels per tile side (a 5000 x 5000 scene, 500 x 500 at 800 m, runs whole)."""
DEFAULT_OVERLAP = 64
BLOCK_ROWS = 500
"""Full-resolution rows per block (a multiple of the factor 10, so blocks hold whole cells)."""

STATUS_LAND = 1
STATUS_INVALID = 2
STATUS_OUTSIDE = 4
STATUS_MEANINGS = "land invalid_sar outside_swath"


# ---------------------------------------------------------------------------------------------
# device and model
# ---------------------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without a GPU -> ModelError."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(
            "--device cuda was asked for but no CUDA device is available; use --device auto or cpu"
        )
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def load_model(spec: "str | Path | LoadedModel | EnsembleModel | None" = None, *, device: str = "cpu") -> "Any":
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

    Raises
    ------
    ModelError
        Missing, unknown or corrupt model; ensemble members whose input contracts differ (69).
    """
    from icechart.model.checkpoint import LoadedModel, load_checkpoint
    from icechart.model.ensemble import EnsembleModel, load_ensemble, manifest_file
    from icechart.models import registry_id, resolve_model

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
    rid = registry_id(spec)
    if rid and model.model_id.startswith(("ckpt-", "ens-")):
        model.model_id = rid
    logger.info("model %s (sha256 %s...) on %s", model.model_id, model.sha256[:12], dev)
    return model


def check_channels(scene: Scene, model: "LoadedModel") -> None:
    """BadDataError (65) naming every input variable of the model that the scene lacks."""
    channels = list(model.meta["channels"])
    missing = [v for v in C.required_variables(channels) if v not in scene.ds]
    if missing:
        raise BadDataError(
            f"{scene.path}: lacks variable(s) {', '.join(f'`{m}`' for m in missing)} that model "
            f"{model.model_id} needs as input channels; use a model trained on the channels "
            "this file has, or a complete AI4Arctic file"
        )


# ---------------------------------------------------------------------------------------------
# the prediction
# ---------------------------------------------------------------------------------------------
def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=0, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=0, keepdims=True)
    return x


@dataclass
class _Axis:
    """Bilinear lookup of full-resolution positions into the low-resolution grid (one axis)."""

    i0: np.ndarray
    i1: np.ndarray
    t: np.ndarray

    @classmethod
    def build(cls, positions: np.ndarray, centres: np.ndarray) -> "_Axis":
        n = centres.size
        u = np.interp(positions, centres, np.arange(n, dtype=np.float64))  # clamped at the ends
        i0 = np.minimum(np.floor(u).astype(np.intp), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        t = (u - i0).astype(np.float32)
        return cls(i0, i1, t)


@dataclass
class Block:
    """Full-resolution charts for SAR rows ``rows`` (all columns).

    ``charts`` holds uint8 classes (SIC in classes 0..10, not percent), 255 where masked;
    ``confidence`` uint8 percent for SOD and FLOE (and SIC for a classification head);
    ``status`` the status flag bits; ``sic_se`` (ensembles only) the SIC standard error across
    members, uint8 percent (255 masked); ``decision`` (only when asked for) the classes before
    masking: the network's decision at every pixel, masked ones included (for the AutoICE file).
    """

    rows: slice
    charts: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    status: np.ndarray
    sic_se: np.ndarray | None = None
    decision: dict[str, np.ndarray] | None = None


@dataclass
class Prediction:
    """The network's output for one scene at the downscaled grid, plus how to upsample it.

    Attributes
    ----------
    scene_id, time, shape
        The scene's id, acquisition time and SAR (lines, samples).
    factor, method
        Downscaling factor and method of the features (fixes the pixel centres).
    sic
        ``(h, w)`` float32 SIC regression in class units (unclamped), or None.
    probs
        Per chart ``(n_classes, h, w)`` float32 softmax probabilities (SOD, FLOE; SIC for a
        classification head).
    model_id, model_sha256, meta
        Provenance of the model.
    timings
        Seconds per stage (``features``, ``forward``).
    sic_se
        ``(h, w)`` float32 standard deviation of SIC across ensemble members (class units; the
        members' expected class for a classification head); None for a single model.
    members
        Number of networks averaged.
    tta
        Whether flips were averaged (test-time augmentation).
    temperature
        The calibration temperature applied per chart (absent: uncalibrated).
    """

    scene_id: str
    time: datetime
    shape: tuple[int, int]
    factor: int
    method: str
    sic: np.ndarray | None
    probs: dict[str, np.ndarray]
    model_id: str
    model_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    sic_se: np.ndarray | None = None
    members: int = 1
    tta: bool = False
    temperature: dict[str, float] = field(default_factory=dict)

    @property
    def lowres_shape(self) -> tuple[int, int]:
        arr = self.sic if self.sic is not None else self.probs["SIC"][0]
        return (int(arr.shape[0]), int(arr.shape[1]))

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """SAR (row, col) positions of the downscaled pixel centres."""
        from icechart.features import pixel_centres

        return (
            pixel_centres(self.shape[0], self.factor, self.method),  # type: ignore[arg-type]
            pixel_centres(self.shape[1], self.factor, self.method),  # type: ignore[arg-type]
        )

    # -- decisions at the model's resolution ------------------------------------------------
    def lowres_classes(self) -> dict[str, np.ndarray]:
        """uint8 classes per chart at the downscaled grid (no masking)."""
        out: dict[str, np.ndarray] = {}
        if self.sic is not None:
            out["SIC"] = np.rint(np.clip(self.sic, 0, 10)).astype(np.uint8)
        for chart, p in self.probs.items():
            out[chart] = p.argmax(axis=0).astype(np.uint8)
        return out

    def lowres_confidence(self) -> dict[str, np.ndarray]:
        """Top-class probability per probabilistic chart at the downscaled grid (float32)."""
        return {chart: p.max(axis=0) for chart, p in self.probs.items()}

    # -- full resolution, by row blocks ------------------------------------------------------
    def blocks(self, scene: Scene, *, block_rows: int = BLOCK_ROWS, decisions: bool = False) -> Iterator[Block]:
        """Yield the full-resolution charts in row blocks of ``block_rows`` SAR lines.

        With ``decisions`` each block also carries the unmasked classes (:attr:`Block.decision`).

        Memory per block: a few ``block_rows x samples`` arrays (uint8 charts, float32 work
        arrays for three channels), independent of the number of lines.
        """
        if tuple(scene.shape) != tuple(self.shape):
            raise ValueError(f"scene shape {scene.shape} differs from the prediction's {self.shape}")
        lines, samples = self.shape
        rc, cc = self.centres()
        cols = _Axis.build(np.arange(samples, dtype=np.float64), cc)
        cls = self.lowres_classes()
        conf = self.lowres_confidence()
        # A low-res cell (i, j) is "uniform" when it and its +1 neighbours share the class.
        uniform = {chart: _uniform_cells(cls[chart]) for chart in self.probs}
        for r0 in range(0, lines, block_rows):
            r1 = min(r0 + block_rows, lines)
            rows = _Axis.build(np.arange(r0, r1, dtype=np.float64), rc)
            charts: dict[str, np.ndarray] = {}
            confs: dict[str, np.ndarray] = {}
            if self.sic is not None:
                v = _bilinear(self.sic, rows, cols)
                np.clip(v, 0, 10, out=v)
                charts["SIC"] = np.rint(v).astype(np.uint8)
            for chart, p in self.probs.items():
                charts[chart], confs[chart] = _decide(p, cls[chart], conf[chart], uniform[chart], rows, cols)
            se = None
            if self.sic_se is not None:  # class units -> percent
                v = _bilinear(self.sic_se, rows, cols)
                np.multiply(v, 10, out=v)
                se = np.rint(np.clip(v, 0, 100)).astype(np.uint8)
            status = _status(scene, (slice(r0, r1), slice(None)))
            decision = {c: a.copy() for c, a in charts.items()} if decisions else None
            masked = status != 0
            for a in charts.values():
                a[masked] = FILL
            for a in confs.values():
                a[masked] = FILL
            if se is not None:
                se[masked] = FILL
            yield Block(slice(r0, r1), charts, confs, status, se, decision)


def _uniform_cells(cls: np.ndarray) -> np.ndarray:
    """True at (i, j) when cls[i, j] == cls[i1, j] == cls[i, j1] == cls[i1, j1] (edges clamped)."""
    p = np.pad(cls, ((0, 1), (0, 1)), mode="edge")
    a = p[:-1, :-1]
    return (a == p[1:, :-1]) & (a == p[:-1, 1:]) & (a == p[1:, 1:])


def _bilinear(a: np.ndarray, rows: _Axis, cols: _Axis) -> np.ndarray:
    """Bilinear interpolation of a 2-D low-res field at rows x cols (float32)."""
    t = rows.t[:, None]
    r = a[rows.i0] * (1 - t) + a[rows.i1] * t
    s = cols.t
    out = r[:, cols.i0]
    out *= 1 - s
    out += r[:, cols.i1] * s
    return out


def _decide(
    p: np.ndarray,
    cls: np.ndarray,
    conf: np.ndarray,
    uniform: np.ndarray,
    rows: _Axis,
    cols: _Axis,
) -> tuple[np.ndarray, np.ndarray]:
    """argmax and top probability (uint8 percent) of bilinearly upsampled probabilities."""
    out_cls = cls[rows.i0][:, cols.i0]
    prob = _bilinear(conf, rows, cols)
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


def _status(scene: Scene, window: tuple[slice, slice]) -> np.ndarray:
    """Status flag bits for a window spanning whole lines."""
    valid = scene.valid(window)
    land = scene.land(window)
    status = np.zeros(valid.shape, dtype=np.uint8)
    status[land] |= STATUS_LAND
    invalid = ~valid
    status[invalid] |= STATUS_INVALID
    # Outside the swath: invalid pixels before the first / after the last valid pixel of a line.
    n = valid.shape[1]
    any_valid = valid.any(axis=1)
    first = np.where(any_valid, valid.argmax(axis=1), n)
    last = np.where(any_valid, n - 1 - valid[:, ::-1].argmax(axis=1), -1)
    col = np.arange(n)
    outside = (col[None, :] < first[:, None]) | (col[None, :] > last[:, None])
    status[outside] |= STATUS_OUTSIDE
    return status


# ---------------------------------------------------------------------------------------------
# the forward pass
# ---------------------------------------------------------------------------------------------
_FEATURE_BAND = 256  # downscaled rows of features built at once (bounds the reader's memory)


def scene_features(scene: Scene, meta: Mapping[str, Any], *, normalised: bool = True) -> np.ndarray:
    """The network input for ``scene`` from the checkpoint metadata, built by row bands.

    With ``normalised=False`` the stack is left unnormalised with NaN at invalid pixels (as
    :func:`icechart.features.raw_features`), to be normalised per ensemble member.
    """
    from icechart.features import build_features, output_shape, raw_features

    factor = int(meta["factor"])
    oh, _ = output_shape(scene.shape, factor)
    kw: dict[str, Any] = dict(
        factor=factor,
        method=meta.get("downscale_method", "mean"),
        interp=meta.get("interp", "bilinear"),
    )
    if normalised:
        kw["norm"] = meta.get("norm")
    build = build_features if normalised else raw_features
    channels = list(meta["channels"])
    if oh <= _FEATURE_BAND:
        return build(scene, channels, **kw)
    first = build(scene, channels, rows=slice(0, _FEATURE_BAND), **kw)
    out = np.empty((first.shape[0], oh, first.shape[2]), dtype=np.float32)
    out[:, :_FEATURE_BAND] = first
    del first
    for r in range(_FEATURE_BAND, oh, _FEATURE_BAND):
        out[:, r : r + _FEATURE_BAND] = build(scene, channels, rows=slice(r, min(r + _FEATURE_BAND, oh)), **kw)
    return out


def forward(
    model: "LoadedModel",
    x: np.ndarray,
    *,
    tile_size: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """Run the network on a ``(C, H, W)`` stack in blended tiles.

    Returns
    -------
    sic, probs
        SIC regression ``(H, W)`` (None for a classification head) and softmax probabilities
        per chart ``(n, H, W)``.
    """
    import torch

    net = model.net
    device = next(net.parameters()).device
    sic_mode = str(model.meta.get("arch", {}).get("sic_mode", "regression"))
    _, h, w = x.shape
    n_sic = 1 if sic_mode == "regression" else N_CLASSES["SIC"]
    total = n_sic + N_CLASSES["SOD"] + N_CLASSES["FLOE"]
    blend = Blender((total, h, w), overlap)
    try:
        with torch.inference_mode():
            for win in iter_tiles((h, w), tile_size, overlap):
                t = torch.from_numpy(np.ascontiguousarray(x[(slice(None), *win)]))[None].to(device)
                out = net(t)
                parts = []
                for chart in CHARTS:
                    o = out[chart][0].float()
                    if chart != "SIC" or sic_mode != "regression":
                        o = torch.softmax(o, dim=0)
                    parts.append(o)
                blend.add(win, torch.cat(parts, dim=0).cpu().numpy())
                del out, parts, t
    except RuntimeError as exc:  # CUDA OOM is a RuntimeError subclass
        if "out of memory" in str(exc).lower():
            raise TryAgainError(
                f"out of GPU memory ({first_line(exc, 80)}); retry with a smaller "
                "tile size or on CPU"
            ) from exc
        raise
    res = blend.result()
    sic = res[0] if sic_mode == "regression" else None
    probs: dict[str, np.ndarray] = {}
    k = 1 if sic_mode == "regression" else 0
    if sic_mode != "regression":
        probs["SIC"] = res[0:n_sic]
        k = n_sic
    probs["SOD"] = res[k : k + N_CLASSES["SOD"]]
    probs["FLOE"] = res[k + N_CLASSES["SOD"] : k + N_CLASSES["SOD"] + N_CLASSES["FLOE"]]
    return (None if sic is None else np.ascontiguousarray(sic)), probs


FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))
"""Test-time augmentation: identity, left-right, up-down and both flips of a (C, H, W) stack
(the dihedral flips the training augmentation also draws, reference/method.md)."""


def _unflip(a: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Undo a flip of (C, H, W) axes on a (H, W) or (n, H, W) output."""
    if not axes:
        return a
    shift = a.ndim - 3
    return np.flip(a, tuple(ax + shift for ax in axes))


def forward_tta(
    model: "LoadedModel",
    x: np.ndarray,
    *,
    tile_size: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
    """:func:`forward`, averaged over :data:`FLIPS` when ``tta`` (outputs flipped back first).

    The average over the flip group makes the prediction flip-equivariant (exactly so for a
    scene that goes through in one tile and whose sides are multiples of 2**pools).
    """
    if not tta:
        return forward(model, x, tile_size=tile_size, overlap=overlap)
    sic_sum: np.ndarray | None = None
    p_sum: dict[str, np.ndarray] = {}
    for axes in FLIPS:
        xf = np.ascontiguousarray(np.flip(x, axes)) if axes else x
        sic, probs = forward(model, xf, tile_size=tile_size, overlap=overlap)
        if sic is not None:
            u = _unflip(sic, axes)
            sic_sum = u.copy() if sic_sum is None else sic_sum + u
        for chart, p in probs.items():
            u = _unflip(p, axes)
            p_sum[chart] = u.copy() if chart not in p_sum else p_sum[chart] + u
    n = np.float32(len(FLIPS))
    sic_out = None if sic_sum is None else np.ascontiguousarray(sic_sum / n)
    return sic_out, {c: np.ascontiguousarray(v / n) for c, v in p_sum.items()}


class MemberAverage:
    """Running average of members' outputs (Welford for the SIC spread), so memory does not
    grow with the number of members.

    SIC regression values are averaged; class probabilities are averaged per chart. The
    standard deviation (ddof 1) is taken over each member's SIC value: its regression output,
    or its expected class ``sum_k k p_k`` for a classification head.
    """

    def __init__(self) -> None:
        self.n = 0
        self.sic: np.ndarray | None = None
        self.probs: dict[str, np.ndarray] = {}
        self._mean: np.ndarray | None = None  # float64 running mean of the SIC values
        self._m2: np.ndarray | None = None

    def add(self, sic: np.ndarray | None, probs: dict[str, np.ndarray]) -> None:
        self.n += 1
        n = self.n
        if n == 1:
            self.probs = {c: np.array(p, dtype=np.float32) for c, p in probs.items()}
        else:
            for c, p in probs.items():
                self.probs[c] += (p - self.probs[c]) / np.float32(n)
        if sic is not None:
            v = np.asarray(sic, dtype=np.float64)
        else:
            k = np.arange(probs["SIC"].shape[0], dtype=np.float64)[:, None, None]
            v = (probs["SIC"] * k).sum(axis=0)
        if self._mean is None or self._m2 is None:
            self._mean, self._m2 = v.copy(), np.zeros_like(v)
            self._regression = sic is not None
        else:
            delta = v - self._mean
            self._mean += delta / n
            self._m2 += delta * (v - self._mean)

    def result(self) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
        """(SIC mean or None for a classification head, SIC standard deviation across members
        or None for one member, averaged probabilities)."""
        if self.n == 0 or self._mean is None or self._m2 is None:
            raise ValueError("no member outputs to combine")
        sic = self._mean.astype(np.float32) if self._regression else None
        se = np.sqrt(self._m2 / (self.n - 1)).astype(np.float32) if self.n > 1 else None
        return sic, se, self.probs


def combine_members(
    outputs: list[tuple[np.ndarray | None, dict[str, np.ndarray]]],
) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
    """Average members' ``(sic, probs)`` outputs (:class:`MemberAverage`): (SIC mean, SIC
    standard deviation across members or None for one member, probabilities)."""
    acc = MemberAverage()
    for sic, probs in outputs:
        acc.add(sic, probs)
    return acc.result()


def predict_scene(
    scene: Scene,
    model: "LoadedModel | EnsembleModel",
    *,
    device: str | None = None,
    tile_size: int | None = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    tta: bool = False,
    calibrated: bool = True,
) -> Prediction:
    """Run the model (or every member of an ensemble) on one opened scene.

    Parameters
    ----------
    scene
        From :func:`icechart.io.scene.open_scene`.
    model
        From :func:`load_model`: a checkpoint or an ensemble. An ensemble's inputs are read and
        its features built once; only the forward passes repeat per member.
    device
        ``auto``, ``cpu`` or ``cuda`` to move the model there first; None keeps its device.
    tile_size
        Downscaled pixels per tile side; None = the whole scene in one pass.
    overlap
        Overlap between tiles (downscaled pixels), blended with raised-cosine weights.
    tta
        Test-time augmentation: average the outputs over left-right and up-down flips
        (:data:`FLIPS`; four forward passes per member).
    calibrated
        Apply the model's calibration temperatures (``meta["calibration"]``) to the SOD/FLOE
        probabilities; False gives the raw softmax (for measuring calibration).

    Returns
    -------
    Prediction
        Low-resolution probabilities and the means to produce full-resolution row blocks; for
        an ensemble also ``sic_se``.

    Raises
    ------
    BadDataError
        The scene lacks a variable the model's channels need (65, naming them).
    """
    from icechart.calibration import apply_temperature
    from icechart.features import normalise
    from icechart.model.ensemble import is_ensemble, members_of, temperatures

    check_channels(scene, model)
    members = members_of(model)
    if device is not None:
        dev = resolve_device(device)
        for m in members:
            m.net.to(dev)
    meta = model.meta
    t0 = time.perf_counter()
    ensemble = is_ensemble(model)
    raw = scene_features(scene, meta, normalised=not ensemble)
    t1 = time.perf_counter()
    if min(raw.shape[1:]) < 2:
        raise BadDataError(
            f"{scene.path}: scene {scene.shape[0]}x{scene.shape[1]} is smaller than 2x2 model pixels"
        )
    avg = MemberAverage()
    t_norm = 0.0
    x, key = raw, None
    for m in members:
        if ensemble:  # normalise per member (members may carry other statistics): one copy at a time
            tn = time.perf_counter()
            k = json.dumps(m.meta.get("norm"), sort_keys=True)
            if k != key:
                x, key = normalise(raw, m.meta.get("norm")), k
            t_norm += time.perf_counter() - tn
        avg.add(*forward_tta(m, x, tile_size=tile_size, overlap=overlap, tta=tta))
    del x
    sic, sic_se, probs = avg.result()
    temp = temperatures(meta) if calibrated else {}
    temp = {c: t for c, t in temp.items() if c in probs}
    for chart, t in temp.items():
        probs[chart] = apply_temperature(probs[chart], t)
    t2 = time.perf_counter()
    logger.debug(
        "%s: features %.2f s, forward %.2f s (%d member(s)%s)",
        scene.scene_id, t1 - t0, t2 - t1, len(members), ", TTA" if tta else "",
    )
    return Prediction(
        scene_id=scene.scene_id,
        time=scene.time,
        shape=scene.shape,
        factor=int(meta["factor"]),
        method=str(meta.get("downscale_method", "mean")),
        sic=sic,
        probs=probs,
        model_id=model.model_id,
        model_sha256=model.sha256,
        meta=dict(meta),
        timings={"features": t1 - t0 + t_norm, "forward": t2 - t1 - t_norm},
        sic_se=sic_se if ensemble else None,
        members=len(members),
        tta=tta,
        temperature=temp,
    )


def predict_dataset(
    scene_or_path: "Scene | str | Path",
    model: "LoadedModel | str | Path | None" = None,
    *,
    device: str = "cpu",
    tile_size: int | None = DEFAULT_TILE,
    tta: bool = False,
) -> "xr.Dataset":
    """The charts of one scene as an xarray Dataset at SAR geometry (for notebooks).

    Parameters
    ----------
    scene_or_path
        An opened scene or the path of an AI4Arctic file.
    model
        A loaded model, a registry id, a checkpoint file or directory; None = the default
        shipped model.
    device
        ``auto``, ``cpu`` or ``cuda``.
    tile_size, tta
        See :func:`predict_scene`.

    Returns
    -------
    xarray.Dataset
        ``SIC`` (percent), ``SOD``, ``FLOE`` (uint8 classes, 255 masked), ``SOD_confidence``,
        ``FLOE_confidence`` (percent, calibrated when the model is), ``status_flag``,
        ``SIC_standard_error`` (percent; ensembles only), and ``lat``/``lon`` coordinates, on
        dims ``sar_lines`` x ``sar_samples``. Holds the full-resolution charts in memory.

    Example
    -------
    >>> ds = icechart.predict("20180707T113313_cis_prep.nc")  # doctest: +SKIP
    >>> ds.SIC.plot()  # doctest: +SKIP
    """
    import xarray as xr

    from icechart.products.netcdf import LatLonBlocks, variable_attrs

    lm = load_model(model, device=device)
    own = not isinstance(scene_or_path, Scene)
    scene = open_scene(scene_or_path) if own else scene_or_path  # type: ignore[arg-type]
    try:
        pred = predict_scene(scene, lm, tile_size=tile_size, tta=tta)
        lines, samples = scene.shape
        names = ["SIC", "SOD", "FLOE", "SOD_confidence", "FLOE_confidence", "status_flag"]
        if pred.sic_se is not None:
            names.append("SIC_standard_error")
        arrays = {n: np.empty((lines, samples), np.uint8) for n in names}
        lat = np.empty((lines, samples), np.float32)
        lon = np.empty((lines, samples), np.float32)
        geo = LatLonBlocks(scene)
        for b in pred.blocks(scene):
            sic = b.charts["SIC"]
            arrays["SIC"][b.rows] = np.where(sic == FILL, FILL, sic * 10)
            arrays["SOD"][b.rows] = b.charts["SOD"]
            arrays["FLOE"][b.rows] = b.charts["FLOE"]
            arrays["SOD_confidence"][b.rows] = b.confidence["SOD"]
            arrays["FLOE_confidence"][b.rows] = b.confidence["FLOE"]
            arrays["status_flag"][b.rows] = b.status
            if b.sic_se is not None:
                arrays["SIC_standard_error"][b.rows] = b.sic_se
            lat[b.rows], lon[b.rows] = geo.block(b.rows)
        dims = C.SAR_DIMS
        attrs = variable_attrs(sic_standard_error=pred.sic_se is not None)
        data_vars = {}
        for n, a in arrays.items():
            va = {k: v for k, v in attrs[n].items() if k not in ("_FillValue", "coordinates")}
            enc = {} if n == "status_flag" else {"_FillValue": FILL}
            data_vars[n] = xr.Variable(dims, a, va, encoding=enc)
        ds = xr.Dataset(
            data_vars,
            coords={
                "lat": (dims, lat, attrs["lat"]),
                "lon": (dims, lon, attrs["lon"]),
            },
            attrs={
                "scene_id": pred.scene_id,
                "time_coverage_start": pred.time.isoformat(),
                "model_id": pred.model_id,
                "model_sha256": pred.model_sha256,
            },
        )
        return ds
    finally:
        if own:
            scene.close()
