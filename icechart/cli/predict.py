"""``icechart predict``: scenes in, georeferenced ice-chart products out (one library call each)."""

from __future__ import annotations

import logging
import shlex
import sys
from typing import Any

import click

from icechart.products import DEFAULT_FORMATS, formats_help

from icechart.cli.options import (
    FiniteFloatRange,
    device_opt,
    lock_opt,
    lock_wait_opt,
    model_opt,
    output_opt,
    overwrite_opt,
    progress_opt,
    shard_opt,
    strict_opt,
    verify_opt,
)

logger = logging.getLogger(__name__)


def producer_opts(f: Any) -> Any:
    """``--institution``, ``--creator-name``, ... : one option per
    :data:`icechart.products.netcdf.PRODUCER_ATTRIBUTES` (also ``[predict]`` keys)."""
    from icechart.products.netcdf import PRODUCER_ATTRIBUTES

    for name in reversed(PRODUCER_ATTRIBUTES):
        flag = "--" + name.replace("_", "-")
        f = click.option(flag, name, default=None, metavar="TEXT", help=f"netCDF global attribute `{name}` (ACDD-1.3).")(f)
    return f


class FormatList(click.ParamType):
    """Product formats: a comma list on the command line and in ``ICECHART_PREDICT_FORMATS``,
    a comma list or a TOML array in the configuration file."""

    name = "LIST"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, ...]:
        from icechart.errors import ConfigError
        from icechart.products import parse_formats

        if isinstance(value, (list, tuple)) and not all(isinstance(v, str) for v in value):
            self.fail(f"{value!r} is not a list of format names", param, ctx)
        try:
            return parse_formats(value)
        except ConfigError as exc:
            self.fail(exc.message, param, ctx)


@click.command()
@click.argument("inputs", nargs=-1, required=True, metavar="SCENE_OR_DIR...")
@output_opt("outdir", required=True, metavar="OUT", help="Output directory (created if missing).")
@model_opt(help="Shipped model id, checkpoint file, training run directory, or ensemble (ensemble.toml or its directory) [default: the shipped default model].")
@click.option(
    "--formats",
    type=FormatList(),
    default=",".join(DEFAULT_FORMATS),
    show_default=True,
    help=formats_help(),
)
@click.option("--crs", default="EPSG:3413", show_default=True, help="Projected CRS of the GeoTIFFs and the shapefile (EPSG code or PROJ string).")
@click.option("--resolution", type=FiniteFloatRange(min=0, max=100_000, min_open=True), default=200.0, show_default=True, help="GeoTIFF pixel size in CRS units (m).")
@click.option("--min-area", type=FiniteFloatRange(min=0, max=1_000_000), default=None, metavar="KM2", help="SIGRID-3 generalisation scale: regions smaller than this (km²) merge into a neighbour [default: 25, the finest of the CIS/DMI charts; see the README].")
@click.option("--sieve", type=click.IntRange(min=0, max=1_000_000), default=None, help="SIGRID-3 generalisation scale in model pixels instead of --min-area [default: 40, i.e. 25 km² at 800 m].")
@click.option("--tile-size", type=click.IntRange(min=16, max=16384), default=None, help="Model pixels per tile side; lower it on small GPUs [default: 512].")
@click.option("--tta", is_flag=True, help="Test-time augmentation: average each network over left-right and up-down flips (4 forward passes).")
@click.option("--uncertainty-tif", is_flag=True, help="Also write GeoTIFFs of SOD/FLOE confidence and, for an ensemble, the SIC standard error ({id}_{model}_{layer}.tif).")
@device_opt
@overwrite_opt
@lock_opt
@lock_wait_opt
@strict_opt
@verify_opt
@progress_opt
@producer_opts
@shard_opt
def predict(
    inputs: tuple[str, ...],
    outdir: str,
    model_spec: str | None,
    formats: tuple[str, ...],
    crs: str,
    resolution: float,
    min_area: float | None,
    sieve: int | None,
    tile_size: int | None,
    tta: bool,
    uncertainty_tif: bool,
    device: str,
    overwrite: bool,
    lock: str | None,
    lock_wait: float,
    strict: bool,
    verify: bool,
    progress: bool | None,
    shard: str | None,
    **producer: str | None,
) -> None:
    """Predict ice charts (SIC, SOD, FLOE) for AI4Arctic scenes and write the products.

    Each scene gives, in OUT, named from the scene id and the model id: a CF netCDF at SAR
    geometry ({id}_{model}.nc), a GeoTIFF per chart on a projected grid, a SIGRID-3 shapefile,
    quicklook PNGs, and {id}_{model}.manifest.json, written last: a scene's products are
    complete only when it exists. The model is loaded once. --institution, --creator-* and
    --publisher-* (or the same keys in [predict]) fill the netCDF's ACDD attributes.
    --model also takes an ensemble (ensemble.toml, or the directory of `icechart train --runs
    N`): its members' probabilities and SIC are averaged, and the netCDF gains
    SIC_standard_error (the members' spread); SOD/FLOE confidence is temperature-calibrated
    when the model carries a calibration.

    Made for cron: a rerun skips scenes whose manifest matches (same input, model and product
    options; the device does not count; the input is checked by size and time, hashed only
    when they changed) and refuses to replace a different product without --overwrite (73);
    a missing or damaged product of its own (size and time, or sha256 with --verify) is made
    again, and a failed --overwrite puts the old set back.
    A bad scene fails alone: the others are still done, and the exit code is the first failing
    scene's. One summary line per scene goes to stderr. SIGINT/SIGTERM/SIGHUP remove temporary
    files and exit 130/143/129; --lock makes a second run exit 75 at once; without it, runs on
    one OUT share the scenes (a per-scene claim file). An input replaced while it is read fails
    its scene with 75 and leaves nothing. Less than half of the SAR
    valid is a warning, exit 65 with --strict.

    \b
    Examples:
      icechart predict 20180707T113313_cis_prep.nc -o charts/
      icechart predict scenes/ -o charts/ --formats netcdf,autoice --device cuda
      icechart predict s.nc -o charts/ --model runs/exp1/ --crs EPSG:6931 --resolution 400
      icechart predict s.nc -o charts/ --model runs/ens5/ensemble.toml --tta --uncertainty-tif
      icechart -q --log-format json predict /data/incoming -o /data/charts --lock /run/lock/icechart.lock
      icechart predict /archive/2019 -o /shared/charts --formats netcdf,autoice --shard auto
    """
    from icechart.pipeline.predict import predict_batch

    if uncertainty_tif and "uncertainty" not in formats:
        formats = (*formats, "uncertainty")
    predict_batch(
        inputs, outdir, model=model_spec, formats=formats, crs=crs, resolution=resolution,
        sieve=sieve, min_area=min_area, metadata={k: v for k, v in producer.items() if v},
        tile_size=tile_size, tta=tta, device=device, overwrite=overwrite,
        lock=lock, lock_wait=lock_wait, strict=strict, progress=progress, verify=verify, shard=shard,
        command="icechart " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )  # fmt: skip
