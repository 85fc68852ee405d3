"""``icechart predict``: scenes in, georeferenced ice-chart products out (one library call each)."""

from __future__ import annotations

import logging
import shlex
import sys

import click

from icechart.cli.options import device_opt, overwrite_opt

logger = logging.getLogger(__name__)


def _formats(_ctx: object, _param: object, value: str | None) -> tuple[str, ...]:
    from icechart.errors import ConfigError
    from icechart.products import parse_formats

    try:
        return parse_formats(value)
    except ConfigError as exc:
        raise click.BadParameter(exc.message) from None


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="SCENE_OR_DIR...")
@click.option("-o", "--output", "outdir", required=True, metavar="OUT", help="Output directory (created if missing).")
@click.option("--model", "model_spec", metavar="ID|FILE|DIR", help="Shipped model id, checkpoint file or training run directory [default: the shipped default model].")
@click.option(
    "--formats",
    callback=_formats,
    default="netcdf,geotiff,shapefile,png",
    show_default=True,
    help="Comma list of netcdf, geotiff, shapefile, png, autoice (autoice: the AutoICE submission file of all complete scenes in OUT).",
)
@click.option("--crs", default="EPSG:3413", show_default=True, help="Projected CRS of the GeoTIFFs and the shapefile (EPSG code or PROJ string).")
@click.option("--resolution", type=click.FloatRange(min=0, min_open=True), default=200.0, show_default=True, help="GeoTIFF pixel size in CRS units (m).")
@click.option("--sieve", type=click.IntRange(min=0), default=None, help="SIGRID-3: merge regions smaller than this many model pixels (800 m) [default: 16].")
@click.option("--tile-size", type=click.IntRange(min=16), default=None, help="Model pixels per tile side; lower it on small GPUs [default: 512].")
@device_opt
@overwrite_opt
def predict(
    inputs: tuple[str, ...],
    outdir: str,
    model_spec: str | None,
    formats: tuple[str, ...],
    crs: str,
    resolution: float,
    sieve: int | None,
    tile_size: int | None,
    device: str,
    overwrite: bool,
) -> None:
    """Predict ice charts (SIC, SOD, FLOE) for AI4Arctic scenes and write the products.

    Each scene gives, in OUT, named from the scene id and the model id: a CF netCDF at SAR
    geometry ({id}_{model}.nc), a GeoTIFF per chart on a projected grid, a SIGRID-3 shapefile,
    quicklook PNGs, and {id}_{model}.manifest.json, written last. The model is loaded once.

    \b
    Examples:
      icechart predict 20180707T113313_cis_prep.nc -o charts/
      icechart predict scenes/ -o charts/ --formats netcdf,autoice --device cuda
      icechart predict s.nc -o charts/ --model runs/exp1/ --crs EPSG:6931 --resolution 400
    """
    from icechart.errors import IcechartError
    from icechart.infer.predict import load_model
    from icechart.infer.run import prepare_outdir, process_scene, scene_files, summary

    files = scene_files(inputs)
    out = prepare_outdir(outdir)
    model = load_model(model_spec, device=device)
    command = "icechart " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    first_error: IcechartError | None = None
    for path in files:
        timings: dict[str, float] = {}
        try:
            process_scene(
                path, model, out, formats=formats, crs=crs, resolution=resolution,
                overwrite=overwrite, tile_size=tile_size, sieve=sieve, command=command,
                timings=timings,
            )  # fmt: skip
            logger.debug("%s: %s", path.name, summary(timings))
        except IcechartError as exc:
            if len(files) == 1:
                raise
            logger.error("%s: %s", path, exc.message)
            first_error = first_error or exc
    if "autoice" in formats:
        from icechart.products.autoice import write_autoice

        write_autoice(out, model.model_id)
    if first_error is not None:
        raise first_error
