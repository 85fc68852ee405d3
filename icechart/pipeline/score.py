"""Scoring as a library call: match references and predictions, score, render the results.

:func:`score_paths` is what ``icechart score`` runs (:mod:`icechart.io.predictions` reads the
files, :class:`icechart.score.ScoreAccumulator` scores them, streaming row blocks);
:func:`format_table`, :func:`write_csv`, :func:`write_plots` and :func:`write_reliability`
render its :meth:`ScoreReport.to_dict` document.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icechart.atomic import atomic_path
from icechart.calibration import ReliabilityAccumulator
from icechart.classes import CHARTS
from icechart.errors import BadDataError
from icechart.io.predictions import BLOCK_ROWS, ChartSource, index_by_scene, load_predictions, load_references
from icechart.score import ScoreAccumulator, ScoreResult

logger = logging.getLogger(__name__)


@dataclass
class ScoreReport:
    """A :class:`ScoreResult` plus which files were compared.

    Attributes
    ----------
    result
        The scores.
    pairs
        Scene id -> (reference path, prediction path), in scoring order.
    """

    result: ScoreResult
    pairs: dict[str, tuple[Path, Path]]
    calibration: dict[str, ReliabilityAccumulator] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``icechart score --json`` (with ``calibration``: ECE and
        reliability bins per chart, when the predictions carry confidence layers)."""
        d = self.result.to_dict()
        if self.calibration:
            d["calibration"] = {c: r.to_dict() for c, r in self.calibration.items()}
        for sid, (ref, pred) in self.pairs.items():
            if sid in d["scenes"]:
                d["scenes"][sid]["reference"] = str(ref)
                d["scenes"][sid]["prediction"] = str(pred)
        return d


def _row_blocks(n: int, step: int) -> Iterator[slice]:
    for r0 in range(0, n, step):
        yield slice(r0, min(r0 + step, n))


def score_sources(
    references: list[ChartSource],
    predictions: list[ChartSource],
    *,
    block_rows: int = BLOCK_ROWS,
) -> ScoreReport:
    """Match references and predictions by scene id and score them, streaming row blocks.

    Raises
    ------
    BadDataError
        Duplicate scene ids on one side; unmatched files on either side (every one listed);
        a shape mismatch (both files named); no labelled pixels at all.
    """
    refs = index_by_scene(references, "references")
    preds = index_by_scene(predictions, "predictions")
    unmatched = [f"{s.path} (prediction {sid})" for sid, s in preds.items() if sid not in refs]
    unmatched += [f"{s.path} (reference {sid})" for sid, s in refs.items() if sid not in preds]
    if unmatched:
        raise BadDataError(
            f"{len(unmatched)} file(s) without a counterpart by scene id: " + "; ".join(unmatched)
        )
    acc = ScoreAccumulator()
    rel: dict[str, ReliabilityAccumulator] = {}
    pairs: dict[str, tuple[Path, Path]] = {}
    for sid, ref in refs.items():
        pred = preds[sid]
        if ref.shape != pred.shape:
            raise BadDataError(
                f"scene {sid}: reference {ref.path} is {ref.shape[0]}x{ref.shape[1]} but "
                f"prediction {pred.path} is {pred.shape[0]}x{pred.shape[1]}"
            )
        try:
            for rows in _row_blocks(ref.shape[0], block_rows):
                for chart in CHARTS:
                    r, q = ref.read(chart, rows), pred.read(chart, rows)
                    acc.update(chart, r, q, scene_id=sid)
                    if chart in pred.confidence:  # expected calibration error, streamed
                        conf = pred.read_confidence(chart, rows)
                        rel.setdefault(chart, ReliabilityAccumulator()).update_percent(r, q, conf)
        finally:
            ref.close()
            pred.close()
        pairs[sid] = (ref.path, pred.path)
        per = acc.scene_scores(sid)
        logger.info(
            "scored %s: %s vs %s: %s",
            sid,
            ref.path.name,
            pred.path.name,
            " ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in per.items()),
        )
    empty = [c for c in CHARTS if acc.n_labelled(c) == 0]
    if empty:
        names = ", ".join(str(r.path) for r in refs.values())
        raise BadDataError(
            f"no labelled pixels for {', '.join(empty)} in the references ({names}); "
            "test files carry no labels"
        )
    return ScoreReport(result=acc.result(), pairs=pairs, calibration=rel)


def score_paths(
    labels: Iterable[str | Path],
    predictions: Iterable[str | Path],
    *,
    scene: str | Path | None = None,
    range_codes: str = "mask",
) -> ScoreReport:
    """Score prediction files against reference files: what ``icechart score`` runs.

    Parameters
    ----------
    labels
        Reference files, directories or globs: AI4Arctic scenes, ``_reference.nc`` files, or
        SIGRID-3 charts (with ``scene``).
    predictions
        icechart netCDF products or AutoICE submission files (files, directories, globs).
    scene
        The AI4Arctic scene whose grid SIGRID-3 charts are rasterised onto.
    range_codes
        ``mask``, ``low``, ``mid`` or ``high``: SIGRID-3 range codes such as 46 (see
        :func:`icechart.io.sigrid3.polygon_classes`).

    Returns
    -------
    ScoreReport

    Raises
    ------
    InputMissingError
        A path is missing (66).
    BadDataError
        See :func:`score_sources` (65).
    """
    refs = load_references(labels, scene=scene, range_codes=range_codes)
    preds = load_predictions(predictions)
    return score_sources(refs, preds)


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
