"""The AutoICE submission file ``autoice_{model}.nc`` (contract.md "Products").

Variables ``{id}_SIC``, ``{id}_SOD``, ``{id}_FLOE`` (uint8 classes, SIC 0..10, 255 masked) on
dims ``{id}_{chart}_dim0`` x ``{id}_{chart}_dim1``, zlib level 1, no coordinates: the layout the
AutoICE challenge's scoring expects. It is rebuilt from every *complete* scene of the model in
the output directory (a scene is complete when its manifest exists; skipped scenes count:
:func:`icechart.ops.manifest.complete_scenes`), copying each scene's netCDF by row blocks, and
replaced atomically. The file records the sha256 of every source netCDF (global attribute
``icechart_sources``); when the complete scenes and their netCDFs are the same as recorded, the
rebuild is skipped, so a cron run with nothing new does not copy every scene again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from icechart.atomic import atomic_path
from icechart.classes import CHARTS, FILL, sic_from_percent
from icechart.errors import BadDataError

logger = logging.getLogger(__name__)

_ROWS = 1000
SOURCES_ATTR = "icechart_sources"


def autoice_name(model_id: str) -> str:
    return f"autoice_{model_id}.nc"


def autoice_sources(outdir: Path, model_id: str) -> list[tuple[str, Path, str | None]]:
    """``(scene id, netCDF path, its sha256 from the manifest)`` of every complete scene of
    ``model_id`` in ``outdir`` that has a netCDF product, sorted by scene id."""
    from icechart.ops.manifest import complete_scenes as complete_manifests

    found: list[tuple[str, Path, str | None]] = []
    for info in complete_manifests(outdir, model_id):
        sid = str(info.get("scene_id") or "")
        name = f"{sid}_{model_id}.nc"
        rec = next((f for f in info.get("files") or [] if f.get("name") == name), None)
        nc = Path(outdir) / name
        if not sid or rec is None or not nc.is_file():
            logger.warning("%s: complete but without a netCDF product; left out of the AutoICE file", sid or "?")
            continue
        found.append((sid, nc, rec.get("sha256")))
    return found


def _recorded_sources(path: Path) -> str | None:
    """The ``icechart_sources`` attribute of an existing AutoICE file (None when unreadable)."""
    import netCDF4

    if not path.is_file():
        return None
    try:
        with netCDF4.Dataset(path) as ds:
            return str(ds.getncattr(SOURCES_ATTR)) if SOURCES_ATTR in ds.ncattrs() else None
    except OSError:
        return None


def write_autoice(outdir: str | Path, model_id: str) -> Path | None:
    """Rebuild ``autoice_{model}.nc`` in ``outdir``; None when no complete scene exists.

    Raises
    ------
    BadDataError
        A scene's netCDF cannot be read (65).
    OutputError, OutputIOError
        The file cannot be written (73, 74).
    """
    import netCDF4

    outdir = Path(outdir)
    scenes = autoice_sources(outdir, model_id)
    if not scenes:
        logger.warning("no complete scene of model %s in %s: no AutoICE file written", model_id, outdir)
        return None
    dest = outdir / autoice_name(model_id)
    sources = json.dumps([[sid, sha] for sid, _, sha in scenes], separators=(",", ":"))
    if all(sha for *_, sha in scenes) and _recorded_sources(dest) == sources:
        logger.info("%s is up to date (%d scenes)", dest, len(scenes))
        return dest
    with atomic_path(dest) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as out:
            out.setncatts({
                "model_id": model_id,
                "comment": "AutoICE submission; SIC in classes 0..10",
                SOURCES_ATTR: sources,
            })  # fmt: skip
            for sid, path, _ in scenes:
                try:
                    src = netCDF4.Dataset(path)
                except OSError as exc:
                    raise BadDataError(f"{path}: cannot read product for the AutoICE file ({exc})") from exc
                with src:
                    for chart in CHARTS:
                        v = src.variables[chart]
                        v.set_auto_maskandscale(False)
                        lines, samples = v.shape
                        d0, d1 = f"{sid}_{chart}_dim0", f"{sid}_{chart}_dim1"
                        out.createDimension(d0, lines)
                        out.createDimension(d1, samples)
                        w = out.createVariable(
                            f"{sid}_{chart}", "u1", (d0, d1), zlib=True, complevel=1,
                            chunksizes=(min(lines, _ROWS), samples), fill_value=False,
                        )  # fmt: skip
                        for r0 in range(0, lines, _ROWS):
                            a = np.asarray(v[r0 : r0 + _ROWS, :], dtype=np.uint8)
                            if chart == "SIC":  # percent -> classes 0..10
                                a = sic_from_percent(a)
                            w[r0 : r0 + _ROWS, :] = a
    logger.info("wrote %s (%d scenes)", dest, len(scenes))
    return dest
