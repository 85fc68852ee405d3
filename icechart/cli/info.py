"""``icechart info``: validate scenes and print what the reader sees."""

from __future__ import annotations

import json
from typing import Any

import click

from icechart.cli.options import existing_paths, json_opt


@click.command()
@click.argument("scenes", nargs=-1, required=True)
@json_opt("one object per scene (one line each)")
@click.option("--sar-fill", type=float, default=None, help="Extra SAR value to treat as missing (never 0 by default).")
def info(scenes: tuple[str, ...], as_json: bool, sar_fill: float | None) -> None:
    """Check AI4Arctic scene files and summarise them (id, time, size, validity, labels, footprint).

    Exits 65 on the first scene that is not a valid AI4Arctic file, naming it and the problem.

    \b
    Examples:
      icechart info data/20210315T002616_dmi_prep.nc
      icechart info --json data/*.nc
    """
    from icechart.io.scene import open_scene

    for path in existing_paths(scenes):
        with open_scene(path, sar_fill=sar_fill) as sc:
            lat, lon = sc.latlon(step=max(1, min(sc.shape) // 50))
            d: dict[str, Any] = {
                "file": str(path),
                "scene_id": sc.scene_id,
                "time": sc.time.isoformat(),
                "service": sc.service,
                "sar_shape": list(sc.shape),
                "coarse_shape": list(sc.coarse_shape) if sc.coarse_shape else None,
                "valid_fraction": round(sc.valid_fraction, 4),
                "labels": sc.has_labels,
                "lat_range": [round(float(lat.min()), 3), round(float(lat.max()), 3)],
                "lon_range": [round(float(lon.min()), 3), round(float(lon.max()), 3)],
            }
        if as_json:
            click.echo(json.dumps(d))
        else:
            click.echo(
                f"{d['scene_id']}  {d['time']}  {d['service']}  {d['sar_shape'][0]}x{d['sar_shape'][1]}  "
                f"valid {100 * d['valid_fraction']:.1f}%  {'labels' if d['labels'] else 'no labels'}  "
                f"lat {d['lat_range'][0]}..{d['lat_range'][1]}  lon {d['lon_range'][0]}..{d['lon_range'][1]}"
            )
