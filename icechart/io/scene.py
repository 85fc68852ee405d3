"""Open and validate an AI4Arctic "ready-to-train" scene.

The scene is opened lazily (xarray on netCDF4, no dask): arrays are read only when asked for,
window by window. Validation checks the variables the requested channels need, their dims
(by name, either order) and dtypes, the coarse-grid sizes and that some SAR is valid.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from icechart.classes import FILL, N_CLASSES, check_labels
from icechart.errors import BadDataError, InputMissingError, first_line
from icechart.io import contract as C
from icechart.io.georef import check_tie_points, interpolate_latlon, tie_positions

logger = logging.getLogger(__name__)

Window = tuple[slice, slice]
"""(rows, cols) slices into the SAR grid."""

_BLOCK_ROWS = 512  # rows read at once when scanning a full-resolution variable


@dataclass
class Scene:
    """An opened AI4Arctic scene. Create with :func:`open_scene`; close when done."""

    path: Path
    ds: xr.Dataset
    scene_id: str
    time: datetime
    service: str
    sar_fill: float | None = None
    valid_fraction: float = 1.0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # -- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """SAR (lines, samples)."""
        return (int(self.ds.sizes[C.SAR_DIMS[0]]), int(self.ds.sizes[C.SAR_DIMS[1]]))

    @property
    def coarse_shape(self) -> tuple[int, int] | None:
        """2 km grid (lines, samples), or None when the scene has no coarse variables."""
        if C.COARSE_DIMS[0] not in self.ds.sizes:
            return None
        return (int(self.ds.sizes[C.COARSE_DIMS[0]]), int(self.ds.sizes[C.COARSE_DIMS[1]]))

    @property
    def month(self) -> int:
        """Acquisition month 0..11."""
        return self.time.month - 1

    def close(self) -> None:
        self.ds.close()

    def drop_read_caches(self) -> None:
        """Free what reading has cached: HDF5 keeps up to 64 MiB of decompressed chunks per
        variable read (a 5000 x 5000 scene: ~0.25 GiB for the SAR variables) until the file is
        closed. The file is closed; xarray reopens it on the next read (milliseconds). The
        validity and land masks made from it stay."""
        # The backend store's close, not Dataset.close(): that one forgets how to close the
        # file (a later close() would leave the reopened file open).
        close = getattr(self.ds, "_close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Scene":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- arrays ---------------------------------------------------------------------------
    def read(self, name: str, window: Window | None = None) -> np.ndarray:
        """Read a full-resolution variable (or a window of it) as stored."""
        var = self.ds[name]
        if window is not None:
            var = var[window]
        return np.asarray(var.values)

    def sar(self, name: str, window: Window | None = None) -> np.ndarray:
        """A full-resolution input as float32 with invalid pixels (NaN or fill) set to NaN."""
        a = self.read(name, window).astype(np.float32, copy=False)
        try:
            fills = _fill_values(self.ds[name].attrs, self.sar_fill)
        except BadDataError as exc:
            raise BadDataError(f"{self.path}: variable `{name}`: {exc.message}") from None
        if fills:
            a = np.where(np.isin(a, fills), np.float32(np.nan), a)
        return a

    def valid(self, window: Window | None = None) -> np.ndarray:
        """True where both SAR polarisations are valid (not NaN, not a declared fill).

        The mask of the whole scene is computed once (bit-packed: 1/8 byte per pixel) and
        windows are cut from it, so the features, the status flags and the valid fraction do
        not each read (and, for compressed files, decompress) both SAR variables again.
        """
        return self._cut(self._valid_bits(), window)

    def _valid_bits(self) -> np.ndarray:
        """The bit-packed validity mask of the whole scene (rows x ceil(samples / 8) uint8)."""
        return self._packed("valid", self._valid)

    def _valid(self, window: Window) -> np.ndarray:
        ok = np.isfinite(self.sar(C.PRIMARY, window))
        if C.SECONDARY in self.ds:
            ok &= np.isfinite(self.sar(C.SECONDARY, window))
        return ok

    def land(self, window: Window | None = None) -> np.ndarray:
        """True on land: labels masked (255) where SAR is valid; without labels, distance map 0.

        Kept separate from :meth:`valid` (contract.md "Invalid input pixels"). As the validity,
        the mask of the whole scene is made once (bit-packed) and windows are cut from it, so the
        row blocks of a prediction do not read (and decompress) the labels again, nor wait for
        the netCDF/HDF5 lock that a product writer holds meanwhile.
        """
        return self._cut(self._packed("land", self._land), window)

    def _packed(self, name: str, mask: Callable[[Window], np.ndarray]) -> np.ndarray:
        """The whole scene's ``mask(window)``, made once by row blocks and kept bit-packed (rows x
        ceil(samples / 8) uint8) as ``{name}_bits``; its count of True pixels as ``n_{name}``."""
        bits = self._cache.get(f"{name}_bits")
        if bits is None:
            lines, samples = self.shape
            bits = np.empty((lines, -(-samples // 8)), np.uint8)
            count = 0
            for r0 in range(0, lines, _BLOCK_ROWS):
                win = (slice(r0, min(r0 + _BLOCK_ROWS, lines)), slice(None))
                ok = mask(win)
                bits[win[0]] = np.packbits(ok, axis=1)
                count += int(ok.sum())
            self._cache[f"{name}_bits"] = bits
            self._cache[f"n_{name}"] = count
        return bits

    def _cut(self, packed: np.ndarray, window: Window | None) -> np.ndarray:
        rows, cols = window if window is not None else (slice(None), slice(None))
        ok = np.unpackbits(packed[rows], axis=1, count=self.shape[1]).view(bool)
        return ok[:, cols]

    def _land(self, window: Window) -> np.ndarray:
        valid = self.valid(window)
        if self.has_labels:
            return (self.read("SIC", window) == FILL) & valid
        if "distance_map" in self.ds:
            # AI4Arctic's distance map is 0 on land (distance-to-land class).
            return (np.nan_to_num(self.sar("distance_map", window), nan=-1.0) == 0) & valid
        return np.zeros(valid.shape, dtype=bool)

    def labels(self, chart: str, window: Window | None = None) -> np.ndarray:
        """A label chart (uint8, 255 = no label).

        Raises BadDataError (65, naming the file) when the scene has none, or when a value is
        neither a class of the chart's table (:data:`icechart.classes.N_CLASSES`) nor 255: a
        SOD of 17 or a SIC of 200 is a broken label file, never something to train on.
        """
        if chart not in self.ds:
            raise BadDataError(f"{self.path}: no labels (variable `{chart}` absent; a test file?)")
        raw = self.read(chart, window)
        if chart in N_CLASSES:
            check_labels(chart, raw, source=self.path)
        return raw.astype(np.uint8, copy=False)

    @property
    def has_labels(self) -> bool:
        """False for test files: label variables absent, or 255 everywhere."""
        if "has_labels" not in self._cache:
            present = all(v in self.ds for v in C.LABELS)
            any_label = present and _any_block(self.ds["SIC"], lambda b: bool((b != FILL).any()))
            self._cache["has_labels"] = bool(any_label)
        return bool(self._cache["has_labels"])

    def coarse(self, name: str) -> np.ndarray:
        """An AMSR2/ERA5 variable on the 2 km grid, float32, fills as NaN."""
        a = np.asarray(self.ds[name].values).astype(np.float32, copy=False)
        try:
            fills = _fill_values(self.ds[name].attrs, None)
        except BadDataError as exc:
            raise BadDataError(f"{self.path}: variable `{name}`: {exc.message}") from None
        if fills:
            a = np.where(np.isin(a, fills), np.float32(np.nan), a)
        return a

    # -- geolocation ----------------------------------------------------------------------
    def tie_points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lat, lon, line positions, sample positions) with lat/lon shaped (lines, samples)."""
        if "tie" not in self._cache:
            lat = np.asarray(self.ds[C.LAT].values, dtype=np.float64)
            lon = np.asarray(self.ds[C.LON].values, dtype=np.float64)
            nl, ns = lat.shape
            rows = cols = None
            if C.TIE_LINE in self.ds and C.TIE_SAMPLE in self.ds:
                rows = _tie_axis(np.asarray(self.ds[C.TIE_LINE].values), axis=1)
                cols = _tie_axis(np.asarray(self.ds[C.TIE_SAMPLE].values), axis=0)
            if rows is None or cols is None or rows.size != nl or cols.size != ns:
                if C.TIE_LINE in self.ds:
                    logger.warning(
                        "%s: stored tie-point positions are not a separable %dx%d grid; "
                        "spacing tie points evenly instead",
                        self.path, nl, ns,
                    )
                rows = tie_positions(nl, self.shape[0])
                cols = tie_positions(ns, self.shape[1])
            self._cache["tie"] = (lat, lon, rows, cols)
        return self._cache["tie"]

    def latlon(
        self,
        window: Window | None = None,
        *,
        step: int = 1,
        rows: np.ndarray | None = None,
        cols: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latitude/longitude (degrees, float64) at SAR pixels.

        Either a window of the full grid (every ``step`` pixels), or explicit 1-D ``rows`` and
        ``cols`` pixel positions (fractional allowed, e.g. block centres).
        """
        lat, lon, trow, tcol = self.tie_points()
        if rows is None or cols is None:
            r, c = window or (slice(None), slice(None))
            rows = np.arange(self.shape[0])[r][::step]
            cols = np.arange(self.shape[1])[c][::step]
        return interpolate_latlon(lat, lon, trow, tcol, rows, cols)


def _tie_axis(a: np.ndarray, *, axis: int) -> np.ndarray | None:
    """Pixel positions stored as a 2-D tie grid: take the 1-D axis if the grid is separable."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return a
    line = a.take(0, axis=axis)
    return line if np.allclose(a, np.expand_dims(line, axis)) else None


def _fill_values(attrs: dict[str, Any], configured: float | None) -> list[float]:
    fills = []
    for key in ("variable_fill_value", "_FillValue", "missing_value"):
        v = attrs.get(key)
        if v is None:
            continue
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise BadDataError(f"fill attribute `{key}` = {v!r} is not a number") from None
        if np.isfinite(a).all():
            fills.extend(np.atleast_1d(a).tolist())
    if configured is not None:
        fills.append(float(configured))
    return fills


def _any_block(var: xr.DataArray, pred: Any) -> bool:
    n = var.shape[0]
    for r0 in range(0, n, _BLOCK_ROWS):
        if pred(np.asarray(var[r0 : r0 + _BLOCK_ROWS].values)):
            return True
    return False


def _orient(ds: xr.Dataset, path: Path, names: list[str], dims: tuple[str, str]) -> xr.Dataset:
    """Check that ``names`` lie on ``dims`` (either order) and transpose them to that order."""
    for name in names:
        vdims = ds[name].dims
        if set(vdims) != set(dims):
            raise BadDataError(
                f"{path}: variable `{name}` has dims {vdims}; expected {dims} (AI4Arctic layout)"
            )
        if vdims != dims:
            ds[name] = ds[name].transpose(*dims)
    return ds


def open_scene(
    path: str | Path,
    *,
    channels: tuple[str, ...] | list[str] = (),
    sar_fill: float | None = None,
    require_valid: bool = True,
) -> Scene:
    """Open an AI4Arctic scene lazily and validate it for ``channels``.

    Parameters
    ----------
    path
        A ``*_prep.nc`` (or ``*_reference.nc``) file.
    channels
        Input channels (names of :data:`icechart.io.contract.ALL_CHANNELS`) the caller needs;
        their variables must be present. The SAR and tie-point variables are always required.
    sar_fill
        A SAR value to treat as missing besides NaN and the declared fill (e.g. 0 or 2 for
        versions of the data set that fill with a constant). Never 0 by default.
    require_valid
        Refuse a scene with no valid SAR pixel.

    Raises
    ------
    InputMissingError
        The file does not exist or cannot be read (66).
    BadDataError
        Not a netCDF file, truncated, a required variable missing, wrong dims or dtype, or SAR
        entirely invalid (65). The message names the file and the problem.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputMissingError(f"{path}: no such file") from None
    except OSError as exc:  # a symlink loop, a permission on a parent, ...
        raise InputMissingError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(st.st_mode):
        raise InputMissingError(f"{path}: is a directory, expected a scene file")
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would block for ever
        raise InputMissingError(f"{path}: not a regular file (a FIFO, socket or device); expected a scene file")
    size = st.st_size
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot read ({exc.strerror})") from exc
    if size == 0:
        raise BadDataError(f"{path}: empty file (0 bytes), expected an AI4Arctic netCDF scene")
    try:
        ds = xr.open_dataset(
            path, engine="netcdf4", mask_and_scale=False, decode_times=False, cache=False
        )
    except Exception as exc:  # netCDF4/HDF5 raise many types for a bad file
        reason = first_line(exc)
        for form in (str(path.absolute()), str(path)):
            reason = reason.replace(f": '{form}'", "").replace(f"'{form}'", "the file").replace(form, "the file")
        raise BadDataError(f"{path}: not a readable netCDF file ({reason})") from exc
    try:
        scene = _validate(ds, path, list(channels), sar_fill, require_valid)
    except BadDataError:
        ds.close()
        raise
    except Exception as exc:  # a truncated file fails on the first data read
        ds.close()
        raise BadDataError(f"{path}: cannot read data ({first_line(exc)}); truncated file?") from exc
    return scene


def _pixel_spacing(attr: Any) -> float:
    """The file's ``pixel_spacing`` attribute (m) when it is a sane number, else 80 m."""
    try:
        v = float(np.asarray(attr, dtype=np.float64).reshape(-1)[0])
    except (TypeError, ValueError, IndexError):
        return C.PIXEL_SPACING
    return v if np.isfinite(v) and 1.0 <= v <= 10_000.0 else C.PIXEL_SPACING


def _validate(
    ds: xr.Dataset,
    path: Path,
    channels: list[str],
    sar_fill: float | None,
    require_valid: bool,
) -> Scene:
    unknown = [c for c in channels if c not in C.ALL_CHANNELS]
    if unknown:
        raise BadDataError(f"unknown input channel(s) {', '.join(unknown)}")
    missing = [v for v in C.required_variables(channels) if v not in ds]
    if missing:
        names = ", ".join(f"`{m}`" for m in missing)
        raise BadDataError(
            f"{path}: lacks variable(s) {names}; expected an AI4Arctic ready-to-train file"
        )
    sar_vars = [v for v in (*C.SAR_VARIABLES, *C.LABELS) if v in ds]
    coarse_vars = [v for v in C.COARSE_VARIABLES if v in ds]
    ds = _orient(ds, path, sar_vars, C.SAR_DIMS)
    ds = _orient(ds, path, coarse_vars, C.COARSE_DIMS)
    tie_vars = [C.LAT, C.LON] + [
        v for v in (C.TIE_LINE, C.TIE_SAMPLE) if v in ds and set(ds[v].dims) == set(C.TIE_DIMS)
    ]
    ds = _orient(ds, path, tie_vars, C.TIE_DIMS)
    for name in [v for v in sar_vars if v not in C.LABELS] + coarse_vars + [C.LAT, C.LON]:
        if ds[name].dtype.kind not in "fiu":
            raise BadDataError(f"{path}: variable `{name}` has dtype {ds[name].dtype}, expected numbers")
    for name in (C.PRIMARY, C.SECONDARY, C.LAT, C.LON):
        if name in ds and ds[name].dtype.kind != "f":
            raise BadDataError(f"{path}: variable `{name}` has dtype {ds[name].dtype}, expected float")
    for name in C.LABELS:
        if name in ds and ds[name].dtype.kind not in "iu":
            raise BadDataError(f"{path}: label `{name}` has dtype {ds[name].dtype}, expected uint8")
    lines, samples = int(ds.sizes[C.SAR_DIMS[0]]), int(ds.sizes[C.SAR_DIMS[1]])
    if lines < 2 or samples < 2:
        raise BadDataError(f"{path}: SAR grid {lines}x{samples} is too small")
    if max(lines, samples) > C.MAX_SAR_SIDE:  # before anything the size of the grid is allocated
        raise BadDataError(
            f"{path}: SAR grid {lines}x{samples} is larger than {C.MAX_SAR_SIDE} pixels on a side "
            f"({C.MAX_SAR_SIDE * C.PIXEL_SPACING / 1000:.0f} km at {C.PIXEL_SPACING:.0f} m); not an AI4Arctic scene"
        )
    if coarse_vars:
        cl, cs = int(ds.sizes[C.COARSE_DIMS[0]]), int(ds.sizes[C.COARSE_DIMS[1]])
        if not (C.coarse_size_ok(cl, lines) and C.coarse_size_ok(cs, samples)):
            raise BadDataError(
                f"{path}: 2 km grid {cl}x{cs} does not match SAR {lines}x{samples} "
                f"(expected floor or ceil of n/{C.COARSE_FACTOR})"
            )
    if min(ds.sizes[C.TIE_DIMS[0]], ds.sizes[C.TIE_DIMS[1]]) < 2:
        raise BadDataError(f"{path}: fewer than 2x2 tie points")
    if ds.sizes[C.TIE_DIMS[0]] * ds.sizes[C.TIE_DIMS[1]] > C.MAX_TIE_POINTS:
        raise BadDataError(f"{path}: more than {C.MAX_TIE_POINTS} tie points")
    attr_id = str(ds.attrs.get("scene_id", "")) or None
    scene_id = C.scene_id_from(attr_id, path)
    if scene_id is None:
        raise BadDataError(
            f"{path}: no scene id (expected YYYYMMDDTHHMMSS_service in the `scene_id` "
            "attribute or the file name)"
        )
    service = str(ds.attrs.get("ice_service") or scene_id.split("_", 1)[1])
    try:
        acquired = C.time_from_scene_id(scene_id)
    except ValueError:
        raise BadDataError(f"{path}: scene id {scene_id} holds an impossible date or time") from None
    scene = Scene(
        path=path,
        ds=ds,
        scene_id=scene_id,
        time=acquired,
        service=service,
        sar_fill=sar_fill,
    )
    lat, lon, trow, tcol = scene.tie_points()
    spacing = _pixel_spacing(ds.attrs.get("pixel_spacing"))
    problem = check_tie_points(lat, lon, trow, tcol, shape=(lines, samples), pixel_spacing=spacing)
    if problem:
        raise BadDataError(f"{path}: implausible geolocation: {problem}")
    scene._valid_bits()
    n_valid = int(scene._cache["n_valid"])
    scene.valid_fraction = n_valid / float(lines * samples)
    if require_valid and n_valid == 0:
        raise BadDataError(f"{path}: SAR is entirely invalid (NaN or fill)")
    scene.drop_read_caches()  # the chunks read for the mask are no use to the next reader
    return scene
