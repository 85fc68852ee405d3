"""SIGRID-3 ice charts (shapefile or GeoPackage, any CRS) as labels on a scene's SAR grid.

Per polygon, the egg-code fields become one (SIC, SOD, FLOE) triple
(:func:`polygon_classes`, the AI4Arctic tables of ``reference/ai4arctic.md`` and the rules of
contract.md "SIGRID-3 charts as labels"); the polygons are then sampled at the scene's pixels
(:func:`rasterise_chart`).

Code rules (each one met in the real charts of ``shared/data/sigrid3``):

* Codes are text (DBF ``C``): stripped and ``int()``-ed, so ``"8 "`` (DMI, unpadded) == ``08``;
  blank / None is "missing", ``-9`` is "not applicable"; anything else unparsable is missing.
* ``POLY_TYPE``: ``L`` land, ``N`` no data, ``S`` ice shelf -> 255; ``W`` water -> 0 for all
  three charts whatever its codes (DMI's water polygon has every code -9; a CIS ``W`` has CT 02
  with SA 98); ``I`` or absent -> from the codes. Other values -> 255.
* ``CT``: the AI4Arctic table (00, 01, 02, 55 -> 0; 10..90 -> 1..9; 91, 92 -> 10); missing,
  ``-9`` or ``99`` -> 255 for all three charts. Range codes ``ab`` (a < b tenths, e.g. 46 =
  4-6/10, DMI's 12 13 24 35 45 46 57 67 68 79 89) -> ``range_codes``: ``mask`` (default: SIC
  255), ``low`` (a), ``mid`` (midpoint rounded half up) or ``high`` (b). A NIC extent file has no
  CT column but ``ICECODE "CT99"``: read as CT 99, hence 255.
* Partial concentrations ``CA CB CC`` use the same table; ``CA`` missing or ``-9`` while CT > 0
  -> ``CA = CT`` (one ice type; also DMI, whose partials are all omitted while SA/SB/SC are
  given: the thickest stage then takes all of CT, as in the AI4Arctic conversion); ``CB``/``CC``
  missing -> 0. A range code in a partial follows ``range_codes`` (``mask``: SOD/FLOE 255).
* SOD from ``SA SB SC``, FLOE from ``FA FB FC``: partial concentrations of partials mapping to
  the same class are summed; the class with the largest sum wins if it holds >= 0.65 of CT
  (``classes.DOMINANCE``), else 255. A winning code outside the table (``-9``, ``99``) or one
  mapping to 255 (SOD 98/99) gives 255. FLOE codes 01, 08, 21, 22 in any of FA/FB/FC mask the
  polygon's FLOE (fast ice, as the AI4Arctic conversion). With ``mask``, a CT range code does
  not block SOD/FLOE when the dominance decision is the same at both ends of the range.
* SIC 0 (ice free, open water, bergy water) forces SOD and FLOE to 0.
* Extra fields (CIS ``E_*``, ``R_*``, ``N_*``, ``PNT_TYPE``; DMI ``HATCH``, ``OBS_METHOD``...)
  are ignored; field names are matched case-insensitively.

Geometry rules:

* Invalid rings (self-intersections: DMI features 61/69, CIS East Coast 238/403) are repaired
  with :func:`shapely.make_valid`, keeping the polygonal parts; holes are kept (DMI carves land
  out as holes), so a pixel in a hole is outside every polygon -> 255.
* Pixels are tested in the chart's own CRS: the scene's tie-point latitude/longitude
  (:meth:`Scene.latlon`, 3-D interpolation) are transformed with pyproj into the chart CRS and
  located with point-in-polygon tests. Chart edges are therefore straight in the chart's CRS,
  as the ice service drew them, and a lon/lat chart split at +-180 degrees (NIC) is correct on
  both sides of the antimeridian with no reprojection of the polygons.
* For speed the polygons are sampled at the centres of ``step x step`` pixel blocks (default 2,
  i.e. 160 m for 80 m pixels, far below a chart's accuracy) and the result repeated onto the
  full grid. Only labelled polygons whose bounding box meets the scene are tested (STRtree
  query); fully masked polygons (land...) are skipped, since inside them is 255 anyway.

A chart with no usable polygon over the scene (e.g. a NIC CT99-only extent file) raises
:class:`BadDataError` "no labelled pixels".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from icechart.classes import DOMINANCE, FILL, FROM_CODE
from icechart.errors import BadDataError, InputMissingError

if TYPE_CHECKING:
    from icechart.io.scene import Scene

logger = logging.getLogger(__name__)

RangeCodes = Literal["mask", "low", "mid", "high"]
RANGE_CODES: tuple[str, ...] = get_args(RangeCodes)

MASKED_POLY_TYPES = frozenset({"L", "N", "S"})
"""Land, no data, ice shelf: no label (contract.md)."""

FLOE_MASK_CODES = frozenset({1, 8, 21, 22})
"""FLOE codes that mask a polygon's FLOE wherever they appear (ai4arctic.md)."""

DEFAULT_STEP = 2
"""Pixels per sample along each axis in :func:`rasterise_chart`."""

_NA = -9  # SIGRID-3 "not applicable / unknown"


def parse_code(value: Any) -> int | None:
    """A SIGRID-3 code as an int: strip and ``int()`` text (``"8 "`` -> 8); blank -> None.

    Returns None for None, empty or unparsable values (egg-code text such as ``"9+"``).
    """
    if value is None:
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float):
        return None if math.isnan(value) else int(value)
    text = str(value).strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        try:
            f = float(text)
        except ValueError:
            return None
        return int(f) if f.is_integer() else None


def _range_bounds(code: int) -> tuple[int, int] | None:
    """(low, high) tenths of a concentration range code ``ab`` with a < b, else None."""
    if 10 <= code <= 99:
        a, b = divmod(code, 10)
        if 0 < b and a < b:
            return a, b
    return None


def concentration(code: int | None, range_codes: str) -> tuple[int, int] | None:
    """A concentration code as a (low, high) range of tenths, both equal for single codes.

    None for missing, -9, 99 (undetermined) and unknown codes. ``range_codes`` decides how a
    range code such as 46 comes back: ``mask`` -> (4, 6) (the caller decides), ``low`` ->
    (4, 4), ``mid`` -> (5, 5), ``high`` -> (6, 6).
    """
    if code is None or code == _NA:
        return None
    table = FROM_CODE["SIC"]
    if code in table:
        cls = table[code]
        return None if cls == FILL else (cls, cls)
    bounds = _range_bounds(code)
    if bounds is None:
        return None
    lo, hi = bounds
    if range_codes == "low":
        return lo, lo
    if range_codes == "high":
        return hi, hi
    if range_codes == "mid":
        m = int(math.floor((lo + hi) / 2.0 + 0.5))
        return m, m
    return lo, hi


def _norm(record: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in record.items()}


def _dominant(
    partials: list[tuple[int, int | None]], ct: int, chart: str
) -> int:
    """Dominant class of (concentration tenths, code) partials at total ``ct`` tenths."""
    if ct <= 0:
        return 0
    table = FROM_CODE[chart]
    sums: dict[int, int] = {}
    for conc, code in partials:
        if conc <= 0:
            continue
        cls = table.get(code, FILL) if code is not None else FILL  # -9 / unknown -> no class
        sums[cls] = sums.get(cls, 0) + conc
    if not sums:
        return FILL
    cls, total = max(sums.items(), key=lambda kv: (kv[1], kv[0] != FILL))
    if total / ct >= DOMINANCE:
        return cls
    return FILL


def polygon_classes(record: Mapping[str, Any], *, range_codes: str = "mask") -> tuple[int, int, int]:
    """(SIC, SOD, FLOE) classes of one SIGRID-3 polygon record (255 = masked).

    Parameters
    ----------
    record
        The polygon's attributes, e.g. ``feature.properties`` from fiona: ``CT CA CB CC SA SB SC
        FA FB FC POLY_TYPE`` (any case; text or numbers), or NIC's ``ICECODE``.
    range_codes
        How concentration range codes (e.g. CT 46) are read: ``mask``, ``low``, ``mid`` or
        ``high`` (module docstring).

    Returns
    -------
    tuple of int
        SIC class 0..10, SOD class 0..5, FLOE class 0..6, each 255 where masked.
    """
    if range_codes not in RANGE_CODES:
        raise ValueError(f"range_codes must be one of {RANGE_CODES}, not {range_codes!r}")
    rec = _norm(record)
    poly_type = str(rec.get("POLY_TYPE") or "").strip().upper()
    if poly_type in MASKED_POLY_TYPES:
        return FILL, FILL, FILL
    if poly_type == "W":
        return 0, 0, 0
    if poly_type not in ("", "I"):
        logger.debug("unknown POLY_TYPE %r: masked", poly_type)
        return FILL, FILL, FILL

    ct_code = parse_code(rec.get("CT"))
    if ct_code is None and "CT" not in rec and isinstance(rec.get("ICECODE"), str):
        text = rec["ICECODE"].strip().upper()
        ct_code = parse_code(text[2:]) if text.startswith("CT") else None
    ct = concentration(ct_code, range_codes)
    if ct is None:
        return FILL, FILL, FILL
    ct_lo, ct_hi = ct
    if ct_hi == 0:
        return 0, 0, 0
    sic = ct_lo if ct_lo == ct_hi else FILL

    # Partial concentrations: (low, high) tenths or None per partial.
    parts: list[tuple[int, int] | None] = []
    partial_range_masked = False
    for i, key in enumerate(("CA", "CB", "CC")):
        code = parse_code(rec.get(key))
        if code is None or code == _NA:
            parts.append(None if i == 0 else (0, 0))
            continue
        c = concentration(code, range_codes)
        if c is None:
            parts.append((0, 0))
        else:
            if c[0] != c[1]:
                partial_range_masked = True
            parts.append(c)

    def dominant(chart: str, keys: tuple[str, str, str]) -> int:
        if partial_range_masked:
            return FILL
        codes = [parse_code(rec.get(k)) for k in keys]
        results = set()
        for end in (0, 1):  # both ends of a CT range must agree (single codes: same twice)
            ct_end = (ct_lo, ct_hi)[end]
            if ct_end == 0:
                results.add(0)
                continue
            conc = [ct_end if p is None else p[end] for p in parts]  # CA missing -> CA = CT
            results.add(_dominant(list(zip(conc, codes, strict=True)), ct_end, chart))
        return results.pop() if len(results) == 1 else FILL

    sod = dominant("SOD", ("SA", "SB", "SC"))
    floe_codes = {parse_code(rec.get(k)) for k in ("FA", "FB", "FC")}
    floe = FILL if floe_codes & FLOE_MASK_CODES else dominant("FLOE", ("FA", "FB", "FC"))
    if sic == 0:
        sod = floe = 0
    return sic, sod, floe


# --- reading ------------------------------------------------------------------------------
def read_chart(path: str | Path, *, layer: str | None = None) -> tuple[list[Any], list[dict[str, Any]], Any]:
    """Read a chart's polygons (repaired), their attributes and its CRS.

    Returns
    -------
    geoms, records, crs
        Shapely polygons/multipolygons (possibly empty after repair), attribute dicts, and a
        :class:`pyproj.CRS`.

    Raises
    ------
    InputMissingError
        The file does not exist (66).
    BadDataError
        Not a readable vector file, no CRS, or no polygon (65).
    """
    import fiona
    import shapely
    from pyproj import CRS
    from shapely.geometry import shape

    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"{path}: no such file")
    try:
        layers = fiona.listlayers(path)
        with fiona.open(path, layer=layer or layers[0]) as src:
            crs_wkt = src.crs_wkt
            geoms, records = [], []
            n_invalid = 0
            for feat in src:
                if feat.geometry is None:
                    continue
                g = shape(feat.geometry)
                if g.geom_type not in ("Polygon", "MultiPolygon"):
                    continue
                if not g.is_valid:
                    n_invalid += 1
                    g = _polygonal(shapely.make_valid(g))
                geoms.append(g)
                records.append(dict(feat.properties))
    except (fiona.errors.FionaError, fiona.errors.DriverError, OSError, ValueError) as exc:
        raise BadDataError(f"{path}: not a readable SIGRID-3 chart ({exc})") from exc
    if not crs_wkt:
        raise BadDataError(f"{path}: the chart has no CRS (.prj missing?)")
    if not geoms:
        raise BadDataError(f"{path}: no polygons in the chart")
    if n_invalid:
        logger.info("%s: repaired %d invalid polygon(s) with make_valid", path.name, n_invalid)
    return geoms, records, CRS.from_wkt(crs_wkt)


def _polygonal(g: Any) -> Any:
    """Keep the polygonal parts of a geometry (make_valid may add lines or points)."""
    import shapely
    from shapely.geometry import MultiPolygon, Polygon

    if g.geom_type in ("Polygon", "MultiPolygon"):
        return g
    polys: list[Any] = []
    for part in shapely.get_parts(g):
        if isinstance(part, Polygon):
            polys.append(part)
        elif isinstance(part, MultiPolygon):
            polys.extend(part.geoms)
    return MultiPolygon(polys) if polys else Polygon()


def polygon_index(
    geoms: list[Any], x: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Index of the polygon containing each point (x, y in the polygons' CRS), -1 for none.

    Where polygons overlap, the later one wins.
    """
    import shapely
    from shapely import STRtree, box

    out = np.full(x.shape, -1, dtype=np.int32)
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return out
    xf, yf = x[finite], y[finite]
    area = box(float(xf.min()), float(yf.min()), float(xf.max()), float(yf.max()))
    tree = STRtree(geoms)
    cand = np.sort(tree.query(area))
    res = np.full(xf.shape, -1, dtype=np.int32)
    for i in cand:
        g = geoms[int(i)]
        if g.is_empty:
            continue
        minx, miny, maxx, maxy = g.bounds
        sel = np.flatnonzero((xf >= minx) & (xf <= maxx) & (yf >= miny) & (yf <= maxy))
        if sel.size == 0:
            continue
        shapely.prepare(g)
        inside = shapely.contains_xy(g, xf[sel], yf[sel])
        res[sel[inside]] = int(i)
    out[finite] = res
    return out


def rasterise_chart(
    path: str | Path,
    scene: Scene,
    *,
    range_codes: str = "mask",
    step: int = DEFAULT_STEP,
    layer: str | None = None,
    mask_invalid: bool = True,
) -> dict[str, np.ndarray]:
    """Rasterise a SIGRID-3 chart onto a scene's SAR grid.

    Parameters
    ----------
    path
        Shapefile (``.shp`` with its ``.dbf``/``.prj``) or GeoPackage.
    scene
        The opened scene (its tie-point geolocation gives each pixel's latitude/longitude).
    range_codes
        ``mask``, ``low``, ``mid`` or ``high`` (see :func:`polygon_classes`).
    step
        Sample the chart every ``step`` pixels (block centres) and repeat; 1 = every pixel.
    layer
        GeoPackage layer (default: the first).
    mask_invalid
        Set 255 where the scene's SAR is invalid (NaN swath borders), as the AI4Arctic labels
        are, so a prediction's 255 there is not counted.

    Returns
    -------
    dict
        ``{"SIC", "SOD", "FLOE"}`` uint8 arrays of the scene's shape, 255 where masked.

    Raises
    ------
    BadDataError
        Unreadable chart, no CRS, or no labelled pixel over the scene ("no labelled pixels").
    """
    from pyproj import Transformer

    path = Path(path)
    geoms, records, crs = read_chart(path, layer=layer)
    classes = np.array(
        [polygon_classes(r, range_codes=range_codes) for r in records] + [(FILL, FILL, FILL)],
        dtype=np.uint8,
    )  # last row: outside every polygon
    # Polygons whose three charts are all masked (land, no data, CT 99...) label nothing: a
    # pixel inside them is 255 as outside every polygon, so they are not tested at all (SIGRID-3
    # polygons partition the chart area; they do not overlap).
    labelled = np.flatnonzero((classes[:-1] != FILL).any(axis=1))
    if labelled.size == 0:
        raise BadDataError(
            f"{path}: no labelled pixels: every polygon is masked (land, no data, CT 99 or -9, "
            "range codes with --range-codes mask; e.g. a NIC CT99-only extent file)"
        )
    lines, samples = scene.shape
    step = max(1, int(step))
    rows = np.arange(0, lines, step) + (min(step, lines) - 1) / 2.0
    cols = np.arange(0, samples, step) + (min(step, samples) - 1) / 2.0
    rows = np.minimum(rows, lines - 1)
    cols = np.minimum(cols, samples - 1)
    lat, lon = scene.latlon(rows=rows, cols=cols)
    to_chart = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = to_chart.transform(lon, lat, errcheck=False)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    sub = polygon_index([geoms[i] for i in labelled], x, y)
    idx = np.where(sub >= 0, labelled[np.maximum(sub, 0)], -1)
    coarse = classes[idx]  # -1 picks the last row: 255
    out = {}
    for k, chart in enumerate(("SIC", "SOD", "FLOE")):
        a = coarse[..., k]
        if step > 1:
            a = np.repeat(np.repeat(a, step, axis=0), step, axis=1)[:lines, :samples]
        out[chart] = np.ascontiguousarray(a)
    if mask_invalid:
        for r0 in range(0, lines, 1024):
            window = (slice(r0, r0 + 1024), slice(None))
            bad = ~scene.valid(window)
            for chart in out:
                out[chart][window][bad] = FILL
    if not any((out[c] != FILL).any() for c in out):
        n_in = int((idx >= 0).sum())
        why = (
            "no polygon of it covers the scene"
            if n_in == 0
            else "every polygon over the scene is masked (land, no data, CT 99/-9 or range codes)"
            " or the scene's SAR is invalid there"
        )
        raise BadDataError(f"{path}: no labelled pixels over scene {scene.scene_id}: {why}")
    logger.info(
        "%s: rasterised onto %s (%dx%d): %.1f%% labelled",
        path.name,
        scene.scene_id,
        lines,
        samples,
        100.0 * float((out["SIC"] != FILL).mean()),
    )
    return out
