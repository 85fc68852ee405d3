"""Quicklook PNGs: one per chart, WMO colours, legend, scene id, acquisition time, model id,
and the not-for-navigation statement.

The image is the netCDF chart at SAR geometry sampled every ``step`` pixels (so the long side
of the PNG stays under 2000 px), collected while the row blocks stream past; it is drawn
pixel for pixel (``figimage``, no resampling) on a bare ``Figure`` (Agg canvas, no pyplot state).
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from pathlib import Path

import numpy as np

from icechart.classes import CLASS_NAMES, COLOURS, FILL, LEGEND_NOTES, STATUS_LAND

logger = logging.getLogger(__name__)

MAX_SIDE = 2000
MAP_SIDE = 1400
"""Longest side of the map image inside the PNG (legend and title take the rest)."""
MIN_SIDE = 600
"""Small scenes are enlarged by a whole factor to at least this many pixels."""
LAND_RGB = (196, 170, 130)
NODATA_RGB = (255, 255, 255)
_LEGEND_W = 440
_TITLE_H = 110


def _unit_rgb(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """0..255 RGB as matplotlib's 0..1 floats."""
    return (rgb[0] / 255, rgb[1] / 255, rgb[2] / 255)


class QuicklookCollector:
    """Keeps every ``step``-th line and sample of the charts and status as blocks pass."""

    def __init__(self, shape: tuple[int, int], *, map_side: int = MAP_SIDE) -> None:
        lines, samples = shape
        self.step = max(1, math.ceil(max(lines, samples) / map_side))
        self.shape = (-(-lines // self.step), -(-samples // self.step))
        self.charts = {c: np.full(self.shape, FILL, np.uint8) for c in CLASS_NAMES}
        self.status = np.zeros(self.shape, np.uint8)

    def add(self, rows: slice, charts: dict[str, np.ndarray], status: np.ndarray) -> None:
        """Take the sampled lines of one block (classes; SIC in classes 0..10)."""
        k = self.step
        first = (-rows.start) % k
        if first >= rows.stop - rows.start:
            return
        o0 = (rows.start + first) // k
        sub = slice(first, None, k)
        n = len(range(first, rows.stop - rows.start, k))
        for c, a in charts.items():
            self.charts[c][o0 : o0 + n] = a[sub, ::k]
        self.status[o0 : o0 + n] = status[sub, ::k]


def rgb_image(chart: str, classes: np.ndarray, status: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 colours: WMO/legend colours, land tan, no data white."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:] = NODATA_RGB
    for k, rgb in COLOURS[chart].items():
        lut[k] = rgb
    img = lut[classes]
    img[(status & STATUS_LAND) != 0] = LAND_RGB
    return img


def _legend_labels(chart: str) -> list[tuple[str, tuple[int, int, int]]]:
    names = CLASS_NAMES[chart]
    if chart == "SIC":
        # WMO colours group tenths: one legend entry per colour.
        groups: dict[tuple[int, int, int], list[int]] = {}
        for k, rgb in COLOURS["SIC"].items():
            groups.setdefault(rgb, []).append(k)
        out = []
        for rgb, ks in groups.items():
            label = "ice free" if ks == [0] else f"{ks[0]}-{ks[-1]}/10" if len(ks) > 1 else f"{ks[0]}/10"
            out.append((label, rgb))
        return out
    return [(names[k].replace("_", " "), rgb) for k, rgb in COLOURS[chart].items()]


_TITLES = {"SIC": "Sea ice concentration", "SOD": "Stage of development", "FLOE": "Floe size"}


def write_quicklook(
    path: Path,
    chart: str,
    classes: np.ndarray,
    status: np.ndarray,
    *,
    scene_id: str,
    acquired: datetime,
    model_id: str,
    step: int = 1,
) -> None:
    """Render one chart to a PNG at ``path`` (at most 2000 px on the long side)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    img = rgb_image(chart, classes, status)
    zoom = max(1, MIN_SIDE // max(img.shape[:2]))  # small scenes: enlarge by whole pixels
    if zoom > 1:
        img = np.repeat(np.repeat(img, zoom, axis=0), zoom, axis=1)
    h, w = img.shape[:2]
    dpi = 100
    fig_w = min(w + _LEGEND_W + 20, MAX_SIDE)
    fig_h = min(max(h + _TITLE_H + 20, 520), MAX_SIDE)
    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    # figimage origin is the lower-left corner, in pixels; draw without resampling.
    fig.figimage(img, xo=10, yo=fig_h - _TITLE_H - h, origin="upper")
    fig.text(
        10 / fig_w,
        1 - 12 / fig_h,
        f"{_TITLES[chart]} - {scene_id}\n"
        f"acquired {acquired:%Y-%m-%d %H:%M:%S} UTC - model {model_id}\n"
        f"SAR geometry (not north-up), " + (f"every {step} px of 80 m" if zoom == 1 else f"80 m px x{zoom}")
        + "\nautomatic chart, not validated: NOT FOR NAVIGATION",
        va="top",
        ha="left",
        fontsize=12,
    )
    handles = [Patch(facecolor=_unit_rgb(rgb), edgecolor="black", label=lab) for lab, rgb in _legend_labels(chart)]
    handles.append(Patch(facecolor=_unit_rgb(LAND_RGB), edgecolor="black", label="land"))
    handles.append(Patch(facecolor="white", edgecolor="black", label="no data / invalid SAR"))
    note = LEGEND_NOTES.get(chart)
    title = _TITLES[chart]
    fig.legend(
        handles=handles,
        loc="upper right",
        bbox_to_anchor=(1 - 10 / fig_w, 1 - _TITLE_H / fig_h),
        title=title,
        fontsize=11,
        frameon=True,
    )
    if note:
        fig.text(1 - (_LEGEND_W - 10) / fig_w, 12 / fig_h, "\n".join(_wrap(note, 52)), fontsize=9, va="bottom")
    fig.savefig(path, format="png", dpi=dpi)


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
