"""GeoTIFF per chart on a projected grid (default EPSG:3413 at 200 m): Cloud Optimized GeoTIFFs.

Values are the netCDF's (SIC in percent, SOD/FLOE classes), taken from the nearest SAR pixel of
each target pixel (:mod:`icechart.products.warp`), with land apart from missing data: 254 land
(:data:`icechart.products.styles.LAND_VALUE`), 255 no data (invalid SAR, outside the swath or
the scene; the GeoTIFF's nodata). Written by GDAL's COG driver (``rio cogeo validate`` passes):
tiled 256 x 256, DEFLATE, overviews by nearest neighbour (class values must not be averaged)
down to one tile, IFDs ahead of the data. A colour table holds WMO colours for SIC and SOD, the
sequential legend palette for FLOE (:data:`icechart.classes.COLOURS`) and tan for land, indexed
by the stored values (SIC by percent). Beside each chart GeoTIFF: ``.tif.aux.xml`` with the
category names and a raster attribute table, and a QGIS style ``.qml`` (:mod:`.styles`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from icechart.classes import CLASS_NAMES, COLOURS, FILL
from icechart.errors import native_stderr
from icechart.products.styles import LAND_RGB, LAND_VALUE, stored_value

logger = logging.getLogger(__name__)

TILE = 256
NODATA_RGBA = (255, 255, 255, 0)
NOT_FOR_NAVIGATION = (
    "Automatic ice chart from a machine-learning model, not validated for operational use: "
    "not for navigation."
)


def with_land(values: np.ndarray, status: np.ndarray) -> np.ndarray:
    """GeoTIFF values of a block: the netCDF's, with land (status bit 1) as 254, not 255."""
    out = values.copy()
    out[(status & 1) != 0] = LAND_VALUE
    return out


def colormap(chart: str) -> dict[int, tuple[int, int, int, int]]:
    """Colour table ``{stored value: (r, g, b, a)}``: land tan, 255 transparent white."""
    cmap = {stored_value(chart, k): (*rgb, 255) for k, rgb in COLOURS[chart].items()}
    cmap[LAND_VALUE] = (*LAND_RGB, 255)
    cmap[FILL] = NODATA_RGBA
    return cmap


def _profile(data: np.ndarray, grid: Any, *, overviews: bool = True, **extra: Any) -> dict[str, Any]:
    """COG profile: single-band uint8 on ``grid``, nodata 255, DEFLATE, 256 x 256 tiles,
    nearest-neighbour overviews (none when ``overviews`` is False)."""
    height, width = data.shape
    return {
        "driver": "COG",
        "width": width,
        "height": height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs.to_wkt(),
        "transform": grid.transform,
        "nodata": FILL,
        "compress": "deflate",
        "level": 6,
        "blocksize": TILE,
        "overview_resampling": "nearest",
        "overviews": "auto" if overviews else "none",
        **extra,
    }


def _finish(dst: Any, tags: dict[str, str] | None) -> None:
    """Dataset tags, the not-for-navigation statement among them."""
    dst.update_tags(**(tags or {}), disclaimer=NOT_FOR_NAVIGATION)


@contextmanager
def _cog(path: Path, profile: dict[str, Any]) -> Iterator[Any]:
    """Open a COG for writing in memory; on leaving, its bytes go to ``path`` with a plain file
    write.

    GDAL's COG driver builds the overviews in a ``.ovr.tmp`` file beside the destination, and
    on a full disk it crashed (SIGSEGV) or left a truncated file without an error, libtiff only
    printing "No space left on device" (found on a tiny tmpfs, issue 16). In memory nothing of
    that can happen, and the one write to disk raises ENOSPC like any other (74). A chart COG
    is a few MB at most.
    """
    import rasterio
    from rasterio.io import MemoryFile

    with native_stderr(), rasterio.Env(GDAL_PAM_ENABLED="NO"), MemoryFile(ext=".tif") as mem:
        with mem.open(**profile) as dst:  # the .aux.xml is written by write_sidecars
            yield dst
        data = mem.read()
    with open(path, "wb") as fh:
        fh.write(data)


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
    from rasterio.enums import ColorInterp

    with _cog(path, _profile(data, grid, overviews=overviews)) as dst:
        dst.write(data, 1)
        dst.write_colormap(1, colormap(chart))
        dst.colorinterp = [ColorInterp.palette]
        dst.set_band_description(1, _description(chart))
        values = ", ".join(f"{stored_value(chart, k)}={name}" for k, name in enumerate(CLASS_NAMES[chart]))
        dst.update_tags(
            1,
            units="%" if chart == "SIC" else "class",
            values=values + f", {LAND_VALUE}=land, {FILL}=no data",
        )
        _finish(dst, tags)


SIDECARS = (".tif.aux.xml", ".qml")
"""Files beside each chart GeoTIFF ``{stem}.tif``: ``{stem}.tif.aux.xml``, ``{stem}.qml``."""


def sidecar_paths(tif: Path) -> list[Path]:
    """The sidecars of a chart GeoTIFF (:data:`SIDECARS`)."""
    tif = Path(tif)
    return [tif.with_name(tif.name + ".aux.xml"), tif.with_suffix(".qml")]


def write_sidecar(path: Path, kind: str, chart: str) -> None:
    """Write one sidecar of a chart GeoTIFF: ``kind`` ``.tif.aux.xml`` (category names, RAT)
    or ``.qml`` (QGIS style)."""
    from icechart.products import styles

    if kind == ".qml":
        styles.write_raster_qml(path, chart)
    else:
        styles.write_pam(path, chart)


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
    """Write an uncertainty layer (uint8 percent 0..100, 254 land, 255 no data) as a grey COG.

    Same grid, tiling, compression and overviews as :func:`write_geotiff`, no colour table
    (continuous values); the band description and ``units`` tag name the layer.
    """
    profile = _profile(data, grid, overviews=overviews, predictor="yes")  # continuous: differencing
    with _cog(path, profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, LAYER_DESCRIPTIONS.get(name, name))
        dst.update_tags(1, units="%", layer=name, values=f"0..100=percent, {LAND_VALUE}=land, {FILL}=no data")
        _finish(dst, tags)
