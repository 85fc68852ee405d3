"""The AutoICE submission file ``autoice_{model}.nc`` (contract.md "Products").

Variables ``{id}_SIC``, ``{id}_SOD``, ``{id}_FLOE`` (uint8 classes, SIC 0..10, 255 masked) on
dims ``{id}_{chart}_dim0`` x ``{id}_{chart}_dim1``, zlib level 1, no coordinates: the layout the
AutoICE challenge's scoring expects. It is rebuilt from every *complete* scene of the model in
the output directory (a scene is complete when its manifest exists; skipped scenes count),
copying each scene's netCDF by row blocks, and replaced atomically.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from icechart.atomic import atomic_path
from icechart.classes import CHARTS, FILL
from icechart.errors import BadDataError

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
_ROWS = 1000


def autoice_name(model_id: str) -> str:
    return f"autoice_{model_id}.nc"


def complete_scenes(outdir: Path, model_id: str) -> list[tuple[str, Path]]:
    """``(scene id, netCDF path)`` of every complete scene of ``model_id`` in ``outdir``, by id."""
    found: dict[str, Path] = {}
    for manifest in sorted(Path(outdir).glob(f"*_{model_id}{MANIFEST_SUFFIX}")):
        try:
            info = json.loads(manifest.read_text())
        except (OSError, ValueError):
            logger.warning("%s: unreadable manifest, scene left out of the AutoICE file", manifest)
            continue
        if info.get("model_id") != model_id:
            continue
        sid = str(info.get("scene_id", ""))
        nc = Path(outdir) / f"{sid}_{model_id}.nc"
        if sid and nc.is_file():
            found[sid] = nc
    return sorted(found.items())


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
    scenes = complete_scenes(outdir, model_id)
    if not scenes:
        logger.warning("no complete scene of model %s in %s: no AutoICE file written", model_id, outdir)
        return None
    dest = outdir / autoice_name(model_id)
    with atomic_path(dest) as tmp:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as out:
            out.setncatts({"model_id": model_id, "comment": "AutoICE submission; SIC in classes 0..10"})
            for sid, path in scenes:
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
                                a = np.where(a == FILL, FILL, a // 10).astype(np.uint8)
                            w[r0 : r0 + _ROWS, :] = a
    logger.info("wrote %s (%d scenes)", dest, len(scenes))
    return dest
