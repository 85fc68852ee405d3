"""``icechart export``: a checkpoint's network as TorchScript or ONNX, with its contract inside."""

from __future__ import annotations

import click

from icechart.cli.options import output_opt
from icechart.model.export import FORMATS


@click.command("export")
@click.argument("model_spec", metavar="MODEL")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="torchscript (torch.jit) or onnx (needs the export extra).")
@output_opt("out", metavar="FILE", required=True, help="The file to write (.pt for TorchScript, .onnx for ONNX).")
@click.option("--overwrite", is_flag=True, help="Replace FILE if it exists (else exit 73).")
def export(model_spec: str, fmt: str, out: str, overwrite: bool) -> None:
    """Export the network of MODEL (a shipped model id, a checkpoint or a training run
    directory) for serving outside icechart.

    The file holds the network alone: normalised inputs (N, C, H, W) in the model's channel
    order, any H and W, and SIC, SOD, FLOE logits at the input's size. The model contract
    (channels, normalisation, downscaling factor and method, SAR fill, SIC mode, class tables,
    the checkpoint's id and sha256) is stored inside: TorchScript extra file icechart.json,
    ONNX metadata property icechart. Each export is run once against PyTorch before it is kept
    (TorchScript: identical outputs; ONNX: within 1e-4, where onnxruntime is installed).
    Ensembles and networks with a learned stem are refused (69).

    \b
    Examples:
      icechart export --format torchscript synth-demo-v2 -o synth-demo-v2.pt
      icechart export --format onnx runs/m1/best.safetensors -o m1.onnx
    """
    from icechart.model.export import export_model

    res = export_model(model_spec, fmt, out, overwrite=overwrite)
    check = "not run (no onnxruntime)" if res.max_abs_diff is None else f"max |difference| {res.max_abs_diff:.3g}"
    click.echo(f"{res.path}: {res.model_id} as {res.format} (check against PyTorch: {check})")
