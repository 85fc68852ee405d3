"""Multi-task loss: w_SIC x MSE (or CE) + w_SOD x CE + w_FLOE x CE, FILL (255) ignored in every
term (reference/method.md: weights 1, 3, 3).

No host synchronisation: each term is a sum over the labelled pixels divided by their count
(at least 1), so a batch without labels gives 0 without asking the device whether any label
exists, and the terms stay device tensors unless the caller asks for floats."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from icechart.classes import FILL

logger = logging.getLogger(__name__)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    mask = target != FILL
    d = torch.where(mask, pred[:, 0] - target.to(pred.dtype), torch.zeros((), dtype=pred.dtype, device=pred.device))
    return (d * d).sum() / mask.sum().clamp(min=1)


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    n = (target != FILL).sum().clamp(min=1)
    return F.cross_entropy(logits, target.long(), ignore_index=FILL, reduction="sum") / n


def multitask_loss(
    out: dict[str, torch.Tensor],
    y: torch.Tensor,
    *,
    weights: tuple[float, float, float] = (1.0, 3.0, 3.0),
    sic_mode: str = "regression",
    as_tensors: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Total loss and its terms (floats; detached 0-d tensors with ``as_tensors``, which
    does not synchronise with the device).

    Parameters
    ----------
    out
        Network outputs (``SIC`` (N,1|11,H,W), ``SOD`` (N,6,H,W), ``FLOE`` (N,7,H,W)).
    y
        ``(N, 3, H, W)`` labels (SIC class 0..10, SOD, FLOE; FILL ignored).
    weights
        (SIC, SOD, FLOE) weights.
    sic_mode
        ``"regression"`` (MSE on the class index) or ``"classification"`` (CE).
    """
    sic = out["SIC"].float()
    l_sic = _masked_mse(sic, y[:, 0]) if sic_mode == "regression" else _ce(sic, y[:, 0])
    l_sod = _ce(out["SOD"].float(), y[:, 1])
    l_floe = _ce(out["FLOE"].float(), y[:, 2])
    total = weights[0] * l_sic + weights[1] * l_sod + weights[2] * l_floe
    terms: dict[str, Any] = {"SIC": l_sic.detach(), "SOD": l_sod.detach(), "FLOE": l_floe.detach()}
    if not as_tensors:
        terms = {k: float(v) for k, v in terms.items()}
    return total, terms
