"""One scene, start to finish: open, check, predict, write the products.

:func:`process_scene` is the unit of work the ``predict`` command calls once per input file
with a model loaded once. Everything around it is :mod:`icechart.ops`: expanding inputs,
skipping finished scenes and refusing to replace different ones, the manifest (written last),
removing the files of a failed attempt, locks, signals and the per-scene summary lines
(:func:`icechart.ops.batch.run_guarded` with this function as the per-scene callable).
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icechart.errors import DataWarning, InputMissingError

if TYPE_CHECKING:
    from icechart.model.checkpoint import LoadedModel

logger = logging.getLogger(__name__)


MIN_VALID_FRACTION = 0.5
"""Below this fraction of valid SAR pixels a scene gets a :class:`~icechart.errors.DataWarning`
(logged; exit 65 with ``--strict``): the charts then rest on little data."""


class _Hasher(threading.Thread):
    """sha256 of the input in the background (hashlib releases the GIL on large reads)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.digest: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from icechart.hashing import sha256_file

        try:
            self.digest = sha256_file(self.path)
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
    tile_size: int | None = None,
    tta: bool = False,
    sieve: int | None = None,
    sar_fill: float | None = None,
    command: str | None = None,
    timings: dict[str, float] | None = None,
) -> list[Path]:
    """Predict one scene and write its products into ``outdir``.

    Every file is written under a temporary name and renamed when all of the scene's products
    are done; existing files of the same names are replaced. The manifest, the rerun check and
    the refusal to replace a different product belong to the caller
    (:func:`icechart.ops.batch.run_batch`), which writes the manifest after this returns.

    Parameters
    ----------
    path
        An AI4Arctic scene file.
    model
        A loaded model (:func:`icechart.infer.predict.load_model`); its device is used.
    outdir
        Output directory (must exist; :func:`icechart.ops.batch.prepare_outdir` makes it).
    formats
        Comma list or iterable of ``netcdf, geotiff, shapefile, png, autoice``; default all but
        ``autoice``. (``autoice`` makes this write the netCDF and the scene's unmasked AutoICE part
        ``{id}_{model}_autoice.nc``; the AutoICE file itself is
        rebuilt once per run with :func:`icechart.products.autoice.write_autoice`.)
    crs, resolution
        Projected products' CRS and GeoTIFF pixel size.
    tile_size
        Model pixels per tile side (default :data:`icechart.infer.predict.DEFAULT_TILE`).
    tta
        Average over flips (test-time augmentation, :func:`icechart.infer.predict.predict_scene`).
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
        The products written.

    Warns
    -----
    DataWarning
        Less than :data:`MIN_VALID_FRACTION` of the SAR is valid.

    Raises
    ------
    InputMissingError (66), BadDataError (65, also for channels the model needs and the scene
    lacks), OutputError (73), OutputIOError (74), TryAgainError (75).
    """
    from icechart.infer.predict import DEFAULT_TILE, predict_scene
    from icechart.io.scene import open_scene
    from icechart.products import parse_formats, write_products

    tm = timings if timings is not None else {}
    fm = parse_formats(formats)
    out = Path(outdir)
    t0 = time.perf_counter()
    scene = open_scene(path, sar_fill=sar_fill)
    tm["read"] = time.perf_counter() - t0
    try:
        if scene.valid_fraction < MIN_VALID_FRACTION:
            warnings.warn(
                f"{scene.path.name}: only {scene.valid_fraction:.0%} of the SAR is valid "
                "(NaN or fill elsewhere); the charts rest on little data",
                DataWarning,
                stacklevel=2,
            )
        hasher = _Hasher(scene.path)
        hasher.start()
        pred = predict_scene(scene, model, tile_size=DEFAULT_TILE if tile_size is None else tile_size, tta=tta)
        tm.update(pred.timings)
        sha = hasher.result()
        written = write_products(
            pred, scene, out, model=model.model_id, formats=fm, crs=crs, resolution=resolution,
            sieve=sieve, input_sha256=sha, command=command, timings=tm,
        )  # fmt: skip
        tm["total"] = time.perf_counter() - t0
        logger.debug(
            "%s: %d products in %.1f s (model %s): %s",
            scene.scene_id, len(written), tm["total"], model.model_id, summary(tm),
        )  # fmt: skip
        return written
    finally:
        scene.close()


def product_options(
    formats: Iterable[str] | str | None,
    *,
    crs: str,
    resolution: float,
    sieve: int | None,
    tile_size: int | None,
    tta: bool,
) -> dict[str, Any]:
    """The options a finished scene's products are compared on when a run meets them again.

    Only what changes the files counts: the per-scene formats (``autoice``: the scene's
    AutoICE part), the CRS and resolution only for projected products, the sieve only for the
    shapefile; defaults are filled in so ``--sieve 16`` equals no ``--sieve``. The device
    never counts.
    """
    from icechart.infer.predict import DEFAULT_TILE
    from icechart.products import FORMATS, parse_formats
    from icechart.products.sigrid3 import DEFAULT_SIEVE

    fm = parse_formats(formats)
    per_scene = [f for f in FORMATS if f in fm]
    opts: dict[str, Any] = {
        "formats": per_scene,
        "tile_size": DEFAULT_TILE if tile_size is None else int(tile_size),
        "tta": bool(tta),
    }
    if {"geotiff", "shapefile", "uncertainty"} & set(per_scene):
        opts["crs"] = crs
    if {"geotiff", "uncertainty"} & set(per_scene):
        opts["resolution"] = float(resolution)
    if "shapefile" in per_scene:
        opts["sieve"] = DEFAULT_SIEVE if sieve is None else int(sieve)
    return opts


def summary(timings: dict[str, Any]) -> str:
    """``stage=1.23s`` pairs for a log line."""
    return " ".join(f"{k}={v:.2f}s" for k, v in timings.items() if isinstance(v, float))
