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


EARTH_RADIUS = 6_371_000.0
"""Mean Earth radius (m), for footprint sizes (great-circle distances on a sphere)."""
FOOTPRINT_TOLERANCE = 2.0
"""A scene's footprint may be at most this factor larger or smaller than lines x pixel spacing
(the projections' scale distortions and look-angle effects are a few per cent; a wrong size
declaration or garbled tie points are a factor of several)."""


def _great_circle(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    a = latlon_to_xyz(lat1, lon1)
    b = latlon_to_xyz(lat2, lon2)
    cross = np.linalg.norm(np.cross(a, b), axis=-1)
    return EARTH_RADIUS * np.arctan2(cross, np.sum(a * b, axis=-1))


def check_tie_points(
    lat: np.ndarray,
    lon: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    *,
    shape: tuple[int, int],
    pixel_spacing: float = 80.0,
) -> str | None:
    """What is implausible about a scene's tie points, or None when they are usable.

    Checked, in order: every latitude and longitude finite; latitudes in [-90, 90] and
    longitudes in [-180, 360); tie-point pixel positions finite and strictly increasing; the
    tie points not degenerate (distinct corners); and the footprint consistent with the grid:
    the mean great-circle length of the scene's edges along each axis within a factor
    :data:`FOOTPRINT_TOLERANCE` of (pixels - 1) x ``pixel_spacing``. A chart built from tie
    points that fail these lies in the wrong place (mirrored across the pole, shifted by
    thousands of km), so the scene is refused instead.
    """
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        return "tie-point latitude/longitude holds NaN or infinity"
    if lat.min() < -90 or lat.max() > 90:
        return f"tie-point latitude {lat.min():g}..{lat.max():g} outside [-90, 90]"
    if lon.min() < -180 or lon.max() >= 360:
        return f"tie-point longitude {lon.min():g}..{lon.max():g} outside [-180, 360)"
    for name, pos, n in (("line", rows, shape[0]), ("sample", cols, shape[1])):
        pos = np.asarray(pos, dtype=np.float64)
        if not np.isfinite(pos).all() or (pos.size > 1 and not (np.diff(pos) > 0).all()):
            return f"tie-point {name} positions are not finite and strictly increasing"
        if pos.size and (pos[0] < -1 or pos[-1] > n):
            return f"tie-point {name} positions {pos[0]:g}..{pos[-1]:g} lie outside the {n} SAR {name}s"
    # Edge lengths along lines (first/last tie column) and along samples (first/last tie row).
    along = [_great_circle(lat[0, j], lon[0, j], lat[-1, j], lon[-1, j]) for j in (0, -1)]
    across = [_great_circle(lat[i, 0], lon[i, 0], lat[i, -1], lon[i, -1]) for i in (0, -1)]
    for name, edges, pos in (("lines", along, rows), ("samples", across, cols)):
        span = float(np.asarray(pos, dtype=np.float64)[-1] - np.asarray(pos, dtype=np.float64)[0])
        expect = span * pixel_spacing
        got = float(np.mean(edges))
        if got < 1.0:
            return f"tie points do not move along the {name} (all at one place)"
        if expect > 0 and not (1 / FOOTPRINT_TOLERANCE <= got / expect <= FOOTPRINT_TOLERANCE):
            return (
                f"tie points span {got / 1000:.1f} km along the {name}, but {span:.0f} pixels at "
                f"{pixel_spacing:g} m are {expect / 1000:.1f} km (wrong size or garbled tie points)"
            )
    return None
