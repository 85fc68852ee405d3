"""Synthetic AI4Arctic-format scenes with a learnable signal (tests, demo, benchmarks).

The generator draws an ice chart first and then inputs from it, so a model can learn every
chart from the inputs. The relations (documented in the README, section "Synthetic scenes"):

* Chart: 10-40 polygons (a Voronoi partition with warped, wavy boundaries, like analysts'
  polygons), each with one consistent (SIC, SOD, FLOE): SIC 0 implies SOD 0 and FLOE 0, and
  ice polygons have SIC >= 1, SOD >= 1, FLOE >= 1. Land (a smooth coast along one side) and NaN
  swath borders carry label 255.
* HH (``nersc_sar_primary``, standard-scaled): ``-1.0 + s * 0.45 * SOD - 0.03 (theta - 33)``
  with s = SIC/10 and theta the incidence angle, plus speckle noise sd 0.35. Stage of
  development is in HH.
* HV (``nersc_sar_secondary``): ``-1.2 + 1.4 s + 0.12 FLOE`` plus noise sd 0.3. Floe size is
  in HV once SIC is known.
* AMSR2 brightness temperatures (K, on the 2 km grid, block means): linear in s, e.g.
  18.7 GHz H ``170 + 80 s``; 36.5 GHz V ``205 + 45 s``. Concentration is in AMSR2 (and HV).
* ERA5: smooth fields; ``t2m = 271 - 10 s`` (colder over ice) plus a smooth field.
* Distance map: 0 on land, then one class per 4 km of distance, capped at 20.

Geolocation is exact: the scene is a rotated rectangle of 80 m pixels on the EPSG:3413 polar
stereographic plane centred at a given latitude/longitude; tie points (21 x 21) are sampled
from it. :func:`exact_latlon` gives the truth the reader's interpolation is tested against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from icechart.classes import FILL
from icechart.errors import BadDataError, OutputError
from icechart.io import contract as C

if TYPE_CHECKING:
    import xarray as xr

logger = logging.getLogger(__name__)

PIXEL_SPACING = 80.0
N_TIE = 21
_COARSE = 5  # the chart is drawn on a grid 5x coarser than SAR, then repeated

DEFAULT_CENTRES = {"dmi": (70.5, -58.0), "cis": (74.0, -78.0)}


@dataclass(frozen=True)
class Geometry:
    """Exact geometry of a synthetic scene (stored in its ``synth_*`` attributes)."""

    shape: tuple[int, int]
    center_lat: float
    center_lon: float
    heading_deg: float

    def attrs(self) -> dict[str, float | str]:
        return {
            "synth_center_lat": self.center_lat,
            "synth_center_lon": self.center_lon,
            "synth_heading_deg": self.heading_deg,
            "synth_crs": "EPSG:3413",
        }

    @classmethod
    def from_attrs(cls, shape: tuple[int, int], attrs: dict) -> "Geometry":
        return cls(
            shape,
            float(attrs["synth_center_lat"]),
            float(attrs["synth_center_lon"]),
            float(attrs["synth_heading_deg"]),
        )


def exact_latlon(geom: Geometry, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true latitude/longitude at pixel grid ``rows x cols`` of a synthetic scene."""
    from pyproj import Transformer

    fwd = Transformer.from_crs("EPSG:4326", "EPSG:3413", always_xy=True)
    x0, y0 = fwd.transform(geom.center_lon, geom.center_lat)
    r = np.asarray(rows, np.float64)[:, None] - (geom.shape[0] - 1) / 2.0
    c = np.asarray(cols, np.float64)[None, :] - (geom.shape[1] - 1) / 2.0
    th = np.radians(geom.heading_deg)
    # Samples run along the heading's right, lines along the heading (image "down" = -y rotated).
    x = x0 + PIXEL_SPACING * (c * np.cos(th) + r * np.sin(th))
    y = y0 + PIXEL_SPACING * (c * np.sin(th) - r * np.cos(th))
    inv = Transformer.from_crs("EPSG:3413", "EPSG:4326", always_xy=True)
    lon, lat = inv.transform(x, y)
    return np.asarray(lat), np.asarray(lon)


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth random field, zero mean, unit sd."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-6)


def _draw_chart(
    rng: np.random.Generator, cshape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SIC, SOD, FLOE and land on the coarse chart grid."""
    h, w = cshape
    n_poly = int(rng.integers(10, 41))
    seeds = rng.uniform([0, 0], [h, w], size=(n_poly, 2))
    sic = np.zeros(n_poly, np.uint8)
    sod = np.zeros(n_poly, np.uint8)
    floe = np.zeros(n_poly, np.uint8)
    for i in range(n_poly):
        if rng.random() < 0.25:
            continue  # open water polygon: all zero
        sic[i] = rng.integers(1, 11)
        sod[i] = rng.integers(1, 6)
        floe[i] = rng.integers(1, 7)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amp = 0.06 * max(h, w)
    wy = yy + amp * _smooth(rng, cshape, max(h, w) / 12)
    wx = xx + amp * _smooth(rng, cshape, max(h, w) / 12)
    _, idx = cKDTree(seeds).query(np.stack([wy.ravel(), wx.ravel()], axis=1))
    idx = idx.reshape(cshape)
    # Land: a wavy coast along a random side, covering ~5-20 % of the scene.
    side = int(rng.integers(4))
    depth = rng.uniform(0.05, 0.2)
    coord = [yy / h, 1 - yy / h, xx / w, 1 - xx / w][side]
    land = coord + 0.05 * _smooth(rng, cshape, max(h, w) / 20) < depth
    return sic[idx], sod[idx], floe[idx], land


def _upsample(a: np.ndarray, shape: tuple[int, int], f: int) -> np.ndarray:
    return np.repeat(np.repeat(a, f, axis=0), f, axis=1)[: shape[0], : shape[1]]


def _block_mean(a: np.ndarray, cshape: tuple[int, int], f: int) -> np.ndarray:
    """Mean of a over f x f blocks, on a grid of cshape (pads by edge repetition)."""
    ph, pw = cshape[0] * f - a.shape[0], cshape[1] * f - a.shape[1]
    if ph > 0 or pw > 0:
        a = np.pad(a, ((0, max(ph, 0)), (0, max(pw, 0))), mode="edge")
    a = a[: cshape[0] * f, : cshape[1] * f]
    return a.reshape(cshape[0], f, cshape[1], f).mean(axis=(1, 3))


def _draw_identity(
    seed: int, center: tuple[float, float] | None, day: datetime | None, service: str
) -> tuple[np.random.Generator, tuple[float, float], datetime]:
    """The scene's random generator, centre and acquisition time, drawn first from ``seed``.

    The time is ``day`` (default 2021-03-15) plus a seed-dependent time of day, so the scene id
    can be known without drawing the rest of the scene.
    """
    rng = np.random.default_rng(seed)
    if center is None:
        lat0, lon0 = DEFAULT_CENTRES.get(service, DEFAULT_CENTRES["dmi"])
        center = (lat0 + rng.uniform(-2, 2), lon0 + rng.uniform(-4, 4))
    day = day or datetime(2021, 3, 15, tzinfo=timezone.utc)
    return rng, center, day + timedelta(seconds=int(rng.integers(0, 86400)))


def make_scene(
    shape: tuple[int, int] = (1003, 997),
    *,
    seed: int = 0,
    labels: bool = True,
    center: tuple[float, float] | None = None,
    time: datetime | None = None,
    service: str = "dmi",
    coarse_rounding: str | None = None,
) -> "xr.Dataset":  # xarray imported lazily
    """Build one synthetic AI4Arctic scene in memory.

    Parameters
    ----------
    shape
        SAR (lines, samples).
    seed
        Everything (chart, noise, geometry jitter) follows from it.
    labels
        Write SIC/SOD/FLOE; a test file (False) has none, like the AutoICE test set.
    center
        (lat, lon) of the scene centre; default near the service's usual area.
    time
        Acquisition time (UTC); default 2021-03-15 plus a seed-dependent offset.
    coarse_rounding
        "floor" or "ceil" for the 2 km grid size (real files have both); default by seed.

    Returns
    -------
    xarray.Dataset
        In the AI4Arctic layout, with ``synth_*`` attributes giving the exact geometry.
    """
    import xarray as xr

    lines, samples = int(shape[0]), int(shape[1])
    if lines < 30 or samples < 30:
        raise BadDataError(f"synthetic scene size {lines}x{samples} too small (min 30x30)")
    rng, center, time = _draw_identity(seed, center, time, service)
    geom = Geometry((lines, samples), float(center[0]), float(center[1]), float(rng.uniform(-180, 180)))

    cshape = (-(-lines // _COARSE), -(-samples // _COARSE))
    sic_c, sod_c, floe_c, land_c = _draw_chart(rng, cshape)
    s_c = sic_c.astype(np.float32) / 10.0
    sic = _upsample(sic_c, (lines, samples), _COARSE)
    sod = _upsample(sod_c, (lines, samples), _COARSE)
    floe = _upsample(floe_c, (lines, samples), _COARSE)
    land = _upsample(land_c, (lines, samples), _COARSE)
    s = sic.astype(np.float32) * np.float32(0.1)

    # Incidence angle: EW swath, ~19 deg near range to ~47 deg far range.
    inc_row = np.linspace(19.0, 47.0, samples, dtype=np.float32)
    inc = np.broadcast_to(inc_row, (lines, samples))

    hh = rng.standard_normal((lines, samples), dtype=np.float32)
    hh *= np.float32(0.35)
    hh += np.float32(-1.0) + s * (np.float32(0.45) * sod.astype(np.float32))
    hh -= np.float32(0.03) * (inc - np.float32(33.0))
    hv = rng.standard_normal((lines, samples), dtype=np.float32)
    hv *= np.float32(0.3)
    hv += np.float32(-1.2) + np.float32(1.4) * s + np.float32(0.12) * floe.astype(np.float32)
    del s
    hh[land] = np.float32(0.6) + np.float32(0.2) * hh[land]
    hv[land] = np.float32(0.3) + np.float32(0.2) * hv[land]

    # NaN swath borders: slanted, different on each side, as in EW GRD scenes.
    r = np.arange(lines, dtype=np.float32) / max(lines - 1, 1)
    left = (samples * (rng.uniform(0.0, 0.04) + rng.uniform(0.0, 0.04) * r)).astype(int)
    right = (samples * (rng.uniform(0.0, 0.04) + rng.uniform(0.0, 0.04) * (1 - r))).astype(int)
    cols = np.arange(samples)
    border = (cols[None, :] < left[:, None]) | (cols[None, :] >= samples - right[:, None])
    hh[border] = np.nan
    hv[border] = np.nan

    # Distance map: 0 on land, one class per 4 km (50 pixels), capped at 20; from the chart grid.
    dist_c = ndimage.distance_transform_edt(~land_c) * (_COARSE * PIXEL_SPACING)
    dist_c = np.minimum(np.ceil(dist_c / 4000.0), 20).astype(np.float32)
    dist = _upsample(dist_c, (lines, samples), _COARSE)

    # Coarse 2 km grid.
    rounding = coarse_rounding or ("floor" if rng.random() < 0.5 else "ceil")
    div = (lambda n: n // C.COARSE_FACTOR) if rounding == "floor" else (lambda n: -(-n // C.COARSE_FACTOR))
    kshape = (max(div(lines), 1), max(div(samples), 1))
    f = C.COARSE_FACTOR // _COARSE
    sk = _block_mean(s_c, kshape, f)
    landk = _block_mean(land_c.astype(np.float32), kshape, f)
    coarse_vars: dict[str, np.ndarray] = {}
    amsr = {  # (offset K, slope K per unit concentration) per band/polarisation
        "6_9h": (160, 85), "6_9v": (195, 55), "7_3h": (162, 84), "7_3v": (196, 55),
        "10_7h": (165, 82), "10_7v": (198, 52), "18_7h": (170, 80), "18_7v": (200, 55),
        "23_8h": (175, 75), "23_8v": (205, 50), "36_5h": (180, 65), "36_5v": (205, 45),
        "89_0h": (200, 40), "89_0v": (215, 30),
    }  # fmt: skip
    for band, (off, slope) in amsr.items():
        v = off + slope * sk + 25.0 * landk + rng.normal(0, 1.0, kshape)
        coarse_vars[f"btemp_{band}"] = v.astype(np.float32)
    ksig = max(kshape) / 4
    coarse_vars["u10m_rotated"] = (3 * _smooth(rng, kshape, ksig) + 2).astype(np.float32)
    coarse_vars["v10m_rotated"] = (3 * _smooth(rng, kshape, ksig) - 1).astype(np.float32)
    t2m = 271.0 - 10.0 * sk + 2 * _smooth(rng, kshape, ksig)
    coarse_vars["t2m"] = t2m.astype(np.float32)
    coarse_vars["skt"] = (t2m - 1.5 * sk).astype(np.float32)
    coarse_vars["tcwv"] = (4 + _smooth(rng, kshape, ksig)).clip(0.5).astype(np.float32)
    coarse_vars["tclw"] = (0.05 * (1 + _smooth(rng, kshape, ksig))).clip(0).astype(np.float32)

    # Tie points, stored (samples, lines) as the real files do.
    trow = np.linspace(0, lines - 1, N_TIE)
    tcol = np.linspace(0, samples - 1, N_TIE)
    tlat, tlon = exact_latlon(geom, trow, tcol)

    scene_id = f"{time:%Y%m%dT%H%M%S}_{service}"
    sar_dims = C.SAR_DIMS
    data_vars: dict[str, tuple] = {
        C.PRIMARY: (sar_dims, hh, {"long_name": "HH backscatter, standard-scaled"}),
        C.SECONDARY: (sar_dims, hv, {"long_name": "HV backscatter, standard-scaled"}),
        "sar_incidenceangle": (sar_dims, np.ascontiguousarray(inc), {"units": "degree"}),
        "distance_map": (sar_dims, dist, {"long_name": "distance to land class (0 = land)"}),
    }
    for name, v in coarse_vars.items():
        data_vars[name] = (C.COARSE_DIMS, v)
    data_vars[C.LAT] = ((C.TIE_DIMS[1], C.TIE_DIMS[0]), tlat.T.astype(np.float64))
    data_vars[C.LON] = ((C.TIE_DIMS[1], C.TIE_DIMS[0]), tlon.T.astype(np.float64))
    if labels:
        mask = land | border
        for name, a in (("SIC", sic), ("SOD", sod), ("FLOE", floe)):
            a = a.copy()
            a[mask] = FILL
            data_vars[name] = (sar_dims, a, {"_FillValue_note": "255 = no label"})
    attrs = {
        "scene_id": f"{scene_id}_prep.nc",
        "original_id": f"S1B_EW_GRDM_1SDH_{time:%Y%m%dT%H%M%S}_SYNTHETIC",
        "ice_service": service,
        "pixel_spacing": 80,
        "synthetic": "icechart synth; not real data",
        **geom.attrs(),
    }
    return xr.Dataset(data_vars, attrs=attrs)


def write_scene(ds: "xr.Dataset", path: Path) -> None:
    """Write a scene atomically (temp file in the same directory, then rename)."""
    from icechart.atomic import atomic_path

    enc = {v: {"zlib": True, "complevel": 1} for v in ds.data_vars}
    for v in (C.PRIMARY, C.SECONDARY):  # noise does not compress; save the time
        if v in enc:
            enc[v] = {"zlib": False}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=enc)


def write_scenes(
    outdir: str | Path,
    *,
    n: int,
    size: tuple[int, int],
    seed: int,
    test: bool = False,
    center: tuple[float, float] | None = None,
    date: datetime | None = None,
    service: str = "dmi",
    overwrite: bool = False,
) -> list[Path]:
    """Write ``n`` scenes ``{YYYYMMDDTHHMMSS}_{service}_prep.nc`` into ``outdir``.

    With ``test=True`` the scene files carry no labels (as the AutoICE test set) and the labels
    go to ``outdir/reference/{scene_id}_reference.nc``. Scene k uses seed ``seed * 1000 + k``
    and is acquired on ``date`` plus k days. Existing files are refused (OutputError, 73)
    before anything is written, unless ``overwrite``.
    """
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if test:
            (out / "reference").mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create directory ({exc.strerror})") from exc
    base = date or datetime(2021, 3, 15, tzinfo=timezone.utc)
    scenes: list[dict[str, Any]] = [
        dict(seed=seed * 1000 + k, center=center, time=base + timedelta(days=k), service=service)
        for k in range(n)
    ]
    if not overwrite:
        for kw in scenes:
            # the id depends only on the date and the seed's time-of-day draw: cheap to predict
            _, _, t = _draw_identity(kw["seed"], center, kw["time"], service)
            sid = f"{t:%Y%m%dT%H%M%S}_{service}"
            for p in (out / f"{sid}_prep.nc", out / "reference" / f"{sid}_reference.nc"):
                if p.exists() and (test or p.parent == out):
                    raise OutputError(f"{p}: exists; use --overwrite to replace it")
    paths = []
    for kw in scenes:
        ds = make_scene(
            size,
            labels=True,
            **kw,  # type: ignore[arg-type]
        )
        sid = str(C.scene_id_from(ds.attrs["scene_id"], ""))
        path = out / f"{sid}_prep.nc"
        if test:
            ref = ds[["SIC", "SOD", "FLOE"]]
            ref.attrs = {"scene_id": f"{sid}_reference.nc"}
            write_scene(ref, out / "reference" / f"{sid}_reference.nc")
            ds = ds.drop_vars(["SIC", "SOD", "FLOE"])
        write_scene(ds, path)
        logger.info("wrote %s (%dx%d)", path, *size)
        paths.append(path)
    return paths
