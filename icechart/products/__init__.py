"""Ice-chart products: a registry of formats, each a streaming sink of full-resolution row blocks.

:data:`FORMATS` lists every format once: its name, what it writes (file names from the scene id
and the model id, contract.md "Products"), which options change its files (the rerun
fingerprint, :func:`fingerprint`), its help text (``--formats``, man page) and its sink
(:mod:`icechart.products.sinks` for the built-in ones). :func:`write_products` makes one sink per
format and feeds them all from one pass over the prediction's row blocks
(:meth:`icechart.infer.predict.Prediction.blocks`): the netCDF gets each block as it comes, the
GeoTIFF rasters are filled through a precomputed nearest-pixel gather, the quicklooks keep every
n-th line, the SIGRID-3 sink keeps the masks at the model's resolution. Peak memory is therefore
a few row blocks plus the projected rasters, whatever the scene size. Every file is written
under a temporary name and renamed only when all products of the scene are complete
(:func:`icechart.atomic.atomic_path`); on any error none is left.

Adding a format: a module with its writer and a sink class (``__init__(ctx)``, ``add(block)``,
``finish() -> [paths]``, a ``stage`` name for the timings) and one :func:`register` call.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from icechart._version import __version__
from icechart.atomic import atomic_path
from icechart.classes import CHARTS
from icechart.errors import ConfigError
from icechart.products.sigrid3 import SHAPEFILE_PARTS

if TYPE_CHECKING:
    from icechart.infer.predict import Prediction
    from icechart.io.scene import Scene
    from icechart.products.warp import Gather, InverseGeolocation, TargetGrid

logger = logging.getLogger(__name__)

DEFAULT_CRS = "EPSG:3413"
DEFAULT_RESOLUTION = 200.0
SAR_PIXEL = 80.0
"""SAR pixel spacing of AI4Arctic scenes (m); the model grid is ``factor`` times that."""

UNCERTAINTY_LAYERS = ("SOD_confidence", "FLOE_confidence", "SIC_standard_error")
"""GeoTIFFs of the ``uncertainty`` format (SIC_standard_error only from ensembles)."""


def uncertainty_layers(sic_standard_error: bool) -> list[str]:
    """The ``uncertainty`` format's layers (the SIC standard error only from an ensemble)."""
    return list(UNCERTAINTY_LAYERS[: 3 if sic_standard_error else 2])


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Format:
    """One product format.

    Attributes
    ----------
    name
        The ``--formats`` name.
    help
        One phrase for ``--formats --help`` and the man page.
    suffixes
        ``(stem, sic_standard_error) -> file name suffixes`` after ``{scene_id}_{model_id}``.
    sink
        ``"module:Class"`` of its sink (imported only when the format is written); None for a
        run-level format.
    options
        Product options that change its files (``crs``, ``resolution``, ``sieve``): they join
        the rerun fingerprint only when a format that uses them is asked for.
    default
        Written without ``--formats``.
    needs
        Formats it implies (``autoice`` is built from the netCDF products).
    run_writer
        ``"module:function"`` called as ``f(outdir, model_id)`` once per run (run-level formats).
    """

    name: str
    help: str
    suffixes: Callable[[bool], list[str]] = field(default=lambda se: [])
    sink: str | None = None
    options: tuple[str, ...] = ()
    default: bool = False
    needs: tuple[str, ...] = ()
    run_writer: str | None = None

    @property
    def per_scene(self) -> bool:
        return self.sink is not None


REGISTRY: dict[str, Format] = {}
"""Every format by name, in product order."""


def register(fmt: Format) -> Format:
    """Add ``fmt`` to :data:`REGISTRY` (replacing one of the same name)."""
    REGISTRY[fmt.name] = fmt
    return fmt


register(Format(
    "netcdf", "CF netCDF at SAR geometry ({id}_{model}.nc)",
    lambda se: [".nc"], "icechart.products.sinks:NetcdfSink", default=True,
))  # fmt: skip
register(Format(
    "geotiff", "a GeoTIFF per chart on the projected grid (COG; category names in .tif.aux.xml, a QGIS style in .qml)",
    lambda se: [s for c in CHARTS for s in (f"_{c}.tif", f"_{c}.tif.aux.xml", f"_{c}.qml")],
    "icechart.products.sinks:GeotiffSink",
    options=("crs", "resolution"), default=True,
))  # fmt: skip
register(Format(
    "shapefile", "SIGRID-3 polygons",
    lambda se: [f"_sigrid3{ext}" for ext in SHAPEFILE_PARTS], "icechart.products.sinks:ShapefileSink",
    options=("crs", "sieve"), default=True,
))  # fmt: skip
register(Format(
    "png", "quicklooks", lambda se: [f"_{c}.png" for c in CHARTS], "icechart.products.sinks:QuicklookSink",
    default=True,
))  # fmt: skip
register(Format(
    "autoice", "the AutoICE submission file of all complete scenes in OUT, from each scene's unmasked part {id}_{model}_autoice.nc",
    lambda se: ["_autoice.nc"], "icechart.products.autoice:AutoicePartSink", needs=("netcdf",),
    run_writer="icechart.products.autoice:write_autoice",
))  # fmt: skip
register(Format(
    "uncertainty", "as --uncertainty-tif",
    lambda se: [s for n in uncertainty_layers(se) for s in (f"_{n}.tif", f"_{n}.qml")],
    "icechart.products.sinks:UncertaintySink",
    options=("crs", "resolution"),
))  # fmt: skip
register(Format(
    "geopackage", "the SIGRID-3 chart in the product CRS and in EPSG:4326 split at 180 degrees, styled",
    lambda se: ["_sigrid3.gpkg"], "icechart.products.sinks:GeopackageSink", options=("crs", "sieve"),
))  # fmt: skip


def __getattr__(name: str) -> Any:
    # FORMATS and DEFAULT_FORMATS follow the registry (a format registered later is listed too).
    if name == "FORMATS":
        return tuple(REGISTRY)
    if name == "DEFAULT_FORMATS":
        return tuple(f.name for f in REGISTRY.values() if f.default)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def formats_help() -> str:
    """``--formats`` help: every format with its phrase, from the registry."""
    names = ", ".join(REGISTRY)
    notes = "; ".join(f"{f.name}: {f.help}" for f in REGISTRY.values() if not f.default)
    return f"Comma list of {names} ({notes})."


def _resolve(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validate a comma list / iterable of formats; ``all`` is every format; a format's
    ``needs`` are added (``autoice`` implies ``netcdf``, its source).

    Raises
    ------
    ConfigError
        An unknown format name (78).
    """
    known = tuple(REGISTRY)
    if formats is None:
        return tuple(f.name for f in REGISTRY.values() if f.default)
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in (s.strip().lower() for s in items):
        if not f:
            continue
        if f == "all":
            out.extend(known)
            continue
        if f not in REGISTRY:
            raise ConfigError(f"unknown format {f!r}; choose from {', '.join(known)}")
        out.append(f)
    for f in list(out):
        out.extend(n for n in REGISTRY[f].needs if n not in out)
    if not out:
        raise ConfigError(f"no output format given; choose from {', '.join(known)}")
    return tuple(dict.fromkeys(out))


def product_paths(
    scene_id: str,
    model_id: str,
    outdir: str | Path,
    formats: Iterable[str],
    *,
    sic_standard_error: bool = False,
) -> list[Path]:
    """The files ``write_products`` creates for ``formats`` (names from contract.md), in
    registry order.

    ``uncertainty`` adds ``{id}_{model}_{SOD|FLOE}_confidence.tif`` and, when
    ``sic_standard_error`` (an ensemble), ``{id}_{model}_SIC_standard_error.tif``.
    """
    out = Path(outdir)
    stem = f"{scene_id}_{model_id}"
    fm = set(formats)
    return [out / f"{stem}{suffix}" for f in REGISTRY.values() if f.name in fm for suffix in f.suffixes(sic_standard_error)]


def fingerprint(
    formats: Iterable[str] | str | None,
    *,
    crs: str,
    resolution: float,
    sieve: int | None,
    min_area: float | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The product options a finished scene's files depend on (compared when a rerun meets
    them): the per-scene formats, and ``crs``/``resolution``/``sieve`` only when a format that
    uses them is asked for (defaults filled in: the generalisation scale in model pixels, so
    ``--sieve 40`` equals no ``--sieve`` and ``--min-area 25``); the producer's attributes
    only for the netCDF and when set."""
    from icechart.products.sigrid3 import MODEL_PIXEL_M, generalisation_scale

    fm = parse_formats(formats)
    per_scene = [f.name for f in REGISTRY.values() if f.name in fm and f.per_scene]
    used = {o for n in per_scene for o in REGISTRY[n].options}
    opts: dict[str, Any] = {"formats": per_scene}
    values = {
        "crs": crs,
        "resolution": float(resolution),
        "sieve": generalisation_scale(sieve, min_area, MODEL_PIXEL_M),
    }
    for key in ("crs", "resolution", "sieve"):
        if key in used:
            opts[key] = values[key]
    if metadata and "netcdf" in per_scene:
        opts["metadata"] = dict(sorted(metadata.items()))
    return opts


def write_run_level(formats: Iterable[str], outdir: str | Path, model_id: str) -> list[Path]:
    """Write the run-level formats among ``formats`` (e.g. the AutoICE file) from OUT; the
    files written (a writer with nothing to collect writes none)."""
    written: list[Path] = []
    for name in parse_formats(formats):
        ref = REGISTRY[name].run_writer
        if ref is not None:
            path = _resolve(ref)(outdir, model_id)
            if path is not None:
                written.append(Path(path))
    return written


# ---------------------------------------------------------------------------------------------
# sinks
# ---------------------------------------------------------------------------------------------
@dataclass
class ProductBlock:
    """One row block for the sinks.

    ``charts``: uint8 classes (SIC in classes 0..10), 255 masked; ``confidence``: uint8 percent;
    ``status``: ``status_flag`` bits; ``arrays``: the product variables of the netCDF (SIC in
    percent, ``SOD_confidence``, ..., ``SIC_standard_error`` from an ensemble).
    """

    rows: slice
    charts: dict[str, np.ndarray]
    confidence: dict[str, np.ndarray]
    status: np.ndarray
    arrays: dict[str, np.ndarray]
    decision: dict[str, np.ndarray] | None = None


class Sink(Protocol):
    """What a format's sink provides (see the module docstring)."""

    stage: str

    def add(self, block: ProductBlock) -> None: ...

    def finish(self) -> list[Path]: ...


BLOCK_PIXELS = 2_500_000
"""Full-resolution pixels per row block (500 lines of a 5000-sample scene).

Each block passes through a few dozen work arrays (masks, bilinear weights, lat/lon, the
upsampled charts), so the block's *pixel count*, not its line count, sets the memory of the
product pass: wider scenes get fewer lines per block and the pass stays flat in memory."""


def _block_rows(factor: int, samples: int = 5000, target: int = 500) -> int:
    """Lines per row block: at most ``target``, and at most :data:`BLOCK_PIXELS` pixels, in
    whole model cells (a multiple of ``factor``)."""
    rows = min(target, BLOCK_PIXELS // max(int(samples), 1))
    return factor * max(1, round(rows / factor))


@dataclass
class SinkContext:
    """Everything a sink may need, with the costly shared pieces built once on first use
    (:meth:`inverse`, :meth:`grid`, :meth:`gather`) and released after the last block."""

    prediction: "Prediction"
    scene: "Scene"
    outdir: Path
    model_id: str
    stack: ExitStack
    crs: Any
    resolution: float
    sieve: int | None
    simplify: float | None
    min_area: float | None
    metadata: dict[str, str]
    complevel: int
    input_sha256: str | None
    command: str | None
    block_rows: int
    _shared: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def stem(self) -> str:
        return f"{self.scene.scene_id}_{self.model_id}"

    def temporary(self, dest: Path) -> Path:
        """A temporary name for ``dest``, renamed onto it when the scene's products are done."""
        with self._lock:  # sinks finish on parallel threads
            return self.stack.enter_context(atomic_path(dest))

    def inverse(self) -> "InverseGeolocation":
        if "inverse" not in self._shared:
            from icechart.products.warp import InverseGeolocation

            self._shared["inverse"] = InverseGeolocation(self.scene, *self.prediction.centres(), self.crs)
        return self._shared["inverse"]

    def grid(self) -> "TargetGrid":
        if "grid" not in self._shared:
            from icechart.products.warp import target_grid

            self._shared["grid"] = target_grid(self.scene, self.crs, float(self.resolution))
        return self._shared["grid"]

    def gather(self) -> "Gather":
        if "gather" not in self._shared:
            from icechart.products.warp import Gather

            self._shared["gather"] = Gather(self.inverse(), self.grid(), block_rows=self.block_rows)
        return self._shared["gather"]

    def blocks_done(self) -> None:
        """Free what only the block pass needs (the gather tables: 8 bytes per target pixel)
        before the sinks finish (the PNG rendering is the last peak)."""
        self._shared.pop("gather", None)
        from icechart.memory import release_free_memory

        release_free_memory()

    def tags(self) -> dict[str, str]:
        """Provenance tags of the raster products."""
        return {
            "scene_id": self.scene.scene_id,
            "model_id": self.model_id,
            "model_sha256": self.prediction.model_sha256,
            "software_version": f"icechart {__version__}",
            "acquisition_time": self.scene.time.isoformat(),
        }


def _model_id(prediction: "Prediction", model: Any) -> str:
    if model is None:
        return prediction.model_id
    if isinstance(model, str):
        return model
    return str(getattr(model, "model_id", prediction.model_id))


def write_products(
    prediction: "Prediction",
    scene: "Scene",
    outdir: str | Path,
    *,
    model: Any = None,
    formats: str | Iterable[str] | None = None,
    crs: str | int = DEFAULT_CRS,
    resolution: float = DEFAULT_RESOLUTION,
    sieve: int | None = None,
    simplify: float | None = None,
    min_area: float | None = None,
    metadata: dict[str, str] | None = None,
    complevel: int = 1,
    input_sha256: str | None = None,
    command: str | None = None,
    timings: dict[str, float] | None = None,
) -> list[Path]:
    """Write the products of one scene into ``outdir``.

    Parameters
    ----------
    prediction
        From :func:`icechart.infer.predict.predict_scene`.
    scene
        The opened scene (masks, geolocation).
    outdir
        Output directory (must exist).
    model
        Model id (or a loaded model) for the file names; default the prediction's.
    formats
        Names from :data:`REGISTRY` (default: the default formats). Run-level formats
        (``autoice``) are not written here (:func:`write_run_level`).
    crs, resolution
        Projected CRS and pixel size (CRS units) of the GeoTIFFs; the shapefile uses the CRS at
        the model's resolution.
    sieve
        Generalisation scale of the SIGRID-3 chart in model pixels; overrides ``min_area``.
    simplify
        Coverage simplification tolerance (CRS units; default one model pixel).
    min_area
        Generalisation scale of the SIGRID-3 chart in km² (default
        :data:`icechart.products.sigrid3.DEFAULT_MIN_AREA_KM2`, 25 km²).
    metadata
        ACDD attributes of the netCDF that the producer sets (``institution``, ``creator_*``,
        ``publisher_*``; :data:`icechart.products.netcdf.PRODUCER_ATTRIBUTES`).
    complevel
        zlib level of the netCDF.
    input_sha256
        The input file's sha256 (computed here when None and netCDF is written).
    command
        Command line for the netCDF ``history`` (default ``sys.argv``).
    timings
        A dict that receives seconds per stage (``upsample`` and each sink's ``stage``:
        ``netcdf``, ``geotiff``, ``png``, ``shapefile``); ``upsample`` is the time spent
        waiting for decisions, which are made one block ahead on a worker thread.

    Returns
    -------
    list of Path
        The files written, in :func:`product_paths` order.

    Raises
    ------
    ConfigError
        Unknown format or CRS, bad resolution (78).
    OutputError, OutputIOError
        A file cannot be written (73, 74); nothing of this call is left behind.
    """
    from icechart.products.netcdf import chart_arrays
    from icechart.products.warp import parse_crs

    fm = [f for f in parse_formats(formats) if REGISTRY[f].per_scene]
    if not fm:
        return []
    model_id = _model_id(prediction, model)
    outdir = Path(outdir)
    target_crs = parse_crs(crs)
    if not float(resolution) > 0:
        raise ConfigError(f"resolution must be positive, got {resolution}")
    tm = timings if timings is not None else {}
    for k in ("upsample", "netcdf", "geotiff", "png", "shapefile"):
        tm.setdefault(k, 0.0)
    block_rows = _block_rows(prediction.factor, prediction.shape[1])
    written: list[Path] = []

    with ExitStack() as stack:
        ctx = SinkContext(
            prediction, scene, outdir, model_id, stack, target_crs, float(resolution), sieve,
            simplify, min_area, dict(metadata or {}), complevel, input_sha256, command, block_rows,
        )  # fmt: skip
        sinks: list[Sink] = []
        for name in fm:
            cls = _resolve(REGISTRY[name].sink)  # type: ignore[arg-type]
            t = time.perf_counter()
            sink = cls(ctx)
            sinks.append(sink)
            tm[sink.stage] = tm.get(sink.stage, 0.0) + time.perf_counter() - t
        # -- the one pass over full-resolution row blocks --------------------------------
        # The next block is decided on a worker thread while the sinks take this one.
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="icechart-blocks"))
        it = prediction.blocks(scene, block_rows=block_rows, decisions="autoice" in fm)
        ahead = pool.submit(next, it, None)
        while True:
            t = time.perf_counter()
            b = ahead.result()
            tm["upsample"] += time.perf_counter() - t
            if b is None:
                break
            ahead = pool.submit(next, it, None)
            arrays = chart_arrays(b.charts, b.confidence, b.status, b.sic_se)
            block = ProductBlock(b.rows, b.charts, b.confidence, b.status, arrays, b.decision)
            for sink in sinks:
                t = time.perf_counter()
                sink.add(block)
                tm[sink.stage] += time.perf_counter() - t
        it = b = block = None  # type: ignore[assignment]
        ctx.blocks_done()
        # The sinks finish at once, on threads of their own: the GeoTIFF, SIGRID-3 and PNG
        # writers spend much of their time in GDAL, GEOS and zlib, outside the GIL, and each
        # writes only its own files (the same bytes as one after the other).
        def finish(sink: Sink) -> tuple[list[Path], float]:
            t = time.perf_counter()
            files = sink.finish()
            return files, time.perf_counter() - t

        with ThreadPoolExecutor(max_workers=len(sinks), thread_name_prefix="icechart-finish") as finishing:
            done = [finishing.submit(finish, sink) for sink in sinks]
            for sink, fut in zip(sinks, done):
                files, seconds = fut.result()
                written += files
                tm[sink.stage] += seconds
    # Leaving the stack renamed every temporary file onto its product name.
    order = {p: k for k, p in enumerate(product_paths(scene.scene_id, model_id, outdir, fm, sic_standard_error=prediction.sic_se is not None))}
    return sorted(written, key=lambda p: order.get(p, len(order)))


def product_attrs(
    prediction: "Prediction",
    scene: "Scene",
    *,
    model_id: str,
    input_sha256: str | None,
    command: str | None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Global attributes of the netCDF product and of the in-memory dataset (ACDD, provenance,
    how the confidence and spread were made, the producer's ``metadata``)."""
    from icechart.products.netcdf import global_attrs

    return global_attrs(
        scene_id=scene.scene_id,
        acquired=scene.time,
        model_id=model_id,
        model_sha256=prediction.model_sha256,
        input_name=scene.path.name,
        input_sha256=input_sha256,
        service=scene.service,
        command=command,
        extra={**uncertainty_attrs(prediction), **(metadata or {})},
    )


def uncertainty_attrs(prediction: "Prediction") -> dict[str, Any]:
    """Global attributes recording how the confidence and spread were made."""
    temp = prediction.temperature
    attrs: dict[str, Any] = {
        "ensemble_members": int(prediction.members),
        "test_time_augmentation": "flips (identity, left-right, up-down, both)" if prediction.tta else "none",
        "confidence_calibration": (
            "temperature scaling: " + ", ".join(f"{c} T={t:.4f}" for c, t in sorted(temp.items()))
            if temp
            else "none"
        ),
    }
    ens = prediction.meta.get("ensemble")
    if isinstance(ens, dict) and ens.get("member_sha256"):
        attrs["ensemble_member_sha256"] = " ".join(ens["member_sha256"])
    return attrs


__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "REGISTRY",
    "Format",
    "register",
    "parse_formats",
    "product_paths",
    "fingerprint",
    "write_products",
    "write_run_level",
]
