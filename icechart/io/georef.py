"""Geolocation: tie-point latitude/longitude to any SAR pixel, and projections.

Interpolation runs on unit vectors in 3-D (ECEF on a sphere), so it is safe at the pole and
across the antimeridian (contract.md "Geolocation"). Bilinear in pixel space, separable, so a
full 5000 x 5000 grid costs two small matrix products per component.
"""

from __future__ import annotations

import numpy as np


def tie_positions(n_tie: int, n_pix: int) -> np.ndarray:
    """Tie points spaced evenly from the first to the last pixel (when the file stores none)."""
    return np.linspace(0.0, n_pix - 1.0, n_tie)


def _interp_matrix(pos: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Dense (len(at), len(pos)) matrix of linear interpolation weights, linear extrapolation."""
    pos = np.asarray(pos, dtype=np.float64)
    at = np.asarray(at, dtype=np.float64)
    if pos.size == 1:
        return np.ones((at.size, 1))
    i = np.clip(np.searchsorted(pos, at, side="right") - 1, 0, pos.size - 2)
    t = (at - pos[i]) / (pos[i + 1] - pos[i])
    w = np.zeros((at.size, pos.size))
    rows = np.arange(at.size)
    w[rows, i] = 1.0 - t
    w[rows, i + 1] = t
    return w


def latlon_to_xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Unit vectors (..., 3) for latitude/longitude in degrees."""
    la, lo = np.radians(lat), np.radians(lon)
    c = np.cos(la)
    return np.stack([c * np.cos(lo), c * np.sin(lo), np.sin(la)], axis=-1)


def xyz_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Latitude/longitude in degrees (longitude in [-180, 180]) from (..., 3) vectors."""
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = np.degrees(np.arctan2(y, x))
    return lat, lon


def interpolate_latlon(
    tie_lat: np.ndarray,
    tie_lon: np.ndarray,
    tie_rows: np.ndarray,
    tie_cols: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Latitude/longitude at the grid ``rows x cols`` (SAR pixel indices, may be fractional).

    Parameters
    ----------
    tie_lat, tie_lon
        Tie-point arrays shaped (len(tie_rows), len(tie_cols)), i.e. (lines, samples).
    tie_rows, tie_cols
        SAR line / sample position of each tie-point row / column, increasing.
    rows, cols
        1-D pixel positions to evaluate at.

    Returns
    -------
    lat, lon
        float64 arrays shaped (len(rows), len(cols)).
    """
    xyz = latlon_to_xyz(np.asarray(tie_lat, np.float64), np.asarray(tie_lon, np.float64))
    wr = _interp_matrix(tie_rows, np.atleast_1d(rows))
    wc = _interp_matrix(tie_cols, np.atleast_1d(cols))
    out = np.empty((wr.shape[0], wc.shape[0], 3))
    for k in range(3):
        out[..., k] = wr @ xyz[..., k] @ wc.T
    return xyz_to_latlon(out)
