"""Ice-chart products from a :class:`~icechart.infer.predict.Prediction` (contract.md "Products").

One pass over the full-resolution row blocks feeds every writer at once: the netCDF gets each
block as it comes, the GeoTIFF rasters are filled through a precomputed nearest-pixel gather,
the quicklooks keep every n-th line, and the SIGRID-3 writer keeps the masks at the model's
resolution. Peak memory is therefore a few row blocks plus the projected rasters, whatever the
scene size. Every file is written under a temporary name and renamed only when all products of
the scene are complete (:func:`icechart.atomic.atomic_path`); on any error none is left.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icechart._version import __version__
from icechart.atomic import atomic_path, forget_temporary, register_temporary, temp_prefix
from icechart.classes import CHARTS, STATUS_INVALID, STATUS_LAND
from icechart.errors import ConfigError
from icechart.hashing import sha256_file

if TYPE_CHECKING:
    from icechart.infer.predict import Prediction
    from icechart.io.scene import Scene

logger = logging.getLogger(__name__)

FORMATS = ("netcdf", "geotiff", "shapefile", "png", "autoice", "uncertainty", "geopackage")
DEFAULT_FORMATS = ("netcdf", "geotiff", "shapefile", "png")
DEFAULT_CRS = "EPSG:3413"
DEFAULT_RESOLUTION = 200.0
SAR_PIXEL = 80.0
"""SAR pixel spacing of AI4Arctic scenes (m); the model grid is ``factor`` times that."""


def parse_formats(formats: str | Iterable[str] | None) -> tuple[str, ...]:
    """Validate a comma list / iterable of formats; ``autoice`` implies ``netcdf`` (its source).

    Raises
    ------
    ConfigError
        An unknown format name (78).
    """
    if formats is None:
        return DEFAULT_FORMATS
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in (s.strip().lower() for s in items):
        if not f:
            continue
        if f == "all":
            out.extend(FORMATS)
            continue
        if f not in FORMATS:
            raise ConfigError(f"unknown format {f!r}; choose from {', '.join(FORMATS)}")
        out.append(f)
    if "autoice" in out and "netcdf" not in out:
        out.append("netcdf")
    if not out:
        raise ConfigError(f"no output format given; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(out))


UNCERTAINTY_LAYERS = ("SOD_confidence", "FLOE_confidence", "SIC_standard_error")
"""GeoTIFFs of the ``uncertainty`` format (SIC_standard_error only from ensembles)."""


def product_paths(
    scene_id: str,
    model_id: str,
    outdir: str | Path,
    formats: Iterable[str],
    *,
    sic_standard_error: bool = False,
) -> list[Path]:
    """The files ``write_products`` creates for ``formats`` (names from contract.md).

    ``uncertainty`` adds ``{id}_{model}_{SOD|FLOE}_confidence.tif`` and, when
    ``sic_standard_error`` (an ensemble), ``{id}_{model}_SIC_standard_error.tif``.
    """
    out = Path(outdir)
    stem = f"{scene_id}_{model_id}"
    paths: list[Path] = []
    fm = set(formats)
    if "netcdf" in fm:
        paths.append(out / f"{stem}.nc")
    if "geotiff" in fm:
        from icechart.products.geotiff import sidecar_paths

        for c in CHARTS:
            paths += [out / f"{stem}_{c}.tif", *sidecar_paths(out / f"{stem}_{c}.tif")]
    if "shapefile" in fm:
        from icechart.products.sigrid3 import SHAPEFILE_PARTS

        paths += [out / f"{stem}_sigrid3{ext}" for ext in SHAPEFILE_PARTS]
    if "png" in fm:
        paths += [out / f"{stem}_{c}.png" for c in CHARTS]
    if "geopackage" in fm:
        paths.append(out / f"{stem}_sigrid3.gpkg")
    if "uncertainty" in fm:
        for n in UNCERTAINTY_LAYERS[: 3 if sic_standard_error else 2]:
            paths += [out / f"{stem}_{n}.tif", out / f"{stem}_{n}.qml"]
    if "autoice" in fm:
        paths.append(out / f"{stem}_autoice.nc")
    return paths


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


class _LowresStatus:
    """Land / no-data decision per model pixel, from the full-resolution status of the blocks."""

    def __init__(self, shape: tuple[int, int], factor: int) -> None:
        self.f = factor
        lines, samples = shape
        self.samples = samples
        self.h, self.w = -(-lines // factor), -(-samples // factor)
        self.land = np.zeros((self.h, self.w), np.int32)
        self.bad = np.zeros((self.h, self.w), np.int32)
        self.n = np.zeros((self.h, self.w), np.int32)

    def add(self, rows: slice, status: np.ndarray) -> None:
        f = self.f
        nb = status.shape[0]
        i0 = rows.start // f
        ph = -(-nb // f) * f - nb
        pw = self.w * f - self.samples
        real = np.pad(np.ones(status.shape, np.int32), ((0, ph), (0, pw)))
        land = np.pad(((status & STATUS_LAND) != 0).astype(np.int32), ((0, ph), (0, pw)))
        bad = np.pad(((status & STATUS_INVALID) != 0).astype(np.int32), ((0, ph), (0, pw)))
        hb = land.shape[0] // f
        for acc, a in ((self.n, real), (self.land, land), (self.bad, bad)):
            acc[i0 : i0 + hb] += a.reshape(hb, f, self.w, f).sum(axis=(1, 3))

    def result(self) -> np.ndarray:
        from icechart.products.sigrid3 import LOWRES_CHARTED, LOWRES_LAND, LOWRES_NODATA

        out = np.full((self.h, self.w), LOWRES_CHARTED, np.uint8)
        masked = 2 * (self.land + self.bad) > self.n
        out[masked & (self.land >= self.bad)] = LOWRES_LAND
        out[masked & (self.land < self.bad)] = LOWRES_NODATA
        return out


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
    formats: str | Iterable[str] | None = DEFAULT_FORMATS,
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
        Among ``netcdf, geotiff, shapefile, png, uncertainty, autoice`` (``autoice``: the
        scene's unmasked part ``{id}_{model}_autoice.nc``; the AutoICE file itself is rebuilt
        per run by :func:`icechart.products.autoice.write_autoice`; ``uncertainty``: GeoTIFFs
        of the SOD/FLOE confidence and, for an ensemble, the SIC standard error, on the
        GeoTIFF grid).
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
        A dict that receives seconds per stage (``upsample``, ``netcdf``, ``geotiff``, ``png``,
        ``shapefile``).

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
    from icechart.products.netcdf import LatLonBlocks, NetcdfWriter, chart_arrays, global_attrs
    from icechart.products.warp import parse_crs

    fm = list(parse_formats(formats))
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
    factor = prediction.factor
    lines, samples = prediction.shape
    block_rows = _block_rows(factor, samples)
    stem = f"{scene.scene_id}_{model_id}"
    written: list[Path] = []
    has_se = prediction.sic_se is not None
    layers = list(UNCERTAINTY_LAYERS[: 3 if has_se else 2]) if "uncertainty" in fm else []

    with ExitStack() as stack:
        inv = None
        if "geotiff" in fm or "shapefile" in fm or "geopackage" in fm or layers:
            from icechart.products.warp import InverseGeolocation

            t = time.perf_counter()
            rc, cc = prediction.centres()
            inv = InverseGeolocation(scene, rc, cc, target_crs)
            tm["geotiff" if "geotiff" in fm else "shapefile"] += time.perf_counter() - t

        nc = None
        if "netcdf" in fm:
            t = time.perf_counter()
            if input_sha256 is None:
                input_sha256 = sha256_file(scene.path)
            dest = outdir / f"{stem}.nc"
            tmp = stack.enter_context(atomic_path(dest))
            attrs = global_attrs(
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
            nc = stack.enter_context(NetcdfWriter(
                tmp, (lines, samples), attrs, block_rows=block_rows, complevel=complevel,
                sic_standard_error=has_se, temperature=prediction.temperature,
            ))  # fmt: skip
            geo = LatLonBlocks(scene)
            nc.footprint = geo.footprint()
            written.append(dest)
            tm["netcdf"] += time.perf_counter() - t

        gather = grid = rasters = None
        if "geotiff" in fm or layers:
            from icechart.products.warp import Gather, target_grid

            t = time.perf_counter()
            grid = target_grid(scene, target_crs, float(resolution))
            assert inv is not None
            gather = Gather(inv, grid, block_rows=block_rows)
            names = (list(CHARTS) if "geotiff" in fm else []) + layers
            rasters = {c: np.full((grid.height, grid.width), 255, np.uint8) for c in names}
            tm["geotiff"] += time.perf_counter() - t

        ql = None
        if "png" in fm:
            from icechart.products.quicklook import QuicklookCollector

            ql = QuicklookCollector((lines, samples))
        chart_fm = {"shapefile", "geopackage"} & set(fm)
        lowres = _LowresStatus((lines, samples), factor) if chart_fm else None
        part = None
        if "autoice" in fm:
            from icechart.products.autoice import PartWriter, part_name

            dest = outdir / part_name(scene.scene_id, model_id)
            tmp = stack.enter_context(atomic_path(dest))
            part = stack.enter_context(
                PartWriter(tmp, scene_id=scene.scene_id, model_id=model_id, shape=(lines, samples))
            )
            written.append(dest)

        # -- the one pass over full-resolution row blocks --------------------------------
        it = prediction.blocks(scene, block_rows=block_rows, decisions=part is not None)
        while True:
            t = time.perf_counter()
            b = next(it, None)
            tm["upsample"] += time.perf_counter() - t
            if b is None:
                break
            arrays = chart_arrays(b.charts, b.confidence, b.status, b.sic_se)
            if nc is not None:
                t = time.perf_counter()
                lat, lon = geo.block(b.rows)
                nc.write(b.rows, arrays, lat, lon)
                tm["netcdf"] += time.perf_counter() - t
            if gather is not None and rasters is not None:
                from icechart.products.geotiff import with_land

                t = time.perf_counter()
                for c in rasters:
                    gather.fill(rasters[c], b.rows, with_land(arrays[c], b.status))
                tm["geotiff"] += time.perf_counter() - t
            if ql is not None:
                t = time.perf_counter()
                ql.add(b.rows, b.charts, b.status)
                tm["png"] += time.perf_counter() - t
            if lowres is not None:
                t = time.perf_counter()
                lowres.add(b.rows, b.status)
                tm["shapefile"] += time.perf_counter() - t
            if part is not None and b.decision is not None:
                part.write(b.rows, b.decision)
        if part is not None:
            part.close()
        if nc is not None:
            t = time.perf_counter()
            nc.close()
            tm["netcdf"] += time.perf_counter() - t
        # The gather tables (8 bytes per target pixel) and the geolocation nodes are done with:
        # free them before the writers below allocate (the PNG rendering is the last peak).
        gather = geo = it = b = arrays = None  # type: ignore[assignment]

        tags = {
            "scene_id": scene.scene_id,
            "model_id": model_id,
            "model_sha256": prediction.model_sha256,
            "software_version": f"icechart {__version__}",
            "acquisition_time": scene.time.isoformat(),
        }
        if rasters is not None and grid is not None:
            from icechart.products.geotiff import sidecar_paths, write_geotiff, write_layer_geotiff, write_sidecar
            from icechart.products.styles import write_layer_qml

            t = time.perf_counter()
            for c in rasters:
                dest = outdir / f"{stem}_{c}.tif"
                tmp = stack.enter_context(atomic_path(dest))
                if c in CHARTS:
                    write_geotiff(tmp, rasters[c], grid, chart=c, tags=tags)
                    written.append(dest)
                    for side, kind in zip(sidecar_paths(dest), (".tif.aux.xml", ".qml")):
                        write_sidecar(stack.enter_context(atomic_path(side)), kind, c)
                        written.append(side)
                else:
                    write_layer_geotiff(tmp, rasters[c], grid, name=c, tags=tags)
                    written.append(dest)
                    side = dest.with_suffix(".qml")
                    write_layer_qml(stack.enter_context(atomic_path(side)), c)
                    written.append(side)
            rasters = None
            tm["geotiff"] += time.perf_counter() - t

        if lowres is not None:
            from icechart.products import sigrid3

            t = time.perf_counter()
            res = SAR_PIXEL * factor
            sgrid_grid = _target_grid(scene, target_crs, res)
            assert inv is not None
            regions = sigrid3.region_codes(prediction.lowres_classes(), lowres.result())
            raster, inside = sigrid3.warp_regions(inv, sgrid_grid, regions)
            if sieve is None:
                area = sigrid3.DEFAULT_MIN_AREA_KM2 if min_area is None else float(min_area)
                sieve = sigrid3.sieve_pixels(area, res)
            polys = sigrid3.chart_polygons(
                raster,
                inside,
                sgrid_grid.transform,
                sieve=int(sieve),
                simplify=res if simplify is None else float(simplify),
            )
            tmpdir = Path(tempfile.mkdtemp(prefix=temp_prefix("shp"), dir=outdir))
            register_temporary(tmpdir, outdir / f"{stem}_sigrid3.shp")  # a signal removes it too
            stack.callback(forget_temporary, tmpdir)
            stack.callback(shutil.rmtree, tmpdir, True)
            exts = list(sigrid3.SHAPEFILE_PARTS) if "shapefile" in fm else []
            try:
                if "shapefile" in fm:
                    sigrid3.write_shapefile(tmpdir / f"{stem}_sigrid3.shp", polys, target_crs)
                if "geopackage" in fm:
                    sigrid3.write_geopackage(tmpdir / f"{stem}_sigrid3.gpkg", polys, target_crs)
                    exts.append(".gpkg")
            except OSError as exc:
                from icechart.atomic import os_error

                raise os_error(exc, outdir / f"{stem}_sigrid3.shp") from exc
            except Exception as exc:  # GDAL's write errors on a full disk: 74 naming the shapefile
                from icechart.atomic import fault_error

                fault = fault_error(exc, outdir / f"{stem}_sigrid3.shp")
                if fault is not None:
                    raise fault from exc
                raise
            for ext in exts:
                dest = outdir / f"{stem}_sigrid3{ext}"
                src = tmpdir / dest.name
                if not src.exists():
                    continue
                tmp = stack.enter_context(atomic_path(dest))
                os.replace(src, tmp)
                written.append(dest)
            tm["shapefile"] += time.perf_counter() - t

        if ql is not None:
            from icechart.products.quicklook import write_quicklook

            t = time.perf_counter()
            for c in CHARTS:
                dest = outdir / f"{stem}_{c}.png"
                tmp = stack.enter_context(atomic_path(dest))
                write_quicklook(
                    tmp, c, ql.charts[c], ql.status,
                    scene_id=scene.scene_id, acquired=scene.time, model_id=model_id, step=ql.step,
                )  # fmt: skip
                written.append(dest)
            tm["png"] += time.perf_counter() - t
    # Leaving the stack renamed every temporary file onto its product name.
    order = {p: k for k, p in enumerate(product_paths(scene.scene_id, model_id, outdir, fm, sic_standard_error=has_se))}
    return sorted(written, key=lambda p: order.get(p, len(order)))


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


def _target_grid(scene: "Scene", crs: Any, res: float) -> Any:
    from icechart.products.warp import target_grid

    return target_grid(scene, crs, res)


__all__ = [
    "DEFAULT_FORMATS",
    "FORMATS",
    "parse_formats",
    "product_paths",
    "write_products",
]
