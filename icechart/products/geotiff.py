"""GeoTIFF per chart on a projected grid (default EPSG:3413 at 200 m).

Values are the netCDF's (SIC in percent, SOD/FLOE classes, 255 no data), taken from the nearest
SAR pixel of each target pixel (:mod:`icechart.products.warp`). Tiled 256 x 256, DEFLATE, nodata
255, internal overviews (nearest), and a colour table: WMO colours for SIC and SOD, the
sequential legend palette for FLOE (:data:`icechart.classes.COLOURS`), indexed by the stored
values (SIC by percent), so QGIS shows the chart in the right place and colours.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from icechart.classes import CLASS_NAMES, COLOURS, FILL

logger = logging.getLogger(__name__)

TILE = 256
NODATA_RGBA = (255, 255, 255, 0)


def stored_value(chart: str, cls: int) -> int:
    """The value a class is stored as (SIC in percent)."""
    return 10 * cls if chart == "SIC" else cls


def colormap(chart: str) -> dict[int, tuple[int, int, int, int]]:
    """Colour table ``{stored value: (r, g, b, a)}`` with 255 transparent white."""
    cmap = {stored_value(chart, k): (*rgb, 255) for k, rgb in COLOURS[chart].items()}
    cmap[FILL] = NODATA_RGBA
    return cmap


def _profile(data: np.ndarray, grid: Any, **extra: Any) -> dict[str, Any]:
    """Tiled, DEFLATE-compressed single-band uint8 profile on ``grid`` with nodata 255."""
    height, width = data.shape
    return {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs.to_wkt(),
        "transform": grid.transform,
        "nodata": FILL,
        "compress": "deflate",
        "zlevel": 6,
        "tiled": True,
        "blockxsize": TILE,
        "blockysize": TILE,
        **extra,
    }


def _finish(dst: Any, data: np.ndarray, tags: dict[str, str] | None, overviews: bool) -> None:
    """Dataset tags (the overviews come after closing: :func:`_build_overviews`)."""
    if tags:
        dst.update_tags(**tags)


def _check_not_full(path: Path) -> None:
    """ENOSPC when the file system of ``path`` has not one byte left after a GeoTIFF was
    written: libtiff reports a full disk on some writes only as text ("_tiffSeekProc: No space
    left on device.") and GDAL carries on, so such a file may be truncated without an error."""
    import errno
    import os

    try:
        st = os.statvfs(path.parent)
    except OSError:
        return
    if st.f_bavail == 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _build_overviews(path: Path, data: np.ndarray, overviews: bool) -> None:
    """Nearest-neighbour overviews (class values must not be averaged), built on the closed and
    reopened file: GDAL crashes (SIGSEGV) when it builds overviews in the writing dataset over
    tiles whose writes failed on a full disk (it reads the lost tiles back; found on a tiny
    tmpfs, issue 16). Closing first turns such a failure into an exception before that."""
    import rasterio
    from rasterio.enums import Resampling

    factors = [f for f in (2, 4, 8, 16) if min(data.shape) // f >= TILE // 2]
    if not overviews or not factors:
        return
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews(factors, Resampling.nearest)
        dst.update_tags(ns="rio_overview", resampling="nearest")


def write_geotiff(
    path: Path,
    data: np.ndarray,
    grid: Any,
    *,
    chart: str,
    tags: dict[str, str] | None = None,
    overviews: bool = True,
) -> None:
    """Write one chart raster (uint8, the grid's shape) as a tiled, compressed GeoTIFF.

    Parameters
    ----------
    path
        Destination (a temporary name from :func:`icechart.atomic.atomic_path`).
    data
        uint8 values as in the netCDF, 255 = no data.
    grid
        :class:`icechart.products.warp.TargetGrid`.
    chart
        ``SIC``, ``SOD`` or ``FLOE`` (colour table, band description).
    tags
        Extra dataset tags (model id, scene id, ...).
    """
    import rasterio
    from rasterio.enums import ColorInterp

    from icechart.errors import native_stderr

    profile = _profile(data, grid, predictor=1, photometric="palette")
    with native_stderr(), rasterio.Env(GDAL_PAM_ENABLED="NO"):  # no .aux.xml sidecar
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
            dst.write_colormap(1, colormap(chart))
            dst.colorinterp = [ColorInterp.palette]
            dst.set_band_description(1, _description(chart))
            values = ", ".join(
                f"{stored_value(chart, k)}={name}" for k, name in enumerate(CLASS_NAMES[chart])
            )
            dst.update_tags(
                1,
                units="%" if chart == "SIC" else "class",
                values=values + f", {FILL}=no data",
            )
            _finish(dst, data, tags, overviews)
        _build_overviews(path, data, overviews)
        _check_not_full(path)


def _description(chart: str) -> str:
    return {
        "SIC": "sea ice concentration (%)",
        "SOD": "stage of development (AI4Arctic class)",
        "FLOE": "floe size (AI4Arctic class)",
    }[chart]


LAYER_DESCRIPTIONS = {
    "SOD_confidence": "probability of the stage of development class (%)",
    "FLOE_confidence": "probability of the floe size class (%)",
    "SIC_standard_error": "standard deviation of SIC across ensemble members (%)",
}


def write_layer_geotiff(
    path: Path,
    data: np.ndarray,
    grid: Any,
    *,
    name: str,
    tags: dict[str, str] | None = None,
    overviews: bool = True,
) -> None:
    """Write an uncertainty layer (uint8 percent 0..100, 255 no data) as a grey GeoTIFF.

    Same grid, tiling, compression and overviews as :func:`write_geotiff`, no colour table
    (continuous values); the band description and ``units`` tag name the layer.
    """
    import rasterio

    from icechart.errors import native_stderr

    profile = _profile(data, grid, predictor=2)  # continuous values: horizontal differencing
    with native_stderr(), rasterio.Env(GDAL_PAM_ENABLED="NO"):  # no .aux.xml sidecar
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
            dst.set_band_description(1, LAYER_DESCRIPTIONS.get(name, name))
            dst.update_tags(1, units="%", layer=name)
            _finish(dst, data, tags, overviews)
        _build_overviews(path, data, overviews)
        _check_not_full(path)
