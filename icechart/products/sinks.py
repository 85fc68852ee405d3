"""Streaming sinks of the built-in formats: each takes the scene's row blocks and finishes atomically.

A sink (:class:`icechart.products.Sink`) is made once per scene from a
:class:`~icechart.products.SinkContext`; :meth:`add` receives every full-resolution
:class:`~icechart.products.ProductBlock` in order; :meth:`finish` writes its files under
temporary names registered with the context (renamed onto their product names only when every
sink of the scene has finished, :func:`icechart.atomic.atomic_path`) and returns their final
paths. The sinks here wrap the writers of :mod:`~icechart.products.netcdf`,
:mod:`~icechart.products.geotiff`, :mod:`~icechart.products.sigrid3` and
:mod:`~icechart.products.quicklook`, which stay block-free library functions; a new format
brings its writer and its sink in one module of its own and one registry line
(:data:`icechart.products.FORMATS`, ``tests/test_products.py::test_a_new_format_is_one_module``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from icechart.atomic import forget_temporary, register_temporary, temp_prefix
from icechart.classes import CHARTS, STATUS_INVALID, STATUS_LAND

if TYPE_CHECKING:
    from icechart.products import ProductBlock, SinkContext

logger = logging.getLogger(__name__)


def hdf5_lock() -> Any:
    """The lock xarray holds around every netCDF-C/HDF5 call (HDF5 is not thread-safe)."""
    try:
        from xarray.backends.netCDF4_ import NETCDF4_PYTHON_LOCK
    except ImportError:  # pragma: no cover - an xarray without it: serialise among ourselves
        return threading.Lock()
    return NETCDF4_PYTHON_LOCK


class NetcdfSink:
    """``{id}_{model}.nc``: the CF netCDF at SAR geometry, written block by block.

    Geolocation and writing (HDF5 compresses each chunk inside the write call, with the GIL
    released) run on one worker thread, overlapping the decisions and the other sinks of the
    next block; at most one block waits, so memory stays flat. The worker holds xarray's
    netCDF/HDF5 lock while it calls the library, so reads of the input never run at the same
    time. Same bytes as writing in line: the blocks are written in order by one thread.
    """

    stage = "netcdf"

    def __init__(self, ctx: "SinkContext") -> None:
        from icechart.hashing import sha256_file
        from icechart.products import product_attrs
        from icechart.products.netcdf import LatLonBlocks, NetcdfWriter

        scene, pred = ctx.scene, ctx.prediction
        if ctx.input_sha256 is None:
            ctx.input_sha256 = sha256_file(scene.path)
        self.dest = ctx.outdir / f"{ctx.stem}.nc"
        attrs = product_attrs(
            pred, scene, model_id=ctx.model_id, input_sha256=ctx.input_sha256, command=ctx.command,
            metadata=ctx.metadata,
        )  # fmt: skip
        self.lock = hdf5_lock()
        with self.lock:
            self.nc = ctx.stack.enter_context(NetcdfWriter(
                ctx.temporary(self.dest), pred.shape, attrs, block_rows=ctx.block_rows,
                complevel=ctx.complevel, sic_standard_error=pred.sic_se is not None,
                temperature=pred.temperature,
            ))  # fmt: skip
        self.geo: LatLonBlocks | None = LatLonBlocks(scene)
        self.nc.footprint = self.geo.footprint()  # longitude range and bounds, right across 180
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="icechart-netcdf")
        self.pending: Future[None] | None = None
        ctx.stack.callback(self.pool.shutdown, wait=True, cancel_futures=True)  # before the writer closes

    def _write(self, block: "ProductBlock") -> None:
        assert self.geo is not None
        lat, lon = self.geo.block(block.rows)
        with self.lock:
            self.nc.write(block.rows, block.arrays, lat, lon)

    def add(self, block: "ProductBlock") -> None:
        if self.pending is not None:
            self.pending.result()  # the previous block is written (and its error raised here)
        self.pending = self.pool.submit(self._write, block)

    def finish(self) -> list[Path]:
        if self.pending is not None:
            self.pending.result()
            self.pending = None
        self.geo = None
        with self.lock:
            self.nc.close()
        return [self.dest]


class _RasterSink:
    """GeoTIFFs of product variables on the projected grid, filled through the shared gather."""

    stage = "geotiff"

    def __init__(self, ctx: "SinkContext", names: list[str]) -> None:
        self.ctx = ctx
        grid = ctx.grid()
        ctx.gather()  # built now, timed to this sink
        self.rasters: dict[str, np.ndarray] | None = {
            c: np.full((grid.height, grid.width), 255, np.uint8) for c in names
        }

    def add(self, block: "ProductBlock") -> None:
        from icechart.products.geotiff import with_land

        assert self.rasters is not None
        gather = self.ctx.gather()
        for c, r in self.rasters.items():
            gather.fill(r, block.rows, with_land(block.arrays[c], block.status))

    def finish(self) -> list[Path]:
        from icechart.products.geotiff import sidecar_paths, write_geotiff, write_layer_geotiff, write_sidecar
        from icechart.products.styles import write_layer_qml

        ctx = self.ctx
        assert self.rasters is not None
        written = []
        for c, raster in self.rasters.items():
            dest = ctx.outdir / f"{ctx.stem}_{c}.tif"
            tmp = ctx.temporary(dest)
            if c in CHARTS:
                write_geotiff(tmp, raster, ctx.grid(), chart=c, tags=ctx.tags())
                written.append(dest)
                for side, kind in zip(sidecar_paths(dest), (".tif.aux.xml", ".qml")):
                    write_sidecar(ctx.temporary(side), kind, c)
                    written.append(side)
            else:
                write_layer_geotiff(tmp, raster, ctx.grid(), name=c, tags=ctx.tags())
                written.append(dest)
                side = dest.with_suffix(".qml")
                write_layer_qml(ctx.temporary(side), c)
                written.append(side)
        self.rasters = None
        return written


class GeotiffSink(_RasterSink):
    """``{id}_{model}_{SIC|SOD|FLOE}.tif``: the charts on the projected grid."""

    def __init__(self, ctx: "SinkContext") -> None:
        super().__init__(ctx, list(CHARTS))


class UncertaintySink(_RasterSink):
    """``{id}_{model}_{layer}.tif``: SOD/FLOE confidence (and, from an ensemble, the SIC
    standard error) on the GeoTIFF grid."""

    def __init__(self, ctx: "SinkContext") -> None:
        from icechart.products import uncertainty_layers

        super().__init__(ctx, uncertainty_layers(ctx.prediction.sic_se is not None))


class QuicklookSink:
    """``{id}_{model}_{chart}.png``: quicklooks from every n-th line and sample."""

    stage = "png"

    def __init__(self, ctx: "SinkContext") -> None:
        from icechart.products.quicklook import QuicklookCollector

        self.ctx = ctx
        self.ql = QuicklookCollector(ctx.prediction.shape)

    def add(self, block: "ProductBlock") -> None:
        self.ql.add(block.rows, block.charts, block.status)

    def finish(self) -> list[Path]:
        from icechart.products.quicklook import write_quicklook

        ctx, ql = self.ctx, self.ql
        written = []
        for c in CHARTS:
            dest = ctx.outdir / f"{ctx.stem}_{c}.png"
            write_quicklook(
                ctx.temporary(dest), c, ql.charts[c], ql.status, scene_id=ctx.scene.scene_id,
                acquired=ctx.scene.time, model_id=ctx.model_id, step=ql.step,
            )  # fmt: skip
            written.append(dest)
        return written


class LowresStatus:
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


def chart_polygons(ctx: "SinkContext", lowres: LowresStatus) -> list[Any]:
    """The scene's SIGRID-3 coverage (egg-code polygons in the product CRS), made once per scene
    for every chart format (shapefile, GeoPackage)."""
    if "sigrid3" not in ctx._shared:
        from icechart.products import SAR_PIXEL
        from icechart.products import sigrid3
        from icechart.products.warp import target_grid

        res = SAR_PIXEL * ctx.prediction.factor
        grid = target_grid(ctx.scene, ctx.crs, res)
        regions = sigrid3.region_codes(ctx.prediction.lowres_classes(), lowres.result())
        raster, inside = sigrid3.warp_regions(ctx.inverse(), grid, regions)
        ctx._shared["sigrid3"] = sigrid3.chart_polygons(
            raster, inside, grid.transform, sieve=sigrid3.generalisation_scale(ctx.sieve, ctx.min_area, res),
            simplify=res if ctx.simplify is None else float(ctx.simplify),
        )  # fmt: skip
    return ctx._shared["sigrid3"]


class _ChartSink:
    """A SIGRID-3 chart format: the land/no-data masks of the blocks at the model's resolution,
    then the shared coverage written by :meth:`write` in a private temporary directory (the
    writers make several files or need their own names) moved onto the product names."""

    stage = "shapefile"
    suffixes: tuple[str, ...] = ()

    def __init__(self, ctx: "SinkContext") -> None:
        self.ctx = ctx
        ctx.inverse()
        self.lowres = LowresStatus(ctx.prediction.shape, ctx.prediction.factor)

    def add(self, block: "ProductBlock") -> None:
        self.lowres.add(block.rows, block.status)

    def write(self, path: Path, polys: list[Any]) -> None:
        raise NotImplementedError

    def finish(self) -> list[Path]:
        ctx = self.ctx
        polys = chart_polygons(ctx, self.lowres)
        tmpdir = Path(tempfile.mkdtemp(prefix=temp_prefix("shp"), dir=ctx.outdir))
        first = ctx.outdir / f"{ctx.stem}_sigrid3{self.suffixes[0]}"
        register_temporary(tmpdir, first)  # a signal removes it too
        ctx.stack.callback(forget_temporary, tmpdir)
        ctx.stack.callback(shutil.rmtree, tmpdir, True)
        try:
            self.write(tmpdir / first.name, polys)
        except OSError as exc:
            from icechart.atomic import os_error

            raise os_error(exc, first) from exc
        except Exception as exc:  # GDAL's write errors on a full disk: 74 naming the chart file
            from icechart.atomic import fault_error

            fault = fault_error(exc, first)
            if fault is not None:
                raise fault from exc
            raise
        written = []
        for ext in self.suffixes:
            dest = ctx.outdir / f"{ctx.stem}_sigrid3{ext}"
            src = tmpdir / dest.name
            if src.exists():
                os.replace(src, ctx.temporary(dest))
                written.append(dest)
        return written


class ShapefileSink(_ChartSink):
    """``{id}_{model}_sigrid3.{shp,shx,dbf,prj,cpg}`` (and its QGIS style): the SIGRID-3 chart."""

    def __init__(self, ctx: "SinkContext") -> None:
        from icechart.products.sigrid3 import SHAPEFILE_PARTS

        super().__init__(ctx)
        self.suffixes = tuple(SHAPEFILE_PARTS)

    def write(self, path: Path, polys: list[Any]) -> None:
        from icechart.products import sigrid3

        sigrid3.write_shapefile(path, polys, self.ctx.crs)


class GeopackageSink(_ChartSink):
    """``{id}_{model}_sigrid3.gpkg``: the chart in the product CRS and in EPSG:4326 split at
    180 degrees, with QGIS default styles."""

    stage = "geopackage"
    suffixes = (".gpkg",)

    def write(self, path: Path, polys: list[Any]) -> None:
        from icechart.products import sigrid3

        sigrid3.write_geopackage(path, polys, self.ctx.crs)
