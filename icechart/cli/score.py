"""``icechart score``: the AutoICE score of predictions against reference charts."""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
from pathlib import Path
from typing import Any, get_args

import click

from icechart.atomic import atomic_path
from icechart.cli.options import existing_paths
from icechart.io.sigrid3 import RangeCodes

logger = logging.getLogger(__name__)


def _check_inputs(specs: tuple[str, ...]) -> None:
    """Missing plain paths are 66 (globs are expanded, and checked, by the library)."""
    existing_paths([s for s in specs if not glob.has_magic(s)])


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
@click.option("--json", "json_out", metavar="FILE|-", help="Write the scores and detail as JSON ('-': stdout).")
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
    json_out: str | None,
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
      icechart score --labels 'data/*_prep.nc' charts/autoice_mmseaice.nc --json scores.json
      icechart score --labels chart.shp --scene 20180707T113313_cis_prep.nc charts/
    """
    from icechart.io.predictions import SIGRID_SUFFIXES, score_paths

    _check_inputs(labels)
    _check_inputs(predictions)
    if scene is not None:
        existing_paths([scene])
    elif any(Path(s).suffix.lower() in SIGRID_SUFFIXES for s in labels):
        raise click.UsageError("a SIGRID-3 chart as --labels needs --scene SCENE.nc (the grid to rasterise onto)")

    report = score_paths(labels, predictions, scene=scene, range_codes=range_codes)
    doc = report.to_dict()

    if json_out == "-":
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(format_table(doc))
        if json_out:
            with atomic_path(json_out) as tmp:
                tmp.write_text(json.dumps(doc, indent=2) + "\n")
    if csv_out:
        with atomic_path(csv_out) as tmp:
            write_csv(doc, tmp)
    if plots:
        write_plots(doc, Path(plots))


def _fmt(x: float | None, nd: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _row(first: str, width: int, cells: list[tuple[Any, int]]) -> str:
    """One table row: a left-aligned label, then right-aligned cells, always space-separated."""
    return f"{first:<{width}}" + "".join(f" {str(c):>{w}}" for c, w in cells)


def format_table(doc: dict[str, Any]) -> str:
    """The readable summary printed on stdout."""
    lines = [_row("chart", 9, [("score", 10), ("AutoICE", 10), ("accuracy", 9), ("macro F1", 9), ("pixels", 11)])]
    for chart in ("SIC", "SOD", "FLOE"):
        c = doc["charts"][chart]
        lines.append(
            _row(chart, 9, [
                (_fmt(doc[chart], 4), 10), (_fmt(doc["autoice"][chart]), 10),
                (_fmt(c["accuracy"] * 100, 2), 9), (_fmt(c["f1_macro"] * 100, 2), 9), (c["n_pixels"], 11),
            ])  # fmt: skip
        )
    lines.append(_row("combined", 9, [(_fmt(doc["combined"], 4), 10), (_fmt(doc["autoice"]["combined"]), 10)]))
    cal = doc.get("calibration") or {}
    if cal:
        lines.append("")
        lines.append(_row("chart", 9, [("ECE", 10), ("MCE", 10), ("pixels", 11)]) + "   (confidence calibration, 15 bins)")
        for chart, c in cal.items():
            lines.append(_row(chart, 9, [(_fmt(c["ece"], 4), 10), (_fmt(c["mce"], 4), 10), (c["n_pixels"], 11)]))
    lines.append("")
    lines.append(_row("scene", 24, [("SIC", 8), ("SOD", 8), ("FLOE", 8), ("combined", 9)]))
    for sid, s in doc["scenes"].items():
        sc = s["scores"]
        lines.append(
            _row(sid, 24, [(_fmt(sc[k], 2), w) for k, w in (("SIC", 8), ("SOD", 8), ("FLOE", 8), ("combined", 9))])
        )
    lines.append(f"({len(doc['scenes'])} scene(s); scores in percent; AutoICE = challenge rounding)")
    return "\n".join(lines)


CSV_FIELDS = (
    "scene_id", "reference", "prediction", "SIC", "SOD", "FLOE", "combined",
    "SIC_pixels", "SOD_pixels", "FLOE_pixels",
    "SIC_accuracy", "SOD_accuracy", "FLOE_accuracy",
    "SOD_f1_macro", "FLOE_f1_macro",
)  # fmt: skip


def write_csv(doc: dict[str, Any], path: Path) -> None:
    """One row per scene: scores (percent), labelled pixels, accuracy and macro F1."""
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for sid, s in doc["scenes"].items():
            row: dict[str, Any] = {
                "scene_id": sid,
                "reference": s.get("reference", ""),
                "prediction": s.get("prediction", ""),
            }
            for k in ("SIC", "SOD", "FLOE", "combined"):
                row[k] = "" if s["scores"][k] is None else f"{s['scores'][k]:.6f}"
            for chart in ("SIC", "SOD", "FLOE"):
                c = s["charts"][chart]
                row[f"{chart}_pixels"] = c["n_pixels"]
                row[f"{chart}_accuracy"] = "" if c["accuracy"] is None else f"{c['accuracy']:.6f}"
            for chart in ("SOD", "FLOE"):
                c = s["charts"][chart]
                row[f"{chart}_f1_macro"] = "" if c["f1_macro"] is None else f"{c['f1_macro']:.6f}"
            w.writerow(row)


def write_plots(doc: dict[str, Any], outdir: Path) -> list[Path]:
    """Pooled confusion matrices (row-normalised, counts annotated), one PNG per chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from icechart.atomic import os_error

    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, outdir) from exc
    written = []
    for chart in ("SIC", "SOD", "FLOE"):
        c = doc["charts"][chart]
        conf = np.asarray(c["confusion"], dtype=np.float64)
        names = [cl["name"] for cl in c["classes"]] + ["other/255"]
        rows = conf.sum(axis=1, keepdims=True)
        norm = np.divide(conf, rows, out=np.zeros_like(conf), where=rows > 0)
        fig, ax = plt.subplots(figsize=(1.0 + 0.6 * conf.shape[1], 1.0 + 0.6 * conf.shape[0]))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(conf.shape[1]), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(conf.shape[0]), names[:-1], fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{chart}: score {doc[chart]:.2f} ({c['n_pixels']} px)", fontsize=9)
        for i in range(conf.shape[0]):
            for j in range(conf.shape[1]):
                if conf[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if norm[i, j] > 0.5 else "black")
        fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of reference row")
        fig.tight_layout()
        dest = outdir / f"confusion_{chart}.png"
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        written.append(dest)
    logger.info("wrote %d confusion matrices to %s", len(written), outdir)
    if doc.get("calibration"):
        written.append(write_reliability(doc["calibration"], outdir / "reliability.png"))
    return written


def write_reliability(calibration: dict[str, Any], dest: Path) -> Path:
    """Reliability diagram: per chart, accuracy against mean confidence per bin, with the pixel
    share of each bin and the ECE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts = list(calibration)
    fig, axes = plt.subplots(1, len(charts), figsize=(4.2 * len(charts), 4.4), squeeze=False)
    for ax, chart in zip(axes[0], charts):
        c = calibration[chart]
        bins = c["bins"]
        width = 1.0 / c["n_bins"]
        lo = [b["lo"] for b in bins]
        acc = [b["accuracy"] or 0.0 for b in bins]
        conf = [b["confidence"] if b["confidence"] is not None else b["lo"] + width / 2 for b in bins]
        n = max(c["n_pixels"], 1)
        ax.bar(lo, acc, width=width, align="edge", color="#4477aa", edgecolor="white", label="accuracy")
        ax.bar(lo, [a - f for a, f in zip(acc, conf)], bottom=conf, width=width, align="edge",
               color="#ee6677", alpha=0.35, label="gap to confidence")  # fmt: skip
        ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
        ax2 = ax.twinx()
        ax2.step([b["lo"] for b in bins] + [1.0], [b["count"] / n for b in bins] + [bins[-1]["count"] / n],
                 where="post", color="0.4", lw=1)  # fmt: skip
        ax2.set_ylim(0, 1)
        ax2.set_ylabel("share of pixels", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("top-class confidence")
        ax.set_ylabel("accuracy")
        ece = "-" if c["ece"] is None else f"{100 * c['ece']:.2f} %"
        ax.set_title(f"{chart}: ECE {ece} ({c['n_pixels']} px)", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return dest
