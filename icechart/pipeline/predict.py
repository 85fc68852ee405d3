"""Prediction as library calls: one scene in memory, one scene to files, the cron-safe batch.

* :func:`predict` (``icechart.predict``): the charts of one scene as an xarray Dataset;
* :func:`process_scene`: one scene, start to finish (open, check, predict, write the products);
* :func:`predict_batch` (``icechart.predict_batch``): what ``icechart predict`` runs, callable
  from Python: :func:`process_scene` per input with the model loaded once, inside
  :mod:`icechart.ops` (expanding inputs, skipping finished scenes and refusing to replace
  different ones, the manifest written last, removing the files of a failed attempt, the lock,
  SIGINT/SIGTERM and the per-scene summary lines).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icechart.errors import DataWarning, InputMissingError

from icechart.infer.forward import DEFAULT_TILE
from icechart.products import DEFAULT_CRS, DEFAULT_FORMATS, DEFAULT_RESOLUTION

if TYPE_CHECKING:
    import xarray as xr

    from icechart.io.scene import Scene
    from icechart.model.checkpoint import LoadedModel
    from icechart.model.ensemble import EnsembleModel
    from icechart.ops.batch import BatchResult

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
        self.stat: os.stat_result | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from icechart.hashing import sha256_file

        try:
            self.stat = os.stat(self.path)
            self.digest = sha256_file(self.path)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self) -> str:
        self.join()
        if self.error is not None:
            raise InputMissingError(f"{self.path}: cannot read ({self.error})")
        assert self.digest is not None
        return self.digest


def predict(
    scene_or_path: "Scene | str | Path",
    model: "LoadedModel | EnsembleModel | str | Path | None" = None,
    *,
    device: str = "cpu",
    tile_size: int | None = DEFAULT_TILE,
    tta: bool = False,
) -> "xr.Dataset":
    """The charts of one scene as an xarray Dataset at SAR geometry (for notebooks).

    Parameters
    ----------
    scene_or_path
        An opened scene or the path of an AI4Arctic file (opened with the model's SAR fill).
    model
        A loaded model, a registry id, a checkpoint file or directory; None = the default
        shipped model.
    device
        ``auto``, ``cpu`` or ``cuda``.
    tile_size, tta
        See :func:`icechart.infer.predict.predict_scene`.

    Returns
    -------
    xarray.Dataset
        :func:`icechart.products.dataset.prediction_dataset`: the netCDF product's variables
        and attributes, in memory.

    Example
    -------
    >>> ds = icechart.predict("20180707T113313_cis_prep.nc")  # doctest: +SKIP
    >>> ds.SIC.plot()  # doctest: +SKIP
    """
    from icechart.infer.predict import predict_scene
    from icechart.io.scene import Scene, open_scene
    from icechart.model.load import load_model
    from icechart.products.dataset import prediction_dataset

    lm = load_model(model, device=device)
    if isinstance(scene_or_path, Scene):
        return prediction_dataset(predict_scene(scene_or_path, lm, tile_size=tile_size, tta=tta), scene_or_path)
    with open_scene(scene_or_path, sar_fill=lm.contract.sar_fill) as scene:
        return prediction_dataset(predict_scene(scene, lm, tile_size=tile_size, tta=tta), scene)


def process_scene(
    path: str | Path,
    model: "LoadedModel | EnsembleModel",
    outdir: str | Path,
    *,
    formats: Iterable[str] | str | None = None,
    crs: str | int = DEFAULT_CRS,
    resolution: float = DEFAULT_RESOLUTION,
    tile_size: int | None = None,
    tta: bool = False,
    sieve: int | None = None,
    min_area: float | None = None,
    metadata: dict[str, str] | None = None,
    sar_fill: float | None = None,
    command: str | None = None,
    timings: dict[str, float] | None = None,
    input_digest: dict[str, Any] | None = None,
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
        A loaded model (:func:`icechart.model.load.load_model`); its device is used.
    outdir
        Output directory (must exist; :func:`icechart.ops.batch.prepare_outdir` makes it).
    formats
        Comma list or iterable of names from :data:`icechart.products.REGISTRY`; default the
        default formats. A run-level format (``autoice``) makes this write what it needs (the
        netCDF) and the scene's unmasked AutoICE part ``{id}_{model}_autoice.nc``; its own
        file is rebuilt once per run (:func:`predict_batch`, :func:`icechart.products.write_run_level`).
    crs, resolution
        Projected products' CRS and GeoTIFF pixel size.
    tile_size
        Model pixels per tile side (default :data:`icechart.infer.forward.DEFAULT_TILE`).
    tta
        Average over flips (test-time augmentation, :func:`icechart.infer.predict.predict_scene`).
    sieve
        SIGRID-3 generalisation scale in model pixels (overrides ``min_area``).
    min_area
        SIGRID-3 generalisation scale in km² (default
        :data:`icechart.products.sigrid3.DEFAULT_MIN_AREA_KM2`).
    metadata
        The producer's netCDF global attributes (institution, creator_*, publisher_*).
    sar_fill
        Extra SAR fill value (see :func:`icechart.io.scene.open_scene`); default the model's
        (the one it was trained with).
    command
        Command line recorded in the netCDF history.
    timings
        Receives seconds per stage.
    input_digest
        Receives ``size``, ``mtime_ns`` and ``sha256`` of the input as hashed for the netCDF
        (the manifest reuses them instead of hashing the file again).

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
    from icechart.infer.predict import predict_scene
    from icechart.io.scene import open_scene
    from icechart.products import parse_formats, write_products

    tm = timings if timings is not None else {}
    fm = parse_formats(formats)
    out = Path(outdir)
    t0 = time.perf_counter()
    scene = open_scene(path, sar_fill=model.contract.sar_fill if sar_fill is None else sar_fill)
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
        if input_digest is not None and hasher.stat is not None:
            input_digest.update(size=hasher.stat.st_size, mtime_ns=hasher.stat.st_mtime_ns, sha256=sha)
        written = write_products(
            pred, scene, out, model=model.model_id, formats=fm, crs=crs, resolution=resolution,
            sieve=sieve, input_sha256=sha, command=command, timings=tm,
            min_area=min_area, metadata=metadata,
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
    min_area: float | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The options a finished scene's products are compared on when a run meets them again:
    the products' :func:`icechart.products.fingerprint` (per-scene formats and the options
    those formats use) plus the tile size and TTA. The device never counts."""
    from icechart.products import fingerprint

    opts = fingerprint(formats, crs=crs, resolution=resolution, sieve=sieve, min_area=min_area, metadata=metadata)
    opts["tile_size"] = DEFAULT_TILE if tile_size is None else int(tile_size)
    opts["tta"] = bool(tta)
    return opts


def summary(timings: dict[str, Any]) -> str:
    """``stage=1.23s`` pairs for a log line."""
    return " ".join(f"{k}={v:.2f}s" for k, v in timings.items() if isinstance(v, float))


def predict_batch(
    inputs: Iterable[str | Path],
    outdir: str | Path,
    *,
    model: "str | Path | LoadedModel | EnsembleModel | None" = None,
    formats: Iterable[str] | str | None = DEFAULT_FORMATS,
    crs: str | int = DEFAULT_CRS,
    resolution: float = DEFAULT_RESOLUTION,
    sieve: int | None = None,
    min_area: float | None = None,
    metadata: dict[str, str] | None = None,
    tile_size: int | None = None,
    tta: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    lock: str | Path | None = None,
    lock_wait: float = 0.0,
    strict: bool = False,
    progress: bool | None = False,
    verify: bool = False,
    shard: str | None = None,
    command: str | None = None,
) -> "BatchResult":
    """Predict every scene of ``inputs`` into ``outdir``: what ``icechart predict`` runs.

    Parameters
    ----------
    inputs
        Scene files and directories.
    outdir
        OUT (created if missing).
    model
        As for :func:`icechart.model.load.load_model` (None: the default shipped model); loaded
        once, under the lock, after OUT is made.
    formats, crs, resolution, sieve, min_area, metadata, tile_size, tta
        As for :func:`process_scene`; ``autoice`` rebuilds ``autoice_{model}.nc`` from every
        complete scene in OUT after the batch.
    device
        ``auto``, ``cpu`` or ``cuda`` (69 when unavailable).
    overwrite, strict
        See :func:`icechart.ops.batch.run_batch`.
    lock, lock_wait
        Hold this lock file for the run (busy: 75 at once, or after ``lock_wait`` seconds).
    progress
        "scene k/n" lines on stderr; None: when stderr is a terminal.
    shard
        ``K/N`` (this run does the K-th of N stable parts of the scenes, by scene id) or
        ``auto`` (from Slurm array or Kubernetes Indexed Job variables); None: every scene.
        The last shard to finish merges the AutoICE file (:mod:`icechart.ops.shard`).
    verify
        Check the products of a skipped scene by their manifest sha256 (not only size and
        time); a missing or damaged product makes the scene redo.
    command
        Recorded in the netCDF history (default ``sys.argv``).

    Returns
    -------
    BatchResult
        Every scene's result (all succeeded or were skipped).

    Raises
    ------
    BatchError
        Some scene failed; its exit code is the first failing scene's (the others were done).
    ConfigError
        A bad format or CRS, before any scene (78).
    ModelError, DeviceError, TryAgainError, OutputError
        Model or device unavailable (69), lock busy (75), OUT unusable (73).
    """
    from icechart.model.load import load_model, resolve_device
    from icechart.ops.batch import SceneOutput, run_guarded, want_progress
    from icechart.ops.shard import finish_run, select
    from icechart.products import parse_formats, write_run_level
    from icechart.products.warp import parse_crs

    fm = parse_formats(formats)
    target_crs = parse_crs(crs)  # a bad CRS is a configuration error (78), before any scene
    options = product_options(
        fm, crs=target_crs.to_string(), resolution=resolution, sieve=sieve, tile_size=tile_size, tta=tta,
        min_area=min_area, metadata=metadata,
    )  # fmt: skip
    state: dict[str, Any] = {}

    def setup() -> dict[str, Any]:
        dev = resolve_device(device)
        m = state["model"] = load_model(model, device=dev)
        return {"model_id": m.model_id, "model_sha256": getattr(m, "sha256", None), "device": dev}

    def process(path: Path) -> SceneOutput:
        timings: dict[str, float] = {}
        digest: dict[str, Any] = {}
        files = process_scene(
            path, state["model"], outdir, formats=fm, crs=crs, resolution=resolution,
            tile_size=tile_size, sieve=sieve, command=command, timings=timings, tta=tta,
            input_digest=digest, min_area=min_area, metadata=metadata,
        )  # fmt: skip
        return SceneOutput(
            files, timings={k: v for k, v in timings.items() if isinstance(v, float)}, input_digest=digest or None
        )

    def merge() -> Path | None:
        written = write_run_level(fm, outdir, state["model"].model_id)
        return written[0] if written else None

    part = select(inputs, shard)  # None without a shard

    def finish(result: "BatchResult") -> None:
        finish_run(part, outdir=outdir, model=state["model"], options=options, result=result, merge=merge)

    return run_guarded(
        part.paths if part is not None else list(inputs), process, lock=lock, lock_wait=lock_wait, setup=setup, finish=finish,
        outdir=outdir, options=options, overwrite=overwrite, strict=strict,
        progress=want_progress(progress), verify=verify,
    )  # fmt: skip
