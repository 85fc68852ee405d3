"""Prediction of one scene: features -> U-Net (tiled; members, flips) -> :class:`Prediction`.

The network runs at the downscaled grid (factor 10: 800 m) on the features its checkpoint was
trained with (:mod:`icechart.infer.forward`, settings from the model's
:class:`~icechart.model.contract.ModelContract`). A :class:`Prediction` holds the low-resolution
outputs; :meth:`Prediction.blocks` turns them into full-resolution charts by row blocks with the
one decision rule (:mod:`icechart.infer.decide`), so the full-resolution charts never exist as
float stacks.

Masks: pixels with invalid SAR or on land are 255 in every chart; ``status_flag`` has bit 1 land,
bit 2 invalid SAR, bit 4 outside the swath (:data:`icechart.classes.STATUS_LAND` and friends),
and bit 8 (:data:`icechart.classes.STATUS_OOD`) where the inputs lie outside the model's training
range (:mod:`icechart.ood`): those pixels keep their charts, with lowered confidence.

A model with a learned downscaling stem (:mod:`icechart.model.stem`) gets its stem's channels
appended to the features, computed band by band from the 80 m SAR (no seams).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from icechart.classes import FILL, STATUS_MASKED, STATUS_OOD
from icechart.errors import BadDataError
from icechart.infer.decide import Upsampler, lowres_classes, status_flags
from icechart.infer.forward import DEFAULT_OVERLAP, DEFAULT_TILE, check_channels, forward_members, scene_features
from icechart.io.scene import Scene
from icechart.memory import release_free_memory

if TYPE_CHECKING:  # torch stays out of `import icechart`
    from icechart.model.checkpoint import LoadedModel
    from icechart.model.ensemble import EnsembleModel

logger = logging.getLogger(__name__)

BLOCK_ROWS = 500
"""Full-resolution rows per block (a multiple of the factor 10, so blocks hold whole cells)."""


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
    ood
        ``(h, w)`` bool: inputs outside the model's training range (:mod:`icechart.ood`);
        None when the model stores no range.
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
    ood: np.ndarray | None = None

    @property
    def calibrated(self) -> bool:
        """True when calibration temperatures were applied to the confidence."""
        return bool(self.temperature)

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
        return lowres_classes(self.sic, self.probs)

    # -- full resolution, by row blocks ------------------------------------------------------
    def blocks(self, scene: Scene, *, block_rows: int = BLOCK_ROWS, decisions: bool = False) -> Iterator[Block]:
        """Yield the full-resolution charts in row blocks of ``block_rows`` SAR lines.

        With ``decisions`` each block also carries the unmasked classes (:attr:`Block.decision`).

        Memory per block: a few ``block_rows x samples`` arrays (uint8 charts, float32 work
        arrays for three channels), independent of the number of lines.
        """
        if tuple(scene.shape) != tuple(self.shape):
            raise ValueError(f"scene shape {scene.shape} differs from the prediction's {self.shape}")
        up = Upsampler(self.sic, self.probs, self.centres(), self.shape)
        rc, cc = self.centres()
        ood_cols = _nearest(np.arange(self.shape[1], dtype=np.float64), cc) if self.ood is not None else None
        for rows, charts, confs in up.blocks(block_rows):
            se = None
            if self.sic_se is not None:  # class units -> percent
                v = up.field(self.sic_se, rows)
                np.multiply(v, 10, out=v)
                se = np.rint(np.clip(v, 0, 100)).astype(np.uint8)
            status = scene_status(scene, rows)
            decision = {c: a.copy() for c, a in charts.items()} if decisions else None
            masked = (status & STATUS_MASKED) != 0
            if self.ood is not None and ood_cols is not None:
                ood_rows = _nearest(np.arange(rows.start, rows.stop, dtype=np.float64), rc)
                status[self.ood[ood_rows][:, ood_cols] & ~masked] |= STATUS_OOD
            for a in charts.values():
                a[masked] = FILL
            for a in confs.values():
                a[masked] = FILL
            if se is not None:
                se[masked] = FILL
            yield Block(rows, charts, confs, status, se, decision)


def _nearest(positions: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest downscaled pixel centre of each SAR position."""
    u = np.interp(positions, centres, np.arange(centres.size, dtype=np.float64))
    return np.clip(np.rint(u), 0, centres.size - 1).astype(np.intp)


def scene_status(scene: Scene, rows: slice) -> np.ndarray:
    """``status_flag`` bits of SAR lines ``rows`` (:func:`icechart.infer.decide.status_flags`)."""
    window = (rows, slice(None))
    return status_flags(scene.valid(window), scene.land(window))


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
        From :func:`icechart.model.load.load_model`: a checkpoint or an ensemble. An ensemble's inputs are read and
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

    The scene's invalid pixels are those the model was trained with: when the model carries a
    ``sar_fill`` and ``scene`` was opened without one, it is read with the model's.

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
    from icechart.model.ensemble import is_ensemble, members_of, temperatures
    from icechart.model.load import resolve_device
    from icechart.model.stem import has_stem
    from icechart.ood import excess_raw, flag, soften

    check_channels(scene, model)
    contract = model.contract
    if contract.sar_fill is not None and scene.sar_fill is None:
        # Invalid pixels as in training: the scene read with the model's SAR fill value.
        scene = dataclasses.replace(scene, sar_fill=contract.sar_fill, _cache={})
    members = members_of(model)
    if device is not None:
        dev = resolve_device(device)
        for m in members:
            m.net.to(dev)
    meta = model.meta
    t0 = time.perf_counter()
    ensemble = is_ensemble(model)
    per_member = ensemble or any(has_stem(m) for m in members)
    raw = scene_features(scene, contract, normalised=not per_member)
    scene.land((slice(0, 1), slice(0, 1)))  # the scene's land mask, the last full read of the file
    scene.drop_read_caches()
    release_free_memory()  # the feature windows' temporaries, before the forward pass's peak
    t1 = time.perf_counter()
    if min(raw.shape[1:]) < 2:
        raise BadDataError(
            f"{scene.path}: scene {scene.shape[0]}x{scene.shape[1]} is smaller than 2x2 model pixels"
        )
    rng = next((m.meta["input_range"] for m in members if "input_range" in m.meta), None)
    d_ood = None
    if rng is not None:  # per-pixel distance beyond the training range (icechart.ood)
        d_ood = excess_raw(raw, None if not per_member else members[0].contract.norm, rng)
    sic, sic_se, probs, t_norm = forward_members(
        members, raw, normalised=not per_member, tile_size=tile_size, overlap=overlap, tta=tta, scene=scene
    )
    del raw
    release_free_memory()
    temp = temperatures(meta) if calibrated else {}
    temp = {c: t for c, t in temp.items() if c in probs}
    for chart, t in temp.items():
        probs[chart] = apply_temperature(probs[chart], t)
    if d_ood is not None:  # honest confidence where the inputs lie outside the training range
        probs = soften(probs, d_ood)
    t2 = time.perf_counter()
    logger.debug(
        "%s: features %.2f s, forward %.2f s (%d member(s)%s)",
        scene.scene_id, t1 - t0, t2 - t1, len(members), ", TTA" if tta else "",
    )
    return Prediction(
        scene_id=scene.scene_id,
        time=scene.time,
        shape=scene.shape,
        factor=contract.factor,
        method=contract.downscale_method,
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
        ood=None if d_ood is None else flag(d_ood),
    )
