"""The AI4Arctic "ready-to-train" input contract: dims, variables, channels, scene ids.

Facts from ``reference/ai4arctic.md`` and ``reference/contract.md``.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

SAR_DIMS = ("sar_lines", "sar_samples")
COARSE_DIMS = ("2km_grid_lines", "2km_grid_samples")
TIE_DIMS = ("sar_line_2dgrid_points", "sar_sample_2dgrid_points")
COARSE_FACTOR = 25
"""One 2 km AMSR2/ERA5 cell covers 25 x 25 SAR pixels at 80 m (contract.md)."""
PIXEL_SPACING = 80.0
"""SAR pixel spacing of AI4Arctic scenes (m; the files' ``pixel_spacing`` attribute)."""
MAX_SAR_SIDE = 12_500
"""Largest SAR side accepted (1000 km at 80 m). Real scenes are about 5000 x 5000 (a 400 km
Sentinel-1 EW swath; ai4arctic.md); a file declaring more is refused (65) before any array of
that size is allocated."""
MAX_TIE_POINTS = 250_000
"""Most tie points accepted (real files hold about 21 x 21)."""

PRIMARY = "nersc_sar_primary"
SECONDARY = "nersc_sar_secondary"
LAT = "sar_grid2d_latitude"
LON = "sar_grid2d_longitude"
TIE_LINE = "sar_grid_line"
TIE_SAMPLE = "sar_grid_sample"
LABELS = ("SIC", "SOD", "FLOE")

SAR_VARIABLES = (PRIMARY, SECONDARY, "sar_incidenceangle", "distance_map")
AMSR2_VARIABLES = tuple(
    f"btemp_{band}{pol}"
    for band in ("6_9", "7_3", "10_7", "18_7", "23_8", "36_5", "89_0")
    for pol in ("h", "v")
)
ERA5_VARIABLES = ("u10m_rotated", "v10m_rotated", "t2m", "skt", "tcwv", "tclw")
COARSE_VARIABLES = AMSR2_VARIABLES + ERA5_VARIABLES
DERIVED_CHANNELS = ("month", "lat", "lon")
"""Channels computed from the scene: acquisition month and tie-point latitude/longitude."""

ALL_CHANNELS = SAR_VARIABLES + COARSE_VARIABLES + DERIVED_CHANNELS

# The winning MMSeaIce input set (paper Table 2; reference/method.md): 16 channels.
DEFAULT_CHANNELS: tuple[str, ...] = (
    PRIMARY,
    SECONDARY,
    "sar_incidenceangle",
    "distance_map",
    "btemp_18_7h",
    "btemp_18_7v",
    "btemp_36_5h",
    "btemp_36_5v",
    "u10m_rotated",
    "v10m_rotated",
    "t2m",
    "tcwv",
    "tclw",
    "month",
    "lat",
    "lon",
)

SCENE_ID_RE = re.compile(r"\d{8}T\d{6}_[a-z]+")
"""The AutoICE key (contract.md): first match in the ``scene_id`` attribute, else the file name."""


MODEL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
"""A model id (registry id, model card ``id``, ensemble ``id``, ``ckpt-<hex>``): it goes into
every product's file name, so it is a plain name of at most 64 ASCII letters, digits and
``. _ + -``, starting with a letter or digit, with no ``..`` (contract.md "Products")."""


def safe_model_id(value: object) -> bool:
    """True when ``value`` is a string that :data:`MODEL_ID_RE` matches in full (and no ``..``)."""
    return isinstance(value, str) and MODEL_ID_RE.fullmatch(value) is not None and ".." not in value


def safe_scene_id(value: object) -> bool:
    """True when ``value`` is a whole scene id (:data:`SCENE_ID_RE`), safe in a file name."""
    return isinstance(value, str) and SCENE_ID_RE.fullmatch(value) is not None


def channel_kind(channel: str) -> str:
    """Return ``"sar"``, ``"coarse"`` or ``"derived"`` for a channel name; KeyError if unknown."""
    if channel in SAR_VARIABLES:
        return "sar"
    if channel in COARSE_VARIABLES:
        return "coarse"
    if channel in DERIVED_CHANNELS:
        return "derived"
    raise KeyError(channel)


def required_variables(channels: tuple[str, ...] | list[str]) -> list[str]:
    """Variables a scene must hold to build ``channels`` (plus the SAR and geolocation base)."""
    needed = [PRIMARY, LAT, LON]
    for ch in channels:
        if channel_kind(ch) != "derived" and ch not in needed:
            needed.append(ch)
    return needed


def scene_id_from(attr: str | None, filename: str | Path) -> str | None:
    """The scene id: first ``\\d{8}T\\d{6}_[a-z]+`` match in ``attr``, else in the file name."""
    for text in (attr or "", Path(filename).name):
        m = SCENE_ID_RE.search(str(text))
        if m:
            return m.group(0)
    return None


def time_from_scene_id(scene_id: str) -> datetime:
    """Acquisition start time (UTC) encoded in a scene id."""
    return datetime.strptime(scene_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)


def coarse_size_ok(n_coarse: int, n_sar: int) -> bool:
    """Real files store floor or ceil of n/25 coarse cells (contract.md)."""
    return n_coarse in (n_sar // COARSE_FACTOR, -(-n_sar // COARSE_FACTOR))
