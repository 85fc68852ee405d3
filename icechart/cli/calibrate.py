"""``icechart calibrate``: fit temperature scaling of a checkpoint or ensemble on labelled scenes."""

from __future__ import annotations

import json
import logging

import click

from icechart.cli.options import device_opt, existing_paths, json_opt, model_opt, output_opt

logger = logging.getLogger(__name__)


@click.command()
@model_opt(required=True, metavar="FILE|DIR", help="Checkpoint, training run directory, or ensemble (ensemble.toml or its directory).")
@click.option("--labels", "labels", multiple=True, required=True, metavar="PATH", help="Labelled AI4Arctic scenes not used in training: file or directory (*.nc); repeatable.")
@output_opt("out", metavar="FILE", help="Write the calibrated checkpoint (or ensemble manifest) here instead of in place.")
@json_opt("the calibration (temperatures, NLL and ECE before/after)")
@device_opt
def calibrate(model_spec: str, labels: tuple[str, ...], out: str | None, as_json: bool, device: str) -> None:
    """Fit SOD/FLOE temperature scaling of a model on labelled scenes and store it.

    One temperature per chart minimises the negative log-likelihood of the labels at the
    model's resolution (an ensemble's averaged probabilities). It goes into the checkpoint's
    metadata (or the ensemble manifest's [calibration] table); `icechart predict` then writes
    calibrated SOD_confidence and FLOE_confidence. `icechart train` already does this on its
    validation scenes; use this for other labelled scenes or older checkpoints.

    \b
    Examples:
      icechart calibrate --model runs/m1/best.safetensors --labels heldout/
      icechart calibrate --model runs/ens5/ --labels heldout/ --json
      icechart calibrate --model models/mmseaice-s1-v1 --labels heldout/ -o calibrated.safetensors
    """
    from icechart.io.predictions import discover
    from icechart.infer.calibrate import calibrate as run

    existing_paths(list(labels))
    path, cal = run(model_spec, discover(labels), out=out, device=device)
    if as_json:
        click.echo(json.dumps(cal, indent=2))
        return
    click.echo(f"{'chart':<6}{'T':>8}{'NLL before':>12}{'NLL after':>11}{'ECE before':>12}{'ECE after':>11}{'pixels':>10}")
    for chart, t in cal["temperature"].items():
        click.echo(
            f"{chart:<6}{t:8.3f}{cal['nll_before'][chart]:12.4f}{cal['nll_after'][chart]:11.4f}"
            f"{100 * cal['ece_before'][chart]:11.2f}%{100 * cal['ece_after'][chart]:10.2f}%{cal['pixels'][chart]:>10}"
        )
    click.echo(f"calibrated on {len(cal['fitted_on'])} scene(s): {path}")
