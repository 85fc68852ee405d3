"""One scene, start to finish: open, check, predict, write the products, then the manifest.

:func:`process_scene` is the unit of work the ``predict`` command (and batch/cron wrappers:
locks, skipping finished scenes, signals) calls once per input file with a model loaded once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icechart.errors import InputMissingError, OutputError

if TYPE_CHECKING:
    from icechart.model.checkpoint import LoadedModel

logger = logging.getLogger(__name__)


def scene_files(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand inputs: files as given; a directory gives its ``*_prep.nc`` files (else ``*.nc``).

    Raises
    ------
    InputMissingError
        An input does not exist, or a directory holds no scene (66).
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputMissingError(f"{p}: no such file or directory")
        if p.is_dir():
            found = sorted(p.glob("*_prep.nc")) or sorted(
                q for q in p.glob("*.nc") if not q.name.startswith((".tmp-", "autoice_"))
            )
            if not found:
                raise InputMissingError(f"{p}: directory holds no scene file (*_prep.nc or *.nc)")
            out.extend(found)
        else:
            out.append(p)
    return list(dict.fromkeys(out))


def prepare_outdir(outdir: str | Path) -> Path:
    """Create ``outdir`` if needed and check that it is writable (OutputError 73)."""
    out = Path(outdir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create output directory ({exc.strerror or exc})") from exc
    if not out.is_dir():
        raise OutputError(f"{out}: exists and is not a directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: output directory is not writable")
    return out


class _Hasher(threading.Thread):
    """sha256 of the input in the background (hashlib releases the GIL on large reads)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.digest: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from icechart.products import file_sha256

        try:
            self.digest = file_sha256(self.path)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise InputMissingError(f"{self.path}: cannot read ({self.error})")
        assert self.digest is not None
        return self.digest


def process_scene(
    path: str | Path,
    model: "LoadedModel",
    outdir: str | Path,
    *,
    formats: Iterable[str] | str | None = None,
    crs: str | int = "EPSG:3413",
    resolution: float = 200.0,
    overwrite: bool = False,
    tile_size: int | None = None,
    sieve: int | None = None,
    sar_fill: float | None = None,
    command: str | None = None,
    timings: dict[str, float] | None = None,
) -> list[Path]:
    """Predict one scene and write its products and manifest into ``outdir``.

    Parameters
    ----------
    path
        An AI4Arctic scene file.
    model
        A loaded model (:func:`icechart.infer.predict.load_model`); its device is used.
    outdir
        Output directory (created when missing).
    formats
        Comma list or iterable of ``netcdf, geotiff, shapefile, png, autoice``; default all but
        ``autoice``. (``autoice`` makes this write the netCDF; the AutoICE file itself is
        rebuilt once per run with :func:`icechart.products.autoice.write_autoice`.)
    crs, resolution
        Projected products' CRS and GeoTIFF pixel size.
    overwrite
        Replace existing products; otherwise an existing product is OutputError (73).
    tile_size
        Model pixels per tile side (default :data:`icechart.infer.predict.DEFAULT_TILE`).
    sieve
        SIGRID-3 minimum region size in model pixels.
    sar_fill
        Extra SAR fill value (see :func:`icechart.io.scene.open_scene`).
    command
        Command line recorded in the netCDF history.
    timings
        Receives seconds per stage.

    Returns
    -------
    list of Path
        Products written, then the manifest (last).

    Raises
    ------
    InputMissingError (66), BadDataError (65, also for channels the model needs and the scene
    lacks), OutputError (73), OutputIOError (74), TryAgainError (75).
    """
    from icechart.infer.predict import DEFAULT_TILE, predict_scene
    from icechart.io.scene import open_scene
    from icechart.products import manifest_path, parse_formats, product_paths, write_manifest, write_products

    tm = timings if timings is not None else {}
    fm = parse_formats(formats)
    out = prepare_outdir(outdir)
    t0 = time.perf_counter()
    scene = open_scene(path, sar_fill=sar_fill)
    tm["read"] = time.perf_counter() - t0
    try:
        targets = product_paths(scene.scene_id, model.model_id, out, fm)
        targets.append(manifest_path(scene.scene_id, model.model_id, out))
        existing = [p for p in targets if p.exists()]
        if existing and not overwrite:
            raise OutputError(
                f"{existing[0]} exists (and {len(existing) - 1} more of scene {scene.scene_id}); "
                "use --overwrite to replace"
            )
        hasher = _Hasher(scene.path)
        hasher.start()
        pred = predict_scene(scene, model, tile_size=DEFAULT_TILE if tile_size is None else tile_size)
        tm.update(pred.timings)
        sha = hasher.result()
        # An old manifest must not vouch for products being replaced.
        manifest_path(scene.scene_id, model.model_id, out).unlink(missing_ok=True)
        written = write_products(
            pred, scene, out, model=model.model_id, formats=fm, crs=crs, resolution=resolution,
            sieve=sieve, input_sha256=sha, command=command, timings=tm,
        )  # fmt: skip
        t = time.perf_counter()
        manifest = write_manifest(
            scene, out, model_id=model.model_id, model_sha256=model.sha256, products=written,
            input_sha256=sha, formats=fm,
        )  # fmt: skip
        tm["manifest"] = time.perf_counter() - t
        tm["total"] = time.perf_counter() - t0
        logger.info(
            "%s: %d products in %.1f s (model %s)", scene.scene_id, len(written), tm["total"], model.model_id
        )
        return [*written, manifest]
    finally:
        scene.close()


def summary(timings: dict[str, Any]) -> str:
    """``stage=1.23s`` pairs for a log line."""
    return " ".join(f"{k}={v:.2f}s" for k, v in timings.items() if isinstance(v, float))
