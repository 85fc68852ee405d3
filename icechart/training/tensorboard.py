"""TensorBoard event files of a training run, when the ``tensorboard`` package is installed.

``tensorboard`` in the run recipe (``[train]`` table, or ``--set tensorboard=...``):

- ``"auto"`` (default): write ``RUNDIR/tensorboard/`` when the package is installed
  (``pip install 'icechart-mmseaice[tensorboard]'``), else nothing, and nothing is imported;
- ``"on"``: write it, and refuse the run (78) when the package is missing;
- ``"off"``: never.

Only rank 0 writes (the caller opens the writer there). Per epoch (the step is the epoch
number, 1-based, as in ``metrics.jsonl``):

- ``loss/train`` and ``loss/SIC``, ``loss/SOD``, ``loss/FLOE`` (the weighted terms' means),
  ``lr`` (at the end of the epoch), ``throughput/patches_per_s``, ``throughput/data_wait_share``,
  ``time/epoch_s`` and ``time/validation_s``;
- every row of ``val_metrics.csv``: ``val/{chart}/{metric}`` for the charts (and
  ``val/combined/score``), ``val/{chart}/{metric}/{class}-{name}`` per class, and
  ``val_scene/{scene}/{chart}/{metric}`` per scene.

A resumed run purges the events after the epoch it resumes from, so the curves never fork.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from icechart.errors import ConfigError

logger = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
SUBDIR = "tensorboard"


def tensorboard_available() -> bool:
    """True when the ``tensorboard`` package can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):
        return False


class EpochWriter:
    """Scalars of each epoch into ``logdir`` (a ``torch.utils.tensorboard.SummaryWriter``)."""

    def __init__(self, logdir: Path, *, start_epoch: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.logdir = logdir
        # purge_step: events of a replaced (--overwrite) or resumed run after this epoch are dropped
        self._w = SummaryWriter(str(logdir), purge_step=start_epoch + 1)

    def epoch(self, row: Mapping[str, Any], val_rows: Iterable[Mapping[str, Any]] = ()) -> None:
        """Write one ``metrics.jsonl`` row and that epoch's ``val_metrics.csv`` rows."""
        step = int(row["epoch"])
        add = self._w.add_scalar
        add("loss/train", float(row["train_loss"]), step)
        for chart, v in row.get("loss_terms", {}).items():
            add(f"loss/{chart}", float(v), step)
        add("lr", float(row["lr"]), step)
        add("throughput/patches_per_s", float(row["patches_per_s"]), step)
        add("throughput/data_wait_share", float(row["data_wait_share"]), step)
        add("time/epoch_s", float(row["seconds"]), step)
        if "val_seconds" in row:
            add("time/validation_s", float(row["val_seconds"]), step)
        for r in val_rows:
            add(scalar_tag(r), float(r["value"]), step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def scalar_tag(r: Mapping[str, Any]) -> str:
    """The TensorBoard tag of one ``val_metrics.csv`` row."""
    if r["scene"] != "all":
        return f"val_scene/{r['scene']}/{r['chart']}/{r['metric']}"
    if r["class"] != "":
        return f"val/{r['chart']}/{r['metric']}/{r['class']}-{r['name']}"
    return f"val/{r['chart']}/{r['metric']}"


def enabled(mode: str) -> bool:
    """Whether a run with ``tensorboard = mode`` writes events (checked before any work).

    Raises
    ------
    ConfigError
        Unknown mode, or ``on`` without the package (78).
    """
    if mode not in MODES:
        raise ConfigError(f"tensorboard must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off":
        return False
    if tensorboard_available():
        return True
    if mode == "on":
        raise ConfigError(
            "tensorboard = \"on\" but the tensorboard package is not installed "
            "(pip install 'icechart-mmseaice[tensorboard]', or tensorboard = \"off\")"
        )
    logger.debug("tensorboard not installed: no event files")
    return False


def open_writer(mode: str, run_dir: Path, *, start_epoch: int = 0) -> EpochWriter | None:
    """The run's writer, or None (mode ``off``, or ``auto`` without the package); raises as
    :func:`enabled`."""
    if not enabled(mode):
        return None
    w = EpochWriter(run_dir / SUBDIR, start_epoch=start_epoch)
    logger.info("TensorBoard events in %s (tensorboard --logdir %s)", w.logdir, run_dir)
    return w
