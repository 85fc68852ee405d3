"""Reading charts for scoring: references and predictions, by scene id, row-blocked.

Files understood (either side):

* AI4Arctic scene files (``*_prep.nc``) and ``*_reference.nc`` files: variables ``SIC``,
  ``SOD``, ``FLOE`` on ``sar_lines x sar_samples`` (a scene without them is a test file:
  "no labelled pixels");
* icechart netCDF products ``{id}_{model}.nc``: the same names, SIC uint8 in percent with
  ``units "%"`` (divided by 10 here; a value that is not a multiple of 10 is refused, 65);
* AutoICE submission files: one netCDF with ``{scene}_SIC``, ``{scene}_SOD``, ``{scene}_FLOE``
  per scene (SIC in classes 0..10);
* with ``--scene``, SIGRID-3 charts (shapefile, GeoPackage) rasterised onto that scene's grid
  (:mod:`icechart.io.sigrid3`).

Scene ids follow contract.md (:func:`icechart.io.contract.scene_id_from`). Arrays are read in
row blocks straight from netCDF4 (no masking or scaling), so memory does not depend on the
number or size of the scenes beyond one block per chart.
"""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from icechart.classes import CHARTS, FILL, N_CLASSES, SIC_PERCENT_PER_CLASS, sic_from_percent
from icechart.errors import BadDataError, InputMissingError
from icechart.io import contract as C
from icechart.paths import unique_paths

logger = logging.getLogger(__name__)

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")
SIGRID_SUFFIXES = (".shp", ".gpkg")
BLOCK_ROWS = 1024
"""Rows read at once per chart (a 5000-sample block is 5 MB of uint8)."""

_AUTOICE_VAR = re.compile(r"^(?P<sid>.+)_(?P<chart>SIC|SOD|FLOE)$")


@dataclass
class ChartSource:
    """One scene's three charts in one file (or in memory), readable by row block.

    Attributes
    ----------
    path
        The file the charts come from.
    scene_id
        The AutoICE key.
    variables
        Chart name -> netCDF variable name (empty for in-memory arrays).
    shape
        (lines, samples).
    percent
        Charts stored in percent (``units "%"``) and divided by 10 on reading.
    arrays
        In-memory charts (rasterised SIGRID-3 charts) instead of netCDF variables.
    confidence
        Chart name -> its confidence variable (uint8 percent; icechart products' SOD_confidence
        and FLOE_confidence), read for the expected calibration error.
    """

    path: Path
    scene_id: str
    shape: tuple[int, int]
    variables: dict[str, str] = field(default_factory=dict)
    percent: set[str] = field(default_factory=set)
    arrays: dict[str, np.ndarray] | None = None
    confidence: dict[str, str] = field(default_factory=dict)
    _nc: Any = field(default=None, repr=False)

    def read(self, chart: str, rows: slice) -> np.ndarray:
        """Rows ``rows`` of ``chart`` as class values (uint8, 255 = none).

        Raises
        ------
        BadDataError
            A percent chart holds a value that is neither a multiple of 10 in 0..100 nor 255, or
            a class chart a value outside its class table (:data:`icechart.classes.N_CLASSES`)
            and not 255: e.g. a percent SIC without ``units "%"``, or SOD = 17.
        """
        if self.arrays is not None:
            return self.arrays[chart][rows]
        var = self._dataset().variables[self.variables[chart]]
        if var.dimensions != C.SAR_DIMS and var.dimensions[::-1] == C.SAR_DIMS:
            a = np.asarray(var[:, rows]).T  # stored (samples, lines)
        else:
            a = np.asarray(var[rows, :])
        if chart in self.percent:
            a = a.astype(np.int64)
            bad = (a != FILL) & ((a % SIC_PERCENT_PER_CLASS != 0) | (a < 0) | (a > 100))
            if bad.any():
                raise BadDataError(
                    f"{self.path}: {self.variables[chart]} is in percent (units \"%\") but holds "
                    f"{int(a[bad][0])}, not a multiple of 10 in 0..100"
                )
            a = sic_from_percent(a)
        else:
            n = N_CLASSES[chart]
            bad = (a != FILL) & ((a < 0) | (a >= n))
            if bad.any():
                v = int(np.asarray(a)[bad].flat[0])
                hint = ' (percent without `units "%"`?)' if chart == "SIC" and v <= 100 else ""
                raise BadDataError(
                    f"{self.path}: {self.variables[chart]} holds {v}, not a class 0..{n - 1} of the "
                    f"{chart} table nor {FILL}{hint}; refusing to score it"
                )
        return a

    def read_confidence(self, chart: str, rows: slice) -> np.ndarray:
        """Rows ``rows`` of ``chart``'s confidence layer (uint8 percent, 255 = none)."""
        var = self._dataset().variables[self.confidence[chart]]
        if var.dimensions != C.SAR_DIMS and var.dimensions[::-1] == C.SAR_DIMS:
            return np.asarray(var[:, rows]).T
        return np.asarray(var[rows, :])

    def _dataset(self) -> Any:
        if self._nc is None:
            self._nc = _open_nc(self.path)
        return self._nc

    def close(self) -> None:
        """Close the underlying file (reopened on the next read)."""
        if self._nc is not None:
            self._nc.close()
            self._nc = None


def _open_nc(path: Path) -> Any:
    import netCDF4

    try:
        ds = netCDF4.Dataset(path, "r")
    except FileNotFoundError as exc:
        raise InputMissingError(f"{path}: no such file") from exc
    except PermissionError as exc:
        raise InputMissingError(f"{path}: cannot read (permission denied)") from exc
    except OSError as exc:
        raise BadDataError(f"{path}: not a readable netCDF file ({exc})") from exc
    ds.set_auto_maskandscale(False)
    return ds


def discover(
    specs: Iterable[str | Path], *, suffixes: tuple[str, ...] = NETCDF_SUFFIXES
) -> list[Path]:
    """Expand files, directories (their files, not recursive) and globs into file paths.

    Hidden files and icechart's temporaries (``.tmp-*``) are skipped in directories.

    Raises
    ------
    InputMissingError
        A path that does not exist, or a glob that matches nothing (66).
    """
    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(
                q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")
                and q.suffix.lower() in suffixes
            )
            if not found:
                logger.warning("%s: no %s files in this directory", p, "/".join(suffixes))
            out.extend(found)
        elif p.exists():
            out.append(p)
        elif glob.has_magic(str(spec)):
            matches = sorted(Path(m) for m in glob.glob(str(spec)) if Path(m).is_file())
            if not matches:
                raise InputMissingError(f"{spec}: no file matches this pattern")
            out.extend(matches)
        else:
            raise InputMissingError(f"{spec}: no such file or directory")
    # The same file named twice (e.g. a file and its directory) counts once.
    return unique_paths(out)


def chart_sources(path: Path) -> list[ChartSource]:
    """Every scene's charts in one netCDF file (one for a scene/product, many for AutoICE).

    Returns an empty list for a file without any chart variable (e.g. a test scene).

    Raises
    ------
    BadDataError
        Not netCDF, a chart on unexpected dims, a scene id missing, or only some charts.
    """
    ds = _open_nc(path)
    try:
        names = set(ds.variables)
        if any(c in names for c in CHARTS):
            missing = [c for c in CHARTS if c not in names]
            if missing:
                raise BadDataError(f"{path}: lacks chart variable(s) {', '.join(missing)}")
            attr = str(getattr(ds, "scene_id", "") or "") or None
            sid = C.scene_id_from(attr, path)
            if sid is None:
                raise BadDataError(
                    f"{path}: no scene id (expected YYYYMMDDTHHMMSS_service in the `scene_id` "
                    "attribute or the file name)"
                )
            shape = _chart_shape(ds, path, {c: c for c in CHARTS}, require_sar_dims=True)
            return [
                ChartSource(
                    path=path,
                    scene_id=sid,
                    shape=shape,
                    variables={c: c for c in CHARTS},
                    percent={c for c in CHARTS if _is_percent(ds.variables[c])},
                    confidence={
                        c: f"{c}_confidence"
                        for c in CHARTS
                        if f"{c}_confidence" in names and ds.variables[f"{c}_confidence"].shape == ds.variables[c].shape
                    },
                )
            ]
        groups: dict[str, dict[str, str]] = {}
        for name in ds.variables:
            m = _AUTOICE_VAR.match(name)
            if m:
                sid = C.scene_id_from(m.group("sid"), "") or m.group("sid")
                groups.setdefault(sid, {})[m.group("chart")] = name
        out = []
        for sid, variables in groups.items():
            missing = [c for c in CHARTS if c not in variables]
            if missing:
                raise BadDataError(
                    f"{path}: scene {sid} lacks variable(s) "
                    + ", ".join(f"{sid}_{c}" for c in missing)
                )
            shape = _chart_shape(ds, path, variables, require_sar_dims=False)
            out.append(
                ChartSource(
                    path=path,
                    scene_id=sid,
                    shape=shape,
                    variables=variables,
                    percent={c for c, v in variables.items() if _is_percent(ds.variables[v])},
                )
            )
        return out
    finally:
        ds.close()


def _is_percent(var: Any) -> bool:
    return str(getattr(var, "units", "")).strip() in ("%", "percent")


def _chart_shape(
    ds: Any, path: Path, variables: dict[str, str], *, require_sar_dims: bool
) -> tuple[int, int]:
    shapes = set()
    for chart, name in variables.items():
        var = ds.variables[name]
        if var.ndim != 2:
            raise BadDataError(f"{path}: `{name}` has {var.ndim} dims, expected 2")
        if require_sar_dims and set(var.dimensions) != set(C.SAR_DIMS):
            raise BadDataError(
                f"{path}: `{name}` has dims {var.dimensions}; expected {C.SAR_DIMS}"
            )
        if var.dtype.kind not in "iu":
            raise BadDataError(f"{path}: `{name}` has dtype {var.dtype}, expected uint8 classes")
        shape = tuple(int(n) for n in var.shape)
        if var.dimensions[::-1] == C.SAR_DIMS:
            shape = shape[::-1]
        shapes.add(shape)
    if len(shapes) != 1:
        raise BadDataError(f"{path}: charts differ in shape {sorted(shapes)}")
    (shape,) = shapes
    return shape  # type: ignore[return-value]


def index_by_scene(sources: Iterable[ChartSource], role: str) -> dict[str, ChartSource]:
    by_id: dict[str, ChartSource] = {}
    dups: dict[str, list[Path]] = {}
    for src in sources:
        if src.scene_id in by_id:
            dups.setdefault(src.scene_id, [by_id[src.scene_id].path]).append(src.path)
        else:
            by_id[src.scene_id] = src
    if dups:
        sid, paths = next(iter(dups.items()))
        more = f" (and {len(dups) - 1} more scene(s))" if len(dups) > 1 else ""
        raise BadDataError(
            f"scene {sid} appears twice among the {role}: {', '.join(map(str, paths))}{more}; "
            "name one file per scene"
        )
    return by_id


def load_references(
    specs: Iterable[str | Path],
    *,
    scene: str | Path | None = None,
    range_codes: str = "mask",
) -> list[ChartSource]:
    """Reference charts from files/directories/globs (netCDF, or SIGRID-3 with ``scene``).

    Raises
    ------
    BadDataError
        A reference file without labels ("no labelled pixels"), a SIGRID-3 chart without
        ``scene``, or an unreadable file.
    """
    paths = discover(specs, suffixes=NETCDF_SUFFIXES + SIGRID_SUFFIXES)
    out: list[ChartSource] = []
    for p in paths:
        if p.suffix.lower() in SIGRID_SUFFIXES or p.is_dir():
            if scene is None:
                raise BadDataError(
                    f"{p}: a SIGRID-3 chart needs --scene SCENE.nc (the grid to rasterise onto)"
                )
            out.append(_sigrid_source(p, Path(scene), range_codes))
            continue
        found = chart_sources(p)
        if not found:
            raise BadDataError(
                f"{p}: no labelled pixels (no SIC/SOD/FLOE variables; a test file? give its "
                "_reference.nc or a labelled scene)"
            )
        out.extend(found)
    return out


def _sigrid_source(chart: Path, scene_path: Path, range_codes: str) -> ChartSource:
    from icechart.io.scene import open_scene
    from icechart.io.sigrid3 import rasterise_chart

    if not scene_path.exists():
        raise InputMissingError(f"{scene_path}: no such file")
    scene = open_scene(scene_path, require_valid=False)
    try:
        arrays = rasterise_chart(chart, scene, range_codes=range_codes)
        return ChartSource(
            path=chart, scene_id=scene.scene_id, shape=scene.shape, arrays=arrays
        )
    finally:
        scene.close()


def load_predictions(specs: Iterable[str | Path]) -> list[ChartSource]:
    """Prediction charts from files/directories/globs (icechart products, AutoICE files).

    Raises
    ------
    BadDataError
        A file holds no chart variables, or is not netCDF.
    """
    out: list[ChartSource] = []
    for p in discover(specs):
        found = chart_sources(p)
        if not found:
            raise BadDataError(
                f"{p}: no prediction charts (expected SIC/SOD/FLOE or {{scene}}_SIC/SOD/FLOE)"
            )
        out.extend(found)
    return out
