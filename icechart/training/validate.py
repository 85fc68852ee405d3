"""Validation at full label resolution with the scorer of ``icechart score``.

The network runs on the whole downscaled scene; its outputs become full-resolution charts by
the one decision rule of the products (:class:`icechart.infer.decide.Upsampler`: softmax, then
bilinear upsampling between the downscaled pixel centres, SIC = round(clamp(regression, 0, 10))
or argmax, SOD/FLOE = argmax; reference/method.md "Inference"), by blocks of rows, and are
scored with :class:`icechart.score.ScoreAccumulator`. A checkpoint is therefore selected on the
scores of exactly the charts ``icechart predict`` makes from it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from icechart.classes import CHARTS
from icechart.features import normalise, pixel_centres
from icechart.infer.decide import Upsampler
from icechart.score import ScoreAccumulator, ScoreResult
from icechart.training.data import SceneData

logger = logging.getLogger(__name__)

BLOCK_ROWS = 256


@torch.no_grad()
def predict_scene_outputs(
    net: torch.nn.Module, x: np.ndarray, norm: Mapping[str, Any], *, device: torch.device, amp: bool = False
) -> dict[str, torch.Tensor]:
    """Network outputs (C, h, w) for one cached (unnormalised) scene stack."""
    t = torch.from_numpy(normalise(np.asarray(x), norm))[None].to(device)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        out = net(t)
    return {k: v[0].float() for k, v in out.items()}


def validation_charts(
    out: Mapping[str, torch.Tensor],
    shape: tuple[int, int],
    *,
    factor: int,
    method: str,
    sic_mode: str,
    block_rows: int = BLOCK_ROWS,
) -> Iterator[tuple[slice, dict[str, np.ndarray]]]:
    """Yield ``(rows, classes)``: uint8 full-resolution classes per chart (unmasked) of the
    network outputs ``out`` (logits, ``(C, h, w)`` per chart) for a scene of SAR ``shape``."""
    regression = sic_mode == "regression"
    sic = out["SIC"][0].cpu().numpy() if regression else None
    probs: dict[str, np.ndarray] = {
        c: torch.softmax(out[c], dim=0).cpu().numpy()
        for c in CHARTS
        if c != "SIC" or not regression
    }
    centres = (pixel_centres(shape[0], factor, method), pixel_centres(shape[1], factor, method))  # type: ignore[arg-type]
    for rows, classes, _conf in Upsampler(sic, probs, centres, shape).blocks(block_rows):
        yield rows, classes


def validate(
    net: torch.nn.Module,
    scenes: list[SceneData],
    norm: Mapping[str, Any],
    *,
    factor: int,
    method: str,
    sic_mode: str,
    device: torch.device,
    amp: bool = False,
) -> ScoreResult:
    """Score ``net`` on the validation scenes at full label resolution."""
    was_training = net.training
    net.eval()
    acc = ScoreAccumulator()
    try:
        for s in scenes:
            assert s.full_labels is not None
            out = predict_scene_outputs(net, s.x, norm, device=device, amp=amp)
            for rows, pred in validation_charts(out, s.shape, factor=factor, method=method, sic_mode=sic_mode):
                for k, chart in enumerate(CHARTS):
                    acc.update(chart, np.asarray(s.full_labels[k, rows]), pred[chart], scene_id=s.scene_id)
    finally:
        net.train(was_training)
    return acc.result()


def baseline(scenes: list[SceneData], hist: Mapping[str, list[int]]) -> ScoreResult:
    """The trivial predictor: the mean SIC class and the majority SOD and FLOE class of the
    training labels, everywhere."""
    h = {c: np.asarray(v, dtype=np.float64) for c, v in hist.items()}
    const = {
        "SIC": int(round(float((h["SIC"] * np.arange(h["SIC"].size)).sum() / max(h["SIC"].sum(), 1)))),
        "SOD": int(np.argmax(h["SOD"])),
        "FLOE": int(np.argmax(h["FLOE"])),
    }
    acc = ScoreAccumulator()
    for s in scenes:
        assert s.full_labels is not None
        for k, chart in enumerate(CHARTS):
            ref = np.asarray(s.full_labels[k])
            acc.update(chart, ref, np.full(ref.shape, const[chart], np.uint8), scene_id=s.scene_id)
    return acc.result()
