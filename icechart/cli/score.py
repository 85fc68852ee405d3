"""``icechart score``: the AutoICE score of predictions against reference charts."""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import get_args

import click

from icechart.atomic import atomic_path
from icechart.cli.options import existing_paths, json_opt
from icechart.io.sigrid3 import RangeCodes

logger = logging.getLogger(__name__)


def _check_inputs(specs: tuple[str, ...]) -> None:
    """Missing plain paths are 66 (globs are expanded, and checked, by the library)."""
    existing_paths([s for s in specs if not glob.has_magic(s)])


def _legacy_json_value(as_json: bool, predictions: tuple[str, ...], json_file: str | None) -> tuple[tuple[str, ...], str | None]:
    """Before ``--json`` was the flag of every command it took a value here, ``FILE`` or ``-``;
    Click now leaves that value among the predictions, where it can never be one (a prediction is
    a netCDF file or a directory): ``--json -`` is the flag, ``--json FILE.json`` is
    ``--json-file FILE.json`` (with a warning)."""
    if not as_json:
        return predictions, json_file
    legacy = [p for p in predictions if p == "-" or p.lower().endswith(".json")]
    if not legacy:
        return predictions, json_file
    rest = tuple(p for p in predictions if p not in legacy)
    files = [p for p in legacy if p != "-"]
    if len(files) > 1 or (files and json_file):
        raise click.UsageError(f"more than one JSON file ({', '.join(files + ([json_file] if json_file else []))}); give one --json-file FILE")
    if not rest:
        raise click.UsageError("no predictions given (PRED...)")
    if files:
        logger.warning("`score --json %s` is deprecated: --json is a flag (JSON on stdout); use --json-file %s", files[0], files[0])
        return rest, files[0]
    return rest, json_file


@click.command(name="score")
@click.option(
    "--labels",
    "labels",
    multiple=True,
    required=True,
    metavar="PATH",
    help="Reference charts: AI4Arctic scenes, _reference.nc files, or a SIGRID-3 chart "
    "(.shp/.gpkg, with --scene). File, directory or glob; repeatable.",
)
@click.argument("predictions", nargs=-1, required=True, metavar="PRED...")
@click.option(
    "--scene",
    type=str,
    default=None,
    metavar="SCENE.nc",
    help="The AI4Arctic scene whose grid a SIGRID-3 --labels chart is rasterised onto.",
)
@json_opt("the scores and their per-scene, per-class detail")
@click.option("--json-file", "json_file", metavar="FILE", help="Also write that JSON document to FILE (the table still goes to stdout).")
@click.option("--csv", "csv_out", metavar="FILE", help="Write one row per scene as CSV.")
@click.option("--plots", metavar="DIR", help="Write confusion-matrix PNGs (and a reliability diagram when the predictions carry confidence layers) into DIR.")
@click.option(
    "--range-codes",
    type=click.Choice(get_args(RangeCodes)),
    default="mask",
    show_default=True,
    help="SIGRID-3 range codes such as CT 46 (4-6/10): mask (SIC 255; SOD/FLOE kept where the "
    "range does not change them), or take the low, middle (half up) or high end.",
)
def score(
    labels: tuple[str, ...],
    predictions: tuple[str, ...],
    scene: str | None,
    as_json: bool,
    json_file: str | None,
    csv_out: str | None,
    plots: str | None,
    range_codes: str,
) -> None:
    """Score predictions (PRED...) against reference charts with the AutoICE metrics.

    SIC: R2 on classes 0..10; SOD, FLOE: F1 weighted by support; x100; combined =
    (2 SIC + 2 SOD + FLOE) / 5, pooled over every reference pixel that is not 255 in every
    scene. Predictions are icechart netCDF products or AutoICE submission files, matched to
    the references by scene id. The table on stdout gives the unrounded scores and the
    AutoICE-rounded ones. When the predictions are icechart products with SOD_confidence and
    FLOE_confidence layers, the expected calibration error (ECE: 15 equal-width bins of the
    top-class confidence against accuracy) is reported too.

    \b
    Examples:
      icechart score --labels data/test/reference/ charts/
      icechart score --labels 'data/*_prep.nc' charts/autoice_mmseaice.nc --json-file scores.json
      icechart score --labels data/test/reference/ charts/ --json | jq .autoice
      icechart score --labels chart.shp --scene 20180707T113313_cis_prep.nc charts/
    """
    from icechart.io.predictions import SIGRID_SUFFIXES
    from icechart.pipeline.score import format_table, score_paths, write_csv, write_plots

    predictions, json_file = _legacy_json_value(as_json, predictions, json_file)
    _check_inputs(labels)
    _check_inputs(predictions)
    if scene is not None:
        existing_paths([scene])
    elif any(Path(s).suffix.lower() in SIGRID_SUFFIXES for s in labels):
        raise click.UsageError("a SIGRID-3 chart as --labels needs --scene SCENE.nc (the grid to rasterise onto)")

    report = score_paths(labels, predictions, scene=scene, range_codes=range_codes)
    doc = report.to_dict()

    if as_json and json_file is None:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(format_table(doc))
    if json_file:
        with atomic_path(json_file) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
    if csv_out:
        with atomic_path(csv_out) as tmp:
            write_csv(doc, tmp)
    if plots:
        write_plots(doc, Path(plots))
