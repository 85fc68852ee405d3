"""Fit and store calibration temperatures of a checkpoint or an ensemble on labelled scenes.

The network's SOD and FLOE probabilities at the model's resolution (an ensemble's averaged
over members, each at temperature 1) are compared with the labels downscaled to that grid
(the training's ``label_method``, block mode by default); one temperature per chart minimises
their negative log-likelihood (:func:`icechart.calibration.fit_temperature`). The result is
stored as ``meta["calibration"]`` of a checkpoint, or the ``[calibration]`` table of an
ensemble manifest, and applied by :func:`icechart.infer.predict.predict_scene`::

    {"method": "temperature", "temperature": {"SOD": 1.31, "FLOE": 1.12},
     "fitted_on": ["20210310T101010_dmi", ...], "pixels": {...},
     "nll_before": {...}, "nll_after": {...}, "ece_before": {...}, "ece_after": {...}}

Training fits it at the end of every run on the validation scenes (``icechart train``), and an
ensemble's on the members' shared validation scenes after the last run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from icechart.calibration import TemperatureFit, fit_temperature
from icechart.classes import CHARTS, FILL, N_CLASSES
from icechart.errors import BadDataError, ConfigError

logger = logging.getLogger(__name__)

CALIBRATED_CHARTS = ("SOD", "FLOE")


def lowres_probabilities(model: Any, raw: np.ndarray, *, tta: bool = False) -> dict[str, np.ndarray]:
    """Averaged (uncalibrated) class probabilities of ``model`` (checkpoint or ensemble) for an
    unnormalised ``(C, h, w)`` feature stack (NaN = invalid)."""
    from icechart.infer.forward import forward_members
    from icechart.model.ensemble import members_of

    return forward_members(members_of(model), raw, normalised=False, tile_size=None, tta=tta)[2]


def fit_calibration(
    model: Any,
    samples: Iterable[tuple[str, np.ndarray, np.ndarray]],
    *,
    charts: Sequence[str] = CALIBRATED_CHARTS,
) -> dict[str, Any]:
    """Fit one temperature per chart on labelled samples.

    Parameters
    ----------
    model
        A :class:`~icechart.model.checkpoint.LoadedModel` or
        :class:`~icechart.model.ensemble.EnsembleModel`.
    samples
        ``(scene_id, raw features (C, h, w), labels (3, h, w) uint8 SIC/SOD/FLOE)`` at the
        model's resolution.
    charts
        Charts to calibrate.

    Returns
    -------
    dict
        The ``calibration`` metadata (module docstring).

    Raises
    ------
    BadDataError
        No labelled pixel of a chart in any sample (65).
    """
    logps: dict[str, list[np.ndarray]] = {c: [] for c in charts}
    labels: dict[str, list[np.ndarray]] = {c: [] for c in charts}
    ids = []
    chart: str
    for sid, raw, y in samples:
        ids.append(sid)
        probs = lowres_probabilities(model, np.asarray(raw))
        for k, chart in enumerate(CHARTS):
            if chart not in logps:
                continue
            lab = np.asarray(y[k])
            use = (lab != FILL) & (lab < N_CLASSES[chart])
            if not use.any():
                continue
            logps[chart].append(np.log(np.maximum(probs[chart][:, use], np.float32(1e-12))))
            labels[chart].append(lab[use])
    fits: dict[str, TemperatureFit] = {}
    for chart in charts:
        if not labels[chart]:
            raise BadDataError(
                f"no labelled {chart} pixels in {len(ids)} calibration scene(s); give labelled scenes"
            )
        fits[chart] = fit_temperature(np.concatenate(logps[chart], axis=1), np.concatenate(labels[chart]))
        f = fits[chart]
        logger.info(
            "%s: temperature %.3f (NLL %.4f -> %.4f, ECE %.4f -> %.4f, %d pixels)",
            chart, f.temperature, f.nll_before, f.nll_after, f.ece_before, f.ece_after, f.pixels,
        )  # fmt: skip
    return calibration_meta(fits, ids)


def calibration_meta(fits: dict[str, TemperatureFit], scene_ids: Sequence[str]) -> dict[str, Any]:
    """The stored form of fitted temperatures."""
    d: dict[str, Any] = {"method": "temperature", "fitted_on": list(scene_ids)}
    d["temperature"] = {c: round(f.temperature, 6) for c, f in fits.items()}
    for key in ("nll_before", "nll_after", "ece_before", "ece_after"):
        d[key] = {c: round(float(getattr(f, key)), 6) for c, f in fits.items()}
    d["pixels"] = {c: int(f.pixels) for c, f in fits.items()}
    return d


def scene_samples(model: Any, paths: Iterable[str | Path]) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """``(scene_id, raw features, labels)`` at the model's resolution from labelled scene files.

    Raises
    ------
    BadDataError
        A scene without labels (65).
    """
    from icechart.features import downscale_labels
    from icechart.infer.forward import check_channels, scene_features
    from icechart.io.scene import open_scene

    contract = model.contract
    factor = contract.factor
    method = contract.label_method
    for p in paths:
        with open_scene(p, sar_fill=contract.sar_fill) as scene:
            if not scene.has_labels:
                raise BadDataError(f"{scene.path}: no labels (SIC/SOD/FLOE); calibration needs labelled scenes")
            check_channels(scene, model)
            raw = scene_features(scene, contract, normalised=False)
            y = np.stack([downscale_labels(scene, c, factor=factor, method=method) for c in CHARTS])  # type: ignore[arg-type]
            yield scene.scene_id, raw, y


def write_calibration(model: Any, calibration: dict[str, Any], *, out: str | Path | None = None) -> Path:
    """Store ``calibration`` with the model: a checkpoint's metadata or an ensemble's manifest.

    Parameters
    ----------
    model
        The loaded checkpoint or ensemble that was calibrated.
    calibration
        From :func:`fit_calibration`.
    out
        Where to write; default in place. A checkpoint of a model directory with a sha256 in
        its ``model.toml`` is never rewritten in place (its card would no longer match).

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    ConfigError
        In-place calibration of a model-card checkpoint (78).
    OutputError
        The file cannot be written (73).
    """
    from icechart.model.ensemble import is_ensemble, set_calibration, write_manifest

    if is_ensemble(model):
        if out is None:
            return set_calibration(model.path, calibration)
        members = [str(m.path.resolve()) for m in model.members]
        return write_manifest(out, members, model_id=None, info={"seeds": model.meta["ensemble"].get("seeds", [])},
                              calibration=calibration)  # fmt: skip
    from icechart.model.checkpoint import save_checkpoint

    dest = Path(out) if out is not None else Path(model.path)
    if out is None and (dest.parent / "model.toml").is_file():
        raise ConfigError(
            f"{dest}: belongs to a model directory with a model card (sha256 pinned); "
            "write the calibrated checkpoint elsewhere with -o FILE"
        )
    meta = dict(model.meta)
    meta["calibration"] = calibration
    save_checkpoint(dest, model.net, meta)
    return dest


def calibrate(
    model_spec: Any,
    scenes: Iterable[str | Path],
    *,
    out: str | Path | None = None,
    device: str = "cpu",
) -> tuple[Path, dict[str, Any]]:
    """Calibrate a checkpoint or an ensemble on labelled scenes and store the temperatures.

    Parameters
    ----------
    model_spec
        What ``--model`` takes (checkpoint, run directory, ensemble manifest or directory).
    scenes
        Labelled AI4Arctic scene files (not seen in training).
    out
        See :func:`write_calibration`.
    device
        ``auto``, ``cpu`` or ``cuda``.

    Returns
    -------
    (Path, dict)
        The file written and the calibration metadata.
    """
    from icechart.model.load import load_model

    model = load_model(model_spec, device=device)
    cal = fit_calibration(model, scene_samples(model, scenes))
    return write_calibration(model, cal, out=out), cal
