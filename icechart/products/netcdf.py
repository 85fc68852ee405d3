"""The primary product: a CF-1.10 / ACDD-1.3 netCDF at SAR geometry, written by row blocks.

Layout (reference/contract.md "Products"; products-and-ops.md "CF netCDF"): dims ``sar_lines`` x
``sar_samples`` with exactly the input's shape; ``SIC`` uint8 percent (0, 10, ..., 100, units
"%", no scale_factor), ``SOD`` and ``FLOE`` uint8 classes with ``flag_values``/``flag_meanings``,
all with ``_FillValue`` 255; ``SOD_confidence`` and ``FLOE_confidence`` uint8 percent (the chosen
class's probability, OSI SAF practice) and ``status_flag`` (``flag_masks`` 1 land, 2 invalid SAR,
4 outside swath; standard name ``status_flag``), linked through ``ancillary_variables``; 2-D
``lat``/``lon`` auxiliary coordinates (float32) and the scalar ``time`` coordinate (the
acquisition) named in every variable's ``coordinates``. Every variable has an ACDD
``coverage_content_type``. Global attributes: ACDD-1.3 discovery metadata, with
``geospatial_bounds`` (WKT, EPSG:4326 in its latitude-longitude axis order, split into a
MULTIPOLYGON at the antimeridian, a cap for a scene over the pole) and ``geospatial_lon_min`` >
``geospatial_lon_max`` for a scene across 180 degrees (ACDD's rule), the producer's
``institution``/``creator_*``/``publisher_*`` from ``[predict]`` (:data:`PRODUCER_ATTRIBUTES`),
and a not-for-navigation statement (``comment``). From an ensemble, ``SIC_standard_error``
(uint8 percent, ``standard_name "sea_ice_area_fraction standard_error"``, the spread of the
members' SIC) joins SIC's ``ancillary_variables``; a calibrated model's confidence layers say
so (temperature in their ``comment``).

The file is written with netCDF4 directly, one row block at a time into chunks that the blocks
fill whole (no chunk is ever read back), so memory stays flat for any scene size.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from icechart._version import __version__
from icechart.classes import (
    CLASS_NAMES,
    CLASS_TABLE_VERSION,
    FILL,
    N_CLASSES,
    STATUS_INVALID,
    STATUS_LAND,
    STATUS_MEANINGS,
    STATUS_OUTSIDE,
    sic_to_percent,
)
from icechart.io import contract as C

logger = logging.getLogger(__name__)

PAPER_DOI = "https://doi.org/10.5194/tc-18-1621-2024"
CHART_VARIABLES = ("SIC", "SOD", "FLOE", "SOD_confidence", "FLOE_confidence", "status_flag")
SE_VARIABLE = "SIC_standard_error"


def variable_attrs(
    *, sic_standard_error: bool = False, temperature: dict[str, float] | None = None
) -> dict[str, dict[str, Any]]:
    """CF attributes of every variable of the product (shared with :func:`predict_dataset`).

    Parameters
    ----------
    sic_standard_error
        Include ``SIC_standard_error`` (ensembles) and link it from SIC.
    temperature
        Calibration temperatures per chart, noted in the confidence layers' ``comment``.
    """
    u8 = np.uint8
    coords = "time lat lon"
    temperature = temperature or {}
    out: dict[str, dict[str, Any]] = {
        "SIC": {
            "standard_name": "sea_ice_area_fraction",
            "long_name": "sea ice concentration (total), in steps of 10 %",
            "units": "%",
            "valid_range": np.array([0, 100], u8),
            "coordinates": coords,
            "ancillary_variables": "status_flag",
            "coverage_content_type": "modelResult",
            "comment": "round(clamp(regression, 0, 10)) x 10; 255 = land, invalid SAR or no data",
        },
        "SOD": {
            "standard_name": "sea_ice_classification",
            "long_name": "stage of development (AI4Arctic classes)",
            "flag_values": np.arange(N_CLASSES["SOD"], dtype=u8),
            "flag_meanings": " ".join(CLASS_NAMES["SOD"]),
            "valid_range": np.array([0, N_CLASSES["SOD"] - 1], u8),
            "coordinates": coords,
            "ancillary_variables": "SOD_confidence status_flag",
            "coverage_content_type": "thematicClassification",
            "comment": "open_water exactly where SIC is 0: an ice pixel takes the most probable ice class",
        },
        "FLOE": {
            "long_name": "floe size (AI4Arctic classes)",
            "flag_values": np.arange(N_CLASSES["FLOE"], dtype=u8),
            "flag_meanings": " ".join(CLASS_NAMES["FLOE"]),
            "valid_range": np.array([0, N_CLASSES["FLOE"] - 1], u8),
            "coordinates": coords,
            "ancillary_variables": "FLOE_confidence status_flag",
            "coverage_content_type": "thematicClassification",
            "comment": "open_water exactly where SIC is 0: an ice pixel takes the most probable ice class",
        },
        "SOD_confidence": {
            # CF has no name for a class probability; quality_flag is "assessed quality
            # information of another data variable", linked through ancillary_variables.
            "standard_name": "quality_flag",
            "long_name": "probability of the stage of development class given in SOD",
            "units": "%",
            "valid_range": np.array([0, 100], u8),
            "coordinates": coords,
            "coverage_content_type": "qualityInformation",
        },
        "FLOE_confidence": {
            # CF has no name for a class probability; quality_flag is "assessed quality
            # information of another data variable", linked through ancillary_variables.
            "standard_name": "quality_flag",
            "long_name": "probability of the floe size class given in FLOE",
            "units": "%",
            "valid_range": np.array([0, 100], u8),
            "coordinates": coords,
            "coverage_content_type": "qualityInformation",
        },
        "status_flag": {
            "standard_name": "status_flag",
            "long_name": "why a pixel has no ice chart value (0 = charted)",
            "flag_masks": np.array([STATUS_LAND, STATUS_INVALID, STATUS_OUTSIDE], u8),
            "flag_meanings": STATUS_MEANINGS,
            "valid_range": np.array([0, 7], u8),
            "coordinates": coords,
            "coverage_content_type": "qualityInformation",
        },
        "lat": {
            "standard_name": "latitude",
            "long_name": "latitude (interpolated from the tie-point grid)",
            "units": "degrees_north",
            "coverage_content_type": "coordinate",
        },
        "lon": {
            "standard_name": "longitude",
            "long_name": "longitude (interpolated from the tie-point grid)",
            "units": "degrees_east",
            "coverage_content_type": "coordinate",
        },
        "time": {
            "standard_name": "time",
            "long_name": "acquisition time of the Sentinel-1 scene",
            "units": TIME_UNITS,
            "calendar": "standard",
            "axis": "T",
            "coverage_content_type": "coordinate",
        },
    }
    for chart in ("SOD", "FLOE"):
        t = temperature.get(chart)
        out[f"{chart}_confidence"]["comment"] = (
            f"temperature-scaled softmax probability (T = {t:.4f}, fitted on validation scenes "
            "by minimising the negative log-likelihood)"
            if t is not None
            else "softmax probability (not calibrated)"
        )
    if sic_standard_error:
        out["SIC"]["ancillary_variables"] = f"{SE_VARIABLE} status_flag"
        out[SE_VARIABLE] = {
            "standard_name": "sea_ice_area_fraction standard_error",
            "long_name": "standard deviation of the sea ice concentration across ensemble members",
            "units": "%",
            "valid_range": np.array([0, 100], u8),
            "coordinates": coords,
            "coverage_content_type": "qualityInformation",
            "comment": "sample standard deviation (ddof 1) of the members' SIC before rounding, in "
            "percent, rounded to 1 %; 255 = land, invalid SAR or no data",
        }
    return out


TIME_UNITS = "seconds since 1970-01-01 00:00:00"

NOT_FOR_NAVIGATION = (
    "NOT FOR NAVIGATION. Automatic ice chart from a machine-learning model that has not been "
    "validated for operational use; use the ice services' official charts for navigation."
)

PRODUCER_ATTRIBUTES = (
    "institution",
    "creator_name",
    "creator_email",
    "creator_url",
    "creator_type",
    "creator_institution",
    "publisher_name",
    "publisher_email",
    "publisher_url",
    "publisher_type",
    "publisher_institution",
    "project",
    "naming_authority",
    "acknowledgement",
)
"""Global attributes the producing service sets (``[predict]`` keys of the same names,
:mod:`icechart.cli.predict`); ACDD-1.3 names."""

DEFAULT_INSTITUTION = "icechart users (set by the producing ice service)"


def global_attrs(
    *,
    scene_id: str,
    acquired: datetime,
    model_id: str,
    model_sha256: str,
    input_name: str,
    input_sha256: str | None,
    service: str = "",
    command: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ACDD-1.3 + CF-1.10 global attributes and provenance (products-and-ops.md)."""
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    cmd = command if command is not None else " ".join(sys.argv)
    t = acquired.astimezone(timezone.utc).replace(microsecond=0).isoformat()
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.10, ACDD-1.3",
        "title": f"Sea ice chart (SIC, SOD, FLOE) for Sentinel-1 scene {scene_id}",
        "summary": (
            "Automatic sea ice chart from a Sentinel-1 EW scene with AMSR2 and ERA5 auxiliary "
            "data (AI4Arctic ready-to-train format), by the MMSeaIce multi-task U-Net: total "
            "concentration, stage of development and floe size at the SAR geometry."
        ),
        "institution": DEFAULT_INSTITUTION,
        "id": f"{scene_id}_{model_id}",
        "comment": NOT_FOR_NAVIGATION,
        "disclaimer": NOT_FOR_NAVIGATION,
        "standard_name_vocabulary": "CF Standard Name Table v93",
        "keywords_vocabulary": "free text",
        "platform": "Sentinel-1",
        "instrument": "C-SAR (Extra Wide swath)",
        "time_coverage_duration": "PT0S",
        "time_coverage_resolution": "PT0S",
        "source": f"icechart {__version__}, model {model_id}",
        "history": f"{now} {cmd}".strip(),
        "date_created": now,
        "product_version": "1.0",
        "references": PAPER_DOI,
        "license": "CC-BY-4.0",
        "keywords": "sea ice, ice chart, Sentinel-1, SAR, SIGRID-3, AutoICE",
        "time_coverage_start": t,
        "time_coverage_end": t,
        "scene_id": scene_id,
        "ice_service": service,
        "software_version": f"icechart {__version__}",
        "model_id": model_id,
        "model_sha256": model_sha256,
        "class_table_version": CLASS_TABLE_VERSION,
        "input_file": input_name,
        "input_sha256": input_sha256 or "",
        "processing_level": "L2",
        "cdm_data_type": "Grid",
    }
    if extra:
        attrs.update({k: v for k, v in extra.items() if v is not None and v != ""})
    return attrs


def footprint_attrs(lat: np.ndarray, lon: np.ndarray, *, max_points: int = 120) -> dict[str, Any]:
    """ACDD longitude range and ``geospatial_bounds`` of a scene from a node grid.

    Parameters
    ----------
    lat, lon
        2-D latitude and longitude of a grid of points over the scene, its outer rows and
        columns on the scene's edges; longitude continuous (unwrapped about the scene's centre,
        so it may leave [-180, 180)).

    Returns
    -------
    dict
        ``geospatial_lon_min``/``max`` (westernmost, easternmost; min > max across 180
        degrees; -180/180 over a pole), ``geospatial_bounds`` (WKT in EPSG:4326's
        latitude-longitude order), ``geospatial_bounds_crs``.
    """
    import shapely
    from pyproj import Transformer
    from shapely.geometry import MultiPolygon, Polygon, box

    west, east = float(np.nanmin(lon)), float(np.nanmax(lon))
    ring_lat = np.r_[lat[0, :], lat[1:, -1], lat[-1, -2::-1], lat[-2:0:-1, 0]]
    ring_lon = np.r_[lon[0, :], lon[1:, -1], lon[-1, -2::-1], lon[-2:0:-1, 0]]
    step = max(1, ring_lat.size // max_points)
    h, w = lat.shape
    corners = np.array([0, w - 1, w + h - 2, 2 * w + h - 3])  # keep the four corners
    keep = np.union1d(np.arange(0, ring_lat.size, step), corners[corners < ring_lat.size])
    ring_lat, ring_lon = ring_lat[keep], ring_lon[keep]
    north = float(np.nanmean(lat)) >= 0
    # Does the footprint hold the pole? Test in the polar stereographic plane.
    to_ps = Transformer.from_crs("EPSG:4326", "EPSG:3413" if north else "EPSG:3031", always_xy=True)
    x, y = to_ps.transform(ring_lon, ring_lat)
    over_pole = bool(Polygon(np.column_stack([x, y])).buffer(0).contains(shapely.Point(0.0, 0.0)))

    def wkt_latlon(geom: Any) -> str:
        swapped = shapely.transform(geom, lambda xy: xy[:, ::-1])
        return shapely.to_wkt(swapped, rounding_precision=4, trim=True)

    if over_pole:
        edge = float(np.nanmin(ring_lat)) if north else float(np.nanmax(ring_lat))
        pole = 90.0 if north else -90.0
        cap = box(-180.0, min(edge, pole), 180.0, max(edge, pole))
        return {
            "geospatial_lon_min": -180.0,
            "geospatial_lon_max": 180.0,
            "geospatial_bounds": wkt_latlon(cap),
            "geospatial_bounds_crs": "EPSG:4326",
        }
    poly = Polygon(np.column_stack([ring_lon, ring_lat])).buffer(0)
    parts = []
    for k in range(-1, 2):  # the pieces in each 360-degree window, shifted into [-180, 180]
        piece = poly.intersection(box(-180.0 + 360 * k, -90.0, 180.0 + 360 * k, 90.0))
        if not piece.is_empty:
            parts.append(shapely.transform(piece, lambda xy, k=k: xy - np.array([360.0 * k, 0.0])))
    polys = [g for p in parts for g in getattr(p, "geoms", [p]) if g.geom_type == "Polygon"]
    geom = polys[0] if len(polys) == 1 else MultiPolygon(polys)

    def wrap(v: float) -> float:
        return ((v + 180.0) % 360.0) - 180.0 if not -180.0 <= v <= 180.0 else v

    return {
        "geospatial_lon_min": wrap(west),
        "geospatial_lon_max": wrap(east),
        "geospatial_bounds": wkt_latlon(geom),
        "geospatial_bounds_crs": "EPSG:4326",
    }


class LatLonBlocks:
    """Latitude/longitude of whole SAR lines, fast: exact (3-D tie-point interpolation) on a
    node grid of every ``step``-th pixel plus the last, bilinear in between.

    Evaluating the 3-D interpolation and two ``arctan2`` at every pixel costs ~2 s for a
    5000 x 5000 scene; between nodes 800 m apart the geolocation is linear to far below a
    millimetre, so this is as exact as the float32 it is stored in (tested against
    :meth:`icechart.io.scene.Scene.latlon`). Longitudes are unwrapped about the scene centre
    (antimeridian safe); within 1 degree of the pole every pixel is computed exactly.
    """

    def __init__(self, scene: Any, *, step: int = 10) -> None:
        self.scene = scene
        lines, samples = scene.shape
        self.rn = np.unique(np.r_[np.arange(0, lines, step), lines - 1]).astype(np.float64)
        self.cn = np.unique(np.r_[np.arange(0, samples, step), samples - 1]).astype(np.float64)
        lat, lon = scene.latlon(rows=self.rn, cols=self.cn)
        self.exact = bool(np.nanmax(np.abs(lat)) > 89.0)
        ref = float(lon[lat.shape[0] // 2, lon.shape[1] // 2])
        self.ref = ref
        self.lat = lat
        self.lon = ref + ((lon - ref + 180.0) % 360.0) - 180.0
        self._lat0 = float(lat[lat.shape[0] // 2, lat.shape[1] // 2])
        self._wraps = bool(self.lon.min() < -180.0 or self.lon.max() >= 180.0)
        ci, ct = self._axis(np.arange(samples, dtype=np.float64), self.cn)
        self._ci = ci
        self._ci1 = np.minimum(ci + 1, self.cn.size - 1)
        self._ct = ct.astype(np.float32)
        self._ct1 = (1 - ct).astype(np.float32)

    def footprint(self) -> dict[str, Any]:
        """:func:`footprint_attrs` of the scene (from the exact node grid)."""
        return footprint_attrs(self.lat, self.lon)

    @staticmethod
    def _axis(pos: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i = np.clip(np.searchsorted(nodes, pos, side="right") - 1, 0, max(nodes.size - 2, 0))
        j = np.minimum(i + 1, nodes.size - 1)
        t = np.where(j > i, (pos - nodes[i]) / np.maximum(nodes[j] - nodes[i], 1e-12), 0.0)
        return i, t

    def block(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        """float32 (lat, lon) of lines ``rows`` (all samples); lon in [-180, 180)."""
        if self.exact:
            la, lo = self.scene.latlon((rows, slice(None)))
            return la.astype(np.float32), lo.astype(np.float32)
        ri, rt = self._axis(np.arange(rows.start, rows.stop, dtype=np.float64), self.rn)
        ri1 = np.minimum(ri + 1, self.rn.size - 1)
        out = []
        for g, ref in ((self.lat, self._lat0), (self.lon, self.ref)):
            # float64 along lines (small), then float32 offsets from a reference along samples
            r = (g[ri] * (1 - rt)[:, None] + g[ri1] * rt[:, None] - ref).astype(np.float32)
            v = r[:, self._ci]
            v *= self._ct1
            v += r[:, self._ci1] * self._ct
            v += np.float32(ref)
            out.append(v)
        lat, lon = out
        if self._wraps:
            lon = (lon + np.float32(180.0)) % np.float32(360.0) - np.float32(180.0)
        return lat, lon


_WRITE_CACHE_BYTES = 4 * 2**20
"""HDF5 chunk cache per written variable (size 0 would mean "unchanged" to netCDF-C)."""
_WRITE_CACHE_SLOTS = 7


def _chunks(lines: int, samples: int, block_rows: int) -> tuple[int, int]:
    """Chunks that whole row blocks fill: rows divide the block, columns at most ~4096."""
    rows = min(lines, block_rows // 2 if block_rows % 2 == 0 else block_rows)
    ncol = -(-samples // 4096)
    return max(rows, 1), -(-samples // ncol)


class NetcdfWriter:
    """Writes the product into ``path`` block by block; use as a context manager.

    Parameters
    ----------
    path
        The file to create (a temporary name from :func:`icechart.atomic.atomic_path`).
    shape
        SAR (lines, samples).
    attrs
        Global attributes (:func:`global_attrs`); geospatial bounds are added on close.
    block_rows
        Rows per :meth:`write` call (fixes the chunking).
    complevel
        zlib level (1-9).
    sic_standard_error
        Add ``SIC_standard_error`` (ensembles); :meth:`write` then needs it in every block.
    temperature
        Calibration temperatures per chart (noted in the confidence layers).
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, int],
        attrs: dict[str, Any],
        *,
        block_rows: int,
        complevel: int = 1,
        sic_standard_error: bool = False,
        temperature: dict[str, float] | None = None,
    ) -> None:
        import netCDF4

        self.path = Path(path)
        self.shape = shape
        self._lat = [np.inf, -np.inf]
        self._lon = [np.inf, -np.inf]
        self.footprint: dict[str, Any] = {}
        """Set by the caller (:meth:`LatLonBlocks.footprint`): the longitude range and bounds."""
        lines, samples = shape
        self.nc = netCDF4.Dataset(self.path, "w", format="NETCDF4")
        nc = self.nc
        nc.setncatts(attrs)
        dims = C.SAR_DIMS
        nc.createDimension(dims[0], lines)
        nc.createDimension(dims[1], samples)
        chunks = _chunks(lines, samples, block_rows)
        # Every write() fills whole chunks, so HDF5's chunk cache only holds finished, dirty
        # chunks: with the default (64 MiB per variable) it keeps up to ~0.5 GiB of the file in
        # memory until close, growing with the scene. A small cache with preemption 1 makes
        # HDF5 compress and write each chunk as it is completed (and is also faster).
        cache = dict(size=_WRITE_CACHE_BYTES, nelems=_WRITE_CACHE_SLOTS, preemption=1.0)
        va = variable_attrs(sic_standard_error=sic_standard_error, temperature=temperature)
        self.names = CHART_VARIABLES + ((SE_VARIABLE,) if sic_standard_error else ())
        self.vars = {}
        tv = nc.createVariable("time", "f8", ())
        tv.setncatts(va["time"])
        start = attrs.get("time_coverage_start")
        if start:
            t0 = datetime.fromisoformat(str(start)).astimezone(timezone.utc)
            tv.assignValue((t0 - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
        for name in ("lat", "lon"):
            v = nc.createVariable(
                name, "f4", dims, zlib=True, complevel=complevel, shuffle=True,
                chunksizes=chunks, fill_value=False,
            )  # type: ignore[call-overload]  # fmt: skip
            v.set_var_chunk_cache(**cache)
            v.setncatts(va[name])
            self.vars[name] = v
        for name in self.names:
            fill = False if name == "status_flag" else np.uint8(FILL)
            v = nc.createVariable(
                name, "u1", dims, zlib=True, complevel=complevel, shuffle=False,
                chunksizes=chunks, fill_value=fill,
            )  # type: ignore[call-overload]  # fmt: skip
            v.set_auto_maskandscale(False)
            v.set_var_chunk_cache(**cache)
            v.setncatts(va[name])
            self.vars[name] = v

    def write(self, rows: slice, arrays: dict[str, np.ndarray], lat: np.ndarray, lon: np.ndarray) -> None:
        """Write one row block: ``arrays`` maps every chart variable to a uint8 block."""
        for name in self.names:
            self.vars[name][rows, :] = arrays[name]
        self.vars["lat"][rows, :] = lat
        self.vars["lon"][rows, :] = lon
        self._lat = [min(self._lat[0], float(np.nanmin(lat))), max(self._lat[1], float(np.nanmax(lat)))]
        self._lon = [min(self._lon[0], float(np.nanmin(lon))), max(self._lon[1], float(np.nanmax(lon)))]

    def close(self) -> None:
        if self.nc.isopen():
            if np.isfinite(self._lat[0]):
                self.nc.setncatts(
                    {
                        "geospatial_lat_min": self._lat[0],
                        "geospatial_lat_max": self._lat[1],
                        "geospatial_lon_min": self._lon[0],
                        "geospatial_lon_max": self._lon[1],
                        "geospatial_lat_units": "degrees_north",
                        "geospatial_lon_units": "degrees_east",
                        **self.footprint,
                    }
                )
                fp = self.footprint
                if fp and fp["geospatial_lon_min"] <= fp["geospatial_lon_max"] != 180.0:
                    # not across 180 nor over a pole: the range of the longitudes as stored
                    self.nc.setncatts({"geospatial_lon_min": self._lon[0], "geospatial_lon_max": self._lon[1]})
            self.nc.close()

    def __enter__(self) -> "NetcdfWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def chart_arrays(
    charts: dict[str, np.ndarray],
    confidence: dict[str, np.ndarray],
    status: np.ndarray,
    sic_se: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Product variables for a block: SIC classes -> percent, masks kept at 255; with
    ``sic_se`` (uint8 percent) also ``SIC_standard_error``."""
    pct = sic_to_percent(charts["SIC"])
    extra = {} if sic_se is None else {SE_VARIABLE: sic_se}
    return extra | {
        "SIC": pct,
        "SOD": charts["SOD"],
        "FLOE": charts["FLOE"],
        "SOD_confidence": confidence["SOD"],
        "FLOE_confidence": confidence["FLOE"],
        "status_flag": status,
    }
