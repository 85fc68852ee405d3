"""Validation at full label resolution with the scorer of ``icechart score``.

The network runs on the whole downscaled scene; its outputs are upsampled bilinearly to the SAR
grid by blocks of rows (interpolating between the downscaled pixel centres, so partial edge
blocks and the subsample method are handled), then SIC = round(clamp(regression, 0, 10)) (or
argmax) and SOD/FLOE = argmax (reference/method.md "Inference"), and scored with the statistics
of :class:`icechart.score.ScoreAccumulator` (confusion matrix, exact integer sums for R2).

Everything runs on the training device: the labels of a scene go up once, the decisions use
``.max(0).indices`` (several times faster than ``argmax`` over the class axis), and the
statistics are summed there; the host reads them once per scene.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from icechart.classes import CHARTS, FILL, N_CLASSES
from icechart.features import normalise, pixel_centres
from icechart.score import ScoreAccumulator, ScoreResult
from icechart.training.data import SceneData

logger = logging.getLogger(__name__)

BLOCK_ROWS = 256


def _grid_axis(n_full: int, n_down: int, factor: int, method: str, sl: slice) -> torch.Tensor:
    centres = pixel_centres(n_full, factor, method)  # type: ignore[arg-type]
    pos = np.arange(n_full, dtype=np.float64)[sl]
    idx = np.interp(pos, centres, np.arange(n_down, dtype=np.float64))
    g = 2.0 * idx / (n_down - 1) - 1.0 if n_down > 1 else np.zeros_like(idx)
    return torch.from_numpy(g.astype(np.float32))


def upsample_blocks(
    out: torch.Tensor, shape: tuple[int, int], *, factor: int, method: str, block_rows: int = BLOCK_ROWS
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield ``(rows, values)``: ``out`` (C, h, w) bilinearly upsampled to SAR rows ``rows``."""
    c, h, w = out.shape
    gx = _grid_axis(shape[1], w, factor, method, slice(None)).to(out.device)
    src = out[None].float()
    for r0 in range(0, shape[0], block_rows):
        rows = slice(r0, min(r0 + block_rows, shape[0]))
        gy = _grid_axis(shape[0], h, factor, method, rows).to(out.device)
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
        yield rows, F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)[0]


def decide_tensors(values: dict[str, torch.Tensor], *, sic_mode: str) -> dict[str, torch.Tensor]:
    """Classes (int64, on the values' device) from upsampled outputs."""
    res = {}
    for chart, v in values.items():
        if chart == "SIC" and sic_mode == "regression":
            res[chart] = torch.round(torch.clamp(v[0], 0, N_CLASSES["SIC"] - 1)).long()
        else:
            res[chart] = v.max(0).indices
    return res


def decide(values: dict[str, torch.Tensor], *, sic_mode: str) -> dict[str, np.ndarray]:
    """Classes (uint8 numpy) from upsampled outputs."""
    return {c: t.to(torch.uint8).cpu().numpy() for c, t in decide_tensors(values, sic_mode=sic_mode).items()}


class _DeviceStats:
    """:class:`icechart.score.ChartStats` of one chart, summed on the device."""

    def __init__(self, chart: str, device: torch.device) -> None:
        self.k = N_CLASSES[chart]
        self.confusion = torch.zeros(self.k * (self.k + 1) + 1, dtype=torch.int64, device=device)  # + unlabelled
        self.sums = torch.zeros(4, dtype=torch.int64, device=device)  # n, sum y, sum y^2, sum res^2

    def update(self, ref: torch.Tensor, pred: torch.Tensor) -> None:
        """Add one block (labels checked at cache build: classes or FILL). No host sync:
        unlabelled pixels go to an extra bin, counted with ``index_add_``, not ``bincount``."""
        k = self.k
        keep = ref != FILL
        r = ref.long()
        col = torch.where((pred >= 0) & (pred < k), pred, torch.full_like(pred, k))
        idx = torch.where(keep, r * (k + 1) + col, torch.full_like(r, k * (k + 1))).reshape(-1)
        self.confusion.index_add_(0, idx, torch.ones_like(idx))
        rk = torch.where(keep, r, torch.zeros_like(r))
        d = torch.where(keep, r - pred, torch.zeros_like(r))
        self.sums += torch.stack([keep.sum(), rk.sum(), (rk * rk).sum(), (d * d).sum()])

    def stats(self) -> Any:
        from icechart.score import ChartStats

        st = ChartStats(self.k)
        st.confusion = self.confusion[:-1].cpu().numpy().reshape(self.k, self.k + 1).astype(np.int64)
        st.n, st.sum_y, st.sum_y2, st.sum_res2 = (int(v) for v in self.sums.cpu().tolist())
        return st


@torch.no_grad()
def predict_scene_outputs(
    net: torch.nn.Module, x: np.ndarray, norm: Mapping[str, Any], *, device: torch.device, amp: bool = False
) -> dict[str, torch.Tensor]:
    """Network outputs (C, h, w) for one cached (unnormalised) scene stack."""
    t = torch.from_numpy(normalise(np.asarray(x), norm))[None].to(device)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
        out = net(t)
    return {k: v[0].float() for k, v in out.items()}


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
            stacked = torch.cat([out[c] for c in CHARTS], dim=0)
            sizes = [out[c].shape[0] for c in CHARTS]
            labels = torch.from_numpy(np.array(s.full_labels)).to(device, non_blocking=True)  # a copy: memmaps are read-only
            stats = {c: _DeviceStats(c, device) for c in CHARTS}
            for rows, up in upsample_blocks(stacked, s.shape, factor=factor, method=method):
                parts = dict(zip(CHARTS, torch.split(up, sizes, dim=0)))
                pred = decide_tensors(parts, sic_mode=sic_mode)
                for k, chart in enumerate(CHARTS):
                    stats[chart].update(labels[k, rows], pred[chart])
            for chart in CHARTS:
                acc.add_stats(chart, stats[chart].stats(), scene_id=s.scene_id)
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
