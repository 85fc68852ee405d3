"""SIGRID-3 shapefile writer (WMO/TD-No. 1214): egg-code polygons at an analyst's scale.

The chart is drawn at the model's resolution (800 m), on a grid of that size in the product CRS
(contract.md): the model-resolution classes are warped to that grid (nearest, through the
per-pixel geolocation, :mod:`icechart.products.warp`), then

1. **generalised**: boundaries are cleaned by a 3 x 3 majority filter (:func:`majority_filter`,
   twice: a pixel takes the class triple that holds 5 of its 9 neighbours), then regions of one
   (SIC, SOD, FLOE) class triple smaller than the generalisation scale (``min_area``, default
   :data:`DEFAULT_MIN_AREA_KM2`) are merged into their largest neighbour (:func:`sieve_regions`,
   growing thresholds), as an analyst draws a few large polygons with smooth outlines, not
   every speckle;
2. **given an egg code** from the pixels inside each generalised region (:func:`egg_code`): CT
   from the mean SIC, and up to three partial concentrations with their stages and floe forms
   (CA/SA/FA, CB/SB/FB, CC/SC/FC, thickest stage first, SIGRID-3 order) from the distribution of
   SOD and FLOE inside it. Adjacent regions with the same egg code become one polygon;
3. **polygonised once** into a coverage (``rasterio.features.shapes``) whose neighbours share
   their boundaries vertex for vertex (every pixel corner on a boundary is a vertex), and
4. **simplified as a coverage** (:func:`shapely.coverage_simplify`, Visvalingam-Whyatt on the
   shared edges, the outer boundary kept), so polygons never overlap, leave no gaps, and their
   union is the charted area; the result is checked (:func:`check_coverage`) and the tolerance
   halved if GEOS ever returns an invalid coverage.

Codes follow the SIGRID-3 consistency rules both ways: CT > 0 always comes with a stage (SA),
never "00"; SA is given only with CT > 0; one ice type: CA "-9" and CT is its concentration (the
CIS convention, read back by :func:`icechart.io.sigrid3.polygon_classes` as CA = CT); several:
partials in tenths that add up to CT (largest remainder), a fourth stage, when there is one, in
CD. ``CN`` and ``CF`` are "-9". Codes come from :data:`icechart.classes.TO_CODE` and map back to
the same classes through :data:`icechart.classes.FROM_CODE` (tested), so a region of one class
triple (a *pure* region) reads back exactly. ``POLY_TYPE``: ``W`` open water (CT 00), ``I`` ice,
``L`` land, ``N`` no data (invalid SAR / outside the swath). ``AREA`` (m²) and ``PERIMETER`` (m)
are measured in the chart's CRS, as the CIS and DMI charts carry them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from icechart.classes import TO_CODE

logger = logging.getLogger(__name__)

CODE_FIELDS = ("CT", "CA", "SA", "FA", "CB", "SB", "FB", "CC", "SC", "FC", "CN", "CD", "CF", "POLY_TYPE")
FIELDS = ("AREA", "PERIMETER", *CODE_FIELDS)
SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qml")
NOT_APPLICABLE = "-9"

DEFAULT_MIN_AREA_KM2 = 25.0
"""Generalisation scale: the smallest region drawn, in km² (about 5 x 5 km; 40 model pixels of
800 m). Source: the real charts in ``shared/data/sigrid3`` (areas in their own projections):
the 25th percentile of the ice polygons of the CIS Eastern Arctic regional analysis of
2020-11-02 is 26 km² and the median of the CIS East Coast chart's 24 km²; the CIS Western Arctic
(2021-09-06) and DMI Greenland (2015-04-26) charts, drawn at a coarser scale, have medians of
1637 and 5518 km². A scale of 25 km² keeps the detail of the finest of these services; raise it
(``--min-area``) for the coarser ones."""

MODEL_PIXEL_M = 800.0
DEFAULT_SIEVE = math.ceil(DEFAULT_MIN_AREA_KM2 * 1e6 / MODEL_PIXEL_M**2)
""":data:`DEFAULT_MIN_AREA_KM2` in model pixels of 800 m (40)."""

MAX_PARTIALS = 3
"""CA/CB/CC: the three partial concentrations SIGRID-3 has fields for."""

# Region codes of the polygonised raster.
_WATER = 0
_LAND = 2000
_NODATA = 3000
_OUTSIDE = -1

LOWRES_CHARTED = 0
LOWRES_LAND = 1
LOWRES_NODATA = 2


def sieve_pixels(min_area_km2: float, resolution: float) -> int:
    """The generalisation scale in pixels of ``resolution`` (m): ceil(area / pixel area), >= 1."""
    if not min_area_km2 >= 0:
        raise ValueError(f"min_area must be >= 0 km², got {min_area_km2}")
    return max(1, math.ceil(float(min_area_km2) * 1e6 / float(resolution) ** 2 - 1e-9))


def generalisation_scale(sieve: int | None, min_area_km2: float | None, resolution: float) -> int:
    """The chart's generalisation scale in pixels of ``resolution`` (m): ``sieve`` when given,
    else ``min_area_km2`` (default :data:`DEFAULT_MIN_AREA_KM2`) in pixels (:func:`sieve_pixels`)."""
    if sieve is not None:
        return int(sieve)
    return sieve_pixels(DEFAULT_MIN_AREA_KM2 if min_area_km2 is None else float(min_area_km2), resolution)


def schema() -> dict[str, Any]:
    """fiona schema: ``AREA``/``PERIMETER`` as CIS writes them (N26.11), codes as text."""
    props: dict[str, str] = {"AREA": "float:26.11", "PERIMETER": "float:26.11"}
    props.update({name: "str:2" for name in CODE_FIELDS})
    props["CF"] = "str:4"
    props["POLY_TYPE"] = "str:1"
    return {"geometry": "Polygon", "properties": props}


def code_str(chart: str, cls: int) -> str:
    """The SIGRID-3 code of a class as a 2-character string (e.g. SIC 10 -> ``"92"``)."""
    return f"{TO_CODE[chart][int(cls)]:02d}"


def _blank(poly_type: str) -> dict[str, str]:
    props = {name: NOT_APPLICABLE for name in CODE_FIELDS}
    props["POLY_TYPE"] = poly_type
    return props


def _split(region: int) -> tuple[int, int, int]:
    return region // 100, (region // 10) % 10, region % 10


def _round_to(shares: dict[int, float], total: int) -> dict[int, int]:
    """Integers proportional to ``shares`` that add up to ``total`` (largest remainder; ties to
    the larger share, then the thicker stage)."""
    s = sum(shares.values())
    if total <= 0 or s <= 0:
        return {}
    exact = {k: v * total / s for k, v in shares.items()}
    out = {k: int(math.floor(v)) for k, v in exact.items()}
    rest = total - sum(out.values())
    order = sorted(exact, key=lambda k: (exact[k] - out[k], shares[k], k), reverse=True)
    for k in order[:rest]:
        out[k] += 1
    return {k: v for k, v in out.items() if v > 0}


def egg_code(counts: Mapping[int, int], *, region: int | None = None) -> dict[str, str]:
    """SIGRID-3 attributes of a region from its pixels: ``{region code: pixel count}``.

    Region codes are those of :func:`region_codes` (SIC*100 + SOD*10 + FLOE for ice, 0 water,
    land, no data). ``region``: the generalised region's own code, when known; a land or
    no-data region is ``L`` / ``N`` whatever specks of sea it swallowed. Land and no-data
    pixels only: ``L`` / ``N`` (whichever has more pixels).
    Otherwise, over the charted pixels: CT = round(mean SIC) in tenths; CT 0 -> ``W``. Each stage
    (SOD class) holds the share of the ice of its pixels (sum of their SIC); the three largest
    (ties: the thicker) become partials, rounded to tenths adding up to CT, the others' share
    going to the largest, and are written thickest first (CA/SA/FA, CB/SB/FB, CC/SC/FC); a
    fourth stage is named in CD. A partial's floe form is the dominant FLOE class of its
    stage's pixels (by ice). One ice type: CA "-9" (CT is its concentration).
    """
    if region in (_LAND, _NODATA):
        return _blank("L" if region == _LAND else "N")
    charted = {int(k): int(n) for k, n in counts.items() if n > 0 and k not in (_LAND, _NODATA, _OUTSIDE)}
    if not charted:
        land, nodata = counts.get(_LAND, 0), counts.get(_NODATA, 0)
        return _blank("L" if land >= nodata and land > 0 else "N")
    n = sum(charted.values())
    ice_by_stage: dict[int, float] = {}
    floe_by_stage: dict[int, dict[int, float]] = {}
    sic_sum = 0.0
    for code, cnt in charted.items():
        if code == _WATER:
            continue
        sic, sod, floe = _split(code)
        w = float(sic * cnt)
        sic_sum += w
        if sod == 0 or w == 0:  # not produced by the decision rule; ice without a stage
            continue
        ice_by_stage[sod] = ice_by_stage.get(sod, 0.0) + w
        floe_by_stage.setdefault(sod, {})
        floe_by_stage[sod][floe] = floe_by_stage[sod].get(floe, 0.0) + w
    ct = int(math.floor(sic_sum / n + 0.5))
    if ct == 0 or not ice_by_stage:
        props = _blank("W")
        props["CT"] = code_str("SIC", 0)
        return props
    ranked = sorted(ice_by_stage, key=lambda s: (ice_by_stage[s], s), reverse=True)
    kept = ranked[:MAX_PARTIALS]
    shares = {s: ice_by_stage[s] for s in kept}
    shares[kept[0]] += sum(ice_by_stage[s] for s in ranked[MAX_PARTIALS:])
    tenths = _round_to(shares, ct)
    stages = sorted(tenths, reverse=True)  # thickest first (AI4Arctic SOD classes grow with thickness)
    props = _blank("I")
    props["CT"] = code_str("SIC", ct)
    for (c_key, s_key, f_key), stage in zip((("CA", "SA", "FA"), ("CB", "SB", "FB"), ("CC", "SC", "FC")), stages):
        fl = floe_by_stage[stage]
        floe = max(fl, key=lambda f: (fl[f], f))
        if len(stages) > 1:
            props[c_key] = code_str("SIC", tenths[stage])
        props[s_key] = code_str("SOD", stage)
        props[f_key] = code_str("FLOE", floe) if floe > 0 else NOT_APPLICABLE
    if len(ranked) > MAX_PARTIALS:  # a fourth stage beyond the three partials
        props["CD"] = code_str("SOD", ranked[MAX_PARTIALS])
    return props


def attributes(region: int) -> dict[str, str]:
    """SIGRID-3 attributes of a pure region (one region code)."""
    return egg_code({int(region): 1})


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


MAJORITY_PASSES = 2
"""Passes of the 3 x 3 majority filter before sieving (0: none)."""
MAJORITY_MIN_SIEVE = 9
"""The majority filter works at the scale of its 3 x 3 window: a generalisation scale under
9 pixels asks for finer detail than it keeps, and goes without it."""


def majority_filter(regions: np.ndarray, mask: np.ndarray, *, passes: int = MAJORITY_PASSES) -> np.ndarray:
    """Boundary cleaning: every pixel inside ``mask`` takes the value held by at least 5 of the
    9 pixels of its 3 x 3 neighbourhood, when there is one (the cartographer's majority filter).

    A value held by 5 of 9 is the median of the 9 (it covers the middle of their sorted order),
    so one partial sort per pass finds it. Pixels off ``mask`` never spread into it. Straight
    boundaries stay where they are and interiors keep their values; specks and one-pixel
    spurs go, and convex corners are rounded off.
    """
    out = regions.astype(np.int32)
    h, w = out.shape
    for _ in range(passes):
        p = np.pad(np.where(mask, out, _OUTSIDE), 1, mode="constant", constant_values=_OUTSIDE)
        stack = np.stack([p[i : i + h, j : j + w] for i in range(3) for j in range(3)])
        med = np.partition(stack, 4, axis=0)[4]
        count = (stack == med[None]).sum(axis=0)
        change = mask & (count >= 5) & (med != _OUTSIDE) & (med != out)
        if not change.any():
            break
        out = np.where(change, med, out)
    return out


def _components(a: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """4-connected components of equal values inside ``mask``: labels 1..n (0 outside), their
    number, and each label's value (index 0 unused)."""
    from scipy import ndimage

    labels = np.zeros(a.shape, np.int32)
    values = [0]
    n = 0
    for v in np.unique(a[mask]):
        lab, k = ndimage.label((a == v) & mask)
        sel = lab > 0
        labels[sel] = lab[sel] + n
        n += k
        values += [int(v)] * k
    return labels, n, np.array(values, np.int64)


def generalise(
    regions: np.ndarray, inside: np.ndarray, *, sieve: int = DEFAULT_SIEVE
) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Egg-code regions: an int32 raster of indices into a list of SIGRID-3 attribute dicts.

    ``regions`` are the region codes on the chart grid; inside ``inside`` every pixel gets the
    index of its generalised region's egg code (-1 outside). ``sieve`` (pixels) 0 or 1: no
    generalisation at all; under :data:`MAJORITY_MIN_SIEVE`: sieving without the majority filter. Adjacent regions whose egg codes
    are equal share an index, so they become one polygon.
    """
    mask = inside.astype(np.uint8)
    if sieve and sieve > 1:
        cleaned = majority_filter(regions, inside) if sieve >= MAJORITY_MIN_SIEVE else regions
        sieved = sieve_regions(cleaned, mask, int(sieve))
    else:
        sieved = regions.astype(np.int32)
    comp, n, comp_code = _components(sieved, inside)
    out = np.full(regions.shape, -1, np.int32)
    if n == 0:
        return out, []
    # pixel counts of every (component, original region code) pair, in one pass
    c = comp[inside].astype(np.int64)
    codes, inv = np.unique(regions[inside], return_inverse=True)
    pair = c * codes.size + inv.ravel()
    uniq, cnt = np.unique(pair, return_counts=True)
    per: list[dict[int, int]] = [{} for _ in range(n + 1)]
    for p, k in zip(uniq.tolist(), cnt.tolist()):
        per[p // codes.size][int(codes[p % codes.size])] = k
    table: dict[tuple[tuple[str, str], ...], int] = {}
    attrs: list[dict[str, str]] = []
    index = np.full(n + 1, -1, np.int32)
    for k in range(1, n + 1):
        props = egg_code(per[k], region=int(comp_code[k]))
        key = tuple(props.items())
        if key not in table:
            table[key] = len(attrs)
            attrs.append(props)
        index[k] = table[key]
    out[inside] = index[comp[inside]]
    return out, attrs


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


def coverage(index: np.ndarray, inside: np.ndarray) -> tuple[list[Any], list[int]]:
    """Polygons of an index raster in *pixel* coordinates, edge-matched: every pixel corner on
    a boundary is a vertex of both polygons that share it (integer coordinates, exact)."""
    import shapely
    from affine import Affine
    from rasterio import features
    from shapely.geometry import shape

    geoms, values = [], []
    for gj, v in features.shapes(index.astype(np.int32), mask=inside.astype(np.uint8), transform=Affine.identity(), connectivity=4):
        geoms.append(shape(gj))
        values.append(int(v))
    if not geoms:
        return [], []
    arr = shapely.segmentize(np.array(geoms, dtype=object), 1.0)
    arr = shapely.transform(arr, np.rint)
    return list(arr), values


def simplify_coverage(geoms: list[Any], tolerance: float) -> list[Any]:
    """:func:`shapely.coverage_simplify` of an edge-matched coverage, outer boundary kept.

    The result is checked (every polygon valid and non-empty, the coverage valid); should GEOS
    ever fail that, the tolerance is halved (down to no simplification).
    """
    import shapely

    arr = np.array(geoms, dtype=object)
    if tolerance <= 0 or arr.size == 0:
        return list(arr)
    tol = float(tolerance)
    for _ in range(4):
        out = shapely.coverage_simplify(arr, tol, simplify_boundary=False)
        if shapely.is_valid(out).all() and not shapely.is_empty(out).any() and shapely.coverage_is_valid(out):
            return list(out)
        logger.debug("coverage simplification at %.3g px gave an invalid coverage; halving", tol)
        tol /= 2
    return list(arr)


def chart_polygons(
    regions: np.ndarray,
    inside: np.ndarray,
    transform: Any,
    *,
    sieve: int = DEFAULT_SIEVE,
    simplify: float = 0.0,
) -> list[tuple[Any, dict[str, str]]]:
    """The chart as (shapely polygon, SIGRID-3 attributes) pairs: a valid coverage.

    Parameters
    ----------
    regions
        int32 region codes on the target grid (:func:`region_codes`, :func:`warp_regions`).
    inside
        True where the grid lies inside the scene (elsewhere: no polygon).
    transform
        The grid's affine transform (north-up, square pixels).
    sieve
        Generalisation scale in pixels (0 or 1: none).
    simplify
        Coverage simplification tolerance in CRS units (0: none).
    """
    import shapely

    index, attrs = generalise(regions, inside, sieve=sieve)
    geoms, values = coverage(index, inside)
    res = abs(float(transform.a))
    geoms = simplify_coverage(geoms, simplify / res if res else 0.0)
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f

    def to_crs(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        return np.column_stack([a * x + b * y + c, d * x + e * y + f])

    out_geoms = shapely.transform(np.array(geoms, dtype=object), to_crs) if geoms else []
    polys = [(g, attrs[v]) for g, v in zip(out_geoms, values)]
    if VERIFY:
        charted = shapely.transform(charted_area(inside), to_crs)
        stats = check_coverage([g for g, _ in polys], charted)
        for _, props in polys:
            check_codes(props)
        logger.debug("chart coverage: %s", stats)
    return polys


VERIFY = False
"""Check every chart :func:`chart_polygons` draws (:func:`check_coverage`, :func:`check_codes`)
and raise AssertionError on a fault; the test suite turns it on (``tests/conftest.py``)."""


def charted_area(inside: np.ndarray) -> Any:
    """The union of the ``inside`` pixels as one geometry, in pixel coordinates."""
    import shapely
    from affine import Affine
    from rasterio import features
    from shapely.geometry import shape

    parts = [
        shape(g)
        for g, v in features.shapes(inside.astype(np.uint8), mask=inside.astype(np.uint8), transform=Affine.identity())
        if v
    ]
    return shapely.union_all(parts)


def _conc(code: str) -> int | None:
    from icechart.classes import FROM_CODE

    if code == NOT_APPLICABLE:
        return None
    return FROM_CODE["SIC"][int(code)]


def check_codes(props: Mapping[str, str]) -> None:
    """The SIGRID-3 consistency rules of one polygon's codes (AssertionError on a fault).

    Ice (``I``): CT > 0 and a stage SA that is not "00"; partials, when given, add up to CT
    and come with their stages, thickest first. Water (``W``): CT "00", no stage. Land and no
    data: every code "-9". Never a stage without a concentration.
    """
    pt = props["POLY_TYPE"]
    ct = _conc(props["CT"])
    stages = [props[k] for k in ("SA", "SB", "SC")]
    if pt == "I":
        assert ct is not None and ct > 0, props
        assert props["SA"] not in (NOT_APPLICABLE, "00"), props
        conc = [_conc(props[k]) for k in ("CA", "CB", "CC")]
        given = [c for c in conc if c is not None]
        if given:
            assert len(given) >= 2 and sum(given) == ct, props
            for c, st in zip(conc, stages):
                assert (c is None) == (st == NOT_APPLICABLE), props
            codes = [int(st) for st in stages if st != NOT_APPLICABLE]
            assert codes == sorted(codes, reverse=True), props
        else:
            assert stages[1:] == [NOT_APPLICABLE, NOT_APPLICABLE], props
    elif pt == "W":
        assert props["CT"] == "00" and stages == [NOT_APPLICABLE] * 3, props
    else:
        assert pt in ("L", "N"), props
        assert all(props[k] == NOT_APPLICABLE for k in CODE_FIELDS if k != "POLY_TYPE"), props


def check_coverage(geoms: list[Any], charted: Any, *, rel_tol: float = 1e-3) -> dict[str, float]:
    """Measure a chart's topology: raises AssertionError unless it is a valid coverage.

    Every polygon valid and non-empty, no two overlapping (overlap area 0 up to rounding:
    1e-9 of the charted area), the coverage valid (GEOS: edge-matched), and the union within
    ``rel_tol`` of ``charted`` (a geometry, or its area as a number) in area.

    Returns
    -------
    dict
        ``polygons``, ``overlap_area``, ``union_area``, ``charted_area``, ``union_error``
        (|union - charted| / charted) and, when ``charted`` is a geometry, ``sym_diff``
        (area of the symmetric difference / charted).
    """
    import shapely

    arr = np.array(list(geoms), dtype=object)
    assert arr.size > 0, "no polygons"
    bad = np.flatnonzero(~shapely.is_valid(arr) | shapely.is_empty(arr))
    assert bad.size == 0, f"invalid polygons: {bad[:10].tolist()} ({shapely.is_valid_reason(arr[bad[0]])})"
    total = float(shapely.area(arr).sum())
    union = shapely.union_all(arr)
    union_area = float(union.area)
    overlap = total - union_area
    charted_area = float(charted) if isinstance(charted, (int, float)) else float(charted.area)
    out = {
        "polygons": float(arr.size),
        "overlap_area": max(overlap, 0.0),
        "union_area": union_area,
        "charted_area": charted_area,
        "union_error": abs(union_area - charted_area) / charted_area,
    }
    assert overlap <= 1e-9 * charted_area, f"polygons overlap: {overlap:.6g} (sum of areas - union)"
    assert shapely.coverage_is_valid(arr), "not a valid coverage (edges not matched or overlaps)"
    if not isinstance(charted, (int, float)):
        out["sym_diff"] = float(shapely.symmetric_difference(union, charted).area) / charted_area
        assert out["sym_diff"] <= rel_tol, out
    assert out["union_error"] <= rel_tol, out
    return out


def write_shapefile(path: Path, polys: list[tuple[Any, dict[str, str]]], crs: Any) -> None:
    """Write polygons with SIGRID-3 attributes to ``path`` (``.shp``; siblings beside it),
    with ``AREA``/``PERIMETER`` in the CRS's units and a QGIS style (``.qml``) beside it."""
    import fiona
    from shapely.geometry import mapping

    from icechart.products.styles import write_vector_qml

    with fiona.open(
        path,
        "w",
        driver="ESRI Shapefile",
        schema=schema(),
        crs_wkt=crs.to_wkt(),
        encoding="utf-8",
    ) as dst:
        dst.writerecords(
            {
                "geometry": mapping(geom),
                "properties": {"AREA": float(geom.area), "PERIMETER": float(geom.length), **props},
            }
            for geom, props in polys
        )
    write_vector_qml(Path(path).with_suffix(".qml"))


GPKG_LAYERS = ("sigrid3", "sigrid3_epsg4326")
"""The GeoPackage's layers: the chart in the product CRS, and in EPSG:4326 split at ±180°."""
LONLAT_SEGMENT_M = 2000.0
"""Edges are densified to this length (m) before going to longitude/latitude, so they keep
their course (straight in the product CRS, as drawn) and the split at ±180° falls right."""


def lonlat_polygons(polys: list[tuple[Any, dict[str, str]]], crs: Any) -> list[tuple[Any, dict[str, str]]]:
    """The chart in EPSG:4326, polygons crossing ±180° cut in two there (GDAL's antimeridian
    cutting; a polygon around the pole is closed along it), as DMI and NIC distribute theirs.
    Each part is a MultiPolygon; ``AREA``/``PERIMETER`` stay those of the projected polygon."""
    import shapely
    from fiona.transform import transform_geom
    from shapely.geometry import MultiPolygon, mapping, shape

    src = crs.to_wkt()
    out = []
    for geom, props in polys:
        g = shape(transform_geom(src, "EPSG:4326", mapping(shapely.segmentize(geom, LONLAT_SEGMENT_M)), antimeridian_cutting=True))
        if not g.is_valid:
            g = shapely.make_valid(g)
        g = _polygonal(g)
        if g is None:
            continue
        out.append((g if isinstance(g, MultiPolygon) else MultiPolygon([g]), props))
    return out


def write_geopackage(path: Path, polys: list[tuple[Any, dict[str, str]]], crs: Any) -> None:
    """The chart as a GeoPackage: layer ``sigrid3`` (product CRS) and ``sigrid3_epsg4326``
    (:func:`lonlat_polygons`), both with ``AREA``/``PERIMETER`` and the SIGRID-3 codes, and the
    QGIS style of the shapefile as each layer's default (the ``layer_styles`` table QGIS reads)."""
    import fiona
    from shapely.geometry import mapping

    layers = (
        (GPKG_LAYERS[0], polys, crs.to_wkt(), "Polygon"),
        (GPKG_LAYERS[1], lonlat_polygons(polys, crs), 'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]', "MultiPolygon"),
    )
    areas = {id(props): (float(g.area), float(g.length)) for g, props in polys}
    for name, items, wkt, gtype in layers:
        sch = schema()
        sch["geometry"] = gtype
        with fiona.open(path, "w", driver="GPKG", layer=name, schema=sch, crs_wkt=wkt) as dst:
            dst.writerecords(
                {
                    "geometry": mapping(g),
                    "properties": {"AREA": areas[id(p)][0], "PERIMETER": areas[id(p)][1], **p},
                }
                for g, p in items
            )
    _add_layer_styles(path, GPKG_LAYERS)


def _add_layer_styles(path: Path, layers: tuple[str, ...]) -> None:
    """The QGIS ``layer_styles`` table (registered as an attributes table) with a default style
    per layer."""
    import sqlite3
    from contextlib import closing

    from icechart.products.styles import vector_qml

    qml = vector_qml()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256), "
            "f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT, "
            "useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME)"
        )
        db.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
            "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', strftime('%Y-%m-%dT%H:%M:%fZ','now'))"
        )
        for name in layers:
            geom_col = db.execute(
                "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (name,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                "VALUES ('', '', ?, ?, ?, ?, '', 1, 'WMO total concentration colours', 'icechart', '', "
                "strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
                (name, geom_col, f"{name} (WMO CT)", qml),
            )
