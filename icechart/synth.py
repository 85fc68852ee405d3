"""Synthetic AI4Arctic-format scenes with SAR physics (tests, demo, benchmarks).

The generator draws an ice chart first (polygons of constant SIC, SOD, FLOE, as analysts draw
them) and then an 80 m scene from it whose physics a block mean does *not* capture exactly. The
relations, with units (documented in the README, section "Synthetic scenes"; dB and linear
power kept apart: ``sigma0_dB = 10 log10(sigma0)``):

* **Chart**: 8-20 (``cis``) or 15-40 (``dmi``) polygons, a Voronoi partition with warped
  boundaries; each with one (SIC, SOD, FLOE); SIC 0 implies SOD 0 and FLOE 0. Land (a wavy
  coast) and slanted NaN swath borders carry label 255.
* **Concentration** is the fraction of *ice pixels* in the polygon: a per-polygon ice fraction
  ``c ~ U(SIC/10 - 0.05, SIC/10 + 0.05)`` and a pixel is ice where a unit Gaussian random
  field ``g`` lies below ``Phi^-1(c)``. Ice and water are mixed pixel by pixel in *linear
  power*, so a block's mean dB is not linear in SIC.
* **Floe size** is the correlation length of ``g`` (Gaussian-smoothed white noise, sigma in
  80 m pixels: cake 0.5, small 1, medium 2, big 4.5, vast 10; :data:`FLOE_SIGMA_PX`).
  Class 6 (bergs) has medium-floe texture plus dense point targets.
* **Ice backscatter**: a level per stage of development and polarisation at 35 deg incidence
  (:data:`SOD_DB`), plus a per-polygon offset (sd 1.5 dB), a slow field (sd 1 dB) and an
  incidence slope (HH -0.20, HV -0.10 dB/deg); melt (June-September) darkens ice and
  compresses the contrast between types.
* **Open water** is wind-roughened: ``HH_dB = -20 + 20 log10(U / 7) - 0.6 (theta - 35)``,
  ``HV_dB = -33 + 5 log10(U / 7) - 0.1 (theta - 35)`` (U wind speed in m/s, theta in degrees):
  bright in HH at steep incidence in wind.
* **Noise floor**: thermal noise added in linear power, ``NESZ_dB`` -27 (HV) and -30 (HH) plus
  a scalloping of 2.5 dB inside each of the 5 EW sub-swaths and a per-sub-swath offset (sd 0.7
  dB): HV over water sits on the noise floor with sub-swath banding.
* **Speckle** is multiplicative: linear power times ``Gamma(L, 1/L)`` with an equivalent number
  of looks L ~ U(4, 6) per scene (lognormal-like in dB, sd about 2.2 dB).
* **Icebergs**: sparse point targets (Poisson, 0.02 per km^2; 2 per km^2 in FLOE-6 polygons),
  HH +2 dB, HV -6 dB.
* Stored values: ``(dB - mean) / sd`` with the AI4Arctic starter-kit constants (HH -14.508,
  5.660; HV -24.701, 4.747), as the ready-to-train files store scaled SAR.
* **AMSR2** brightness temperatures (K, 2 km grid) are linear in the *actual* ice fraction of
  the cell (e.g. 18.7 GHz H ``170 + 80 c``) plus land; **ERA5** winds are the wind that
  roughened the water, ``t2m = 271 - 10 c + 8 melt`` K plus a smooth field.
* **Distance map**: 0 on land, then one class per 4 km of distance, capped at 20.

Knobs for the distribution shifts a service meets (:class:`Physics`): location (``center``;
also shifts the mix towards old ice at high latitude), month (``time``; melt), wind speed,
incidence range and service (polygon size).

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


# --- physics constants ------------------------------------------------------------------------
# Backscatter levels (dB) at 35 deg incidence, dry (winter) conditions, per stage of development
# (HH, HV). Orders of magnitude as reported for C-band EW imagery of sea ice (Dierking 2013,
# "Sea ice monitoring by synthetic aperture radar", Oceanography 26(2); Makynen & Karvonen 2017,
# "Incidence angle dependence of first-year sea ice backscattering coefficient in Sentinel-1
# SAR imagery over the Kara Sea", IEEE TGRS 55(11)); chosen to overlap, as real classes do.
SOD_DB: dict[int, tuple[float, float]] = {
    1: (-21.0, -29.0),  # new ice (grease, nilas): smooth, dark
    2: (-13.0, -24.0),  # young ice (grey, grey-white): rough, rafted, bright in HH
    3: (-17.0, -26.5),  # thin first-year ice
    4: (-15.0, -24.5),  # thick first-year ice
    5: (-10.0, -18.0),  # old ice: volume scattering, bright in HV
}
ICE_SLOPE_DB_PER_DEG = (-0.20, -0.10)  # (HH, HV); first-year ice, Makynen & Karvonen 2017
WATER_SLOPE_DB_PER_DEG = (-0.60, -0.10)  # open water falls off steeply with incidence in HH
POLYGON_SD_DB = 1.5
SLOW_SD_DB = 1.0
FLOE_SIGMA_PX: dict[int, float] = {1: 0.5, 2: 1.0, 3: 2.0, 4: 4.5, 5: 10.0, 6: 2.0}
"""Correlation length (Gaussian sigma, 80 m pixels) of the ice/water pattern per FLOE class:
WMO floe sizes cake < 20 m and small 20-100 m are below a pixel, medium 100-500 m, big
0.5-2 km, vast 2-10 km (WMO Sea Ice Nomenclature); class 6 (bergs) medium-floe texture."""
NESZ_DB = (-30.0, -27.0)  # (HH, HV) thermal noise floor of Sentinel-1 EW GRDM, roughly
SCALLOP_DB = 2.5  # noise floor rise towards each sub-swath's edges
N_SUBSWATHS = 5  # EW1..EW5
BERG_PER_KM2 = 0.02
BERG_PER_KM2_IN_BERG_POLYGONS = 2.0
BERG_DB = (2.0, -6.0)
LAND_DB = (-9.0, -17.0)
SCALING = {C.PRIMARY: (-14.508, 5.660), C.SECONDARY: (-24.701, 4.747)}
"""dB -> stored value ``(dB - mean) / sd``: the AI4Arctic starter kit's global constants."""
MELT_BY_MONTH = {5: 0.1, 6: 0.5, 7: 1.0, 8: 0.8, 9: 0.3}
"""Melt intensity by calendar month (wet snow and melt ponds on the ice)."""
DEFAULT_INCIDENCE = (19.0, 47.0)  # EW swath, near to far range (degrees)


@dataclass(frozen=True)
class Physics:
    """Knobs for the distribution shifts a service meets (None: drawn from the seed).

    Attributes
    ----------
    wind
        Mean 10 m wind speed over the scene (m/s); default U(2, 12) per scene.
    incidence
        (near, far) incidence angle range in degrees; default (19, 47).
    enl
        Equivalent number of looks of the speckle; default U(4, 6) per scene.
    melt
        Melt intensity 0..1; default from the acquisition month (:data:`MELT_BY_MONTH`).
    """

    wind: float | None = None
    incidence: tuple[float, float] | None = None
    enl: float | None = None
    melt: float | None = None


def _draw_chart(
    rng: np.random.Generator, cshape: tuple[int, int], *, service: str, lat: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Polygon index, land, and per-polygon SIC, SOD, FLOE on the coarse chart grid."""
    h, w = cshape
    n_poly = int(rng.integers(8, 21)) if service == "cis" else int(rng.integers(15, 41))
    seeds = rng.uniform([0, 0], [h, w], size=(n_poly, 2))
    sic = np.zeros(n_poly, np.uint8)
    sod = np.zeros(n_poly, np.uint8)
    floe = np.zeros(n_poly, np.uint8)
    # Stage mix: old ice becomes more frequent towards the high Arctic (location shift).
    p_old = float(np.clip((lat - 70.0) / 12.0, 0.05, 0.6))
    p_sod = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    p_sod = np.append(p_sod[:4] / p_sod[:4].sum() * (1 - p_old), p_old)
    for i in range(n_poly):
        if rng.random() < 0.25:
            continue  # open water polygon: all zero
        sic[i] = rng.integers(1, 11)
        sod[i] = 1 + rng.choice(5, p=p_sod)
        floe[i] = rng.integers(1, 7) if rng.random() > 0.08 else 6
        if floe[i] == 6 and rng.random() < 0.6:
            floe[i] = rng.integers(1, 6)  # bergs stay rare
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    amp = 0.06 * max(h, w)
    wy = yy + amp * _smooth(rng, cshape, max(h, w) / 12)
    wx = xx + amp * _smooth(rng, cshape, max(h, w) / 12)
    _, idx = cKDTree(seeds).query(np.stack([wy.ravel(), wx.ravel()], axis=1))
    idx = idx.reshape(cshape).astype(np.int32)
    # Land: a wavy coast along a random side, covering ~5-20 % of the scene.
    side = int(rng.integers(4))
    depth = rng.uniform(0.05, 0.2)
    coord = [yy / h, 1 - yy / h, xx / w, 1 - xx / w][side]
    land = coord + 0.05 * _smooth(rng, cshape, max(h, w) / 20) < depth
    return idx, land, sic, sod, floe


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


def _db_to_lin(db: np.ndarray) -> np.ndarray:
    return np.power(np.float32(10.0), db * np.float32(0.1), dtype=np.float32)


def _texture_fields(
    rng: np.random.Generator, floe_pix: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """The unit Gaussian field ``g`` whose correlation length is each pixel's floe size."""
    noise = rng.standard_normal(floe_pix.shape, dtype=np.float32)
    g = np.zeros(floe_pix.shape, np.float32)
    for k in classes:
        sigma = FLOE_SIGMA_PX[int(k)]
        f = ndimage.gaussian_filter(noise, sigma, mode="reflect", truncate=3.0)
        f /= np.float32(f.std() + 1e-6)
        m = floe_pix == k
        g[m] = f[m]
    return g


def _noise_floor(samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """NESZ (dB) per sample for (HH, HV): scalloped inside each EW sub-swath, offset per swath."""
    pos = np.linspace(0.0, N_SUBSWATHS, samples, endpoint=False, dtype=np.float32)
    sub = pos.astype(np.int32)
    frac = pos - sub
    scallop = SCALLOP_DB * (2 * frac - 1) ** 2  # lowest mid-swath, highest at the swath edges
    offsets = rng.normal(0.0, 0.7, N_SUBSWATHS).astype(np.float32)
    return (
        (NESZ_DB[0] + scallop + offsets[sub]).astype(np.float32),
        (NESZ_DB[1] + scallop + offsets[sub]).astype(np.float32),
    )


def make_scene(
    shape: tuple[int, int] = (1003, 997),
    *,
    seed: int = 0,
    labels: bool = True,
    center: tuple[float, float] | None = None,
    time: datetime | None = None,
    service: str = "dmi",
    coarse_rounding: str | None = None,
    physics: Physics | None = None,
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
        Acquisition time (UTC); default 2021-03-15 plus a seed-dependent offset. Its month
        sets the melt (June-September).
    service
        ``dmi`` or ``cis``: the id, the default area and the polygon size of the chart.
    coarse_rounding
        "floor" or "ceil" for the 2 km grid size (real files have both); default by seed.
    physics
        Wind, incidence range, speckle looks and melt (:class:`Physics`); None draws them.

    Returns
    -------
    xarray.Dataset
        In the AI4Arctic layout, with ``synth_*`` attributes giving the exact geometry and
        physics.
    """
    import xarray as xr
    from scipy.special import ndtri

    lines, samples = int(shape[0]), int(shape[1])
    if lines < 30 or samples < 30:
        raise BadDataError(f"synthetic scene size {lines}x{samples} too small (min 30x30)")
    phys = physics or Physics()
    rng, center, time = _draw_identity(seed, center, time, service)
    geom = Geometry((lines, samples), float(center[0]), float(center[1]), float(rng.uniform(-180, 180)))
    wind0 = float(phys.wind) if phys.wind is not None else float(rng.uniform(2.0, 12.0))
    enl = float(phys.enl) if phys.enl is not None else float(rng.uniform(4.0, 6.0))
    inc_near, inc_far = phys.incidence or DEFAULT_INCIDENCE
    melt = float(phys.melt) if phys.melt is not None else MELT_BY_MONTH.get(time.month, 0.0)

    cshape = (-(-lines // _COARSE), -(-samples // _COARSE))
    pid_c, land_c, p_sic, p_sod, p_floe = _draw_chart(rng, cshape, service=service, lat=geom.center_lat)
    n_poly = p_sic.size
    full = (lines, samples)
    pid = _upsample(pid_c, full, _COARSE)
    land = _upsample(land_c, full, _COARSE)
    sic, sod, floe = p_sic[pid], p_sod[pid], p_floe[pid]

    # Per-polygon physics: ice fraction threshold, backscatter levels with polygon variability.
    frac = np.clip(p_sic / 10.0 + rng.uniform(-0.05, 0.05, n_poly), 0.0, 0.999)
    frac[p_sic == 0] = 0.0
    frac[p_sic == 10] = np.maximum(frac[p_sic == 10], 0.97)
    thr = np.where(frac > 0, ndtri(np.maximum(frac, 1e-6)), -np.inf).astype(np.float32)
    off = rng.normal(0.0, POLYGON_SD_DB, (n_poly, 2))
    lev = np.zeros((n_poly, 2), np.float32)
    for i in range(n_poly):
        if p_sod[i]:
            base = np.array(SOD_DB[int(p_sod[i])])
            # melt: wet snow darkens the ice and compresses the contrast between stages
            base = (1 - 0.5 * melt) * base + 0.5 * melt * np.array([-18.0, -27.0]) - 2.0 * melt
            lev[i] = base + off[i]

    # Incidence angle: linear across the swath, near to far range.
    inc_row = np.linspace(inc_near, inc_far, samples, dtype=np.float32)
    dinc = inc_row - np.float32(35.0)
    # Wind: scene mean plus a slow field (m/s) on the chart grid; the same wind goes to ERA5.
    wind_c = np.clip(wind0 + 1.5 * _smooth(rng, cshape, max(cshape) / 6), 0.5, None).astype(np.float32)
    wdir = float(rng.uniform(0, 2 * np.pi))
    slow_c = _smooth(rng, cshape, max(cshape) / 8)

    ice = _texture_fields(rng, floe, np.unique(p_floe[p_floe > 0])) < thr[pid]
    del pid
    ice &= ~land
    u_log = np.log10(_upsample(wind_c, full, _COARSE) / np.float32(7.0))
    slow = _upsample(slow_c, full, _COARSE) * np.float32(SLOW_SD_DB)
    nesz = _noise_floor(samples, rng)
    out: dict[str, np.ndarray] = {}
    for k, name in enumerate((C.PRIMARY, C.SECONDARY)):
        # water (dB), wind-roughened
        if k == 0:
            water = np.float32(-20.0) + np.float32(20.0) * u_log + np.float32(WATER_SLOPE_DB_PER_DEG[0]) * dinc
        else:
            water = np.float32(-33.0) + np.float32(5.0) * u_log + np.float32(WATER_SLOPE_DB_PER_DEG[1]) * dinc
        ice_db = _upsample(lev[pid_c, k], full, _COARSE) + slow + np.float32(ICE_SLOPE_DB_PER_DEG[k]) * dinc
        db = np.where(ice, ice_db, water)
        db[land] = (np.float32(LAND_DB[k]) + np.float32(3.0) * slow[land]).astype(np.float32)
        p = _db_to_lin(db)
        p += _db_to_lin(nesz[k])[None, :]  # thermal noise adds in linear power
        out[name] = p
    del u_log, water, ice_db, db
    # Icebergs: sparse point targets, dense in FLOE-6 polygons.
    km2 = (PIXEL_SPACING / 1000.0) ** 2
    dens = np.where(floe == 6, BERG_PER_KM2_IN_BERG_POLYGONS, BERG_PER_KM2) * km2
    n_berg = int(rng.poisson(float(dens.mean()) * lines * samples))
    if n_berg:
        rr = rng.integers(0, lines, 4 * n_berg)
        cc = rng.integers(0, samples, 4 * n_berg)
        keep = rng.random(rr.size) < dens[rr, cc] / max(float(dens.max()), 1e-12)
        rr, cc = rr[keep][:n_berg], cc[keep][:n_berg]
        rr, cc = rr[~land[rr, cc]], cc[~land[rr, cc]]
        for k, name in enumerate((C.PRIMARY, C.SECONDARY)):
            out[name][rr, cc] = _db_to_lin(np.float32(BERG_DB[k]) + np.zeros(rr.size, np.float32))
    del dens
    # Multiplicative speckle (gamma, ENL looks), then dB, then the stored scaling.
    for name in (C.PRIMARY, C.SECONDARY):
        p = out[name]
        p *= rng.gamma(enl, 1.0 / enl, size=full).astype(np.float32)
        np.log10(p, out=p)
        p *= np.float32(10.0)
        mu, sd = SCALING[name]
        p -= np.float32(mu)
        p /= np.float32(sd)
    hh, hv = out[C.PRIMARY], out[C.SECONDARY]
    inc = np.broadcast_to(inc_row, full)

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
    dist = _upsample(dist_c, full, _COARSE)

    # Coarse 2 km grid: passive microwave sees the actual ice fraction of each cell.
    rounding = coarse_rounding or ("floor" if rng.random() < 0.5 else "ceil")
    div = (lambda n: n // C.COARSE_FACTOR) if rounding == "floor" else (lambda n: -(-n // C.COARSE_FACTOR))
    kshape = (max(div(lines), 1), max(div(samples), 1))
    f = C.COARSE_FACTOR // _COARSE
    ice_c = _block_mean(ice.astype(np.float32), cshape, _COARSE)
    del ice
    sk = _block_mean(ice_c, kshape, f)
    landk = _block_mean(land_c.astype(np.float32), kshape, f)
    coarse_vars: dict[str, np.ndarray] = {}
    amsr = {  # (offset K, slope K per unit ice fraction) per band/polarisation
        "6_9h": (160, 85), "6_9v": (195, 55), "7_3h": (162, 84), "7_3v": (196, 55),
        "10_7h": (165, 82), "10_7v": (198, 52), "18_7h": (170, 80), "18_7v": (200, 55),
        "23_8h": (175, 75), "23_8v": (205, 50), "36_5h": (180, 65), "36_5v": (205, 45),
        "89_0h": (200, 40), "89_0v": (215, 30),
    }  # fmt: skip
    for band, (off_k, slope) in amsr.items():
        v = off_k + slope * sk + 25.0 * landk + rng.normal(0, 1.0, kshape)
        coarse_vars[f"btemp_{band}"] = v.astype(np.float32)
    ksig = max(kshape) / 4
    wind_k = _block_mean(wind_c, kshape, f)
    coarse_vars["u10m_rotated"] = (wind_k * np.cos(wdir)).astype(np.float32)
    coarse_vars["v10m_rotated"] = (wind_k * np.sin(wdir)).astype(np.float32)
    t2m = 271.0 - 10.0 * sk + 8.0 * melt + 2 * _smooth(rng, kshape, ksig)
    coarse_vars["t2m"] = t2m.astype(np.float32)
    coarse_vars["skt"] = (t2m - 1.5 * sk).astype(np.float32)
    coarse_vars["tcwv"] = (4 + 6 * melt + _smooth(rng, kshape, ksig)).clip(0.5).astype(np.float32)
    coarse_vars["tclw"] = (0.05 * (1 + _smooth(rng, kshape, ksig))).clip(0).astype(np.float32)

    # Tie points, stored (samples, lines) as the real files do.
    trow = np.linspace(0, lines - 1, N_TIE)
    tcol = np.linspace(0, samples - 1, N_TIE)
    tlat, tlon = exact_latlon(geom, trow, tcol)

    scene_id = f"{time:%Y%m%dT%H%M%S}_{service}"
    sar_dims = C.SAR_DIMS
    data_vars: dict[str, tuple] = {}
    for name, a, pol in ((C.PRIMARY, hh, "HH"), (C.SECONDARY, hv, "HV")):
        mu, sd = SCALING[name]
        data_vars[name] = (sar_dims, a, {"long_name": f"{pol} backscatter, standard-scaled: (dB - ({mu})) / {sd}"})
    data_vars["sar_incidenceangle"] = (sar_dims, np.ascontiguousarray(inc), {"units": "degree"})
    data_vars["distance_map"] = (sar_dims, dist, {"long_name": "distance to land class (0 = land)"})
    for name, v in coarse_vars.items():
        data_vars[name] = (C.COARSE_DIMS, v)
    data_vars[C.LAT] = ((C.TIE_DIMS[1], C.TIE_DIMS[0]), tlat.T.astype(np.float64))
    data_vars[C.LON] = ((C.TIE_DIMS[1], C.TIE_DIMS[0]), tlon.T.astype(np.float64))
    if labels:
        mask = land | border
        for name, a in (("SIC", sic), ("SOD", sod), ("FLOE", floe)):
            a = np.array(a, dtype=np.uint8)
            a[mask] = FILL
            data_vars[name] = (sar_dims, a, {"_FillValue_note": "255 = no label"})
    attrs = {
        "scene_id": f"{scene_id}_prep.nc",
        "original_id": f"S1B_EW_GRDM_1SDH_{time:%Y%m%dT%H%M%S}_SYNTHETIC",
        "ice_service": service,
        "pixel_spacing": 80,
        "synthetic": "icechart synth; not real data",
        **geom.attrs(),
        "synth_wind_m_s": wind0,
        "synth_enl": enl,
        "synth_incidence_deg": f"{inc_near:g},{inc_far:g}",
        "synth_melt": melt,
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
    physics: Physics | None = None,
) -> list[Path]:
    """Write ``n`` scenes ``{YYYYMMDDTHHMMSS}_{service}_prep.nc`` into ``outdir``.

    With ``test=True`` the scene files carry no labels (as the AutoICE test set) and the labels
    go to ``outdir/reference/{scene_id}_reference.nc``. Scene k uses seed ``seed * 1000 + k``
    and is acquired on ``date`` plus k days; ``physics`` fixes wind, incidence range, looks or
    melt for every scene (:class:`Physics`). Existing files are refused (OutputError, 73)
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
            physics=physics,
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
