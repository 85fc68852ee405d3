"""Overlapping tiles with blended seams (numpy only).

A scene at the model's resolution is cut into ``tile x tile`` windows that overlap by
``overlap`` pixels. Edge tiles are shifted inwards so every tile has the full size (or the image
size when the image is smaller), which keeps the network's input shapes few. Each tile's output
is weighted by a separable raised-cosine (Hann) ramp over the overlap on the sides that have a
neighbour (weight 1 on the image border, where nothing else covers the pixel), accumulated, and
divided by the summed weights: seams vanish and the result equals a whole-image pass wherever a
single tile covers the pixel.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

Window = tuple[slice, slice]


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, n)`` with at least ``overlap``.

    The last tile is shifted back to end at ``n``; a single tile when ``n <= tile``.

    Parameters
    ----------
    n
        Image length along the axis.
    tile
        Tile length (>= 1).
    overlap
        Minimum overlap between neighbours (``0 <= overlap < tile``).

    Returns
    -------
    list of int
        Increasing start offsets.
    """
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    starts.append(n - tile)
    return starts


def tile_windows(shape: tuple[int, int], tile: int, overlap: int) -> list[Window]:
    """All ``(rows, cols)`` windows covering an image of ``shape`` (row-major order)."""
    h, w = shape
    th, tw = min(tile, h), min(tile, w)
    rows = tile_starts(h, th, min(overlap, th - 1))
    cols = tile_starts(w, tw, min(overlap, tw - 1))
    return [(slice(r, r + th), slice(c, c + tw)) for r in rows for c in cols]


def ramp(n: int, overlap: int, *, low_edge: bool, high_edge: bool) -> np.ndarray:
    """1-D weights of length ``n``: a raised-cosine rise over ``overlap`` samples at an interior
    side, 1 at an image-border side (``low_edge``/``high_edge`` True = at the image border).

    The ramp never reaches 0 (samples at ``(k + 0.5) / overlap``), so every pixel has a positive
    total weight.
    """
    w = np.ones(n, dtype=np.float32)
    m = min(overlap, n // 2)
    if m > 0:
        t = (np.arange(m, dtype=np.float32) + 0.5) / m
        rise = 0.5 - 0.5 * np.cos(np.pi * t)
        if not low_edge:
            w[:m] = np.minimum(w[:m], rise)
        if not high_edge:
            w[n - m :] = np.minimum(w[n - m :], rise[::-1])
    return w


def window_weights(window: Window, shape: tuple[int, int], overlap: int) -> np.ndarray:
    """2-D blending weights (float32, the window's shape) for a tile of an image of ``shape``."""
    rs, cs = window
    h = rs.stop - rs.start
    w = cs.stop - cs.start
    wr = ramp(h, overlap, low_edge=rs.start == 0, high_edge=rs.stop >= shape[0])
    wc = ramp(w, overlap, low_edge=cs.start == 0, high_edge=cs.stop >= shape[1])
    return np.outer(wr, wc)


@dataclass
class Blender:
    """Accumulates weighted tile outputs ``(C, h, w)`` into a ``(C, H, W)`` float32 mosaic.

    Example
    -------
    >>> b = Blender((2, 100, 90), overlap=16)
    >>> for win in tile_windows((100, 90), 64, 16):
    ...     b.add(win, np.ones((2, 64, 64), np.float32))
    >>> b.result().shape
    (2, 100, 90)
    """

    shape: tuple[int, int, int]
    overlap: int
    _acc: np.ndarray = field(init=False, repr=False)
    _wsum: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._acc = np.zeros(self.shape, dtype=np.float32)
        self._wsum = np.zeros(self.shape[1:], dtype=np.float32)

    def add(self, window: Window, values: np.ndarray) -> None:
        """Add one tile's output (``(C, h, w)`` for ``window``)."""
        wgt = window_weights(window, self.shape[1:], self.overlap)
        if values.shape != (self.shape[0], *wgt.shape):
            raise ValueError(f"tile output {values.shape} does not fit window {window}")
        self._acc[(slice(None), *window)] += values * wgt
        self._wsum[window] += wgt

    def result(self) -> np.ndarray:
        """The blended mosaic (the accumulator, divided in place)."""
        if not (self._wsum > 0).all():
            raise ValueError("some pixels are covered by no tile")
        self._acc /= self._wsum
        return self._acc


def iter_tiles(
    shape: tuple[int, int], tile: int | None, overlap: int
) -> Iterator[Window]:
    """Windows for ``shape``; one whole-image window when ``tile`` is None or large enough."""
    if tile is None or (shape[0] <= tile and shape[1] <= tile):
        yield (slice(0, shape[0]), slice(0, shape[1]))
        return
    yield from tile_windows(shape, tile, overlap)
