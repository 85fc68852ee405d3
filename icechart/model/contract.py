"""The model contract: what a checkpoint needs as input and gives as output, typed and frozen.

Checkpoint metadata (:mod:`icechart.model.checkpoint`) is a JSON dict; this parses the part that
prediction, calibration and the ensemble check depend on exactly once, with the defaults of
older checkpoints filled in, so no caller reads ``meta["..."]`` with its own default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from icechart.errors import ModelError

SicMode = Literal["regression", "classification"]


@dataclass(frozen=True)
class ModelContract:
    """Input and output contract of a model, from its metadata.

    Attributes
    ----------
    channels
        Input channel names, in network order (:mod:`icechart.features`).
    factor
        Downscaling factor of the network grid (10: 800 m from 80 m SAR pixels).
    downscale_method, interp
        How SAR is downscaled (fixes the pixel centres) and how coarse inputs are interpolated.
    norm
        Per-channel normalisation statistics (None: the stack is fed unnormalised).
    sar_fill
        The extra SAR fill value the model was trained with (None: only NaN and declared fills).
    sic_mode
        ``regression`` (one SIC output, rounded) or ``classification`` (11 SIC classes).
    class_table_version
        :data:`icechart.classes.CLASS_TABLE_VERSION` the model was trained with.
    label_method
        How labels were downscaled for training (``mode``), used when calibrating.
    """

    channels: tuple[str, ...]
    factor: int
    downscale_method: str = "mean"
    interp: str = "bilinear"
    norm: Mapping[str, Any] | None = None
    sar_fill: float | None = None
    sic_mode: SicMode = "regression"
    class_table_version: str = ""
    label_method: str = "mode"

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> "ModelContract":
        """Parse checkpoint metadata; ModelError (69) when a required entry is missing or bad."""
        try:
            channels = tuple(str(c) for c in meta["channels"])
            factor = int(meta["factor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"model metadata lacks a valid `channels`/`factor` ({exc})") from exc
        if factor < 1:
            raise ModelError(f"model metadata: factor must be >= 1, got {factor}")
        arch = meta.get("arch") or {}
        sic_mode = str(arch.get("sic_mode", "regression")) if isinstance(arch, Mapping) else "regression"
        if sic_mode not in ("regression", "classification"):
            raise ModelError(f"model metadata: unknown arch.sic_mode {sic_mode!r}")
        fill = meta.get("sar_fill")
        return cls(
            channels=channels,
            factor=factor,
            downscale_method=str(meta.get("downscale_method", "mean")),
            interp=str(meta.get("interp", "bilinear")),
            norm=meta.get("norm"),
            sar_fill=None if fill is None else float(fill),
            sic_mode=sic_mode,  # type: ignore[arg-type]
            class_table_version=str(meta.get("class_table_version", "")),
            label_method=str(meta.get("label_method", "mode")),
        )

    @property
    def regression(self) -> bool:
        """True when SIC is one regression output (rounded and clamped to 0..10)."""
        return self.sic_mode == "regression"

    def norm_key(self) -> str:
        """A string identifying the normalisation (members with equal keys share one stack)."""
        return json.dumps(self.norm, sort_keys=True)


def contract_of(model: Any) -> ModelContract:
    """``model.meta`` parsed into a :class:`ModelContract` on first use, then kept on the model
    (the ``contract`` property of checkpoints and ensembles)."""
    c = model.__dict__.get("_contract")
    if c is None:
        c = model.__dict__["_contract"] = ModelContract.from_meta(model.meta)
    return c
