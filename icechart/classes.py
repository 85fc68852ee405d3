"""Class tables, SIGRID-3 code maps and WMO colours: the one source of truth.

Sources: AI4Arctic Sea Ice Challenge dataset manual / starter kit (``convert_raw_icechart.py``)
as summarised in ``reference/ai4arctic.md``; SIGRID-3 (WMO/TD-No. 1214); WMO ice chart colour
standard (WMO/TD-No. 1215) as summarised in ``reference/products-and-ops.md``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FILL = 255
"""Masked / no label / no prediction, in every uint8 chart."""

Chart = Literal["SIC", "SOD", "FLOE"]
CHARTS: tuple[Chart, ...] = ("SIC", "SOD", "FLOE")

# SIC class k means k x 10 % (0..10).
SIC_PERCENT_PER_CLASS = 10
SIC_NAMES = tuple(f"{10 * k}%" for k in range(11))
SOD_NAMES = (
    "open_water",
    "new_ice",
    "young_ice",
    "thin_first_year_ice",
    "thick_first_year_ice",
    "old_ice",
)
FLOE_NAMES = (
    "open_water",
    "cake_ice",
    "small_floe",
    "medium_floe",
    "big_floe",
    "vast_floe",
    "bergs",
)
CLASS_NAMES: dict[str, tuple[str, ...]] = {"SIC": SIC_NAMES, "SOD": SOD_NAMES, "FLOE": FLOE_NAMES}
N_CLASSES: dict[str, int] = {chart: len(names) for chart, names in CLASS_NAMES.items()}


def check_labels(chart: str, values: np.ndarray, *, source: object) -> None:
    """BadDataError (65) naming ``source`` when a label is neither a class of ``chart``
    (0..N-1) nor FILL: such a value would index past the loss's classes (an IndexError on the
    CPU, a device-side assert on CUDA)."""
    n = N_CLASSES[chart]
    a = np.asarray(values)
    bad = (a != FILL) & ((a < 0) | (a >= n))
    if bad.any():
        from icechart.errors import BadDataError

        v = a[bad]
        raise BadDataError(
            f"{source}: {chart} holds {int(bad.sum())} label(s) outside the classes 0..{n - 1} "
            f"(e.g. {int(v.flat[0])}; {FILL} = no label); fix the file or leave it out of the training data"
        )

# Combined AutoICE score weights: (2 SIC + 2 SOD + 1 FLOE) / 5 (ai4arctic.md).
SCORE_WEIGHTS: dict[str, int] = {"SIC": 2, "SOD": 2, "FLOE": 1}

# --- Status flag of the products (contract.md "Products"): why a pixel has no chart value ------
STATUS_LAND = 1
STATUS_INVALID = 2
STATUS_OUTSIDE = 4
"""Bits of ``status_flag``: land, invalid SAR, outside the swath (invalid SAR connected to the
left or right image edge along its line; such pixels also carry :data:`STATUS_INVALID`)."""
STATUS_MEANINGS = "land invalid_sar outside_swath"
"""CF ``flag_meanings`` of the bits, in bit order."""


def sic_to_percent(classes: np.ndarray) -> np.ndarray:
    """uint8 SIC percent (0, 10, ..., 100) from SIC classes 0..10; :data:`FILL` stays FILL."""
    c = np.asarray(classes)
    pct = c.astype(np.uint8) * np.uint8(SIC_PERCENT_PER_CLASS)
    pct[c == FILL] = FILL
    return pct


def sic_from_percent(percent: np.ndarray) -> np.ndarray:
    """uint8 SIC classes 0..10 from percent (integer division by 10); :data:`FILL` stays FILL."""
    a = np.asarray(percent)
    return np.where(a == FILL, FILL, a // SIC_PERCENT_PER_CLASS).astype(np.uint8)


CLASS_TABLE_VERSION = "ai4arctic-v1"
"""Identifies these tables in model metadata; a checkpoint with another version is refused."""

# --- SIGRID-3 code -> AI4Arctic class (ai4arctic.md "From SIGRID-3 codes") -------------------
SIC_FROM_CODE: dict[int, int] = {0: 0, 1: 0, 2: 0, 55: 0, 91: 10, 92: 10, 99: FILL}
SIC_FROM_CODE.update({10 * k: k for k in range(1, 10)})
SOD_FROM_CODE: dict[int, int] = {
    0: 0, 80: 0,
    81: 1, 82: 1,
    83: 2, 84: 2, 85: 2,
    87: 3, 88: 3, 89: 3,
    86: 4, 91: 4, 93: 4,
    95: 5, 96: 5, 97: 5,
    98: FILL, 99: FILL,
}  # fmt: skip
FLOE_FROM_CODE: dict[int, int] = {
    0: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 7: 5, 9: 6, 10: 6,
    22: FILL, 1: FILL, 8: FILL, 21: FILL,
}  # fmt: skip
FROM_CODE: dict[str, dict[int, int]] = {"SIC": SIC_FROM_CODE, "SOD": SOD_FROM_CODE, "FLOE": FLOE_FROM_CODE}

# --- AI4Arctic class -> SIGRID-3 code, for writing charts (products-and-ops.md) ---------------
# Each must map back to the same class through FROM_CODE (tested).
SIC_TO_CODE: dict[int, int] = {0: 0, **{k: 10 * k for k in range(1, 10)}, 10: 92}
SOD_TO_CODE: dict[int, int] = {0: 0, 1: 81, 2: 83, 3: 87, 4: 93, 5: 95}
FLOE_TO_CODE: dict[int, int] = {0: 0, 1: 2, 2: 3, 3: 4, 4: 5, 5: 6, 6: 10}
TO_CODE: dict[str, dict[int, int]] = {"SIC": SIC_TO_CODE, "SOD": SOD_TO_CODE, "FLOE": FLOE_TO_CODE}

DOMINANCE = 0.65
"""A polygon's SOD/FLOE is its dominant class when that class holds >= 65 % of CT, else masked
(the data set as distributed and the MMSeaIce paper; an older starter kit used 0.7 / 0.5)."""

# --- Colours (WMO/TD-No. 1215) --------------------------------------------------------------
RGB = tuple[int, int, int]
_ICE_FREE: RGB = (0, 100, 255)


def _sic_colour(k: int) -> RGB:
    """WMO total-concentration colour for SIC class k (tenths)."""
    if k == 0:
        return _ICE_FREE
    if k <= 3:  # 1-3/10 (class 1 includes < 1/10 + 1/10: WMO's 1-3/10 colour)
        return (140, 255, 160)
    if k <= 6:
        return (255, 255, 0)
    if k <= 8:
        return (255, 125, 7)
    return (255, 0, 0)


SIC_COLOURS: dict[int, RGB] = {k: _sic_colour(k) for k in range(11)}
# Young ice (83) has no verified WMO colour; AI4Arctic's class 2 joins young, grey and
# grey-white ice, so it takes grey ice's colour (products-and-ops.md). Thin FYI uses the WMO thin
# first-year colour, thick FYI the WMO thick first-year colour, old ice the WMO old-ice colour.
SOD_COLOURS: dict[int, RGB] = {
    0: _ICE_FREE,
    1: (240, 210, 250),
    2: (135, 60, 215),
    3: (155, 210, 0),
    4: (0, 120, 0),
    5: (180, 100, 50),
}
# No WMO colour code exists for floe size: a sequential palette (matplotlib "viridis" samples)
# after open water's WMO blue.
FLOE_COLOURS: dict[int, RGB] = {
    0: _ICE_FREE,
    1: (68, 1, 84),
    2: (65, 68, 135),
    3: (42, 120, 142),
    4: (34, 168, 132),
    5: (122, 209, 81),
    6: (253, 231, 37),
}
COLOURS: dict[str, dict[int, RGB]] = {"SIC": SIC_COLOURS, "SOD": SOD_COLOURS, "FLOE": FLOE_COLOURS}
LEGEND_NOTES: dict[str, str] = {
    "SOD": "young ice shown in WMO grey-ice colour (class joins young, grey, grey-white)",
    "FLOE": "no WMO colour code for floe size: sequential palette",
}


def code_to_class(chart: str, codes: np.ndarray) -> np.ndarray:
    """Map integer SIGRID-3 codes to AI4Arctic classes; codes outside the table become FILL."""
    table = FROM_CODE[chart]
    lut = np.full(256, FILL, dtype=np.uint8)
    for code, cls in table.items():
        lut[code] = cls
    codes = np.asarray(codes)
    inside = (codes >= 0) & (codes < 256)
    out = np.full(codes.shape, FILL, dtype=np.uint8)
    out[inside] = lut[codes[inside].astype(np.intp)]
    return out
