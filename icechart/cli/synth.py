"""``icechart synth``: write synthetic AI4Arctic-format scenes."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import click

from icechart.cli.options import parse_size

logger = logging.getLogger(__name__)


def _parse_center(_ctx: object, _param: object, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lat, lon = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LAT,LON (e.g. 72.5,-60)") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 360):
        raise click.BadParameter(f"{value!r}: latitude or longitude out of range")
    return lat, lon


def _parse_date(_ctx: object, _param: object, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y%m%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not YYYYMMDD") from None


def _parse_range(_ctx: object, _param: object, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        near, far = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not NEAR,FAR in degrees (e.g. 25,40)") from None
    if not 10 <= near < far <= 60:
        raise click.BadParameter(f"{value!r}: need 10 <= NEAR < FAR <= 60 degrees")
    return near, far


@click.command()
@click.argument("outdir", type=click.Path(file_okay=False))
@click.option("--scenes", "n", type=click.IntRange(min=1), default=1, show_default=True, help="Number of scenes.")
@click.option("--size", callback=parse_size, default="1003x997", show_default=True, help="SAR size LINESxSAMPLES.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (scene k uses seed*1000+k).")
@click.option("--test", is_flag=True, help="Test files: no labels in the scenes; labels in OUTDIR/reference/.")
@click.option("--center", callback=_parse_center, help="Scene centre LAT,LON (default: near the service's area).")
@click.option("--date", callback=_parse_date, help="Acquisition date YYYYMMDD of the first scene (then +1 day each).")
@click.option("--service", type=click.Choice(["dmi", "cis"]), default="dmi", show_default=True, help="Ice service in the id.")
@click.option("--wind", type=click.FloatRange(0.5, 30), help="Mean 10 m wind speed in m/s (default: drawn per scene, 2-12).")
@click.option("--incidence", callback=_parse_range, help="Incidence angle range NEAR,FAR in degrees (default 19,47).")
@click.option("--enl", type=click.FloatRange(1, 50), help="Speckle equivalent number of looks (default: drawn per scene, 4-6).")
@click.option("--melt", type=click.FloatRange(0, 1), help="Melt intensity 0-1 (default: from the month of --date).")
@click.option("--overwrite", is_flag=True, help="Replace scene files that already exist (else exit 73).")
def synth(
    outdir: str,
    n: int,
    size: tuple[int, int],
    seed: int,
    test: bool,
    center: tuple[float, float] | None,
    date: datetime | None,
    service: str,
    wind: float | None,
    incidence: tuple[float, float] | None,
    enl: float | None,
    melt: float | None,
    overwrite: bool,
) -> None:
    """Write synthetic AI4Arctic-format scenes with SAR physics.

    Files are named YYYYMMDDTHHMMSS_{service}_prep.nc like the real data set. An ice chart is
    drawn first (polygons of constant SIC/SOD/FLOE, land, NaN swath borders), then 80 m SAR
    from it: ice fraction and floe-size texture, backscatter per ice type, wind-roughened
    water, noise floor with sub-swath banding, speckle, icebergs; see the README, "Synthetic
    scenes". --center, --date (month), --wind, --incidence and --service shift the
    distribution.

    \b
    Examples:
      icechart synth data/train --scenes 12 --size 1200x1200 --seed 1
      icechart synth data/test --scenes 2 --size 1003x997 --seed 9 --test
      icechart synth data/windy --scenes 2 --seed 9 --wind 16 --incidence 20,35
    """
    from icechart.synth import Physics, write_scenes

    physics = Physics(wind=wind, incidence=incidence, enl=enl, melt=melt)
    paths = write_scenes(
        outdir, n=n, size=size, seed=seed, test=test, center=center, date=date, service=service,
        overwrite=overwrite, physics=physics,
    )
    for p in paths:
        click.echo(str(p))
