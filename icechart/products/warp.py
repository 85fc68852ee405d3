"""From SAR geometry to a projected grid, through the per-pixel geolocation.

AI4Arctic scenes carry only a lat/lon tie-point grid, so projected products are *warped*: for
each pixel of the target grid we find the SAR position it falls on and take the nearest SAR
pixel's value (products-and-ops.md "Projections"). No low-order polynomial of the tie points
is fitted. Instead:

1. latitude/longitude at the model-resolution (800 m) pixel centres come from the tie points
   (3-D interpolation, :meth:`icechart.io.scene.Scene.latlon`) and are projected to the target
   CRS: a dense, exact sampling of the forward geolocation;
2. the inverse (x, y) -> (row, col) is solved per target pixel by Newton iterations on the
   bilinear interpolation of that sampling (start: an affine least-squares fit). It is solved
   exactly at every ``step``-th target pixel and interpolated bilinearly in between, as GDAL's
   approximate transformer does: the inverse is smooth, and the interpolation error is checked
   in the tests (far below a pixel).

The target grid covers the scene's full footprint (its projected outline, SAR pixel edges
included) and is snapped outwards to whole multiples of the resolution.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from icechart.errors import ConfigError, first_line

logger = logging.getLogger(__name__)

APPROX_STEP = 8
"""Target pixels between exactly solved inverse positions (interpolated in between)."""
_NEWTON_ITERATIONS = 6


def parse_crs(crs: str | int | Any) -> Any:
    """A :class:`pyproj.CRS` for ``crs`` (``EPSG:3413``, ``3413``, a PROJ/WKT string).

    Raises
    ------
    ConfigError
        Unknown or geographic (non-projected) CRS (78).
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    text = str(crs).strip()
    if text.isdigit():
        text = f"EPSG:{text}"
    try:
        out = CRS.from_user_input(text)
    except CRSError as exc:
        raise ConfigError(f"unknown CRS {crs!r} ({first_line(exc, 100)})") from exc
    if not out.is_projected:
        raise ConfigError(f"CRS {crs!r} is not a projected CRS; use e.g. EPSG:3413 or EPSG:6931")
    return out


@dataclass(frozen=True)
class TargetGrid:
    """A north-up projected grid: ``crs``, pixel size ``resolution`` (CRS units), origin at the
    upper-left corner ``(x0, y0)``, ``width`` x ``height`` pixels."""

    crs: Any
    resolution: float
    x0: float
    y0: float
    width: int
    height: int

    @property
    def transform(self) -> Any:
        from affine import Affine

        return Affine(self.resolution, 0.0, self.x0, 0.0, -self.resolution, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top)."""
        r = self.resolution
        return (self.x0, self.y0 - self.height * r, self.x0 + self.width * r, self.y0)

    def centres_x(self, cols: np.ndarray) -> np.ndarray:
        return self.x0 + (np.asarray(cols, np.float64) + 0.5) * self.resolution

    def centres_y(self, rows: np.ndarray) -> np.ndarray:
        return self.y0 - (np.asarray(rows, np.float64) + 0.5) * self.resolution


def _transformer(crs: Any) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs("EPSG:4326", crs, always_xy=True)


def footprint_xy(scene: Any, crs: Any, *, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Projected outline of the scene (SAR pixel edges), ``4 n`` points."""
    lines, samples = scene.shape
    r = np.linspace(-0.5, lines - 0.5, n)
    c = np.linspace(-0.5, samples - 0.5, n)
    lats, lons = [], []
    for rows, cols in (([-0.5], c), ([lines - 0.5], c), (r, [-0.5]), (r, [samples - 0.5])):
        la, lo = scene.latlon(rows=np.asarray(rows, np.float64), cols=np.asarray(cols, np.float64))
        lats.append(la.ravel())
        lons.append(lo.ravel())
    x, y = _transformer(crs).transform(np.concatenate(lons), np.concatenate(lats))
    return np.asarray(x), np.asarray(y)


def target_grid(scene: Any, crs: Any, resolution: float) -> TargetGrid:
    """The grid covering ``scene``'s footprint, snapped outwards to multiples of ``resolution``."""
    if not resolution > 0:
        raise ConfigError(f"resolution must be positive, got {resolution}")
    x, y = footprint_xy(scene, crs)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ConfigError(f"the scene's footprint cannot be projected to {crs}; choose another --crs")
    res = float(resolution)
    left = math.floor(x.min() / res) * res
    right = math.ceil(x.max() / res) * res
    bottom = math.floor(y.min() / res) * res
    top = math.ceil(y.max() / res) * res
    width = max(int(round((right - left) / res)), 1)
    height = max(int(round((top - bottom) / res)), 1)
    if width * height > 400_000_000:
        raise ConfigError(
            f"a {width}x{height} grid at {res:g} m is too large for this scene; use a coarser --resolution"
        )
    return TargetGrid(crs, res, left, top, width, height)


def _index_to_pos(u: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Fractional low-res index -> SAR position, linear beyond both ends."""
    n = centres.size
    if n == 1:
        return centres[0] + u
    pos = np.interp(u, np.arange(n, dtype=np.float64), centres)
    lo = u < 0
    hi = u > n - 1
    pos[lo] = centres[0] + u[lo] * (centres[1] - centres[0])
    pos[hi] = centres[-1] + (u[hi] - (n - 1)) * (centres[-1] - centres[-2])
    return pos


class InverseGeolocation:
    """Projected ``(x, y)`` -> fractional SAR ``(row, col)`` for one scene.

    Parameters
    ----------
    scene
        The opened scene (for its tie points).
    row_centres, col_centres
        SAR positions of the model-resolution pixel centres (at least 2 each).
    crs
        Target CRS.
    """

    def __init__(self, scene: Any, row_centres: np.ndarray, col_centres: np.ndarray, crs: Any) -> None:
        self.rc = np.asarray(row_centres, np.float64)
        self.cc = np.asarray(col_centres, np.float64)
        self.shape = tuple(scene.shape)
        lat, lon = scene.latlon(rows=self.rc, cols=self.cc)
        x, y = _transformer(crs).transform(lon, lat)
        self.X = np.asarray(x, np.float64)
        self.Y = np.asarray(y, np.float64)
        h, w = self.X.shape
        # Affine first guess (u, v) ~ [x, y, 1] @ A from a sample of the grid.
        su = slice(None, None, max(h // 32, 1))
        sv = slice(None, None, max(w // 32, 1))
        uu, vv = np.meshgrid(np.arange(h, dtype=np.float64)[su], np.arange(w, dtype=np.float64)[sv], indexing="ij")
        m = np.column_stack([self.X[su, sv].ravel(), self.Y[su, sv].ravel(), np.ones(uu.size)])
        self._affine, *_ = np.linalg.lstsq(m, np.column_stack([uu.ravel(), vv.ravel()]), rcond=None)

    def to_index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional low-resolution indices ``(u, v)`` of projected points (exact inverse)."""
        x = np.asarray(x, np.float64).ravel()
        y = np.asarray(y, np.float64).ravel()
        a = self._affine
        u = x * a[0, 0] + y * a[1, 0] + a[2, 0]
        v = x * a[0, 1] + y * a[1, 1] + a[2, 1]
        h, w = self.X.shape
        X, Y = self.X, self.Y
        for _ in range(_NEWTON_ITERATIONS):
            np.clip(u, -4.0, h + 3.0, out=u)
            np.clip(v, -4.0, w + 3.0, out=v)
            i = np.clip(np.floor(u), 0, max(h - 2, 0)).astype(np.intp)
            j = np.clip(np.floor(v), 0, max(w - 2, 0)).astype(np.intp)
            i1 = np.minimum(i + 1, h - 1)
            j1 = np.minimum(j + 1, w - 1)
            t = u - i
            s = v - j
            x00, x01, x10, x11 = X[i, j], X[i, j1], X[i1, j], X[i1, j1]
            y00, y01, y10, y11 = Y[i, j], Y[i, j1], Y[i1, j], Y[i1, j1]
            fx = (1 - t) * ((1 - s) * x00 + s * x01) + t * ((1 - s) * x10 + s * x11) - x
            fy = (1 - t) * ((1 - s) * y00 + s * y01) + t * ((1 - s) * y10 + s * y11) - y
            xu = (1 - s) * (x10 - x00) + s * (x11 - x01)
            xv = (1 - t) * (x01 - x00) + t * (x11 - x10)
            yu = (1 - s) * (y10 - y00) + s * (y11 - y01)
            yv = (1 - t) * (y01 - y00) + t * (y11 - y10)
            det = xu * yv - xv * yu
            det[det == 0] = np.finfo(np.float64).tiny
            u -= (yv * fx - xv * fy) / det
            v -= (-yu * fx + xu * fy) / det
        return u, v

    def to_pixel(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional SAR ``(row, col)`` of projected points (exact inverse)."""
        u, v = self.to_index(x, y)
        return _index_to_pos(u, self.rc), _index_to_pos(v, self.cc)


def grid_positions(
    inv: InverseGeolocation, grid: TargetGrid, rows: slice, *, step: int = APPROX_STEP, lowres: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """SAR positions ``(row, col)`` (or low-res indices with ``lowres``) for target grid rows
    ``rows`` x all columns, solved exactly every ``step`` pixels and interpolated between."""
    r0, r1 = rows.start, rows.stop
    # Exact nodes: every `step` rows/cols, plus the last row/col of the band/grid.
    nr = np.unique(np.r_[np.arange(r0, r1, step), r1 - 1])
    nc = np.unique(np.r_[np.arange(0, grid.width, step), grid.width - 1])
    xx, yy = np.meshgrid(grid.centres_x(nc), grid.centres_y(nr))
    if lowres:
        a, b = inv.to_index(xx, yy)
    else:
        a, b = inv.to_pixel(xx, yy)
    a = a.reshape(nr.size, nc.size)
    b = b.reshape(nr.size, nc.size)
    out = []
    rr = np.arange(r0, r1)
    cc = np.arange(grid.width)
    for f in (a, b):
        # separable linear interpolation between the nodes
        ri = np.clip(np.searchsorted(nr, rr, side="right") - 1, 0, max(nr.size - 2, 0))
        ri1 = np.minimum(ri + 1, nr.size - 1)
        tr = np.where(ri1 > ri, (rr - nr[ri]) / np.maximum(nr[ri1] - nr[ri], 1), 0.0)
        ci = np.clip(np.searchsorted(nc, cc, side="right") - 1, 0, max(nc.size - 2, 0))
        ci1 = np.minimum(ci + 1, nc.size - 1)
        tc = np.where(ci1 > ci, (cc - nc[ci]) / np.maximum(nc[ci1] - nc[ci], 1), 0.0)
        g = f[ri] * (1 - tr)[:, None] + f[ri1] * tr[:, None]
        out.append(g[:, ci] * (1 - tc) + g[:, ci1] * tc)
    return out[0], out[1]


class Gather:
    """For every target pixel, the SAR pixel it takes (nearest), bucketed by SAR row block.

    Memory: two int32 per target pixel inside the scene (8 bytes; 32 MB for a 5000 x 5000
    scene at 200 m).

    Built once per scene and grid; :meth:`fill` then copies a row block's values into the
    target rasters, so the full-resolution charts never need to be in memory at once.
    """

    def __init__(
        self,
        inv: InverseGeolocation,
        grid: TargetGrid,
        *,
        block_rows: int,
        band_rows: int = 256,
    ) -> None:
        lines, samples = inv.shape
        self.grid = grid
        self.block_rows = block_rows
        self.samples = samples
        nblocks = -(-lines // block_rows)
        parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(nblocks)]
        width = grid.width
        for g0 in range(0, grid.height, band_rows):
            g1 = min(g0 + band_rows, grid.height)
            row, col = grid_positions(inv, grid, slice(g0, g1))
            r = np.rint(row).astype(np.int64)
            c = np.rint(col).astype(np.int64)
            inside = (r >= 0) & (r < lines) & (c >= 0) & (c < samples)
            out_idx = (np.flatnonzero(inside) + g0 * width).astype(np.int32)
            r = r[inside]
            c = c[inside]
            if r.size == 0:
                continue
            b = (r // block_rows).astype(np.int32)
            order = np.argsort(b, kind="stable")
            counts = np.bincount(b, minlength=nblocks)
            ends = np.cumsum(counts)
            src = ((r - b.astype(np.int64) * block_rows) * samples + c).astype(np.int32)
            out_sorted = out_idx[order]
            src_sorted = src[order]
            start = 0
            for k in range(nblocks):
                if counts[k]:
                    parts[k].append((out_sorted[start : ends[k]], src_sorted[start : ends[k]]))
                start = ends[k]
        self._buckets: list[tuple[np.ndarray, np.ndarray]] = []
        for p in parts:
            if p:
                self._buckets.append(
                    (
                        np.concatenate([a for a, _ in p]),
                        np.concatenate([s for _, s in p]),
                    )
                )
            else:
                self._buckets.append((np.empty(0, np.int32), np.empty(0, np.int32)))

    def fill(self, out: np.ndarray, rows: slice, block: np.ndarray) -> None:
        """Copy values of SAR ``block`` (rows ``rows``, all columns) into target raster ``out``."""
        k = rows.start // self.block_rows
        if rows.start % self.block_rows:
            raise ValueError("blocks must start at multiples of block_rows")
        out_idx, src = self._buckets[k]
        if out_idx.size:
            out.reshape(-1)[out_idx] = block.reshape(-1)[src]
