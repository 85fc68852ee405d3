"""The AutoICE submission file ``autoice_{model}.nc`` (contract.md "Products").

Variables ``{id}_SIC``, ``{id}_SOD``, ``{id}_FLOE`` (uint8 classes, SIC 0..10) on dims
``{id}_{chart}_dim0`` x ``{id}_{chart}_dim1``, zlib level 1, no coordinates: the layout the
AutoICE challenge's scoring expects.

**Classes everywhere, never 255.** The challenge scores the raw values at every pixel its
(hidden) reference labels, so a 255 where icechart masks a pixel that the reference labels
wrecks the score (one such pixel in 10^4 takes SIC R^2 from 93.9 to 31.5). The file therefore
holds the network's decision at *every* pixel of the SAR geometry, as the challenge's reference
code does. Where icechart masks (``status_flag`` of the netCDF product: land, invalid SAR in
either polarisation, outside the swath), that decision is what the network made of its inputs
there: the SAR channels are filled with 0 after normalisation (the training mean;
:func:`icechart.features.build_features`, or the model's ``sar_fill``), AMSR2/ERA5 and the
other channels are as read, and the 800 m outputs are upsampled bilinearly as everywhere else.
The charts of the netCDF/GeoTIFF products stay masked (255) there; only this file is unmasked.

Each scene predicted with ``--formats autoice`` gets a one-scene part,
``{id}_{model}_autoice.nc`` (the same layout: itself a valid submission), listed in its
manifest. ``autoice_{model}.nc`` is rebuilt from the parts of every *complete* scene of the model
in the output directory (a scene is complete when its manifest exists; skipped scenes count:
:func:`icechart.ops.manifest.complete_scenes`), copying by row blocks, and replaced atomically.
The file records the sha256 of every part (global attribute ``icechart_sources``); when the
complete scenes and their parts are the same as recorded, the rebuild is skipped, so a cron run
with nothing new does not copy every scene again.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from icechart.atomic import atomic_path
from icechart.classes import CHARTS, FILL
from icechart.errors import BadDataError, InternalError

logger = logging.getLogger(__name__)

_ROWS = 1000
SOURCES_ATTR = "icechart_sources"


def autoice_name(model_id: str) -> str:
    return f"autoice_{model_id}.nc"


def part_name(scene_id: str, model_id: str) -> str:
    """The one-scene part of the AutoICE file, a per-scene product."""
    return f"{scene_id}_{model_id}_autoice.nc"


def _create_chart(out: Any, scene_id: str, chart: str, shape: tuple[int, int]) -> Any:
    lines, samples = shape
    d0, d1 = f"{scene_id}_{chart}_dim0", f"{scene_id}_{chart}_dim1"
    out.createDimension(d0, lines)
    out.createDimension(d1, samples)
    return out.createVariable(
        f"{scene_id}_{chart}", "u1", (d0, d1), zlib=True, complevel=1,
        chunksizes=(min(lines, _ROWS), samples), fill_value=False,
    )  # fmt: skip


class PartWriter:
    """Write one scene's part (``{id}_{model}_autoice.nc``) from the unmasked decisions of the
    row blocks (:attr:`icechart.infer.predict.Block.decision`, SIC in classes)."""

    def __init__(self, path: str | Path, *, scene_id: str, model_id: str, shape: tuple[int, int]) -> None:
        import netCDF4

        self.path = Path(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.ds = netCDF4.Dataset(self.path, "w", format="NETCDF4")
        self.ds.setncatts({
            "model_id": model_id,
            "scene_id": scene_id,
            "comment": "AutoICE submission part (one scene); SIC in classes 0..10; the network's "
                       "decision at every pixel, masked ones included",
        })  # fmt: skip
        self.vars = {c: _create_chart(self.ds, scene_id, c, self.shape) for c in CHARTS}
        self.rows_written = 0

    def write(self, rows: slice, decision: dict[str, np.ndarray]) -> None:
        for chart in CHARTS:
            a = decision[chart]
            if a.dtype != np.uint8 or (a == FILL).any():
                raise InternalError(f"{self.path}: {chart} decision holds 255 or is not uint8")
            self.vars[chart][rows, :] = a
        self.rows_written += rows.stop - rows.start

    def close(self) -> None:
        if self.ds.isopen():
            self.ds.close()
        if self.rows_written != self.shape[0]:
            raise InternalError(f"{self.path}: {self.rows_written} of {self.shape[0]} lines written")

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ds.isopen():
            self.ds.close()


def autoice_sources(outdir: Path, model_id: str) -> list[tuple[str, Path, str | None]]:
    """``(scene id, part path, its sha256 from the manifest)`` of every complete scene of
    ``model_id`` in ``outdir`` that has an AutoICE part, sorted by scene id."""
    from icechart.ops.manifest import complete_scenes as complete_manifests

    found: list[tuple[str, Path, str | None]] = []
    for info in complete_manifests(outdir, model_id):
        sid = str(info.get("scene_id") or "")
        name = part_name(sid, model_id)
        rec = next((f for f in info.get("files") or [] if f.get("name") == name), None)
        nc = Path(outdir) / name
        if not sid or rec is None or not nc.is_file():
            logger.warning(
                "%s: complete but without its AutoICE part %s (predicted without --formats "
                "autoice?); left out of the AutoICE file", sid or "?", name,
            )  # fmt: skip
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
                "comment": "AutoICE submission; SIC in classes 0..10; the network's decision at "
                           "every pixel (no 255: see icechart.products.autoice)",
                SOURCES_ATTR: sources,
            })  # fmt: skip
            for sid, path, _ in scenes:
                try:
                    src = netCDF4.Dataset(path)
                except OSError as exc:
                    raise BadDataError(f"{path}: cannot read product for the AutoICE file ({exc})") from exc
                with src:
                    for chart in CHARTS:
                        if f"{sid}_{chart}" not in src.variables:
                            raise BadDataError(f"{path}: lacks variable `{sid}_{chart}`; delete it and predict the scene again")
                        v = src.variables[f"{sid}_{chart}"]
                        v.set_auto_maskandscale(False)
                        lines, samples = v.shape
                        w = _create_chart(out, sid, chart, (int(lines), int(samples)))
                        for r0 in range(0, v.shape[0], _ROWS):
                            w[r0 : r0 + _ROWS, :] = np.asarray(v[r0 : r0 + _ROWS, :], dtype=np.uint8)
    logger.info("wrote %s (%d scenes)", dest, len(scenes))
    return dest


class AutoicePartSink:
    """``{id}_{model}_autoice.nc``: the scene's part of the AutoICE file, from the unmasked
    decisions of the row blocks (a sink of :data:`icechart.products.REGISTRY`).

    Every netCDF-C/HDF5 call holds the HDF5 lock: the netCDF sink writes on a worker thread
    at the same time, and HDF5 is not thread-safe (unlocked, the two crash the process)."""

    stage = "autoice"

    def __init__(self, ctx: Any) -> None:
        from icechart.products.sinks import hdf5_lock

        self.lock = hdf5_lock()
        self.dest = Path(ctx.outdir) / part_name(ctx.scene.scene_id, ctx.model_id)
        tmp = ctx.temporary(self.dest)
        with self.lock:
            self.part = PartWriter(tmp, scene_id=ctx.scene.scene_id, model_id=ctx.model_id, shape=ctx.prediction.shape)
        ctx.stack.callback(self._abandon)

    def _abandon(self) -> None:
        with self.lock:
            self.part.__exit__(None, None, None)

    def add(self, block: Any) -> None:
        if block.decision is None:
            raise InternalError(f"{self.dest}: row block without the unmasked decisions")
        with self.lock:
            self.part.write(block.rows, block.decision)

    def finish(self) -> list[Path]:
        with self.lock:
            self.part.close()
        return [self.dest]
