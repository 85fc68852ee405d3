"""AutoICE metrics, streamed: confusion matrices and R2 sums, never the pixels (numpy only).

The AutoICE score (ai4arctic.md; the challenge's ``functions.py``: ``compute_metrics``,
``r2_metric``, ``f1_metric``, ``compute_combined_score``):

- per chart, every pixel of every scene whose *reference* label is not 255 is pooled; the
  prediction at those pixels is compared as is (a prediction of 255 there is simply wrong);
- SIC: coefficient of determination R2 on class values 0..10, as ``sklearn.metrics.r2_score``
  on the raw arrays (so a predicted 255 enters R2 as the value 255);
- SOD, FLOE: F1 averaged over classes weighted by support, as
  ``f1_score(average="weighted")``;
- the challenge rounds each chart score ``np.round(x * 100, 3)`` and forms the combined score
  from those rounded values, ``np.round((2 SIC + 2 SOD + 1 FLOE) / 5, 3)``.

:class:`ScoreAccumulator` keeps, per chart, an ``n x (n + 1)`` int64 confusion matrix (the last
column counts predictions outside the class range, 255 included) and the exact integer sums R2
needs (count, sum y, sum y**2, sum (y - p)**2). Per-scene copies of the same small tables give
the per-scene detail. Memory is therefore constant in the number of pixels and grows by a few
hundred bytes per scene. Big arrays are processed in row blocks so temporaries stay small.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icechart.classes import CHARTS, CLASS_NAMES, FILL, N_CLASSES, SCORE_WEIGHTS
from icechart.errors import BadDataError

logger = logging.getLogger(__name__)

BLOCK_PIXELS = 1 << 21
"""Pixels handled per block in :meth:`ScoreAccumulator.update` (bounds temporaries to ~50 MB)."""


@dataclass
class ChartStats:
    """Sufficient statistics of one chart: confusion matrix and exact integer sums for R2.

    Attributes
    ----------
    confusion
        ``(n_classes, n_classes + 1)`` int64; rows are reference classes, columns predicted
        classes, the last column every prediction outside ``0..n_classes-1`` (255 included).
    n, sum_y, sum_y2, sum_res2
        Labelled pixel count, sum of reference values, of their squares, and of the squared
        residuals (reference - raw prediction); Python ints, exact.
    """

    n_classes: int
    confusion: np.ndarray = field(init=False)
    n: int = 0
    sum_y: int = 0
    sum_y2: int = 0
    sum_res2: int = 0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((self.n_classes, self.n_classes + 1), dtype=np.int64)

    @classmethod
    def from_confusion(cls, confusion: np.ndarray) -> ChartStats:
        """Statistics of predictions that are all classes (the last, "other" column is 0), from
        their confusion matrix alone: the R2 sums follow exactly from the counts of each
        (reference, prediction) pair, so a device can count the pairs and ship only the table
        (:mod:`icechart.training.validate`)."""
        conf = np.asarray(confusion, dtype=np.int64)
        k = conf.shape[0]
        if conf.shape != (k, k + 1) or conf[:, k].any():
            raise ValueError(f"expected a ({k}, {k + 1}) confusion matrix without predictions outside the classes")
        st = cls(k)
        st.confusion = conf.copy()
        y = np.arange(k, dtype=np.int64)
        per_ref = conf.sum(axis=1)
        st.n = int(per_ref.sum())
        st.sum_y = int(per_ref @ y)
        st.sum_y2 = int(per_ref @ (y * y))
        d = y[:, None] - y[None, :]
        st.sum_res2 = int((conf[:, :k] * d * d).sum())
        return st

    def add(self, other: ChartStats) -> None:
        """Add another chart's statistics into this one."""
        self.confusion += other.confusion
        self.n += other.n
        self.sum_y += other.sum_y
        self.sum_y2 += other.sum_y2
        self.sum_res2 += other.sum_res2

    # --- metrics ------------------------------------------------------------------------------
    def r2(self) -> float:
        """R2 exactly as ``sklearn.metrics.r2_score`` (``force_finite=True``)."""
        if self.n == 0:
            return math.nan
        # Total sum of squares n*sum(y^2) - sum(y)^2, divided by n: exact in integers.
        ss_tot_n = self.n * self.sum_y2 - self.sum_y * self.sum_y
        if ss_tot_n == 0:
            # sklearn: constant y_true gives 1.0 for a perfect prediction, else 0.0.
            return 1.0 if self.sum_res2 == 0 else 0.0
        return 1.0 - self.sum_res2 * self.n / ss_tot_n

    def per_class(self) -> dict[str, np.ndarray]:
        """Per-class precision, recall, F1 and support (sklearn ``zero_division=0`` semantics)."""
        conf = self.confusion
        k = self.n_classes
        tp = np.diag(conf[:, :k]).astype(np.float64)
        support = conf.sum(axis=1)
        predicted = conf[:, :k].sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(support > 0, tp / support, 0.0)
            denom = support + predicted
            f1 = np.where(denom > 0, 2.0 * tp / denom, 0.0)
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }

    def f1_weighted(self) -> float:
        """F1 averaged over classes weighted by support (``f1_score(average="weighted")``)."""
        if self.n == 0:
            return math.nan
        pc = self.per_class()
        return float(np.sum(pc["f1"] * pc["support"]) / self.n)

    def f1_macro(self) -> float:
        """Unweighted mean F1 over the classes present in the reference or the prediction.

        As sklearn's ``average="macro"`` over the labels that occur, except that predictions
        outside the class range (e.g. 255) are not counted as a class of their own.
        """
        if self.n == 0:
            return math.nan
        pc = self.per_class()
        present = (pc["support"] > 0) | (pc["predicted"] > 0)
        return float(np.mean(pc["f1"][present]))

    def accuracy(self) -> float:
        """Fraction of labelled pixels predicted exactly."""
        if self.n == 0:
            return math.nan
        return float(np.trace(self.confusion[:, : self.n_classes]) / self.n)

    def score(self, chart: str) -> float:
        """The AutoICE metric of this chart in [.., 1]: R2 for SIC, weighted F1 otherwise."""
        return self.r2() if chart == "SIC" else self.f1_weighted()

    def detail(self, chart: str) -> dict[str, Any]:
        """JSON-able detail: score, accuracy, macro F1, per-class table and confusion matrix."""
        pc = self.per_class()
        names = CLASS_NAMES.get(chart, tuple(str(i) for i in range(self.n_classes)))
        return {
            "n_pixels": int(self.n),
            "score": _json_float(self.score(chart) * 100.0),
            "r2": _json_float(self.r2()),
            "f1_weighted": _json_float(self.f1_weighted()),
            "f1_macro": _json_float(self.f1_macro()),
            "accuracy": _json_float(self.accuracy()),
            "classes": [
                {
                    "class": i,
                    "name": names[i],
                    "precision": float(pc["precision"][i]),
                    "recall": float(pc["recall"][i]),
                    "f1": float(pc["f1"][i]),
                    "support": int(pc["support"][i]),
                }
                for i in range(self.n_classes)
            ],
            "confusion": self.confusion.tolist(),
            "confusion_columns": [*range(self.n_classes), "other"],
        }


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def autoice_round(scores: dict[str, float]) -> dict[str, float]:
    """Round chart scores (percent) and form the combined score as the challenge code does.

    Each chart: ``np.round(score, 3)`` (the challenge computes ``np.round(metric * 100, 3)``);
    combined: ``np.round(sum(weight * rounded) / sum(weight), 3)`` accumulated in chart order
    (``compute_combined_score`` in the challenge's ``functions.py``).

    Parameters
    ----------
    scores
        Unrounded per-chart scores in percent, keyed by chart name.

    Returns
    -------
    dict
        The rounded chart scores plus ``"combined"``.
    """
    out: dict[str, float] = {}
    combined = 0.0
    total_weight = 0
    for chart in CHARTS:
        if chart not in scores:
            continue
        out[chart] = float(np.round(scores[chart], 3))
        combined += out[chart] * SCORE_WEIGHTS[chart]
        total_weight += SCORE_WEIGHTS[chart]
    out["combined"] = float(np.round(combined / total_weight, 3))
    return out


@dataclass
class ScoreResult:
    """What :meth:`ScoreAccumulator.result` returns.

    Attributes
    ----------
    scores
        ``{"SIC", "SOD", "FLOE", "combined"}`` in percent, unrounded (combined from the
        unrounded chart scores).
    autoice
        The same four rounded exactly as the challenge code does (:func:`autoice_round`).
    charts
        Per chart pooled :class:`ChartStats`.
    scenes
        Per scene id, per chart :class:`ChartStats` (scenes in the order first seen).
    """

    scores: dict[str, float]
    autoice: dict[str, float]
    charts: dict[str, ChartStats]
    scenes: dict[str, dict[str, ChartStats]]

    def scene_scores(self, scene_id: str) -> dict[str, float | None]:
        """Per-scene chart scores in percent (None for a chart without labels in that scene)."""
        stats = self.scenes[scene_id]
        out: dict[str, float | None] = {}
        for chart, st in stats.items():
            out[chart] = None if st.n == 0 else st.score(chart) * 100.0
        charts_ok = [c for c in out if out[c] is not None]
        if charts_ok:
            w = sum(SCORE_WEIGHTS[c] for c in charts_ok)
            out["combined"] = sum(SCORE_WEIGHTS[c] * out[c] for c in charts_ok) / w  # type: ignore[operator,misc]
        else:
            out["combined"] = None
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: top-level SIC/SOD/FLOE/combined (unrounded), ``autoice``, detail."""
        d: dict[str, Any] = {k: float(v) for k, v in self.scores.items()}
        d["autoice"] = dict(self.autoice)
        d["charts"] = {chart: st.detail(chart) for chart, st in self.charts.items()}
        d["scenes"] = {
            sid: {
                "scores": self.scene_scores(sid),
                "charts": {chart: st.detail(chart) for chart, st in stats.items()},
            }
            for sid, stats in self.scenes.items()
        }
        return d


class ScoreAccumulator:
    """Streaming AutoICE scorer: feed scenes one by one, ask for the result at the end.

    Parameters
    ----------
    charts
        The charts to score (default all three). ``result`` raises for a chart that has no
        labelled reference pixel at all.

    Examples
    --------
    >>> acc = ScoreAccumulator()
    >>> for chart in ("SIC", "SOD", "FLOE"):
    ...     acc.update(chart, ref[chart], pred[chart], scene_id="20180707T113313_cis")
    >>> acc.result().autoice["combined"]
    """

    def __init__(self, charts: tuple[str, ...] | list[str] = CHARTS) -> None:
        unknown = [c for c in charts if c not in N_CLASSES]
        if unknown:
            raise ValueError(f"unknown chart(s) {unknown}; expected some of {list(CHARTS)}")
        self.charts = tuple(charts)
        self._total = {c: ChartStats(N_CLASSES[c]) for c in self.charts}
        self._scenes: dict[str, dict[str, ChartStats]] = {}

    def update(
        self, chart: str, ref: np.ndarray, pred: np.ndarray, *, scene_id: str | None = None
    ) -> None:
        """Add one array pair (any shape, equal shapes) of one chart.

        Parameters
        ----------
        chart
            ``"SIC"``, ``"SOD"`` or ``"FLOE"``.
        ref
            Reference classes (uint8; 255 = no label, not counted).
        pred
            Predicted classes, integer dtype; any value outside the class range is wrong.
        scene_id
            Also accumulate per-scene statistics under this id (None: pooled only). Calls with
            the same id add up (e.g. a scene fed in row blocks).

        Raises
        ------
        BadDataError
            Shapes differ, a reference value is neither a class nor 255, or the prediction is
            not of integer dtype.
        """
        if chart not in self._total:
            raise ValueError(f"chart {chart!r} is not scored here ({list(self.charts)})")
        ref = np.asarray(ref)
        pred = np.asarray(pred)
        if ref.shape != pred.shape:
            raise BadDataError(
                f"{chart}: reference shape {ref.shape} differs from prediction shape {pred.shape}"
            )
        for name, arr in (("reference", ref), ("prediction", pred)):
            if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
                raise BadDataError(
                    f"{chart}: {name} has dtype {arr.dtype}; expected integer class values"
                )
        self.add_stats(chart, _chart_stats(chart, ref.reshape(-1), pred.reshape(-1)), scene_id=scene_id)

    def add_stats(self, chart: str, stats: ChartStats, *, scene_id: str | None = None) -> None:
        """Add statistics of one chart computed elsewhere (e.g. :meth:`ChartStats.from_confusion`
        of pairs counted on a GPU); ``scene_id`` as in :meth:`update`."""
        if chart not in self._total:
            raise ValueError(f"chart {chart!r} is not scored here ({list(self.charts)})")
        self._total[chart].add(stats)
        if scene_id is not None:
            per = self._scenes.setdefault(
                scene_id, {c: ChartStats(N_CLASSES[c]) for c in self.charts}
            )
            per[chart].add(stats)

    def add(self, other: ScoreAccumulator) -> None:
        """Merge another accumulator (e.g. from a worker process) into this one."""
        for chart, st in other._total.items():
            if chart in self._total:
                self._total[chart].add(st)
        for sid, per in other._scenes.items():
            mine = self._scenes.setdefault(sid, {c: ChartStats(N_CLASSES[c]) for c in self.charts})
            for chart, st in per.items():
                if chart in mine:
                    mine[chart].add(st)

    def scene_scores(self, scene_id: str) -> dict[str, float | None]:
        """Scores (percent) of one scene so far; None for a chart without labels there."""
        res = ScoreResult(scores={}, autoice={}, charts={}, scenes={scene_id: self._scenes[scene_id]})
        return res.scene_scores(scene_id)

    def n_labelled(self, chart: str) -> int:
        """Labelled reference pixels seen so far for ``chart``."""
        return self._total[chart].n

    def result(self) -> ScoreResult:
        """Compute the scores.

        Raises
        ------
        BadDataError
            A chart has no labelled reference pixel ("no labelled pixels"), e.g. test files.
        """
        empty = [c for c in self.charts if self._total[c].n == 0]
        if empty:
            raise BadDataError(
                f"no labelled pixels in the reference for {', '.join(empty)} "
                "(test files carry no labels; give labelled reference scenes)"
            )
        scores = {c: self._total[c].score(c) * 100.0 for c in self.charts}
        total_weight = sum(SCORE_WEIGHTS[c] for c in self.charts)
        scores["combined"] = sum(SCORE_WEIGHTS[c] * scores[c] for c in self.charts) / total_weight
        autoice = autoice_round({c: self._total[c].score(c) * 100.0 for c in self.charts})
        return ScoreResult(
            scores=scores,
            autoice=autoice,
            charts={c: _copy(self._total[c]) for c in self.charts},
            scenes={
                sid: {c: _copy(st) for c, st in per.items()} for sid, per in self._scenes.items()
            },
        )


def _copy(st: ChartStats) -> ChartStats:
    out = ChartStats(st.n_classes)
    out.add(st)
    return out


def _chart_stats(chart: str, ref: np.ndarray, pred: np.ndarray) -> ChartStats:
    """Statistics of 1-D arrays, computed in blocks of :data:`BLOCK_PIXELS`."""
    k = N_CLASSES[chart]
    st = ChartStats(k)
    width = k + 1
    for start in range(0, ref.size, BLOCK_PIXELS):
        r = ref[start : start + BLOCK_PIXELS]
        p = pred[start : start + BLOCK_PIXELS]
        keep = r != FILL
        if not keep.any():
            continue
        r = r[keep].astype(np.int64)
        p = p[keep].astype(np.int64)
        if r.min() < 0 or r.max() >= k:
            bad = r[(r < 0) | (r >= k)][0]
            raise BadDataError(
                f"{chart}: reference value {int(bad)} is neither a class (0..{k - 1}) nor {FILL}"
            )
        col = np.where((p >= 0) & (p < k), p, k)
        st.confusion += np.bincount(r * width + col, minlength=k * width).reshape(k, width)
        st.n += int(r.size)
        st.sum_y += int(r.sum())
        st.sum_y2 += int(np.dot(r, r))
        d = r - p
        st.sum_res2 += int(np.dot(d, d))
    return st


def score_arrays(
    ref: dict[str, np.ndarray], pred: dict[str, np.ndarray], *, scene_id: str | None = None
) -> ScoreResult:
    """Score one set of arrays (e.g. one scene, or a validation batch).

    Parameters
    ----------
    ref, pred
        Per chart arrays; the charts scored are those in ``ref`` (each must be in ``pred``).
    scene_id
        Record per-scene detail under this id.

    Raises
    ------
    BadDataError
        A chart is missing from ``pred``, shapes differ, or a chart has no labelled pixel.
    """
    charts = tuple(c for c in CHARTS if c in ref)
    missing = [c for c in charts if c not in pred]
    if missing:
        raise BadDataError(f"prediction lacks chart(s) {', '.join(missing)}")
    acc = ScoreAccumulator(charts)
    for chart in charts:
        acc.update(chart, ref[chart], pred[chart], scene_id=scene_id)
    return acc.result()
