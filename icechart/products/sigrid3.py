"""SIGRID-3 shapefile writer (WMO/TD-No. 1214): generalised ice-chart polygons.

The chart is polygonised at the model's resolution (800 m), on a grid of that size in the
product CRS (contract.md): the model-resolution classes are warped to that grid (nearest, through
the per-pixel geolocation, :mod:`icechart.products.warp`), regions smaller than ``sieve`` pixels
are merged into their largest neighbour (``rasterio.features.sieve``: analysts draw generalised
polygons, not pixel staircases), polygons are traced (``rasterio.features.shapes``), simplified,
and made valid (``shapely.make_valid``, polygonal parts kept).

Attributes (2-character strings, CF 4): one ice type per polygon, so ``CA = CT``, ``SA`` the
stage code, ``FA`` the form code; the secondary/tertiary types and ``CN CD CF`` are ``-9`` (not
applicable). Codes come from :data:`icechart.classes.TO_CODE` and map back to the same classes
through :data:`icechart.classes.FROM_CODE` (tested). ``POLY_TYPE``: ``W`` open water (SIC 0),
``I`` ice, ``L`` land, ``N`` no data (invalid SAR / outside the swath).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from icechart.classes import TO_CODE

logger = logging.getLogger(__name__)

FIELDS = ("CT", "CA", "SA", "FA", "CB", "SB", "FB", "CC", "SC", "FC", "CN", "CD", "CF", "POLY_TYPE")
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
NOT_APPLICABLE = "-9"
DEFAULT_SIEVE = 16
"""Regions under 16 model pixels (about 10 km^2 at 800 m) are merged into a neighbour."""

# Region codes of the polygonised raster.
_WATER = 0
_LAND = 2000
_NODATA = 3000
_OUTSIDE = -1

LOWRES_CHARTED = 0
LOWRES_LAND = 1
LOWRES_NODATA = 2


def schema() -> dict[str, Any]:
    props = {name: "str:2" for name in FIELDS}
    props["CF"] = "str:4"
    props["POLY_TYPE"] = "str:1"
    return {"geometry": "Polygon", "properties": props}


def code_str(chart: str, cls: int) -> str:
    """The SIGRID-3 code of a class as a 2-character string (e.g. SIC 10 -> ``"92"``)."""
    return f"{TO_CODE[chart][int(cls)]:02d}"


def attributes(region: int) -> dict[str, str]:
    """SIGRID-3 attributes of a region code."""
    props = {name: NOT_APPLICABLE for name in FIELDS}
    if region == _LAND:
        props["POLY_TYPE"] = "L"
    elif region == _NODATA:
        props["POLY_TYPE"] = "N"
    elif region == _WATER:
        props["POLY_TYPE"] = "W"
        props["CT"] = code_str("SIC", 0)
    else:
        sic, sod, floe = region // 100, (region // 10) % 10, region % 10
        ct = code_str("SIC", sic)
        props.update(CT=ct, CA=ct, SA=code_str("SOD", sod), FA=code_str("FLOE", floe), POLY_TYPE="I")
    return props


def region_codes(classes: dict[str, np.ndarray], lowres_status: np.ndarray) -> np.ndarray:
    """int32 region code per model pixel: SIC*100 + SOD*10 + FLOE for ice, 0 water, land, no data."""
    sic = classes["SIC"].astype(np.int32)
    code = sic * 100 + classes["SOD"].astype(np.int32) * 10 + classes["FLOE"].astype(np.int32)
    code[sic == 0] = _WATER
    code[lowres_status == LOWRES_LAND] = _LAND
    code[lowres_status == LOWRES_NODATA] = _NODATA
    return code


def warp_regions(inv: Any, grid: Any, regions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Region codes on ``grid`` (nearest model pixel) and the inside-the-scene mask."""
    from icechart.products.warp import _index_to_pos, grid_positions

    lines, samples = inv.shape
    h, w = regions.shape
    out = np.full((grid.height, grid.width), _OUTSIDE, dtype=np.int32)
    inside = np.zeros((grid.height, grid.width), dtype=bool)
    band = 512
    for g0 in range(0, grid.height, band):
        g1 = min(g0 + band, grid.height)
        u, v = grid_positions(inv, grid, slice(g0, g1), lowres=True)
        row = _index_to_pos(u.ravel(), inv.rc).reshape(u.shape)
        col = _index_to_pos(v.ravel(), inv.cc).reshape(v.shape)
        ok = (row >= -0.5) & (row < lines - 0.5) & (col >= -0.5) & (col < samples - 0.5)
        i = np.clip(np.rint(u), 0, h - 1).astype(np.intp)
        j = np.clip(np.rint(v), 0, w - 1).astype(np.intp)
        vals = regions[i, j]
        vals[~ok] = _OUTSIDE
        out[g0:g1] = vals
        inside[g0:g1] = ok
    return out, inside


def _polygonal(geom: Any) -> Any:
    """The polygonal part of a geometry (Polygon/MultiPolygon) or None."""
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(geom, (Polygon, MultiPolygon)):
        return None if geom.is_empty else geom
    polys: list[Polygon] = []
    for g in getattr(geom, "geoms", []):
        if isinstance(g, Polygon) and not g.is_empty:
            polys.append(g)
        elif isinstance(g, MultiPolygon):
            polys.extend(p for p in g.geoms if not p.is_empty)
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def sieve_regions(regions: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """Merge every region smaller than ``size`` pixels into a neighbour.

    GDAL's sieve merges a small region only into a neighbour that already reaches the
    threshold, so clusters of small regions (noisy or banded areas) survive a single pass.
    Growing thresholds (2, 4, 8, ..., size), each repeated until nothing changes, let small
    regions merge with each other first.
    """
    from rasterio import features

    out = regions.astype(np.int32)
    thresholds = []
    t = 2
    while t < size:
        thresholds.append(t)
        t *= 2
    thresholds.append(size)
    for t in thresholds:
        for _ in range(8):
            nxt = features.sieve(out, size=t, mask=mask, connectivity=4)
            if np.array_equal(nxt, out):
                break
            out = nxt
    return out


def polygons(
    regions: np.ndarray,
    inside: np.ndarray,
    transform: Any,
    *,
    sieve: int = DEFAULT_SIEVE,
    simplify: float = 0.0,
) -> list[tuple[Any, int]]:
    """Valid (shapely geometry, region code) pairs from a region raster.

    Parameters
    ----------
    regions
        int32 region codes on the target grid.
    inside
        True where the grid lies inside the scene (elsewhere: no polygon).
    transform
        The grid's affine transform.
    sieve
        Minimum region size in pixels (0 or 1: no sieving).
    simplify
        Douglas-Peucker tolerance in CRS units (topology preserved per polygon).
    """
    from rasterio import features
    from shapely import make_valid
    from shapely.geometry import shape

    mask = inside.astype(np.uint8)
    if sieve and sieve > 1:
        regions = sieve_regions(regions, mask, int(sieve))
    out: list[tuple[Any, int]] = []
    for geojson, value in features.shapes(regions.astype(np.int32), mask=mask, transform=transform, connectivity=4):
        geom = shape(geojson)
        if simplify > 0:
            geom = geom.simplify(simplify, preserve_topology=True)
        if not geom.is_valid:
            geom = make_valid(geom)
        geom = _polygonal(geom)
        if geom is None or not geom.is_valid:
            continue
        out.append((geom, int(value)))
    return out


def write_shapefile(path: Path, polys: list[tuple[Any, int]], crs: Any) -> None:
    """Write polygons with SIGRID-3 attributes to ``path`` (``.shp``; siblings beside it)."""
    import fiona
    from shapely.geometry import mapping

    with fiona.open(
        path,
        "w",
        driver="ESRI Shapefile",
        schema=schema(),
        crs_wkt=crs.to_wkt(),
        encoding="utf-8",
    ) as dst:
        dst.writerecords(
            {"geometry": mapping(geom), "properties": attributes(code)} for geom, code in polys
        )
