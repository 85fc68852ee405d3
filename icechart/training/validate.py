"""Validation at full label resolution with the scorer of ``icechart score``, on the training device.

The network runs on the whole downscaled scene; its outputs become full-resolution charts by
the one decision rule of the products (:class:`icechart.infer.decide.Upsampler`: softmax, then
bilinear upsampling between the downscaled pixel centres, SIC = round(clamp(regression, 0, 10))
or argmax, SOD/FLOE = argmax; reference/method.md "Inference"), by blocks of rows, and are
scored with :class:`icechart.score.ScoreAccumulator`. A checkpoint is therefore selected on the
scores of exactly the charts ``icechart predict`` makes from it.

Everything stays where the network ran: the decision runs on the outputs' device, the label
blocks go there, and each (reference, prediction) pair is counted there (:func:`pair_counts`);
only the small confusion tables come back to the host once per scene, and the R2 sums follow
from them exactly (:meth:`icechart.score.ChartStats.from_confusion`). On a GPU a 5000 x 5000
scene thus costs a few milliseconds of transfer instead of a host-side decision and scoring of
75 M pixels (``benchmarks/train_throughput.py --validation``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from icechart.classes import CHARTS, FILL, N_CLASSES
from icechart.errors import BadDataError
from icechart.features import normalise, pixel_centres
from icechart.infer.decide import Upsampler, as_tensor
from icechart.infer.threads import one_thread
from icechart.score import ChartStats, ScoreAccumulator, ScoreResult
from icechart.training.data import SceneData

logger = logging.getLogger(__name__)

BLOCK_PIXELS = 2_500_000
"""Full-resolution pixels decided per row block (500 lines of a 5000-sample scene)."""


@torch.no_grad()
def predict_scene_outputs(
    net: torch.nn.Module, x: np.ndarray, norm: Mapping[str, Any], *, device: torch.device, amp: bool = False,
    full: np.ndarray | None = None, stem_norm: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Network outputs (C, h, w) for one cached (unnormalised) scene stack (plus, for a network
    with a downscaling stem, its full-resolution SAR ``full`` and ``stem_norm``)."""
    x = np.asarray(x)
    if full is not None and stem_norm is not None:
        fr = torch.from_numpy(normalise(np.asarray(full), stem_norm))[None].to(device)
        s = net.run_stem(fr)[0][:, : x.shape[1], : x.shape[2]].float().cpu().numpy()  # type: ignore[operator]
        x = np.concatenate([x, s], axis=0)
    t = torch.from_numpy(normalise(x, norm))[None].to(device)
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
    block_rows: int | None = None,
) -> Iterator[tuple[slice, dict[str, torch.Tensor]]]:
    """Yield ``(rows, classes)``: uint8 full-resolution classes per chart (unmasked; tensors on
    the outputs' device) of the network outputs ``out`` (logits, ``(C, h, w)`` per chart) for a
    scene of SAR ``shape``, by blocks of ``block_rows`` lines (default :data:`BLOCK_PIXELS`)."""
    regression = sic_mode == "regression"
    sic = out["SIC"][0] if regression else None
    probs: dict[str, torch.Tensor] = {c: torch.softmax(out[c], dim=0) for c in CHARTS if c != "SIC" or not regression}
    centres = (pixel_centres(shape[0], factor, method), pixel_centres(shape[1], factor, method))  # type: ignore[arg-type]
    rows = block_rows or max(1, BLOCK_PIXELS // max(int(shape[1]), 1))
    for r, classes, _conf in Upsampler(sic, probs, centres, shape).blocks(rows):
        yield r, classes


def pair_counts(ref: torch.Tensor, pred: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of (reference, prediction) pairs on the tensors' device (uint8 inputs): the
    ``(n, n + 1)`` int64 table of :attr:`icechart.score.ChartStats.confusion` (column n: a
    prediction outside the classes; unlabelled 255 references not counted), and the number of
    references that are neither a class nor 255. Each pair is coded in one byte
    (min(ref, n) (n + 1) + min(pred, n) <= 143) and counted with one ``bincount``: no int64 copy
    of the pixels, no boolean selection."""
    k = n_classes
    width = k + 1
    code = ref.clamp(max=k).mul_(width).add_(pred.clamp(max=k))
    table = torch.bincount(code.reshape(-1), minlength=width * width)[: width * width].view(width, width)
    bad = ((ref >= k) & (ref != FILL)).sum()
    return table[:k], bad


def score_outputs(
    acc: ScoreAccumulator,
    out: Mapping[str, torch.Tensor],
    labels: np.ndarray,
    *,
    scene_id: str,
    factor: int,
    method: str,
    sic_mode: str,
    block_rows: int | None = None,
) -> None:
    """Decide the network outputs ``out`` of one scene where they are (their device) and add the
    scores against its full-resolution ``labels`` ``(3, lines, samples)`` to ``acc``."""
    device = next(iter(out.values())).device
    shape = (int(labels.shape[1]), int(labels.shape[2]))
    counts = {c: torch.zeros((N_CLASSES[c], N_CLASSES[c] + 1), dtype=torch.int64, device=device) for c in CHARTS}
    bad = {c: torch.zeros((), dtype=torch.int64, device=device) for c in CHARTS}
    with one_thread(device):  # as the products decide (icechart.infer.decide)
        for rows, pred in validation_charts(out, shape, factor=factor, method=method, sic_mode=sic_mode, block_rows=block_rows):
            ref = as_tensor(labels[:, rows], device)
            for k, chart in enumerate(CHARTS):
                table, n_bad = pair_counts(ref[k], pred[chart], N_CLASSES[chart])
                counts[chart] += table
                bad[chart] += n_bad
    for chart in CHARTS:
        n = N_CLASSES[chart]
        if int(bad[chart]):
            raise BadDataError(f"{scene_id}: {chart} reference has values that are neither a class (0..{n - 1}) nor {FILL}")
        acc.add_stats(chart, ChartStats.from_confusion(counts[chart].cpu().numpy()), scene_id=scene_id)


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
    stem_norm: Mapping[str, Any] | None = None,
) -> ScoreResult:
    """Score ``net`` on the validation scenes at full label resolution, decided and counted on
    ``device`` (``stem_norm``: the normalisation of a downscaling stem's inputs, whose channels
    ``norm`` lists last)."""
    was_training = net.training
    net.eval()
    acc = ScoreAccumulator()
    try:
        for s in scenes:
            assert s.full_labels is not None
            out = predict_scene_outputs(net, s.x, norm, device=device, amp=amp,
                                        full=s.full_sar if stem_norm is not None else None, stem_norm=stem_norm)
            score_outputs(acc, out, s.full_labels, scene_id=s.scene_id, factor=factor, method=method, sic_mode=sic_mode)
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
